use std::time::Instant;
use zoo_model::kernels::chunked_linear_attention::{self as cla, QkvSizes, SavedRef};

fn main() {
    let sizes = QkvSizes {
        batch: 16,
        seq: 512,
        heads: 4,
        feature_dim: 32,
        value_dim: 32,
        chunk: 64,
    };
    let len = 16 * 512 * 4 * 96;
    let qkv: Vec<f32> = (0..len)
        .map(|i| ((i * 2654435761usize) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let grad: Vec<f32> = (0..16 * 512 * 128)
        .map(|i| ((i * 40503usize) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    let (mut tf, mut tb) = (vec![], vec![]);
    for it in 0..25 {
        let t = Instant::now();
        let (out, phi, saved) = cla::forward_qkv(&qkv, sizes, true, 1e-6);
        let t1 = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let d = cla::backward_qkv(
            &qkv,
            &phi,
            &out,
            SavedRef {
                den: &saved.den,
                s_prev: &saved.s_prev,
                z_prev: &saved.z_prev,
            },
            &grad,
            sizes,
            true,
            1e-6,
        );
        let t2 = t.elapsed().as_secs_f64();
        std::hint::black_box(d);
        if it >= 5 {
            tf.push(t1);
            tb.push(t2);
        }
    }
    tf.sort_by(|a, b| a.partial_cmp(b).unwrap());
    tb.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "forward {:.2} ms  backward {:.2} ms",
        tf[10] * 1e3,
        tb[10] * 1e3
    );
}
