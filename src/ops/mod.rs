//! Differentiable ops: each file pairs a forward function, which computes an output with the
//! `kernels` crate and records a node on the [`Tape`](crate::tape::Tape), with the
//! [`Backward`](crate::tape::Backward) struct that sits right below it and holds what
//! forward saved.
//!
//! Parallelism: ops split work over images (or fixed blocks of rows) with rayon, and every
//! reduction across the batch (weight and bias gradients) is computed as partial sums over
//! *fixed-size* chunks of images, added in chunk order. The chunking never depends on the
//! number of threads, so results are bit-identical with 1 or 2 or 64 threads.

pub mod activation;
pub mod add;
pub mod batchnorm;
pub mod conv;
pub mod dense;
pub mod dropout;
pub mod loss;
pub mod pool;
pub mod shape;

pub use activation::relu;
pub use add::add;
pub use batchnorm::{batch_norm, BatchNormState};
pub use conv::{conv2d, conv2d_relu_maxpool};
pub use dense::dense;
pub use dropout::{dropout, dropout_with_mask};
pub use loss::softmax_cross_entropy;
pub use pool::max_pool2d;
pub use shape::{flatten, weighted_sum};

/// Images per partial sum in batch reductions (see the module docs): large enough to amortise
/// a partial buffer, small enough to give two threads several chunks each at batch 64+.
pub(crate) const IMAGES_PER_CHUNK: usize = 16;

/// Elements per rayon task in element-wise ops.
pub(crate) const ELEMS_PER_TASK: usize = 1 << 15;

/// Adds `parts` (in order) into `dst`.
pub(crate) fn sum_into(dst: &mut [f32], parts: impl IntoIterator<Item = Vec<f32>>) {
    for p in parts {
        kernels::simd::axpy(1.0, &p, dst);
    }
}
