//! Data augmentation on raw `u8` images: horizontal flips, integer shifts with zero fill,
//! rotations with nearest-edge fill, and the two ways the trainer applies them.
//!
//! # Layout
//! An image is `[H, W]` row-major `u8` (0..=255), as [`Dataset`] stores it; a batch is
//! `[N, H, W]`. `y` is the row (down), `x` the column (right). Every function here is pure:
//! slices (or a [`Dataset`]) in, slices out; randomness comes from the [`Rng`] passed in.
//!
//! # The two uses
//! - [`BatchAugment`], on the fly: every time an image enters a batch it is flipped
//!   horizontally with probability `flip_prob`, then shifted by `(dy, dx)` drawn uniformly
//!   from `-max_shift..=max_shift` each, zero fill, then (with `cutout > 0`) a `cutout x
//!   cutout` square centred at a uniform pixel is set to 0, then (with `erasing.prob > 0`)
//!   random erasing sets one random rectangle to 0 ([`augment_batch`], [`erase_rect`]). Draws
//!   per image, in batch order: `dy`, `dx`, the flip (always these three, so the stream does
//!   not depend on which of them are switched on), then the cutout's centre row and column
//!   (only with a cutout, so runs without one draw what they drew before it existed), then
//!   random erasing's (only with it on; see [`erase_rect`]).
//!
//! # Random crops with padding are the shifts
//! torchvision's `RandomCrop(28, padding=P)` (zero padding) pads the image with `P` zero
//! pixels on every side and crops a 28x28 window whose top-left corner `(i, j)` is uniform in
//! `0..=2P` each: `out[y][x] = padded[y + i][x + j] = src[y + i - P][x + j - P]` (0 outside).
//! That is [`shift`] by `(dy, dx) = (P - i, P - j)`, and `dy` uniform in `-P..=P` is `P - i`
//! with `i` uniform in `0..=2P`: the same distribution. So `--crop-padding P` is `--shift P`,
//! one mechanism and the same draws (tests/recipe.rs checks it against a pad-then-crop).
//! - [`StaticAugment`], once before training (write-up E's "2x augmentation", Keras's
//!   `ImageDataGenerator(rotation_range=10, horizontal_flip=True, fill_mode='nearest')` run
//!   twice over the training images): [`expand`] appends `copies` transformed copies of every
//!   image, each rotated by an angle uniform in `+-max_degrees` and then flipped horizontally
//!   with probability `flip_prob`. The caller passes only the training part of the split, so
//!   no copy of a validation image reaches training; unless `before_split` asks for the
//!   write-up's own order (its notebook copies all 60,000 images, then splits the 180,000
//!   80/20: [`crate::train::split_for_run`]).
//!
//! # Rotation ([`rotate`])
//! Inverse mapping about the image centre `(cy, cx) = ((H-1)/2, (W-1)/2)`, as Keras's
//! `apply_affine_transform` does through `scipy.ndimage.affine_transform`: output pixel
//! `(y, x)`, with `u = y - cy`, `v = x - cx`, reads the input at
//!
//! ```text
//! sy = cy + cos(t) u - sin(t) v
//! sx = cx + sin(t) u + cos(t) v        (t = degrees in radians)
//! ```
//!
//! Positive angles turn the picture clockwise on screen (rows grow downwards): at exactly 90
//! degrees a square image becomes `out[y][x] = in[W-1-x][y]`. The input is sampled
//! bilinearly (scipy's `order=1`, Keras's default `interpolation_order`), with the sample
//! point clamped into `[0, H-1] x [0, W-1]` first, which equals scipy's `mode='nearest'`
//! (the border pixels repeat outwards). The result is rounded to the nearest integer, half
//! away from zero, because the dataset stores `u8`; Keras keeps floats, so our copies differ
//! from its by at most half a grey level.
//!
//! # Not here
//! No zooms or shears; no normalisation (the trainer's `Normalization` comes after). Mixup
//! and CutMix blend images of a batch, and their labels, after the normalisation:
//! [`crate::mix`].

