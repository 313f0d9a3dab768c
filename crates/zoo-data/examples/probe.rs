use std::path::Path;
use rand::SeedableRng;
use zoo_data::needle::*;
use zoo_data::*;
fn main() {
    let task = TaskConfig::Needle(NeedleConfig { num_queries: 3, num_values: 3, num_distractors: 3, ..Default::default() }).build(Path::new(".")).unwrap();
    let t = task.tokenizer().unwrap();
    println!("vocab {}", t.vocab_size());
    for s in [" The special magic number for amber-falcon is: 12345.", " What are the special magic numbers for ruby-yak, zesty-ocelot and wintry-urchin?", " The grey sailor repaired the ladder beside the harbor."] {
        let ids = t.encode(s);
        let toks: Vec<String> = ids.iter().map(|&i| t.id_to_token(i).unwrap()).collect();
        println!("{} {:?}", ids.len(), toks);
    }
    let n = task.as_needle().unwrap();
    for v in NeedleVariant::ALL { println!("{v} {}", n.min_seq_len_for(v)); }
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let s = task.needle_sample(300, 0.5, NeedleVariant::MultiQuery, &mut r).unwrap();
    println!("{}", t.decode(&s.inputs));
    let t0 = std::time::Instant::now();
    let _ = TaskConfig::Needle(NeedleConfig::default()).build(Path::new(".")).unwrap();
    println!("build {:?}", t0.elapsed());
    let t0 = std::time::Instant::now();
    for _ in 0..100 { task.sample(2048, &mut r).unwrap(); }
    println!("100 samples @2048 {:?}", t0.elapsed());
}
