//! Elementwise math for the CPU kernels, written so LLVM vectorises it, and compiled three times
//! (AVX-512, AVX2+FMA, baseline) with the widest one the running CPU supports picked at run time
//! (`ZOO_CPU_ISA=avx2|baseline` caps the choice, so one machine can test and time the paths of
//! others). The baseline copy on x86-64 multiplies and adds where the others fuse (`unfused`):
//! without the FMA instruction `f32::mul_add` is a libm call per element.
//!
//! Why not `f32::exp`: it is a scalar libm call (~20 cycles); the attention kernels evaluate
//! n²/2 exponentials per head and pass, so a polynomial that vectorises is most of their speed.
//!
//! - `exp`: Cody–Waite range reduction x = k·ln2 + r, |r| ≤ ln2/2, then the degree-6 minimax
//!   polynomial of e^r from Cephes' expf (relative error ≤ 3e-7 over the clamped range), and
//!   2^k assembled in the exponent bits. Inputs are clamped to [−87.3, 88.3] (no inf/denormals).
//! - `erf_abs_with`: Abramowitz & Stegun 7.1.26, erf(x) = 1 − (a₁t + … + a₅t⁵)·e^{−x²},
//!   t = 1/(1 + p|x|), absolute error ≤ 1.5e-7 in exact arithmetic (≤ 4e-7 evaluated in f32).

use std::mem::MaybeUninit;

/// Compile `$body` (a block using the inputs) once per instruction set and dispatch at run time.
/// The inner function is `#[inline(always)]` generic code, so each copy is vectorised for its ISA.
/// The x86-64 baseline copy (CPUs without FMA) sees [`unfused`] as `simd` and its `exp` as `exp`,
/// so the same body multiplies and adds there instead of calling libm's software `fmaf`; a body
/// writes its multiply-adds as `simd::madd`.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            $(#[$meta])*
            fn generic($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(not(target_arch = "x86_64"))]
            return generic($($arg),*);

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                $(#[$meta])*
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                $(#[$meta])*
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    generic($($arg),*)
                }
                #[inline(always)]
                $(#[$meta])*
                fn baseline($($arg: $ty),*) $(-> $ret)? {
                    #[allow(unused_imports)]
                    use $crate::kernels::simd::unfused::{self as simd, exp};
                    #[inline(always)]
                    $(#[$meta])*
                    fn unfused_body($($arg: $ty),*) $(-> $ret)? $body
                    unfused_body($($arg),*)
                }
                return match $crate::kernels::simd::isa() {
                    // SAFETY: `isa()` never names more than the CPU supports, so it has the
                    // features the function was compiled for.
                    $crate::kernels::simd::Isa::Avx512 => unsafe { avx512($($arg),*) },
                    // SAFETY: as above.
                    $crate::kernels::simd::Isa::Avx2Fma => unsafe { avx2($($arg),*) },
                    $crate::kernels::simd::Isa::Baseline => baseline($($arg),*),
                };
            }
        }
    };
}
pub(crate) use multiversion;

/// The instruction sets the kernels are compiled for, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// The target's baseline (SSE2 on x86-64; NEON on aarch64, where it is always present).
    Baseline,
    Avx2Fma,
    Avx512,
}

/// The environment variable that caps the instruction set the kernels dispatch to, so that one
/// machine can run (and test, and time) the narrower paths other CPUs take: `avx512`, `avx2` or
/// `baseline`. A cap above what the CPU has changes nothing.
const ISA_ENV: &str = "ZOO_CPU_ISA";

/// `ZOO_CPU_ISA` read: `Ok(None)` when unset or empty, an error naming the accepted values
/// otherwise.
pub fn isa_cap() -> Result<Option<Isa>, String> {
    let value = match std::env::var_os(ISA_ENV) {
        None => return Ok(None),
        Some(value) => value,
    };
    match value
        .to_str()
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        Some("") => Ok(None),
        Some("avx512" | "avx-512") => Ok(Some(Isa::Avx512)),
        Some("avx2" | "avx2+fma") => Ok(Some(Isa::Avx2Fma)),
        Some("baseline") => Ok(Some(Isa::Baseline)),
        _ => Err(format!(
            "{ISA_ENV}={value:?} is not an instruction set the kernels have; use avx512, avx2 or \
             baseline, or unset it to use the widest this CPU supports"
        )),
    }
}

