//! Differentiable ops: each file states an op's math (forward, and the derivation of its
//! backward), and pairs a forward function, which computes the output and records a node on
//! the [`Tape`](crate::tape::Tape), with the [`Backward`](crate::tape::Backward) struct right
//! below it, which holds what forward saved.
//!
//! The arithmetic goes through one door, `kernels::engine`: an [`Engine`] (the reference
//! twins, or the fast kernels) for the stateless ops, and a per-layer plan
//! ([`ConvPlan`](kernels::ConvPlan), [`DensePlan`](kernels::DensePlan)) for the layers with
//! weights. On either engine, reductions across the batch run in an order that does not
//! depend on the number of threads, so results are bit-identical with 1, 2 or 64 threads.

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
pub use batchnorm::{batch_norm, batch_norm_relu, BatchNormState};
pub use conv::{conv2d, conv2d_relu_maxpool};
pub use dense::dense;
pub use dropout::{dropout, dropout_with_mask};
pub use kernels::Engine;
pub use loss::{softmax_cross_entropy, softmax_cross_entropy_mixed};
pub use pool::{avg_pool2d, global_avg_pool, max_pool2d};
pub use shape::{flatten, weighted_sum};
