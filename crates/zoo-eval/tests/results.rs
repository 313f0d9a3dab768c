//! Result files: JSON round trips (NaN included), CSV layout, atomic writes.

use std::fs;

use zoo_eval::results::*;

#[test]
fn niah_round_trips_and_writes_one_csv_line_per_cell() {
    let dir = tempfile::tempdir().unwrap();
    let r = NiahResult {
        run: "a,b".into(),
        variant: "passkey".into(),
        samples: 20,
        lengths: vec![256, 512],
        depths: vec![0.0, 0.5, 1.0],
        accuracy: vec![vec![1.0, 0.5], vec![0.25, f64::NAN], vec![0.0, 0.75]],
        train_len: Some(256),
    };
    let json = dir.path().join("eval/niah.json");
    r.write_json(&json).unwrap();
    let back = NiahResult::read_json(&json).unwrap();
    assert!(back.accuracy[1][1].is_nan(), "null reads back as NaN");
    assert_eq!(back.accuracy[2], r.accuracy[2]);
    assert_eq!(
        (back.lengths, back.depths, back.train_len),
        (r.lengths.clone(), r.depths.clone(), r.train_len)
    );

    let csv = dir.path().join("eval/niah.csv");
    r.write_csv(&csv).unwrap();
    let text = fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "length,depth,accuracy,samples");
    assert_eq!(lines.len(), 1 + 3 * 2);
    assert_eq!(lines[1], "256,0,1,20");
    assert_eq!(lines[4], "512,0.5,NaN,20");
    assert_eq!(lines[6], "512,1,0.75,20");

    let mut ragged = r.clone();
    ragged.accuracy[0].pop();
    assert!(ragged.write_csv(&dir.path().join("x.csv")).is_err());
}

#[test]
fn other_results_round_trip_and_write_csv() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);

    let mqar = MqarResult {
        run: "r".into(),
        rows: vec![MqarRow {
            seq_len: 128,
            num_kv_pairs: 8,
            accuracy: 0.875,
            samples: 64,
        }],
        train_len: None,
        scaling: "none".into(),
    };
    mqar.write_json(&p("mqar.json")).unwrap();
    assert_eq!(MqarResult::read_json(&p("mqar.json")).unwrap(), mqar);
    mqar.write_csv(&p("mqar.csv")).unwrap();
    assert_eq!(
        fs::read_to_string(p("mqar.csv")).unwrap(),
        "seq_len,num_kv_pairs,accuracy,samples\n128,8,0.875,64\n"
    );

    let ppl = PplResult {
        run: "r".into(),
        scaling: "rope_pi:4".into(),
        rows: vec![PplRow {
            seq_len: 512,
            loss: 2.0,
            ppl: 2f64.exp(),
            tokens: 4096,
        }],
        train_len: Some(256),
    };
    ppl.write_json(&p("ppl.json")).unwrap();
    assert_eq!(PplResult::read_json(&p("ppl.json")).unwrap(), ppl);
    ppl.write_csv(&p("ppl.csv")).unwrap();
    let text = fs::read_to_string(p("ppl.csv")).unwrap();
    assert_eq!(
        text.lines().nth(1).unwrap(),
        format!("512,2,{},4096,rope_pi:4", 2f64.exp())
    );

    let att = AttentionResult {
        run: "r".into(),
        mixer: "softmax".into(),
        rows: vec![
            AttentionRow {
                layer: 0,
                head: 1,
                seq_len: 64,
                entropy: 1.5,
                sparsity: 0.5,
                needle_mass: Some(0.25),
                uniform_entropy: 3.5,
            },
            AttentionRow {
                layer: 1,
                head: 0,
                seq_len: 64,
                entropy: f64::NAN,
                sparsity: 0.5,
                needle_mass: None,
                uniform_entropy: 3.5,
            },
        ],
    };
    att.write_json(&p("attention.json")).unwrap();
    let back = AttentionResult::read_json(&p("attention.json")).unwrap();
    assert_eq!(back.rows[0], att.rows[0]);
    assert!(back.rows[1].entropy.is_nan() && back.rows[1].needle_mass.is_none());
    att.write_csv(&p("attention.csv")).unwrap();
    let text = fs::read_to_string(p("attention.csv")).unwrap();
    assert_eq!(
        text,
        "layer,head,seq_len,entropy,uniform_entropy,sparsity,needle_mass\n0,1,64,1.5,3.5,0.5,0.25\n1,0,64,NaN,3.5,0.5,\n"
    );

    let state = StateResult {
        run: "r".into(),
        rows: vec![StateRow {
            layer: 0,
            mixer: "rwkv".into(),
            seq_len: 1024,
            state_bytes: 4096,
            capacity_ratio: capacity_ratio(4096, 1024),
        }],
    };
    state.write_json(&p("state.json")).unwrap();
    assert_eq!(StateResult::read_json(&p("state.json")).unwrap(), state);
    state.write_csv(&p("state.csv")).unwrap();
    // 4096 B = 32768 bits over 1024·10 = 3.2.
    assert_eq!(
        fs::read_to_string(p("state.csv")).unwrap(),
        "layer,mixer,seq_len,state_bytes,capacity_ratio\n0,rwkv,1024,4096,3.2\n"
    );
}

#[test]
fn atomic_write_replaces_whole_file_and_leaves_no_temp() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.txt");
    write_file_atomic(&path, b"first version, longer").unwrap();
    write_file_atomic(&path, b"second").unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"second");
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("f.txt")]);
    // A destination that is a directory fails and leaves no temp file behind.
    fs::create_dir(dir.path().join("d")).unwrap();
    assert!(write_file_atomic(&dir.path().join("d"), b"x").is_err());
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn read_json_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.json");
    fs::write(&path, "{ not json").unwrap();
    let err = format!("{:#}", MqarResult::read_json(&path).unwrap_err());
    assert!(err.contains("broken.json"), "{err}");
}