/// The widest instruction set this CPU supports.
fn detected_isa() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        // The AVX-512 copies are compiled with AVX2 and FMA enabled too.
        let avx2_fma = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        if avx2_fma && std::arch::is_x86_feature_detected!("avx512f") {
            return Isa::Avx512;
        }
        if avx2_fma {
            return Isa::Avx2Fma;
        }
    }
    Isa::Baseline
}

/// The instruction set every multiversioned kernel (and the AVX-512 register blocks of
/// tile_gemm.rs) dispatches to: the widest the CPU supports, capped by `ZOO_CPU_ISA`; decided
/// once per process. An unreadable cap panics with the message of [`isa_cap`] (the `zoo` binary
/// checks it before any kernel runs, and exits with that one line instead).
pub fn isa() -> Isa {
    static CHOSEN: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *CHOSEN.get_or_init(|| {
        let detected = detected_isa();
        match isa_cap() {
            Ok(cap) => cap.map_or(detected, |cap| cap.min(detected)),
            Err(message) => panic!("{message}"),
        }
    })
}

/// The instruction set `multiversion!` dispatches to on this CPU: "AVX-512", "AVX2+FMA",
/// "NEON" (every aarch64 CPU; the baseline build vectorises with it) or "baseline".
pub fn isa_path() -> &'static str {
    match isa() {
        Isa::Avx512 => "AVX-512",
        Isa::Avx2Fma => "AVX2+FMA",
        Isa::Baseline if cfg!(target_arch = "aarch64") => "NEON",
        Isa::Baseline => "baseline",
    }
}

const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 split so that k·LN2_HI is exact in f32 for |k| < 2^9.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;

/// a·b + c: one fused multiply-add where `FUSED` (every copy compiled for a CPU with FMA, and
/// aarch64), a product and a sum otherwise. Without the FMA instruction `f32::mul_add` is a
/// call to libm's `fmaf` per element (exactly rounded in software): on the x86-64 baseline path
/// those calls were 40 % of a training step and `floorf`'s another 10 % (`perf`, machine D with
/// `ZOO_CPU_ISA=baseline`).
#[inline(always)]
fn madd_with<const FUSED: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FUSED { a.mul_add(b, c) } else { a * b + c }
}

/// Whether this module's helpers fuse their multiply-adds (`false` in [`unfused`]): a kernel's
/// own helper that multiplies and adds takes it as a const parameter, `helper::<{ simd::FUSED }>`,
/// so that it follows the copy it is called from.
pub const FUSED: bool = true;

/// a·b + c as one fused multiply-add (see [`unfused`] for the copies compiled without FMA).
#[inline(always)]
pub fn madd(a: f32, b: f32, c: f32) -> f32 {
    madd_with::<true>(a, b, c)
}

/// e^x for x in [−87.3, 88.3] (clamped outside; 88.3 keeps 2^k finite), relative error ≤ 3e-7.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_with::<true>(x)
}

/// [`exp`] with its multiply-adds fused (`FUSED`, where the CPU has FMA) or not.
#[inline(always)]
pub fn exp_with<const FUSED: bool>(x: f32) -> f32 {
    const ROUNDER: f32 = 12_582_912.0; // 1.5·2²³
    let x = x.clamp(-87.3, 88.3);
    // The nearest integer k of x / ln2 by adding and removing 1.5·2²³ (|x / ln2| < 2²²), which
    // leaves k in the low mantissa bits: no `floor` (a libm call where SSE4.1 is missing) and
    // no `as i32` (Rust's saturating float→int cast does not vectorise: per-lane NaN and range
    // checks).
    let shifted = x * LOG2_E + ROUNDER;
    let k = shifted - ROUNDER;
    let r = x - k * LN2_HI - k * LN2_LO; // |r| ≤ ln2 / 2
    let mut p = 1.987_569_1e-4_f32;
    p = madd_with::<FUSED>(p, r, 1.398_199_9e-3);
    p = madd_with::<FUSED>(p, r, 8.333_452e-3);
    p = madd_with::<FUSED>(p, r, 4.166_579_6e-2);
    p = madd_with::<FUSED>(p, r, 1.666_666_5e-1);
    p = madd_with::<FUSED>(p, r, 0.5);
    let e_r = madd_with::<FUSED>(p * r, r, r) + 1.0;
    let k_int = shifted.to_bits().wrapping_sub(0x4B40_0000);
    let two_k = f32::from_bits(k_int.wrapping_add(127) << 23);
    e_r * two_k
}

