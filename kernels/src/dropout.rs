//! Inverted dropout: in training each value is kept with probability `1 - rate` and scaled by
//! `1 / (1 - rate)`, so evaluation needs no rescaling (Keras and PyTorch both do this).
//! The mask holds `0` or `1 / (1 - rate)`; forward and backward are the same product.
//! Reference twins: [`dropout_mask_ref`], [`apply_mask_ref`].

use crate::rng::Rng;
use crate::simd::{load, store, LANES};

/// Fills `mask` from `rng`, one uniform draw per value, in order (so the mask depends only on
/// the generator's state, never on threads).
///
/// # Panics
/// When `rate` is not in `[0, 1)`.
pub fn dropout_mask(rate: f32, rng: &mut Rng, mask: &mut [f32]) {
    assert!((0.0..1.0).contains(&rate), "dropout: rate {rate} is not in [0, 1)");
    let keep = 1.0 / (1.0 - rate);
    for m in mask.iter_mut() {
        *m = if rng.next_f32() < rate { 0.0 } else { keep };
    }
}

/// Reference twin of [`dropout_mask`]: the same draws, written as a `map`.
pub fn dropout_mask_ref(rate: f32, rng: &mut Rng, len: usize) -> Vec<f32> {
    (0..len).map(|_| if rng.next_f32() < rate { 0.0 } else { 1.0 / (1.0 - rate) }).collect()
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