use kernels::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;

/// On-the-fly augmentation, drawn anew for every image of every batch. The default does
/// nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchAugment {
    /// Largest shift in pixels, each axis independently, uniform in `-max_shift..=max_shift`;
    /// uncovered pixels become 0 (black, the background). 0 = no shifts.
    pub max_shift: usize,
    /// Probability of a horizontal flip. 0 = no flips.
    pub flip_prob: f32,
    /// Side of the square set to 0 after the shift ("cutout", DeVries and Taylor 2017): its
    /// centre is uniform over the image, and the part outside the image is dropped. 0 = none.
    #[serde(default)]
    pub cutout: usize,
    /// Random erasing after the cutout (off when its probability is 0). Left out of saved
    /// configurations when off, so files from before it existed read back equal.
    #[serde(default, skip_serializing_if = "RandomErasing::is_off")]
    pub erasing: RandomErasing,
}

impl BatchAugment {
    /// Shifts of up to `max_shift` pixels and horizontal flips with probability 0.5.
    pub fn shift_flip(max_shift: usize) -> Self {
        BatchAugment { max_shift, flip_prob: 0.5, ..BatchAugment::default() }
    }

    /// Whether it changes anything.
    pub fn is_active(&self) -> bool {
        self.max_shift > 0 || self.flip_prob > 0.0 || self.cutout > 0 || !self.erasing.is_off()
    }

    /// Checks the knobs; the message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return Err(format!("flip probability {} is not in [0, 1]", self.flip_prob));
        }
        self.erasing.validate()
    }
}

/// Random erasing (Zhong et al. 2017, "Random Erasing Data Augmentation"), as torchvision's
/// `RandomErasing(p, scale, ratio, value=0)` draws it: with probability `prob`, one
/// rectangle of the image is set to 0. Its area is a fraction of the image's uniform in
/// `scale`, its aspect ratio (height / width) log-uniform in `ratio`; up to 10 attempts to
/// find one that fits, else nothing is erased ([`erase_rect`]).
///
/// The value 0 is the background (black) of the raw pixels, as the cutout's. torchvision
/// erases the normalised tensor, where its `value=0` is the mean grey; here erasing comes
/// before normalisation, so an erased patch looks like empty background, not a grey square.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RandomErasing {
    /// Probability of erasing a rectangle from an image (torchvision's default 0.5 when on);
    /// 0 = off, nothing drawn.
    pub prob: f32,
    /// Range of the erased area as a fraction of the image (torchvision: 0.02 to 0.33).
    pub scale: [f32; 2],
    /// Range of the aspect ratio height / width, sampled log-uniformly (torchvision: 0.3 to 3.3).
    pub ratio: [f32; 2],
}

impl Default for RandomErasing {
    /// Off, with torchvision's scale and ratio ranges.
    fn default() -> Self {
        RandomErasing { prob: 0.0, scale: [0.02, 0.33], ratio: [0.3, 3.3] }
    }
}

impl RandomErasing {
    /// torchvision's ranges with probability `prob`.
    pub fn with_prob(prob: f32) -> Self {
        RandomErasing { prob, ..RandomErasing::default() }
    }

    /// Whether it never erases (and draws nothing).
    pub fn is_off(&self) -> bool {
        self.prob == 0.0
    }

    /// Checks the knobs; the message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.prob) {
            return Err(format!("random erasing probability {} is not in [0, 1]", self.prob));
        }
        let [s0, s1] = self.scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(format!("random erasing scale [{s0}, {s1}] must satisfy 0 < low <= high <= 1"));
        }
        let [r0, r1] = self.ratio;
        if !(r0 > 0.0 && r0 <= r1 && r1.is_finite()) {
            return Err(format!("random erasing ratio [{r0}, {r1}] must satisfy 0 < low <= high (finite)"));
        }
        Ok(())
    }
}

