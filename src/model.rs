//! Layers and the sequential model.
//!
//! A model is described by a list of [`LayerConfig`]s (plain data, serialisable, the thing a
//! model file stores) and built against an input shape: building derives every layer's
//! output shape (the flatten width is computed, never typed in), creates and initialises the
//! parameters, and fails with a clear message when a layer does not fit its input.
//!
//! Shapes in this module exclude the batch dimension: `[C, H, W]` for images, `[F]` for
//! vectors.
//!
//! A layer may be a residual block: a list of layers (its body) whose output is added to the
//! block's input, through an optional 1x1 convolution (the projection) when the shapes differ.
//! The body's layers are named `3.1` (layer 1 of block 3), the projection's `3.proj`.
//!
//! Sizes are bounded before anything is allocated ([`MAX_TENSOR_VALUES`],
//! [`MAX_MODEL_VALUES`], [`MAX_ACTIVATION_VALUES`]): a file that declares a layer of 2^40
//! units is refused with a message, not an allocation failure.

use kernels::im2col::ConvGeom;
use kernels::pool::PoolGeom;
use kernels::{ConvChoice, ConvPlan, DenseChoice, DensePlan, Engine, Rng};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::ops;
use crate::ops::BatchNormState;
use crate::params::{ParamId, Params};
use crate::plan::{self, Step};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;
use crate::Mode;

/// Convolution padding, as Keras names it, or explicit per side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Padding {
    /// No padding: `OH = (H - KH) / S + 1`.
    #[default]
    Valid,
    /// TensorFlow's 'same': `OH = ceil(H / S)`, with the total padding split so that the
    /// smaller half goes *before* (4x4 kernel, stride 1: 1 before, 2 after).
    Same,
    /// Explicit padding per side.
    Explicit { top: usize, left: usize, bottom: usize, right: usize },
}

/// One layer of a sequential model, as configured (no weights): what an architecture file's
/// `[[layers]]` entry and a model file's metadata hold. Unknown keys are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerConfig {
    /// `kernel` is `3` or `[3, 3]`; `stride` defaults to 1, `padding` to `"valid"`.
    Conv2d {
        filters: usize,
        #[serde(deserialize_with = "kernel_size")]
        kernel: [usize; 2],
        #[serde(default = "one")]
        stride: usize,
        #[serde(default)]
        padding: Padding,
    },
    #[serde(alias = "max_pool")]
    MaxPool2d {
        size: usize,
        stride: usize,
    },
    #[serde(alias = "avg_pool2d")]
    AvgPool {
        size: usize,
        stride: usize,
    },
    /// The mean of each channel: `[C, H, W]` -> `[C]`.
    GlobalAvgPool,
    Relu,
    Flatten,
    /// Inverted dropout; `rate` is the probability of dropping a value.
    Dropout {
        rate: f32,
    },
    Dense {
        units: usize,
    },
    /// Batch-norm over channels (images) or features (vectors); Keras momentum convention.
    /// Defaults: Keras's momentum 0.99 and eps 1e-3.
    BatchNorm {
        #[serde(default = "keras_momentum")]
        momentum: f32,
        #[serde(default = "keras_eps")]
        eps: f32,
    },
    /// `layers` applied in order, their output added to the block's input (through
    /// `projection` when given).
    Residual {
        layers: Vec<LayerConfig>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        projection: Option<Projection>,
    },
}

/// A residual block's shortcut when the body changes the shape: a 1x1 convolution with the
/// body's output channels and this stride, optionally followed by batch-norm (as in He et al.
/// 2016, option B).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Projection {
    #[serde(default = "one")]
    pub stride: usize,
    #[serde(default)]
    pub batch_norm: bool,
}

impl Projection {
    /// The projection's 1x1 convolution to `filters` channels, with its stride and no padding
    /// (the layer the model builds and the dry run of `limits` checks).
    pub(crate) fn conv(&self, filters: usize) -> LayerConfig {
        LayerConfig::Conv2d { filters, kernel: [1, 1], stride: self.stride, padding: Padding::Valid }
    }
}

fn one() -> usize {
    1
}
fn keras_momentum() -> f32 {
    0.99
}
fn keras_eps() -> f32 {
    1e-3
}

/// A kernel size written as `3` or `[3, 3]`.
fn kernel_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<[usize; 2], D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Square(usize),
        Rect([usize; 2]),
    }
    Ok(match Size::deserialize(d)? {
        Size::Square(k) => [k, k],
        Size::Rect(k) => k,
    })
}

/// The most values one weight tensor may hold (2^24, 64 MiB of `f32`). The largest layer of
/// the presets has 692,224 (C1's first dense layer); a bound well above any network that fits
/// 28x28 images, well below what would exhaust memory.
pub const MAX_TENSOR_VALUES: usize = 1 << 24;
/// The most values all the parameters may hold together (2^26, 256 MiB of `f32`).
pub const MAX_MODEL_VALUES: usize = 1 << 26;
/// The most values one layer's output may hold for one image (2^20, 4 MiB of `f32`; a batch
/// of 512 then needs at most 2 GiB per activation).
pub const MAX_ACTIVATION_VALUES: usize = 1 << 20;

