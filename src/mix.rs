//! Mixup and CutMix: each training image blended with another image of its batch, and its
//! loss with that image's label, in the same proportion.
//!
//! - **Mixup** (Zhang et al. 2018): `x = lam * x_i + (1 - lam) * x_j`, the whole image.
//! - **CutMix** (Yun et al. 2019): a box of `x_j` pasted over `x_i`. The box is `H sqrt(1 -
//!   lam)` by `W sqrt(1 - lam)` around a centre uniform over the image, clipped at the edges;
//!   `lam` becomes the share of `x_i` left, `1 - box area / (H W)`.
//!
//! In both the loss is `lam * CE(z, y_i) + (1 - lam) * CE(z, y_j)`: cross-entropy is linear
//! in its target, so this is the loss against the mixed target `lam t_i + (1 - lam) t_j`
//! (`ops::softmax_cross_entropy_mixed`).
//!
//! As timm's `Mixup` does, one `lam ~ Beta(alpha, alpha)` is drawn per batch, and image `i`
//! of a batch of `n` is paired with image `n - 1 - i` (the batch reversed; the batches are
//! shuffled anyway). With both on, each batch picks one of the two with probability 1/2.
//! Mixing acts on the normalised `f32` batch: the normalisation is affine, so mixing before
//! or after it is the same blend, and no rounding to bytes comes in between.
//!
//! Draws, per batch, from the on-the-fly augmentation stream after the batch's other
//! augmentation: the choice between the two (only when both are on), then `lam`, then for
//! CutMix the box's centre row and column. With mixing off nothing is drawn, so runs without
//! it keep their bits.

use kernels::Rng;
use serde::{Deserialize, Serialize};

/// Mixup and CutMix, each with its `Beta(alpha, alpha)` (0 = off). The default is off.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchMix {
    /// Mixup's alpha (timm's default 0.8; 0.2 to 0.4 in the paper's ImageNet runs).
    pub mixup: f32,
    /// CutMix's alpha (the paper's 1.0: `lam` uniform).
    pub cutmix: f32,
}

/// The largest alpha accepted: Beta(10, 10) already keeps `lam` within 0.5 +- 0.25 most of
/// the time.
pub const MAX_ALPHA: f32 = 10.0;

impl BatchMix {
    /// Whether any batch gets mixed.
    pub fn is_off(&self) -> bool {
        self.mixup == 0.0 && self.cutmix == 0.0
    }

    /// Checks the knobs; the message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        for (name, a) in [("mixup", self.mixup), ("cutmix", self.cutmix)] {
            if !(0.0..=MAX_ALPHA).contains(&a) {
                return Err(format!("{name} alpha {a} is not in [0, {MAX_ALPHA}] (0: off)"));
            }
        }
        Ok(())
    }
}

/// A `Gamma(shape, 1)` variate, `shape > 0`: Marsaglia and Tsang's method (2000) for
/// `shape >= 1`; below 1, `Gamma(shape + 1) * U^(1/shape)`.
pub fn gamma(shape: f64, rng: &mut Rng) -> f64 {
    assert!(shape > 0.0, "gamma: shape {shape} must be positive");
    if shape < 1.0 {
        let u = (rng.next_f32() as f64).max(f64::MIN_POSITIVE);
        return gamma(shape + 1.0, rng) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal() as f64;
        let v = (1.0 + c * x).powi(3);
        if v <= 0.0 {
            continue;
        }
        let u = rng.next_f32() as f64;
        if u.ln() < 0.5 * x * x + d - d * v + d * v.ln() {
            return d * v;
        }
    }
}

/// A `Beta(alpha, alpha)` variate: `G1 / (G1 + G2)` of two `Gamma(alpha)` variates.
pub fn beta_symmetric(alpha: f32, rng: &mut Rng) -> f32 {
    let g1 = gamma(alpha as f64, rng);
    let g2 = gamma(alpha as f64, rng);
    if g1 + g2 == 0.0 {
        return 0.5; // both underflowed (tiny alpha): either image, equally likely
    }
    (g1 / (g1 + g2)) as f32
}