/// The height and width torchvision derives from an area fraction and an aspect ratio:
/// `h = round(sqrt(A * r))`, `w = round(sqrt(A / r))` with `A = frac * rows * cols`, rounding
/// half to even as Python's `round`.
pub fn erase_size(rows: usize, cols: usize, frac: f64, aspect: f64) -> (usize, usize) {
    let area = frac * (rows * cols) as f64;
    ((area * aspect).sqrt().round_ties_even() as usize, (area / aspect).sqrt().round_ties_even() as usize)
}

/// torchvision's `RandomErasing.get_params` for an image of `rows x cols`: the rectangle
/// `(top, left, height, width)` to erase, or `None` (nothing erased) when the probability
/// draw says no or 10 attempts found no rectangle strictly smaller than the image in both
/// sides. Draws, in order: the probability (`next_f32() < prob`); then per attempt the area
/// fraction (uniform in `scale`) and the log aspect ratio (uniform in `ln ratio`); then, for
/// the rectangle that fits, its top row (uniform in `0..=rows-h`) and left column.
pub fn erase_rect(
    rows: usize,
    cols: usize,
    cfg: &RandomErasing,
    rng: &mut Rng,
) -> Option<(usize, usize, usize, usize)> {
    if rng.next_f32() >= cfg.prob {
        return None;
    }
    let (lr0, lr1) = ((cfg.ratio[0] as f64).ln() as f32, (cfg.ratio[1] as f64).ln() as f32);
    for _ in 0..10 {
        let frac = rng.uniform(cfg.scale[0], cfg.scale[1]) as f64;
        let aspect = (rng.uniform(lr0, lr1) as f64).exp();
        let (h, w) = erase_size(rows, cols, frac, aspect);
        if h < rows && w < cols {
            let top = rng.below((rows - h + 1) as u64) as usize;
            let left = rng.below((cols - w + 1) as u64) as usize;
            return Some((top, left, h, w));
        }
    }
    None
}

/// Transformed copies made once, before training. The default makes none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StaticAugment {
    /// Extra copies of every training image (write-up E: 2). 0 = none.
    pub copies: usize,
    /// Rotation angle uniform in `[-max_degrees, max_degrees)` (write-up E: 10).
    pub max_degrees: f32,
    /// Probability of a horizontal flip of each copy (write-up E: 0.5).
    pub flip_prob: f32,
    /// The write-up's notebook order: the copies are made from every training image before
    /// the validation split, which is then drawn over originals and copies together. Training
    /// then sees a version of almost every image, and the validation split holds transformed
    /// twins of training images (so its accuracy flatters). Off: split first, copy the
    /// training part only. Saved only when on, so configs from before it read back the same.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub before_split: bool,
}

impl StaticAugment {
    /// Write-up E's "2x augmentation": two copies, +-10 degrees, flips with probability 0.5.
    pub fn cmasch() -> Self {
        StaticAugment { copies: 2, max_degrees: 10.0, flip_prob: 0.5, before_split: false }
    }

    /// Whether it adds any image.
    pub fn is_active(&self) -> bool {
        self.copies > 0
    }

    /// Whether the trainer makes the copies, from the training part of the split (not when
    /// they were made before the split).
    pub fn after_split(&self) -> bool {
        self.is_active() && !self.before_split
    }

    /// Whether the copies are made before the split ([`crate::train::split_for_run`]).
    pub fn copies_before_split(&self) -> bool {
        self.is_active() && self.before_split
    }

    /// Checks the knobs; the message names the offending one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.max_degrees >= 0.0 && self.max_degrees <= 180.0) {
            return Err(format!("rotation range {} degrees is not in [0, 180]", self.max_degrees));
        }
        if !(0.0..=1.0).contains(&self.flip_prob) {
            return Err(format!("flip probability {} of the copies is not in [0, 1]", self.flip_prob));
        }
        Ok(())
    }
}