impl LayerConfig {
    /// A conv layer with a square kernel and stride 1.
    pub fn conv(filters: usize, k: usize, padding: Padding) -> Self {
        LayerConfig::Conv2d { filters, kernel: [k, k], stride: 1, padding }
    }
    /// Keras's defaults: momentum 0.99, eps 1e-3.
    pub fn batch_norm() -> Self {
        LayerConfig::BatchNorm { momentum: 0.99, eps: 1e-3 }
    }
    /// The layer's type as files write it.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerConfig::Conv2d { .. } => "conv2d",
            LayerConfig::MaxPool2d { .. } => "max_pool2d",
            LayerConfig::AvgPool { .. } => "avg_pool",
            LayerConfig::GlobalAvgPool => "global_avg_pool",
            LayerConfig::Relu => "relu",
            LayerConfig::Flatten => "flatten",
            LayerConfig::Dropout { .. } => "dropout",
            LayerConfig::Dense { .. } => "dense",
            LayerConfig::BatchNorm { .. } => "batch_norm",
            LayerConfig::Residual { .. } => "residual",
        }
    }
}

/// Weight initialisation. Biases always start at 0, batch-norm at `gamma = 1, beta = 0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Init {
    /// Keras's default (Glorot & Bengio 2010): uniform in `+-sqrt(6 / (fan_in + fan_out))`,
    /// with `fan_in = C*KH*KW`, `fan_out = OC*KH*KW` for convolutions.
    #[default]
    GlorotUniform,
    /// He et al. 2015: normal with standard deviation `sqrt(2 / fan_in)`, suited to ReLU.
    HeNormal,
}

impl Init {
    fn fill(self, fan_in: usize, fan_out: usize, rng: &mut Rng, t: &mut Tensor) {
        match self {
            Init::GlorotUniform => {
                let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
                t.data_mut().iter_mut().for_each(|v| *v = rng.uniform(-limit, limit));
            }
            Init::HeNormal => {
                let std = (2.0 / fan_in as f32).sqrt();
                t.data_mut().iter_mut().for_each(|v| *v = std * rng.normal());
            }
        }
    }
}

/// A layer built for a known input shape and an engine.
pub struct Layer {
    pub config: LayerConfig,
    pub in_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
    kind: Built,
    engine: Engine,
}

/// What a layer computes, with its parameters and, for the layers with weights, the plan
/// that runs it on the layer's engine.
enum Built {
    Conv { w: ParamId, b: ParamId, plan: Arc<ConvPlan> },
    Pool { size: usize, stride: usize },
    AvgPool { size: usize, stride: usize },
    GlobalAvgPool,
    Residual { body: Vec<Layer>, shortcut: Vec<Layer> },
    Relu,
    Flatten,
    Dropout { rate: f32 },
    Dense { w: ParamId, b: ParamId, plan: Arc<DensePlan> },
    BatchNorm(BatchNormState),
}

/// A layer with weights as a plan sees it (see [`crate::planfile`]): its label (`4`, or `3.1`
/// in block 3), its kernel plan, and for a convolution the max-pool fused after it and
/// whether its input gradient is computed.
pub enum Planned<'a> {
    Conv { label: String, plan: &'a ConvPlan, pool: Option<PoolGeom>, input_grad: bool },
    Dense { label: String, plan: &'a DensePlan },
}

impl Planned<'_> {
    /// Whether `choice` can run this layer; the error names the layer and why not.
    pub fn takes(&self, choice: &Choice) -> Result<(), String> {
        match (self, choice) {
            (Planned::Conv { label, plan, pool, .. }, Choice::Conv(c)) => {
                c.check(plan.geom(), plan.filters()).map_err(|e| format!("layer {label}: {e}"))?;
                // The sparse backward reads a max-pool's argmaxes: only a fused
                // conv -> ReLU -> max-pool has them.
                if c.sparse && pool.is_none() {
                    return Err(format!(
                        "layer {label}: a sparse backward, but no ReLU and max-pool follow this convolution"
                    ));
                }
                Ok(())
            }
            (Planned::Dense { .. }, Choice::Dense(_)) => Ok(()),
            (Planned::Conv { label, .. } | Planned::Dense { label, .. }, _) => {
                Err(format!("layer {label}: a choice for another kind of layer"))
            }
        }
    }
}

/// How one layer with weights runs on the fast engine (see [`Sequential::set_choices`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Conv(ConvChoice),
    Dense(DenseChoice),
}

/// A model building error: which layer, and why it does not fit.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelError(pub String);

impl std::fmt::Display for ModelError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ModelError {}

/// TensorFlow's 'same' padding along one axis: `(before, after)`.
/// Saturating, so that the dry run of `limits` can call it on unchecked sizes.
pub(crate) fn same_padding(input: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = (out.saturating_sub(1).saturating_mul(stride).saturating_add(k)).saturating_sub(input);
    (total / 2, total - total / 2)
}