/// erf(a) for a ≥ 0 given e = e^{−a²} (callers often need that exponential themselves),
/// absolute error ≤ 4e-7 in f32; `FUSED` as for [`exp_with`].
#[inline(always)]
pub fn erf_abs_with<const FUSED: bool>(a: f32, exp_neg_a2: f32) -> f32 {
    let t = 1.0 / madd_with::<FUSED>(0.327_591_1, a, 1.0);
    let mut p = 1.061_405_4_f32;
    p = madd_with::<FUSED>(p, t, -1.453_152_1);
    p = madd_with::<FUSED>(p, t, 1.421_413_7);
    p = madd_with::<FUSED>(p, t, -0.284_496_74);
    p = madd_with::<FUSED>(p, t, 0.254_829_6);
    1.0 - p * t * exp_neg_a2
}

/// The helpers above with a product and a sum in place of each fused multiply-add (everything
/// else re-exported unchanged), for the copies `multiversion!` compiles for x86-64 CPUs without
/// FMA, where `f32::mul_add` is a libm call per element.
// Only x86-64 has FMA-less copies; elsewhere this module is for the tests alone.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_imports))]
pub mod unfused {
    pub use super::*;

    pub const FUSED: bool = false;

    #[inline(always)]
    pub fn madd(a: f32, b: f32, c: f32) -> f32 {
        super::madd_with::<false>(a, b, c)
    }

    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        super::exp_with::<false>(x)
    }

    #[inline(always)]
    pub fn dot(x: &[f32], y: &[f32]) -> f32 {
        super::dot_with::<false>(x, y)
    }

    #[inline(always)]
    pub fn row_dots(m: &[f32], x: &[f32], out: &mut [f32]) {
        super::row_dots_with::<false>(m, x, out)
    }

    #[inline(always)]
    pub fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
        super::sum_sq_dev_with::<false>(x, m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_f64_within_its_bound() {
        // Both forms: fused multiply-adds (CPUs with FMA) and products and sums (without).
        for (form, exp) in [
            ("fused", exp_with::<true> as fn(f32) -> f32),
            ("unfused", exp_with::<false>),
        ] {
            let mut worst = 0.0f64;
            for i in -8700..=8830 {
                let x = i as f32 * 0.01;
                let want = (x as f64).exp();
                let rel = ((exp(x) as f64 - want) / want).abs();
                worst = worst.max(rel);
            }
            assert!(worst < 3e-7, "{form} exp max relative error {worst:e}");
            assert_eq!(exp(f32::NEG_INFINITY), exp(-87.3));
            assert!(exp(-1000.0) < 1e-37);
        }
    }

    #[test]
    fn erf_matches_f64_within_its_bound() {
        // Reference: the erf series / continued fraction via libm is not in std; integrate
        // 2/√π e^{-t²} with Simpson's rule in f64 (error far below 1e-10 at this step).
        let erf_ref = |x: f64| {
            let n = 2000;
            let h = x / n as f64;
            let f = |t: f64| (-t * t).exp();
            let mut s = f(0.0) + f(x);
            for i in 1..n {
                s += f(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
            }
            s * h / 3.0 * 2.0 / std::f64::consts::PI.sqrt()
        };
        let fused = |a: f32| erf_abs_with::<true>(a, exp_with::<true>(-a * a));
        let unfused = |a: f32| erf_abs_with::<false>(a, exp_with::<false>(-a * a));
        for (form, erf_abs) in [
            ("fused", &fused as &dyn Fn(f32) -> f32),
            ("unfused", &unfused),
        ] {
            let mut worst = 0.0f64;
            for i in -600..=600 {
                let x = i as f32 * 0.01;
                let erf = erf_abs(x.abs()).copysign(x);
                worst = worst.max((erf as f64 - erf_ref(x as f64)).abs());
            }
            assert!(worst < 4e-7, "{form} erf max absolute error {worst:e}");
        }
    }
}

/// Elements per parallel task of the elementwise kernels.
const MAP_CHUNK: usize = 1 << 14;

/// y = f(x) chunk by chunk in parallel (`f` is a multiversioned chunk kernel that writes every
/// value of its output). The output is not zero-filled first: a memset pass over a buffer the
/// size of the input saved per call.
pub fn par_map(x: &[f32], f: fn(&[f32], &mut [MaybeUninit<f32>])) -> Vec<f32> {
    use rayon::prelude::*;
    let mut y = Vec::with_capacity(x.len());
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(MAP_CHUNK)
        .zip(x.par_chunks(MAP_CHUNK))
        .for_each(|(y, x)| f(x, y));
    // SAFETY: `f` wrote all x.len() values (its contract).
    unsafe { y.set_len(x.len()) };
    y
}

/// dx = f(x, dy) chunk by chunk in parallel (the backward of an elementwise map), as `par_map`.
pub fn par_map2(x: &[f32], dy: &[f32], f: fn(&[f32], &[f32], &mut [MaybeUninit<f32>])) -> Vec<f32> {
    use rayon::prelude::*;
    assert_eq!(x.len(), dy.len());
    let mut dx = Vec::with_capacity(x.len());
    dx.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(MAP_CHUNK)
        .zip(x.par_chunks(MAP_CHUNK).zip(dy.par_chunks(MAP_CHUNK)))
        .for_each(|(dx, (x, dy))| f(x, dy, dx));
    // SAFETY: `f` wrote all x.len() values (its contract).
    unsafe { dx.set_len(x.len()) };
    dx
}

/// Lanes of the split accumulators below: without fast-math LLVM keeps a single running sum in
/// program order (scalar); 16 independent partial sums let it use one vector register.
const LANES: usize = 16;

/// Σ of the partial sums as a tree (8 + 8, 4 + 4, 2 + 2, 1 + 1): vector adds and shuffles
/// instead of 15 dependent scalar additions in lane order, which cost more than the sixteen
/// multiply-adds of a 32-wide dot product did.
#[inline(always)]
fn reduce(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// Σ x, vectorisable.
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    reduce(acc) + tail
}

/// max x (−∞ for an empty slice), vectorisable.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    acc.iter().fold(tail, |m, &v| m.max(v))
}