/// CutMix's box for `lam` around the centre `(cy, cx)`: rows `y0..y1`, columns `x0..x1`, the
/// `H sqrt(1 - lam)` by `W sqrt(1 - lam)` box (rounded down) clipped to the image, as the
/// paper's code (`rand_bbox`) computes it.
pub fn cutmix_box(rows: usize, cols: usize, lam: f32, cy: usize, cx: usize) -> (usize, usize, usize, usize) {
    let cut = (1.0 - lam as f64).max(0.0).sqrt();
    let (h, w) = ((rows as f64 * cut) as usize, (cols as f64 * cut) as usize);
    let (y0, y1) = (cy.saturating_sub(h / 2), (cy + h / 2).min(rows));
    let (x0, x1) = (cx.saturating_sub(w / 2), (cx + w / 2).min(cols));
    (y0, y1, x0, x1)
}

/// The pairs `(i, n-1-i)` of a batch of `n` images of `p` values, `i < n-1-i`, as two
/// disjoint mutable images each (the middle image of an odd batch is its own partner and is
/// left out: blending or pasting it with itself changes nothing).
fn pairs(x: &mut [f32], n: usize, p: usize) -> impl Iterator<Item = (&mut [f32], &mut [f32])> {
    let (front, back) = x.split_at_mut(n / 2 * p);
    let back_start = back.len() - n / 2 * p; // skips the middle image of an odd batch
    front.chunks_exact_mut(p).zip(back[back_start..].chunks_exact_mut(p).rev())
}

/// Mixup of a batch: `x[i] = lam x[i] + (1 - lam) x[n-1-i]` for every image at once, pair by
/// pair in place (each pair read before either is written).
///
/// # Shapes
/// `x`: `[n, pixels]`, `pixels` values an image.
pub fn mixup(x: &mut [f32], n: usize, lam: f32) {
    assert!(n > 0 && x.len().is_multiple_of(n), "mixup: {} values are not {n} images", x.len());
    let p = x.len() / n;
    for (a, b) in pairs(x, n, p) {
        for (u, v) in a.iter_mut().zip(b.iter_mut()) {
            (*u, *v) = (lam * *u + (1.0 - lam) * *v, lam * *v + (1.0 - lam) * *u);
        }
    }
}

/// CutMix of a batch with one box (rows `y0..y1`, columns `x0..x1`): image `i` takes the
/// box's pixels from image `n-1-i`, which is a swap of the box between the two. Returns the
/// share of each image left, `1 - box area / (rows cols)`.
///
/// # Shapes
/// `x`: `[n, rows, cols]`.
pub fn cutmix(x: &mut [f32], n: usize, rows: usize, cols: usize, bx: (usize, usize, usize, usize)) -> f32 {
    assert_eq!(x.len(), n * rows * cols, "cutmix: not {n} images of {rows}x{cols}");
    let (y0, y1, x0, x1) = bx;
    assert!(y0 <= y1 && y1 <= rows && x0 <= x1 && x1 <= cols, "cutmix: box {bx:?} outside {rows}x{cols}");
    let p = rows * cols;
    for (a, b) in pairs(x, n, p) {
        for y in y0..y1 {
            a[y * cols + x0..y * cols + x1].swap_with_slice(&mut b[y * cols + x0..y * cols + x1]);
        }
    }
    1.0 - ((y1 - y0) * (x1 - x0)) as f32 / p as f32
}

/// Mixes the normalised batch `x` (`[n, rows, cols]`) as `cfg` asks, drawing from `rng` in
/// the order the module docs give. Returns `lam`, the share of each image that is its own
/// (the rest is image `n-1-i`'s); `None`, with nothing drawn, when mixing is off.
pub fn mix_batch(
    x: &mut [f32],
    n: usize,
    rows: usize,
    cols: usize,
    cfg: &BatchMix,
    rng: &mut Rng,
) -> Option<f32> {
    if cfg.is_off() || n == 0 {
        return None;
    }
    let use_cutmix = match (cfg.mixup > 0.0, cfg.cutmix > 0.0) {
        (true, true) => rng.next_f32() < 0.5,
        (_, cut) => cut,
    };
    if use_cutmix {
        let lam = beta_symmetric(cfg.cutmix, rng);
        let cy = rng.below(rows as u64) as usize;
        let cx = rng.below(cols as u64) as usize;
        Some(cutmix(x, n, rows, cols, cutmix_box(rows, cols, lam, cy, cx)))
    } else {
        let lam = beta_symmetric(cfg.mixup, rng);
        mixup(x, n, lam);
        Some(lam)
    }
}