impl Layer {
    /// A convolution layer's geometry (input, kernel, stride, padding); `None` for the others.
    pub fn conv_geom(&self) -> Option<ConvGeom> {
        self.conv_plan().map(|p| *p.geom())
    }

    /// A convolution layer's plan (its path on the engine); `None` for the others.
    pub fn conv_plan(&self) -> Option<&ConvPlan> {
        match &self.kind {
            Built::Conv { plan, .. } => Some(plan),
            _ => None,
        }
    }

    /// Builds the layer `config` (named `label` in messages: `4`, or `3.1` inside block 3) for
    /// `in_shape`, adding its parameters to `params` under `prefix` (`4.dense`).
    #[allow(clippy::too_many_arguments)]
    fn build(
        label: &str,
        prefix: &str,
        config: &LayerConfig,
        in_shape: &[usize],
        params: &mut Params,
        init: Init,
        rng: &mut Rng,
        engine: Engine,
    ) -> Result<Layer, ModelError> {
        let kind_name = config.kind();
        let err = |why: String| ModelError(format!("layer {label} ({kind_name}): {why}"));
        let shape_text = |shape: &[usize]| {
            let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
            format!("[N, {}]", dims.join(", "))
        };
        let image = |shape: &[usize]| match *shape {
            [c, h, w] => Ok((c, h, w)),
            _ => Err(err(format!(
                "its input is {}; it needs images [N, C, H, W]: remove the flatten or dense layer before it",
                shape_text(shape)
            ))),
        };
        // A new tensor of `shape`, checked against the size bounds before it is allocated.
        let tensor = |params: &mut Params, shape: &[usize]| -> Result<Tensor, ModelError> {
            let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
            let n = n.filter(|&n| n <= MAX_TENSOR_VALUES).ok_or_else(|| {
                err(format!("a weight tensor of shape {shape:?} is larger than the limit of {MAX_TENSOR_VALUES} values"))
            })?;
            let total = params.trainable_count() + params.buffer_count() + n;
            if total > MAX_MODEL_VALUES {
                return Err(err(format!(
                    "the model would exceed the limit of {MAX_MODEL_VALUES} parameters"
                )));
            }
            Ok(Tensor::zeros(shape))
        };
        let name = |what: &str| format!("{prefix}.{what}");
        let (kind, out_shape) = match config {
            &LayerConfig::Conv2d { filters, kernel: [kh, kw], stride, padding } => {
                let (c, h, w) = image(in_shape)?;
                if filters == 0 || kh == 0 || kw == 0 || stride == 0 {
                    return Err(err("filters, kernel and stride must be positive".into()));
                }
                let (pt, pb, pl, pr) = match padding {
                    Padding::Valid => (0, 0, 0, 0),
                    Padding::Same => {
                        let (t, b) = same_padding(h, kh, stride);
                        let (l, r) = same_padding(w, kw, stride);
                        (t, b, l, r)
                    }
                    Padding::Explicit { top, left, bottom, right } => (top, bottom, left, right),
                };
                let mut wt = tensor(params, &[filters, c, kh, kw])?;
                let too_wide = [pt, pb, pl, pr].iter().any(|&p| p >= kh.max(kw));
                if too_wide {
                    return Err(err(format!(
                        "padding {pt},{pl},{pb},{pr} must be smaller than the {kh}x{kw} kernel"
                    )));
                }
                if h + pt + pb < kh || w + pl + pr < kw {
                    return Err(err(format!(
                        "its input is {}: the {kh}x{kw} kernel is larger than the padded {h}x{w} image; use a smaller kernel or 'same' padding",
                        shape_text(in_shape)
                    )));
                }
                let geom = ConvGeom::new(c, h, w, kh, kw, (stride, stride), (pt, pl, pb, pr));
                init.fill(c * kh * kw, filters * kh * kw, rng, &mut wt);
                let w_id = params.add(name("weight"), wt);
                let bias = tensor(params, &[filters])?;
                let b_id = params.add(name("bias"), bias);
                let plan = Arc::new(ConvPlan::new(engine, geom, filters));
                (Built::Conv { w: w_id, b: b_id, plan }, vec![filters, geom.oh, geom.ow])
            }
            &LayerConfig::MaxPool2d { size, stride } | &LayerConfig::AvgPool { size, stride } => {
                let (c, h, w) = image(in_shape)?;
                if size == 0 || stride == 0 {
                    return Err(err("size and stride must be positive".into()));
                }
                if h < size || w < size {
                    return Err(err(format!(
                        "its input is {}: the {size}x{size} window is larger than the {h}x{w} image",
                        shape_text(in_shape)
                    )));
                }
                let out = vec![c, (h - size) / stride + 1, (w - size) / stride + 1];
                let kind = match config {
                    LayerConfig::MaxPool2d { .. } => Built::Pool { size, stride },
                    _ => Built::AvgPool { size, stride },
                };
                (kind, out)
            }
            LayerConfig::GlobalAvgPool => {
                let (c, _, _) = image(in_shape)?;
                (Built::GlobalAvgPool, vec![c])
            }
            LayerConfig::Relu => (Built::Relu, in_shape.to_vec()),
            LayerConfig::Flatten => (Built::Flatten, vec![in_shape.iter().product()]),
            &LayerConfig::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(err(format!("rate {rate} is not in [0, 1)")));
                }
                (Built::Dropout { rate }, in_shape.to_vec())
            }
            &LayerConfig::Dense { units } => {
                let [fin] = *in_shape else {
                    return Err(err(format!(
                        "its input is {}; put a flatten (or global_avg_pool) before it",
                        shape_text(in_shape)
                    )));
                };
                if units == 0 {
                    return Err(err("units must be positive".into()));
                }
                let mut wt = tensor(params, &[fin, units])?;
                init.fill(fin, units, rng, &mut wt);
                let w = params.add(name("weight"), wt);
                let bias = tensor(params, &[units])?;
                let b = params.add(name("bias"), bias);
                let plan = Arc::new(DensePlan::new(engine, fin, units));
                (Built::Dense { w, b, plan }, vec![units])
            }
            &LayerConfig::BatchNorm { momentum, eps } => {
                if !((0.0..=1.0).contains(&momentum) && eps > 0.0 && eps.is_finite()) {
                    return Err(err(format!("momentum {momentum} must be in [0, 1] and eps {eps} positive")));
                }
                let Some(&c) = in_shape.first() else {
                    return Err(err("its input has no channels".into()));
                };
                let mut stats = || tensor(params, &[c]);
                let (ones, zeros, mean, var) = (stats()?, stats()?, stats()?, stats()?);
                let mut ones = ones;
                ones.data_mut().fill(1.0);
                let mut var = var;
                var.data_mut().fill(1.0);
                let st = BatchNormState {
                    gamma: params.add(name("gamma"), ones),
                    beta: params.add(name("beta"), zeros),
                    running_mean: params.add_buffer(name("running_mean"), mean),
                    running_var: params.add_buffer(name("running_var"), var),
                    momentum,
                    eps,
                    engine,
                };
                (Built::BatchNorm(st), in_shape.to_vec())
            }
            LayerConfig::Residual { layers, projection } => {
                let mut body = Vec::with_capacity(layers.len());
                let mut shape = in_shape.to_vec();
                for (j, cfg) in layers.iter().enumerate() {
                    let sub = format!("{prefix}.{j}.{}", cfg.kind());
                    let layer =
                        Layer::build(&format!("{label}.{j}"), &sub, cfg, &shape, params, init, rng, engine)?;
                    shape = layer.out_shape.clone();
                    body.push(layer);
                }
                let mut shortcut = Vec::new();
                if let Some(p) = projection {
                    let (Some(&filters), Some(_)) = (shape.first(), in_shape.first()) else {
                        return Err(err("a projection needs image input and output".into()));
                    };
                    let conv = p.conv(filters);
                    let proj_label = format!("{label}.proj");
                    let layer = Layer::build(
                        &proj_label,
                        &format!("{prefix}.proj.conv2d"),
                        &conv,
                        in_shape,
                        params,
                        init,
                        rng,
                        engine,
                    )?;
                    let out = layer.out_shape.clone();
                    shortcut.push(layer);
                    if p.batch_norm {
                        let bn = LayerConfig::batch_norm();
                        let prefix = format!("{prefix}.proj.batch_norm");
                        shortcut.push(Layer::build(
                            &proj_label,
                            &prefix,
                            &bn,
                            &out,
                            params,
                            init,
                            rng,
                            engine,
                        )?);
                    }
                }
                let short_shape = shortcut.last().map_or(in_shape, |l| &l.out_shape[..]);
                if short_shape != &shape[..] {
                    let fix = match projection {
                        None => "add `projection = { stride = S }` to project the input",
                        Some(_) => "the projection's stride must make the same height and width as the body",
                    };
                    return Err(err(format!(
                        "its body turns {} into {}, which cannot be added to {}; {fix}",
                        shape_text(in_shape),
                        shape_text(&shape),
                        shape_text(short_shape)
                    )));
                }
                (Built::Residual { body, shortcut }, shape)
            }
        };
        let per_image = out_shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if per_image.is_none_or(|n| n > MAX_ACTIVATION_VALUES) {
            return Err(err(format!(
                "its output {} is larger than the limit of {MAX_ACTIVATION_VALUES} values per image",
                shape_text(&out_shape)
            )));
        }
        Ok(Layer { config: config.clone(), in_shape: in_shape.to_vec(), out_shape, kind, engine })
    }

    /// The same layer, with the same parameters, on another engine (fresh plans, to be
    /// refreshed; a fast plan keeps its choices, one from the reference takes the rule's).
    fn on_engine(&self, engine: Engine) -> Layer {
        let kind = match &self.kind {
            Built::Conv { w, b, plan } => {
                let (g, oc) = (*plan.geom(), self.out_shape[0]);
                let choice = plan.choice().unwrap_or_else(|| ConvChoice::rule(&g));
                Built::Conv { w: *w, b: *b, plan: Arc::new(ConvPlan::with_choice(engine, g, oc, choice)) }
            }
            Built::Dense { w, b, plan } => {
                let fin = self.in_shape.iter().product();
                let plan = DensePlan::with_choice(engine, fin, self.out_shape[0], plan.choice());
                Built::Dense { w: *w, b: *b, plan: Arc::new(plan) }
            }
            Built::Pool { size, stride } => Built::Pool { size: *size, stride: *stride },
            Built::AvgPool { size, stride } => Built::AvgPool { size: *size, stride: *stride },
            Built::GlobalAvgPool => Built::GlobalAvgPool,
            Built::Residual { body, shortcut } => Built::Residual {
                body: body.iter().map(|l| l.on_engine(engine)).collect(),
                shortcut: shortcut.iter().map(|l| l.on_engine(engine)).collect(),
            },
            Built::Relu => Built::Relu,
            Built::Flatten => Built::Flatten,
            Built::Dropout { rate } => Built::Dropout { rate: *rate },
            Built::BatchNorm(st) => Built::BatchNorm(BatchNormState { engine, ..*st }),
        };
        Layer {
            config: self.config.clone(),
            in_shape: self.in_shape.clone(),
            out_shape: self.out_shape.clone(),
            kind,
            engine,
        }
    }

    /// Appends this layer's [`Planned`] entries (a block's, in order: body, then projection).
    /// `pool`: the max-pool fused after it; `input_grad`: whether its input needs a gradient.
    fn planned<'a>(
        &'a self,
        label: &str,
        pool: Option<PoolGeom>,
        input_grad: bool,
        out: &mut Vec<Planned<'a>>,
    ) {
        match &self.kind {
            Built::Conv { plan, .. } => {
                out.push(Planned::Conv { label: label.into(), plan, pool, input_grad })
            }
            Built::Dense { plan, .. } => out.push(Planned::Dense { label: label.into(), plan }),
            Built::Residual { body, shortcut } => {
                let mut needs = input_grad;
                for (j, layer) in body.iter().enumerate() {
                    layer.planned(&format!("{label}.{j}"), None, needs, out);
                    needs |= !layer.param_ids().is_empty();
                }
                for layer in shortcut {
                    layer.planned(&format!("{label}.proj"), None, input_grad, out);
                }
            }
            _ => {}
        }
    }

    /// Rebuilds this layer's plans with the next choices of `choices`, in [`Layer::planned`]'s
    /// order (checked by [`Sequential::set_choices`]).
    fn set_choices(&mut self, choices: &mut impl Iterator<Item = Choice>) {
        let engine = self.engine;
        match &mut self.kind {
            Built::Conv { plan, .. } => {
                let Some(Choice::Conv(c)) = choices.next() else { unreachable!("checked by set_choices") };
                *plan = Arc::new(ConvPlan::with_choice(engine, *plan.geom(), plan.filters(), c));
            }
            Built::Dense { plan, .. } => {
                let Some(Choice::Dense(c)) = choices.next() else { unreachable!("checked by set_choices") };
                let (fin, fout) = plan.dims();
                *plan = Arc::new(DensePlan::with_choice(engine, fin, fout, c));
            }
            Built::Residual { body, shortcut } => {
                body.iter_mut().chain(shortcut.iter_mut()).for_each(|l| l.set_choices(choices))
            }
            _ => {}
        }
    }

    /// Prepares this layer's plan for the current values of its weights (see
    /// [`Sequential::refresh_plan`]).
    pub fn refresh(&self, params: &Params) {
        match &self.kind {
            Built::Conv { w, plan, .. } => plan.refresh(params.value(*w).data()),
            Built::Dense { w, plan, .. } => plan.refresh(params.value(*w).data()),
            Built::Residual { body, shortcut } => body.iter().chain(shortcut).for_each(|l| l.refresh(params)),
            _ => {}
        }
    }

    /// Records this layer's op(s) on the tape.
    ///
    /// # Shapes
    /// `x: [N, in_shape...]` -> `[N, out_shape...]`.
    pub fn forward(&self, tape: &mut Tape, params: &mut Params, x: Var, mode: Mode, rng: &mut Rng) -> Var {
        match &self.kind {
            Built::Conv { w, b, plan } => ops::conv2d(tape, params, x, *w, *b, plan),
            Built::Pool { size, stride } => ops::max_pool2d(tape, x, *size, *stride, self.engine),
            Built::AvgPool { size, stride } => ops::avg_pool2d(tape, x, *size, *stride, self.engine),
            Built::GlobalAvgPool => ops::global_avg_pool(tape, x, self.engine),
            Built::Residual { body, shortcut } => {
                // y = body(x) + shortcut(x): the tape's add hands the gradient to both branches,
                // and x, used by both, receives the sum of the two (gradients accumulate).
                let mut h = x;
                for layer in body {
                    h = layer.forward(tape, params, h, mode, rng);
                }
                let mut s = x;
                for layer in shortcut {
                    s = layer.forward(tape, params, s, mode, rng);
                }
                ops::add(tape, h, s)
            }
            Built::Relu => ops::relu(tape, x, self.engine),
            Built::Flatten => ops::flatten(tape, x),
            Built::Dropout { rate } => ops::dropout(tape, x, *rate, mode, rng, self.engine),
            Built::Dense { w, b, plan } => ops::dense(tape, params, x, *w, *b, plan),
            Built::BatchNorm(st) => ops::batch_norm(tape, params, x, st, mode),
        }
    }

    /// Records this convolution, a ReLU, and the max-pool `pool` as one fused op.
    ///
    /// # Panics
    /// If this is not a convolution or `pool` not a max-pool (the plan pairs them).
    pub fn forward_relu_pool(&self, tape: &mut Tape, params: &Params, x: Var, pool: &Layer) -> Var {
        match (&self.kind, &pool.kind) {
            (Built::Conv { w, b, plan }, Built::Pool { size, stride }) => {
                ops::conv2d_relu_maxpool(tape, params, x, (*w, *b), plan, (*size, *stride))
            }
            _ => panic!(
                "forward_relu_pool: {} then {} is not a conv and a pool",
                self.config.kind(),
                pool.config.kind()
            ),
        }
    }

    /// Records this batch-norm and the ReLU after it as one fused op.
    ///
    /// # Panics
    /// If this is not a batch-norm (the plan pairs it with the ReLU).
    pub fn forward_batch_norm_relu(&self, tape: &mut Tape, params: &mut Params, x: Var, mode: Mode) -> Var {
        match &self.kind {
            Built::BatchNorm(st) => ops::batch_norm_relu(tape, params, x, st, mode),
            _ => panic!("forward_batch_norm_relu: {} is not a batch-norm", self.config.kind()),
        }
    }

    /// This layer's row of the summary table (label, output shape, parameters, how it runs),
    /// then a residual block's body and projection, indented.
    fn summary_rows(
        &self,
        label: &str,
        indent: &str,
        params: &Params,
        runs: String,
        rows: &mut Vec<[String; 4]>,
    ) {
        let count: usize = self.param_ids().iter().map(|&id| params.value(id).len()).sum();
        let desc = match &self.config {
            LayerConfig::Conv2d { filters, kernel, stride, padding } => {
                let pad = match padding {
                    Padding::Valid => "valid".to_string(),
                    Padding::Same => "same".to_string(),
                    Padding::Explicit { top, left, bottom, right } => {
                        format!("pad {top},{left},{bottom},{right}")
                    }
                };
                format!("conv2d {filters}@{}x{} s{stride} {pad}", kernel[0], kernel[1])
            }
            LayerConfig::MaxPool2d { size, stride } => format!("max_pool2d {size}x{size} s{stride}"),
            LayerConfig::AvgPool { size, stride } => format!("avg_pool {size}x{size} s{stride}"),
            LayerConfig::Dropout { rate } => format!("dropout {rate}"),
            LayerConfig::Dense { units } => format!("dense {units}"),
            LayerConfig::Residual { projection: Some(p), .. } => {
                format!("residual (projection s{})", p.stride)
            }
            other => other.kind().to_string(),
        };
        let dims: Vec<String> = self.out_shape.iter().map(|d| d.to_string()).collect();
        let runs = match (runs.is_empty(), self.conv_plan()) {
            (true, Some(p)) => format!("{} path", p.path_name()),
            _ => runs,
        };
        rows.push([
            format!("{indent}{label} {desc}"),
            format!("(None, {})", dims.join(", ")),
            count.to_string(),
            runs,
        ]);
        if let Built::Residual { body, shortcut } = &self.kind {
            let inner = format!("{indent}  ");
            for (j, layer) in body.iter().enumerate() {
                layer.summary_rows(&format!("{label}.{j}"), &inner, params, String::new(), rows);
            }
            for layer in shortcut {
                layer.summary_rows(&format!("{label}.proj"), &inner, params, String::new(), rows);
            }
        }
    }

    /// A residual block's body and shortcut layers (the projection, or none); empty for the
    /// other layers.
    pub fn children(&self) -> (&[Layer], &[Layer]) {
        match &self.kind {
            Built::Residual { body, shortcut } => (body, shortcut),
            _ => (&[], &[]),
        }
    }

    /// The ids of this layer's parameters and buffers, in creation order.
    pub fn param_ids(&self) -> Vec<ParamId> {
        match &self.kind {
            Built::Conv { w, b, .. } | Built::Dense { w, b, .. } => vec![*w, *b],
            Built::BatchNorm(st) => vec![st.gamma, st.beta, st.running_mean, st.running_var],
            Built::Residual { body, shortcut } => {
                body.iter().chain(shortcut).flat_map(|l| l.param_ids()).collect()
            }
            _ => vec![],
        }
    }
}

