//! Inverted dropout: in training each value is kept with probability `1 - rate` and scaled by
//! `1 / (1 - rate)`, so evaluation needs no rescaling (Keras and PyTorch both do this).
//! The mask holds `0` or `1 / (1 - rate)`; forward and backward are the same product.
//! Reference twins: [`dropout_mask_ref`], [`apply_mask_ref`].

use crate::simd::{load, store, LANES};

/// Uniform in `[0, 1)` for position `i` of the stream `key`: SplitMix64's output function
/// (Steele, Lea & Flood 2014) applied to `key + (i + 1) * golden_gamma`. A counter-based
/// generator: any position can be drawn on its own, so a mask can be filled in parallel
/// chunks and still depend only on the key, never on the number of threads.
#[inline]
pub fn uniform_at(key: u64, i: u64) -> f32 {
    let mut z = key.wrapping_add(i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Fills `mask` with positions `offset..offset + mask.len()` of the stream `key`: each value
/// is 0 with probability `rate`, else `1 / (1 - rate)`.
///
/// # Panics
/// When `rate` is not in `[0, 1)`.
pub fn dropout_mask(rate: f32, key: u64, offset: usize, mask: &mut [f32]) {
    assert!((0.0..1.0).contains(&rate), "dropout: rate {rate} is not in [0, 1)");
    let keep = 1.0 / (1.0 - rate);
    for (i, m) in mask.iter_mut().enumerate() {
        *m = if uniform_at(key, (offset + i) as u64) < rate { 0.0 } else { keep };
    }
}

/// Reference twin of [`dropout_mask`]: position by position, written as a `map`.
pub fn dropout_mask_ref(rate: f32, key: u64, offset: usize, len: usize) -> Vec<f32> {
    (offset..offset + len)
        .map(|i| if uniform_at(key, i as u64) < rate { 0.0 } else { 1.0 / (1.0 - rate) })
        .collect()
}

/// `y = x * mask` (forward), or with `accumulate`, `y += x * mask` (backward: `dx += dy * mask`).
pub fn apply_mask(x: &[f32], mask: &[f32], y: &mut [f32], accumulate: bool) {
    assert!(x.len() == mask.len() && x.len() == y.len(), "dropout: lengths differ");
    let mut xc = x.chunks_exact(LANES);
    let mut mc = mask.chunks_exact(LANES);
    let mut yc = y.chunks_exact_mut(LANES);
    for ((xs, ms), ys) in (&mut xc).zip(&mut mc).zip(&mut yc) {
        let p = load(xs) * load(ms);
        store(if accumulate { load(ys) + p } else { p }, ys);
    }
    for ((&xv, &mv), yv) in xc.remainder().iter().zip(mc.remainder()).zip(yc.into_remainder()) {
        *yv = if accumulate { *yv + xv * mv } else { xv * mv };
    }
}

/// Reference twin of [`apply_mask`]: one element at a time.
pub fn apply_mask_ref(x: &[f32], mask: &[f32], y: &mut [f32], accumulate: bool) {
    for i in 0..x.len() {
        let p = x[i] * mask[i];
        y[i] = if accumulate { y[i] + p } else { p };
    }
}