/// x·y, vectorisable.
#[inline(always)]
pub fn dot(x: &[f32], y: &[f32]) -> f32 {
    dot_with::<true>(x, y)
}

#[inline(always)]
fn dot_with<const FUSED: bool>(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let (xc, yc) = (x.chunks_exact(LANES), y.chunks_exact(LANES));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(yc.remainder())
        .map(|(a, b)| a * b)
        .sum();
    for (a, b) in xc.zip(yc) {
        for ((s, &u), &v) in acc.iter_mut().zip(a).zip(b) {
            *s = madd_with::<FUSED>(u, v, *s);
        }
    }
    reduce(acc) + tail
}

/// out[i] = row i of the row-major matrix `m` [out.len(), x.len()] · x. On AVX2 (and AVX-512
/// machines, which have it too) eight rows at a time, their eight vector sums folded into one
/// vector by a horizontal-add tree: ~1 instruction per row for the horizontal sums where
/// separate dot products pay ~5.
#[inline(always)]
pub fn row_dots(m: &[f32], x: &[f32], out: &mut [f32]) {
    row_dots_with::<true>(m, x, out)
}

#[inline(always)]
fn row_dots_with<const FUSED: bool>(m: &[f32], x: &[f32], out: &mut [f32]) {
    let cols = x.len();
    assert!(m.len() >= out.len() * cols, "row_dots: matrix too short");
    #[cfg(target_arch = "x86_64")]
    if cols.is_multiple_of(8) && isa() >= Isa::Avx2Fma {
        // SAFETY: the CPU has AVX2 and FMA (`isa()`); the bounds were checked above.
        unsafe { row_dots_avx2(m, x, out) };
        return;
    }
    // Indexed rather than `chunks_exact(cols)`, which panics for empty rows (cols = 0, where
    // every dot product is 0).
    for (i, o) in out.iter_mut().enumerate() {
        *o = dot_with::<FUSED>(&m[i * cols..][..cols], x);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_dots_avx2(m: &[f32], x: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let (cols, rows) = (x.len(), out.len());
    let mut r = 0;
    while r + 8 <= rows {
        // SAFETY (all loads/stores): rows r..r+8 and columns j..j+8 lie inside `m`, `x` and
        // `out` (cols is a multiple of 8; m.len() ≥ rows·cols).
        unsafe {
            let mut acc = [_mm256_setzero_ps(); 8];
            for j in (0..cols).step_by(8) {
                let xv = _mm256_loadu_ps(x.as_ptr().add(j));
                for (i, a) in acc.iter_mut().enumerate() {
                    let mv = _mm256_loadu_ps(m.as_ptr().add((r + i) * cols + j));
                    *a = _mm256_fmadd_ps(mv, xv, *a);
                }
            }
            // Per 128-bit half: h01 = [r0 01, r0 23, r1 01, r1 23 | the same of lanes 4..7], …
            let h01 = _mm256_hadd_ps(acc[0], acc[1]);
            let h23 = _mm256_hadd_ps(acc[2], acc[3]);
            let h45 = _mm256_hadd_ps(acc[4], acc[5]);
            let h67 = _mm256_hadd_ps(acc[6], acc[7]);
            // [rows 0..3 over lanes 0..3 | rows 0..3 over lanes 4..7], and rows 4..7.
            let h0123 = _mm256_hadd_ps(h01, h23);
            let h4567 = _mm256_hadd_ps(h45, h67);
            let low = _mm256_permute2f128_ps(h0123, h4567, 0x20);
            let high = _mm256_permute2f128_ps(h0123, h4567, 0x31);
            _mm256_storeu_ps(out.as_mut_ptr().add(r), _mm256_add_ps(low, high));
        }
        r += 8;
    }
    for (i, o) in out.iter_mut().enumerate().skip(r) {
        *o = dot(&m[i * cols..][..cols], x);
    }
}

/// Σ (x − m)², vectorisable (two-pass variance: no cancellation when |m| ≫ spread).
#[inline(always)]
pub fn sum_sq_dev(x: &[f32], m: f32) -> f32 {
    sum_sq_dev_with::<true>(x, m)
}

#[inline(always)]
fn sum_sq_dev_with<const FUSED: bool>(x: &[f32], m: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|&v| (v - m) * (v - m)).sum();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = madd_with::<FUSED>(v - m, v - m, *a);
        }
    }
    reduce(acc) + tail
}