/// A stack of layers applied in order, with all their parameters, and the plan that runs
/// them on an [`Engine`].
///
/// The parameters are reached through [`params`](Sequential::params) and
/// [`params_mut`](Sequential::params_mut). The fast engine's layer plans keep the weights
/// prepared for its kernels; any `params_mut` marks them stale, and the next
/// [`forward`](Sequential::forward) calls [`refresh_plan`](Sequential::refresh_plan) first.
pub struct Sequential {
    pub input_shape: Vec<usize>,
    pub configs: Vec<LayerConfig>,
    pub layers: Vec<Layer>,
    params: Params,
    engine: Engine,
    steps: Vec<Step>,
    /// The weights may have changed since the plans were last refreshed.
    stale: bool,
}

impl Clone for Sequential {
    /// A copy with its own plans (the plans hold prepared weights, so they are not shared).
    fn clone(&self) -> Self {
        let mut copy = Sequential {
            input_shape: self.input_shape.clone(),
            configs: self.configs.clone(),
            layers: self.layers.iter().map(|l| l.on_engine(self.engine)).collect(),
            params: self.params.clone(),
            engine: self.engine,
            steps: self.steps.clone(),
            stale: true,
        };
        copy.refresh_plan();
        copy
    }
}

impl std::fmt::Debug for Sequential {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_struct("Sequential")
            .field("input_shape", &self.input_shape)
            .field("configs", &self.configs)
            .field("engine", &self.engine)
            .finish_non_exhaustive()
    }
}

