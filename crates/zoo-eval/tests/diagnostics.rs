//! Closed forms of entropy and sparsity, needle mass, and the aggregators.

// `&[a..b]` is a one-span list, which is what these APIs take, not a mistaken range-to-vec.
#![allow(clippy::single_range_in_vec_init)]

use zoo_eval::diagnostics::{
    AttentionAccumulator, RowStats, Welford, entropy, exp_decay_sparsity_closed_form, needle_mass,
    sparsity,
};

fn close(a: f64, b: f64, tol: f64, what: &str) {
    let abs = (a - b).abs();
    let rel = abs / b.abs().max(f64::MIN_POSITIVE);
    assert!(
        abs <= tol || rel <= tol,
        "{what}: got {a}, expected {b} (abs err {abs:e}, rel err {rel:e}, tol {tol:e})"
    );
}

#[test]
fn uniform_rows_have_entropy_ln_n_and_sparsity_one() {
    for n in [1usize, 2, 3, 10, 1000, 4096] {
        let row = vec![1.0 / n as f64; n];
        close(
            entropy(&row),
            (n as f64).ln(),
            1e-12,
            &format!("entropy n={n}"),
        );
        close(sparsity(&row), 1.0, 1e-12, &format!("sparsity n={n}"));
        // f32 rows take the same path.
        let row32 = vec![1.0f32 / n as f32; n];
        close(
            entropy(&row32),
            (n as f64).ln(),
            1e-5,
            &format!("f32 entropy n={n}"),
        );
    }
}

#[test]
fn one_hot_rows_have_entropy_zero_and_sparsity_inv_sqrt_n() {
    for n in [1usize, 2, 7, 64, 5000] {
        let mut row = vec![0.0f64; n];
        row[n / 2] = 1.0;
        assert_eq!(entropy(&row), 0.0, "one-hot entropy n={n}");
        close(
            sparsity(&row),
            1.0 / (n as f64).sqrt(),
            1e-12,
            &format!("n={n}"),
        );
    }
}

#[test]
fn sparsity_is_scale_invariant_and_undefined_for_zero_rows() {
    let row = [0.1, 0.5, 0.2, 0.2];
    let scaled: Vec<f64> = row.iter().map(|a| a * 1e-200).collect();
    close(sparsity(&scaled), sparsity(&row), 1e-12, "scaled row");
    assert!(sparsity::<f64>(&[]).is_nan());
    assert!(sparsity(&[0.0, 0.0]).is_nan());
}

#[test]
fn exponential_decay_matches_closed_form() {
    let mut worst_abs: f64 = 0.0;
    let mut worst_rel: f64 = 0.0;
    for &lambda in &[0.0, 0.1, 0.5, 0.9, 0.99, 0.999, 0.999_999, 1.0, 1.5] {
        for &n in &[1usize, 2, 5, 64, 1000, 10_000] {
            if lambda > 1.0 && n > 1000 {
                continue; // 1.5^9999 overflows the directly built row; checked via S(λ)=S(1/λ) below
            }
            // Weights λ^{n−1}, …, λ, 1 (oldest key first), built directly.
            let row: Vec<f64> = (0..n).map(|i| lambda_pow(lambda, n - 1 - i)).collect();
            let direct = sparsity(&row);
            let closed = exp_decay_sparsity_closed_form(lambda, n);
            let abs = (direct - closed).abs();
            let rel = abs / closed;
            worst_abs = worst_abs.max(abs);
            worst_rel = worst_rel.max(rel);
            assert!(
                rel < 1e-12,
                "λ={lambda} n={n}: direct {direct}, closed form {closed}, abs err {abs:e}, rel err {rel:e}"
            );
        }
    }
    println!("exp-decay sparsity: max abs err {worst_abs:e}, max rel err {worst_rel:e}");
    // The closed form's limits.
    close(
        exp_decay_sparsity_closed_form(0.0, 100),
        0.1,
        1e-15,
        "λ=0 is one-hot",
    );
    close(
        exp_decay_sparsity_closed_form(1.0, 100),
        1.0,
        1e-15,
        "λ=1 is uniform",
    );
    close(
        exp_decay_sparsity_closed_form(1.5, 10_000),
        exp_decay_sparsity_closed_form(1.0 / 1.5, 10_000),
        1e-12,
        "S(λ) = S(1/λ)",
    );
    close(
        exp_decay_sparsity_closed_form(-0.7, 50),
        exp_decay_sparsity_closed_form(0.7, 50),
        1e-15,
        "sign of λ",
    );
}