#[cfg(test)]
mod reduction_tests {
    use super::*;

    #[test]
    fn reductions_match_plain_loops() {
        for n in [0usize, 1, 8, 15, 16, 17, 24, 32, 100] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.25)
                .collect();
            let y: Vec<f32> = (0..n).map(|i| ((i * 11 % 7) as f32 - 3.0) * 0.5).collect();
            let want_sum: f64 = x.iter().map(|&v| v as f64).sum();
            let want_dot: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            let want_max = x.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert!((sum(&x) as f64 - want_sum).abs() < 1e-4, "sum n={n}");
            assert_eq!(max(&x), want_max, "max n={n}");
            // The forms with fused multiply-adds and without (`unfused`, CPUs without FMA).
            type Dot = fn(&[f32], &[f32]) -> f32;
            type RowDots = fn(&[f32], &[f32], &mut [f32]);
            type SumSqDev = fn(&[f32], f32) -> f32;
            let forms: [(&str, Dot, RowDots, SumSqDev); 2] = [
                ("fused", dot, row_dots, sum_sq_dev),
                (
                    "unfused",
                    unfused::dot,
                    unfused::row_dots,
                    unfused::sum_sq_dev,
                ),
            ];
            for (form, dot, row_dots, sum_sq_dev) in forms {
                assert!(
                    (dot(&x, &y) as f64 - want_dot).abs() < 1e-4,
                    "{form} dot n={n}"
                );
                // Rows 0..n of a matrix whose row i is x rotated by i, against y.
                let m: Vec<f32> = (0..n * n).map(|i| x[(i / n + i % n) % n]).collect();
                let mut out = vec![0.0f32; n];
                row_dots(&m, &y, &mut out);
                for (i, o) in out.iter().enumerate() {
                    let want: f64 = (0..n).map(|j| x[(i + j) % n] as f64 * y[j] as f64).sum();
                    assert!(
                        (*o as f64 - want).abs() < 1e-4,
                        "{form} row_dots n={n} row {i}"
                    );
                }
                let m = 0.3f32;
                let want_dev: f64 = x.iter().map(|&v| (v as f64 - m as f64).powi(2)).sum();
                assert!(
                    (sum_sq_dev(&x, m) as f64 - want_dev).abs() < 1e-4,
                    "{form} sum_sq_dev n={n}"
                );
            }
        }
    }
}