impl Sequential {
    /// Builds the layers for `input_shape` (without the batch dimension) on the fast engine
    /// and initialises their parameters from `rng`.
    pub fn new(
        input_shape: &[usize],
        configs: &[LayerConfig],
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self, ModelError> {
        let engine = Engine::Fast;
        let mut params = Params::new();
        let mut layers = Vec::with_capacity(configs.len());
        let mut shape = input_shape.to_vec();
        for (i, cfg) in configs.iter().enumerate() {
            let (label, prefix) = (i.to_string(), format!("{i}.{}", cfg.kind()));
            let layer = Layer::build(&label, &prefix, cfg, &shape, &mut params, init, rng, engine)?;
            shape = layer.out_shape.clone();
            layers.push(layer);
        }
        let steps = plan::steps(engine, &layers);
        let mut model = Sequential {
            input_shape: input_shape.to_vec(),
            configs: configs.to_vec(),
            layers,
            params,
            engine,
            steps,
            stale: true,
        };
        model.refresh_plan();
        Ok(model)
    }

    /// The engine the model runs on.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Runs the model on `engine` from now on (same parameters, new plans).
    pub fn set_engine(&mut self, engine: Engine) {
        self.layers = self.layers.iter().map(|l| l.on_engine(engine)).collect();
        self.steps = plan::steps(engine, &self.layers);
        self.engine = engine;
        self.refresh_plan();
    }

    /// The steps of the forward pass (which layers run fused).
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// The layers with weights, in order (a residual block's body, then its projection), as
    /// the plan of [`crate::planfile`] sees them.
    pub fn planned_layers(&self) -> Vec<Planned<'_>> {
        let mut out = Vec::new();
        let mut input_grad = false;
        for (i, layer) in self.layers.iter().enumerate() {
            let fused = self.steps.contains(&Step::ConvReluPool(i));
            let pool = match (fused, layer.conv_geom(), self.layers.get(i + 2).map(|l| &l.config)) {
                (true, Some(g), Some(&LayerConfig::MaxPool2d { size, stride })) => {
                    Some(PoolGeom::new(g.oh, g.ow, size, stride))
                }
                _ => None,
            };
            layer.planned(&i.to_string(), pool, input_grad, &mut out);
            input_grad |= !layer.param_ids().is_empty();
        }
        out
    }

