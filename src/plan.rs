//! How a model's layers run on its [`Engine`]: a list of steps, one per op call.
//!
//! The layers say *what* to compute; the plan says *how*. On the reference engine every
//! layer is one step, run by its own op, so the tape records exactly the layers. The fast
//! engine merges two patterns:
//! - a convolution followed by a ReLU and a max-pool runs as one fused op
//!   ([`ops::conv2d_relu_maxpool`](crate::ops::conv2d_relu_maxpool)): the same values, bit for
//!   bit, without storing the full-size convolution output;
//! - a batch-norm followed by a ReLU runs as one op
//!   ([`ops::batch_norm_relu`](crate::ops::batch_norm_relu)): the same values, bit for bit,
//!   in one pass over the data each way instead of two;
//! - a flatten right before a dense layer is skipped: the dense layer reads any `[N, ...]`
//!   input as `[N, IN]`, so the copy would be wasted.
//!
//! The summary shows each layer's step, so what runs fused is visible. The per-layer kernel
//! plans (prepared weights, paths) live with the layers (`kernels::ConvPlan`,
//! `kernels::DensePlan`); which path each takes is a choice made by a rule or by timing on
//! the machine, stored and replayed as data: [`crate::planfile`].

use kernels::Engine;

use crate::model::{Layer, LayerConfig};

/// One op call of the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Layer `i`, by its own op.
    Layer(usize),
    /// Convolution `i`, the ReLU `i + 1` and the max-pool `i + 2`, as one fused op.
    ConvReluPool(usize),
    /// Batch-norm `i` and the ReLU `i + 1`, as one fused op.
    BatchNormRelu(usize),
    /// Flatten `i`, skipped: the dense layer after it reads its input in place.
    Skip(usize),
}

/// The steps that run `layers` on `engine`.
pub fn steps(engine: Engine, layers: &[Layer]) -> Vec<Step> {
    let mut steps = Vec::with_capacity(layers.len());
    let mut i = 0;
    while i < layers.len() {
        let next = |k: usize| layers.get(i + k).map(|l| &l.config);
        let fuse_conv = matches!(next(0), Some(LayerConfig::Conv2d { .. }))
            && matches!(next(1), Some(LayerConfig::Relu))
            && matches!(next(2), Some(LayerConfig::MaxPool2d { .. }));
        let fuse_bn = matches!(next(0), Some(LayerConfig::BatchNorm { .. }))
            && matches!(next(1), Some(LayerConfig::Relu));
        let skip_flatten = matches!(next(0), Some(LayerConfig::Flatten))
            && matches!(next(1), Some(LayerConfig::Dense { .. }));
        if engine == Engine::Fast && fuse_conv {
            steps.push(Step::ConvReluPool(i));
            i += 3;
        } else if engine == Engine::Fast && fuse_bn {
            steps.push(Step::BatchNormRelu(i));
            i += 2;
        } else {
            steps.push(if engine == Engine::Fast && skip_flatten { Step::Skip(i) } else { Step::Layer(i) });
            i += 1;
        }
    }
    steps
}

/// How layer `i` runs under `steps`, for the summary: "", "fused conv+relu+pool", "fused
/// batch_norm+relu", "in 0's fused op", or "read in place by 5".
pub fn describe(steps: &[Step], i: usize) -> String {
    for step in steps {
        match *step {
            Step::ConvReluPool(c) if c == i => return "fused conv+relu+pool".into(),
            Step::ConvReluPool(c) if (c + 1..c + 3).contains(&i) => return format!("in {c}'s fused op"),
            Step::BatchNormRelu(b) if b == i => return "fused batch_norm+relu".into(),
            Step::BatchNormRelu(b) if b + 1 == i => return format!("in {b}'s fused op"),
            Step::Skip(f) if f == i => return format!("read in place by {}", i + 1),
            _ => {}
        }
    }
    String::new()
}
