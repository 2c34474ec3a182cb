//! Input normalisation: the raw pixel bytes of a dataset (or of loose images) turned into the
//! `[N, 1, rows, cols]` tensor the network takes. It does not pick images or augment them:
//! the caller hands it the indices or the (already transformed) pixels.

use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::tensor::Tensor;

/// Pixel scaling applied to the raw bytes: `x = (byte * scale - mean) / std`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub scale: f32,
    pub mean: f32,
    pub std: f32,
}

impl Default for Normalization {
    /// The write-ups' `x / 255`.
    fn default() -> Self {
        Normalization { scale: 1.0 / 255.0, mean: 0.0, std: 1.0 }
    }
}

impl Normalization {
    /// The images at `idx` as a `[n, 1, rows, cols]` tensor.
    pub fn batch(&self, ds: &Dataset, idx: &[usize]) -> Tensor {
        let p = ds.pixels();
        let mut data = Vec::with_capacity(idx.len() * p);
        let (a, b) = (self.scale / self.std, -self.mean / self.std);
        for &i in idx {
            data.extend(ds.image(i).iter().map(|&v| v as f32 * a + b));
        }
        Tensor::from_vec(&[idx.len(), 1, ds.rows, ds.cols], data)
    }

    /// `n` images given as raw pixels, as a `[n, 1, rows, cols]` tensor.
    ///
    /// # Shapes
    /// `pixels`: `[n, rows, cols]`.
    pub fn pixels(&self, pixels: &[u8], n: usize, rows: usize, cols: usize) -> Tensor {
        assert_eq!(pixels.len(), n * rows * cols, "Normalization::pixels: not {n} images of {rows}x{cols}");
        let (a, b) = (self.scale / self.std, -self.mean / self.std);
        Tensor::from_vec(&[n, 1, rows, cols], pixels.iter().map(|&v| v as f32 * a + b).collect())
    }
}