    /// Runs the layers with weights as `choices` say, one per entry of
    /// [`Sequential::planned_layers`], in order (fresh plans, refreshed from the weights).
    /// An error, with nothing changed, when they do not fit the layers.
    pub fn set_choices(&mut self, choices: &[Choice]) -> Result<(), String> {
        let planned = self.planned_layers();
        if planned.len() != choices.len() {
            return Err(format!("{} choices for {} layers with weights", choices.len(), planned.len()));
        }
        for (p, c) in planned.iter().zip(choices) {
            p.takes(c)?;
        }
        drop(planned);
        let mut it = choices.iter().copied();
        for layer in &mut self.layers {
            layer.set_choices(&mut it);
        }
        self.refresh_plan();
        Ok(())
    }

    /// The parameters (weights, biases, batch-norm statistics) and their gradients.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The parameters, to change: marks the plans stale until the next forward refreshes them.
    pub fn params_mut(&mut self) -> &mut Params {
        self.stale = true;
        &mut self.params
    }

    /// Zeroes the parameters' gradients (the weights do not change, the plans stay fresh).
    pub fn zero_grads(&mut self) {
        self.params.zero_grads();
    }

    /// Backpropagates from `loss` into the parameters' gradients (see [`Tape::backward`]).
    pub fn backward(&mut self, tape: &mut Tape, loss: Var) {
        tape.backward(loss, &mut self.params);
    }