fn lambda_pow(lambda: f64, k: usize) -> f64 {
    if k == 0 { 1.0 } else { lambda.powi(k as i32) }
}

#[test]
fn needle_mass_sums_the_union_of_ranges() {
    // 10 keys: needle at 3..5 holds 0.6, the rest share 0.4.
    let mut row = vec![0.05f64; 10];
    row[3] = 0.35;
    row[4] = 0.25;
    close(row.iter().sum(), 1.0, 1e-12, "row sums to 1");
    close(needle_mass(&row, &[3..5]), 0.6, 1e-12, "needle");
    // Overlapping ranges count each key once; out-of-row parts are clipped.
    close(
        needle_mass(&row, &[3..5, 4..5, 3..4]),
        0.6,
        1e-12,
        "overlap",
    );
    close(needle_mass(&row, &[8..50]), 0.1, 1e-12, "clipped");
    close(needle_mass(&row, &[0..2, 3..5]), 0.7, 1e-12, "two ranges");
    assert_eq!(needle_mass(&row, &[]), 0.0);
}

#[test]
fn welford_matches_two_pass_and_merges() {
    let xs: Vec<f64> = (0..1000).map(|i| 1e6 + (i as f64 * 0.37).sin()).collect();
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    let mut all = Welford::new();
    let (mut a, mut b) = (Welford::new(), Welford::new());
    for (i, &x) in xs.iter().enumerate() {
        all.push(x);
        if i < 300 { a.push(x) } else { b.push(x) }
    }
    a.merge(&b);
    close(all.mean(), mean, 1e-12, "mean");
    close(all.variance(), var, 1e-8, "variance");
    close(a.mean(), mean, 1e-12, "merged mean");
    close(a.variance(), var, 1e-8, "merged variance");
    assert_eq!(a.count(), 1000);
    all.push(f64::NAN);
    assert_eq!(all.count(), 1000, "NaN ignored");
}

#[test]
fn row_stats_average_rows_and_build_attention_rows() {
    let mut s = RowStats::new();
    // Causal rows of lengths 1..=4: the i-th is uniform over i keys, needle at key 0.
    for n in 1..=4usize {
        let row = vec![1.0f32 / n as f32; n];
        s.push(&row, Some(&[0..1]));
    }
    let want_entropy = (1..=4).map(|n| (n as f64).ln()).sum::<f64>() / 4.0;
    close(s.mean_entropy(), want_entropy, 1e-6, "mean entropy");
    close(s.mean_sparsity(), 1.0, 1e-6, "mean sparsity");
    let want_needle = (1..=4).map(|n| 1.0 / n as f64).sum::<f64>() / 4.0;
    close(s.mean_needle_mass().unwrap(), want_needle, 1e-6, "needle");
    close(
        s.uniform_entropy(),
        2.5f64.ln(),
        1e-12,
        "ln mean row length",
    );
    assert_eq!(s.rows(), 4);

    let mut acc = AttentionAccumulator::new();
    let mut other = AttentionAccumulator::new();
    acc.push(1, 0, 128, &[0.5f64, 0.5], None);
    other.push(1, 0, 128, &[1.0f64, 0.0], None);
    other.push(0, 3, 128, &[1.0f64], None);
    acc.merge(&other);
    let rows = acc.rows();
    assert_eq!(rows.len(), 2);
    assert_eq!((rows[0].layer, rows[0].head), (0, 3), "sorted by layer");
    let r = &rows[1];
    close(r.entropy, 2f64.ln() / 2.0, 1e-12, "merged entropy");
    close(
        r.sparsity,
        (1.0 + 1.0 / 2f64.sqrt()) / 2.0,
        1e-12,
        "merged sparsity",
    );
    assert_eq!(r.needle_mass, None);
    close(r.uniform_entropy, 2f64.ln(), 1e-12, "uniform entropy");
}