fn check_len(what: &str, src: usize, dst: usize, rows: usize, cols: usize) {
    assert!(
        src == rows * cols && dst == rows * cols,
        "{what}: src {src} and dst {dst} pixels, expected {rows}x{cols} = {}",
        rows * cols
    );
}

/// Mirrors an image left to right: `dst[y][x] = src[y][W-1-x]`.
///
/// # Shapes
/// `src`, `dst`: `[rows, cols]`.
pub fn flip_horizontal(src: &[u8], rows: usize, cols: usize, dst: &mut [u8]) {
    check_len("flip_horizontal", src.len(), dst.len(), rows, cols);
    for (d, s) in dst.chunks_exact_mut(cols.max(1)).zip(src.chunks_exact(cols.max(1))) {
        for (dv, &sv) in d.iter_mut().zip(s.iter().rev()) {
            *dv = sv;
        }
    }
}

/// Moves the picture `dy` rows down and `dx` columns right (negative: up, left):
/// `dst[y][x] = src[y-dy][x-dx]`, and 0 where `(y-dy, x-dx)` falls outside the image.
///
/// # Shapes
/// `src`, `dst`: `[rows, cols]`.
pub fn shift(src: &[u8], rows: usize, cols: usize, dy: isize, dx: isize, dst: &mut [u8]) {
    check_len("shift", src.len(), dst.len(), rows, cols);
    dst.fill(0);
    let (h, w) = (rows as isize, cols as isize);
    // The columns of dst that read from inside src: x - dx in [0, w).
    let (x0, x1) = (dx.clamp(0, w), (w + dx).clamp(0, w));
    if x0 >= x1 {
        return;
    }
    for y in 0..h {
        let sy = y - dy;
        if !(0..h).contains(&sy) {
            continue;
        }
        let d = &mut dst[(y * w) as usize..][x0 as usize..x1 as usize];
        d.copy_from_slice(&src[(sy * w) as usize..][(x0 - dx) as usize..(x1 - dx) as usize]);
    }
}

/// Rotates an image by `degrees` about its centre, bilinear sampling, nearest-edge fill
/// (the exact mapping is in the module docs).
///
/// # Shapes
/// `src`, `dst`: `[rows, cols]`.
pub fn rotate(src: &[u8], rows: usize, cols: usize, degrees: f32, dst: &mut [u8]) {
    check_len("rotate", src.len(), dst.len(), rows, cols);
    if rows == 0 || cols == 0 {
        return;
    }
    let (sin, cos) = (degrees as f64).to_radians().sin_cos();
    let (cy, cx) = ((rows - 1) as f64 / 2.0, (cols - 1) as f64 / 2.0);
    let (ymax, xmax) = ((rows - 1) as f64, (cols - 1) as f64);
    let at = |y: usize, x: usize| src[y * cols + x] as f64;
    for y in 0..rows {
        for x in 0..cols {
            let (u, v) = (y as f64 - cy, x as f64 - cx);
            let sy = (cy + cos * u - sin * v).clamp(0.0, ymax);
            let sx = (cx + sin * u + cos * v).clamp(0.0, xmax);
            let (y0, x0) = (sy.floor() as usize, sx.floor() as usize);
            let (y1, x1) = ((y0 + 1).min(rows - 1), (x0 + 1).min(cols - 1));
            let (fy, fx) = (sy - y0 as f64, sx - x0 as f64);
            let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
            let bottom = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
            dst[y * cols + x] = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
        }
    }
}