    /// Prepares every layer's plan for the current weights (on the fast engine: transposed
    /// copies for the kernels). [`forward`](Sequential::forward) calls it when
    /// [`params_mut`](Sequential::params_mut) was used since the last refresh; a trainer
    /// changes the weights once per step, so it runs once per step.
    pub fn refresh_plan(&mut self) {
        for layer in &self.layers {
            layer.refresh(&self.params);
        }
        self.stale = false;
    }

    /// The shape of one output (without the batch dimension).
    pub fn output_shape(&self) -> &[usize] {
        self.layers.last().map_or(&self.input_shape, |l| &l.out_shape)
    }

    /// Runs every layer, recording on `tape`; returns the last layer's output (the logits).
    /// `rng` feeds the dropout masks in [`Mode::Train`].
    ///
    /// # Shapes
    /// `x: [N, input_shape...]` -> `[N, output_shape...]`.
    pub fn forward(&mut self, tape: &mut Tape, x: Var, mode: Mode, rng: &mut Rng) -> Var {
        if self.stale {
            self.refresh_plan();
        }
        let mut h = x;
        for step in &self.steps {
            h = match *step {
                Step::Layer(i) => self.layers[i].forward(tape, &mut self.params, h, mode, rng),
                Step::ConvReluPool(i) => {
                    self.layers[i].forward_relu_pool(tape, &self.params, h, &self.layers[i + 2])
                }
                Step::BatchNormRelu(i) => {
                    self.layers[i].forward_batch_norm_relu(tape, &mut self.params, h, mode)
                }
                Step::Skip(_) => h,
            };
        }
        h
    }

