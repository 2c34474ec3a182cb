//! `fmnist`: a from-scratch CPU deep-learning engine for small image classifiers.
//!
//! The data flows through the modules in this order:
//! `data` (IDX / CSV bytes) -> [`tensor`] -> [`tape`] (one node per op) -> [`ops`]
//! (forward/backward pairs over the `kernels` crate) -> [`model`] (layers) and [`plan`] -> [`optim`]
//! -> `train` -> metrics and report -> the CLI in `main.rs`.
#![forbid(unsafe_code)]

pub mod arch;
pub mod augment;
pub mod checkpoint;
pub mod cli;
pub mod data;
pub mod explain;
pub mod export;
pub mod files;
pub mod html_report;
pub mod image;
pub mod limits;
pub mod mix;
pub mod model;
pub mod modelfile;
pub mod ops;
pub mod optim;
pub mod params;
pub mod plan;
pub mod planfile;
pub mod plots;
pub mod presets;
pub mod report;
pub mod tape;
pub mod tensor;
pub mod train;

/// For `#[serde(skip_serializing_if = ...)]`: a flag saved only when on, so files from before
/// it existed read back the same.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub use kernels::Engine;
pub use kernels::Rng;
pub use model::{Init, LayerConfig, Padding, Sequential};
pub use params::{ParamId, Params};
pub use tape::{Tape, Var};
pub use tensor::Tensor;

/// Whether a forward pass trains (dropout active, batch-norm uses and updates batch
/// statistics) or evaluates. Passed explicitly; there is no global mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}