/// Applies [`BatchAugment`] to every image of a batch: flip (with probability `flip_prob`),
/// then shift by `(dy, dx)`, then the cutout, then random erasing. Draws `dy`, `dx`, flip
/// (with a cutout its centre, with erasing [`erase_rect`]'s) per image, in batch order (see
/// the module docs).
///
/// # Shapes
/// `src`, `dst`: `[N, rows, cols]`.
pub fn augment_batch(
    src: &[u8],
    rows: usize,
    cols: usize,
    cfg: &BatchAugment,
    rng: &mut Rng,
    dst: &mut [u8],
) {
    let p = rows * cols;
    assert!(
        src.len() == dst.len() && src.len().is_multiple_of(p),
        "augment_batch: src {} and dst {} pixels are not the same number of {rows}x{cols} images",
        src.len(),
        dst.len()
    );
    let m = cfg.max_shift as u64;
    let mut flipped = vec![0u8; p]; // [rows, cols]
    for (s, d) in src.chunks_exact(p.max(1)).zip(dst.chunks_exact_mut(p.max(1))) {
        let dy = rng.below(2 * m + 1) as isize - m as isize;
        let dx = rng.below(2 * m + 1) as isize - m as isize;
        let flip = rng.next_f32() < cfg.flip_prob;
        let img = if flip {
            flip_horizontal(s, rows, cols, &mut flipped);
            &flipped[..]
        } else {
            s
        };
        shift(img, rows, cols, dy, dx, d);
        if cfg.cutout > 0 {
            let (cy, cx) = (rng.below(rows as u64) as usize, rng.below(cols as u64) as usize);
            cut_out(d, rows, cols, cy, cx, cfg.cutout);
        }
        if !cfg.erasing.is_off() {
            if let Some((top, left, h, w)) = erase_rect(rows, cols, &cfg.erasing, rng) {
                for y in top..top + h {
                    d[y * cols + left..y * cols + left + w].fill(0);
                }
            }
        }
    }
}

/// Sets to 0 the `size x size` square of `img[rows, cols]` with rows `cy - size/2 ..
/// cy - size/2 + size` (likewise columns), clipped to the image.
pub fn cut_out(img: &mut [u8], rows: usize, cols: usize, cy: usize, cx: usize, size: usize) {
    let (y0, x0) = (cy.saturating_sub(size / 2), cx.saturating_sub(size / 2));
    let (y1, x1) = ((cy + size - size / 2).min(rows), (cx + size - size / 2).min(cols));
    for y in y0..y1 {
        img[y * cols + x0..y * cols + x1.max(x0)].fill(0);
    }
}

/// The training set followed by `cfg.copies` transformed copies of it: the result holds
/// `ds.len() * (1 + copies)` images, first the originals, then copy 1 of every image in
/// order, then copy 2, ...; the labels follow their images. For each copy of each image, in
/// that order, the angle is drawn (uniform in `[-max_degrees, max_degrees)`), then the flip;
/// the image is rotated, then flipped (Keras's `random_transform` order).
pub fn expand(ds: &Dataset, cfg: &StaticAugment, rng: &mut Rng) -> Dataset {
    cfg.validate().expect("invalid static augmentation");
    let (n, p) = (ds.len(), ds.pixels());
    // All draws first, in the documented order, so the parallel loop cannot reorder them.
    let draws: Vec<(f32, bool)> = (0..n * cfg.copies)
        .map(|_| {
            let angle = rng.uniform(-cfg.max_degrees, cfg.max_degrees);
            (angle, rng.next_f32() < cfg.flip_prob)
        })
        .collect();
    let mut images = ds.images.clone(); // [n * (1 + copies), rows, cols]
    images.resize(n * (1 + cfg.copies) * p, 0);
    if p > 0 {
        images[n * p..].par_chunks_mut(p).zip(draws.par_iter()).enumerate().for_each(
            |(j, (dst, &(angle, flip)))| {
                let src = ds.image(j % n);
                if flip {
                    let mut rotated = vec![0u8; p];
                    rotate(src, ds.rows, ds.cols, angle, &mut rotated);
                    flip_horizontal(&rotated, ds.rows, ds.cols, dst);
                } else {
                    rotate(src, ds.rows, ds.cols, angle, dst);
                }
            },
        );
    }
    let labels = ds.labels.repeat(1 + cfg.copies);
    Dataset { images, labels, rows: ds.rows, cols: ds.cols }
}