    /// The loss of `logits` against `labels` (mean softmax cross-entropy, with optional label
    /// smoothing), on the model's engine.
    pub fn loss(&self, tape: &mut Tape, logits: Var, labels: &[u8], smoothing: f32) -> Var {
        ops::softmax_cross_entropy(tape, logits, labels, smoothing, self.engine)
    }

    /// [`loss`](Self::loss) of a mixed batch: `lam` of it against `labels`, `1 - lam` against
    /// `partners` ([`ops::softmax_cross_entropy_mixed`]).
    pub fn loss_mixed(
        &self,
        tape: &mut Tape,
        logits: Var,
        (labels, partners, lam): (&[u8], &[u8], f32),
        smoothing: f32,
    ) -> Var {
        ops::softmax_cross_entropy_mixed(tape, logits, labels, partners, lam, smoothing, self.engine)
    }

    /// The architecture as a table, like Keras's `model.summary()`.
    pub fn summary(&self) -> String {
        let mut rows = vec![[
            "Layer (type)".to_string(),
            "Output shape".to_string(),
            "Param #".to_string(),
            "Runs as".to_string(),
        ]];
        for (i, layer) in self.layers.iter().enumerate() {
            let mut runs = plan::describe(&self.steps, i);
            if let Some(p) = layer.conv_plan() {
                let mut path = format!("{} path", p.path_name());
                // The sparse backward serves only a pooled gradient, so only the fused op.
                if self.steps.contains(&Step::ConvReluPool(i)) && p.choice().is_some_and(|c| c.sparse) {
                    path.push_str(", sparse backward");
                }
                runs = if runs.is_empty() { path } else { format!("{runs}, {path}") };
            }
            layer.summary_rows(&i.to_string(), "", &self.params, runs, &mut rows);
        }
        let width = |k: usize, min: usize| rows.iter().map(|r| r[k].len()).max().unwrap_or(0).max(min);
        let (w0, w1, w2, w3) = (width(0, 28), width(1, 20), width(2, 8), width(3, 0));
        let rule = |c: char| c.to_string().repeat(w0 + w1 + w2 + w3 + 6);
        let mut out = String::new();
        let input = self.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        out += &format!("Input shape: (None, {input}), {} engine\n{}\n", self.engine.name(), rule('_'));
        for (k, [a, b, c, d]) in rows.iter().enumerate() {
            out += format!("{a:<w0$}  {b:<w1$}  {c:>w2$}  {d}").trim_end();
            out.push('\n');
            out += &format!("{}\n", rule(if k == 0 { '=' } else { '_' }));
        }
        let (tr, nt) = (self.params.trainable_count(), self.params.buffer_count());
        out +=
            &format!("Total params: {}\nTrainable params: {}\nNon-trainable params: {}\n", tr + nt, tr, nt);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_tensorflow() {
        // 4x4 kernel, stride 1, 28 wide: total 3, one before and two after.
        assert_eq!(same_padding(28, 4, 1), (1, 2));
        // 3x3, stride 2, 13 wide: out 7, total (7-1)*2+3-13 = 2.
        assert_eq!(same_padding(13, 3, 2), (1, 1));
        assert_eq!(same_padding(7, 3, 2), (1, 1));
        // 3x3 stride 1: symmetric 1, 1.
        assert_eq!(same_padding(10, 3, 1), (1, 1));
        // stride 2 on even input: 28 -> 14, total (13*2+3-28) = 1: 0 before, 1 after.
        assert_eq!(same_padding(28, 3, 2), (0, 1));
    }
}
