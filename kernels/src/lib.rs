//! Slice-level numerical kernels for the `fmnist` engine.
//!
//! This crate knows nothing of tensors or tapes: every function takes flat `f32` slices plus
//! the dimensions that give them meaning, and writes into caller-owned outputs. Every fast
//! kernel has a plain nested-loop twin named `*_ref` in the same module; the tests compare the
//! two, and the twin is the place to read first.
//!
//! The main crate enters through one door, [`engine`]: an [`Engine`] says whether ops run on
//! the reference twins or on the fast kernels, and carries the stateless ops as methods; each
//! layer with weights gets a plan, [`ConvPlan`] or [`DensePlan`], that owns its path, its
//! prepared weights and its scratch buffers. The other modules are the kernels behind that
//! door, each usable on its own (the tests and benches call them directly).
//!
//! Dimension letters used throughout (the same legend as in the main crate):
//!
//! | letter | meaning |
//! |---|---|
//! | N | images in a batch |
//! | C | input channels |
//! | H, W | input height and width |
//! | OC | output channels (filters) |
//! | KH, KW | kernel height and width |
//! | OH, OW | output height and width |
//! | M, K, N | GEMM: `C[M, N] = A[M, K] * B[K, N]` |
//!
//! All image buffers are NCHW, row-major. `unsafe` appears in exactly one place: the
//! `matrixmultiply` call inside [`gemm::sgemm`], which checks every length and stride first;
//! the compiler enforces it (`deny(unsafe_code)` here, one `allow` on that function).
#![deny(unsafe_code)]

pub mod activation;
pub mod batchnorm;
pub mod bias;
pub mod conv_direct;
pub mod conv_implicit;
pub mod conv_plan;
pub mod conv_scatter;
pub mod conv_sparse;
pub mod dense_plan;
pub mod dropout;
pub mod engine;
pub mod gemm;
pub mod gemv;
pub mod im2col;
pub mod optim;
pub mod peak;
pub mod planner;
pub mod pool;
pub mod rng;
pub mod simd;
pub mod softmax;

/// A hash of this crate's source files (`build.rs`): two builds with the same value run the
/// same kernels, so a plan cache keys its measurements by it.
pub const SOURCE_ID: &str = env!("FMNIST_KERNELS_SOURCE");

pub use engine::{ConvChoice, ConvGrad, ConvPath, ConvPlan, DenseChoice, DensePlan, Engine, InputGradWay};
pub use rng::Rng;
