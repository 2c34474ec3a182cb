//! Layers and the sequential model.
//!
//! A model is described by a list of [`LayerConfig`]s (plain data, serialisable, the thing a
//! model file stores) and built against an input shape: building derives every layer's
//! output shape (the flatten width is computed, never typed in), creates and initialises the
//! parameters, and fails with a clear message when a layer does not fit its input.
//!
//! Shapes in this module exclude the batch dimension: `[C, H, W]` for images, `[F]` for
//! vectors.

use kernels::im2col::ConvGeom;
use kernels::{ConvPlan, DensePlan, Engine, Rng};
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Padding {
    /// No padding: `OH = (H - KH) / S + 1`.
    Valid,
    /// TensorFlow's 'same': `OH = ceil(H / S)`, with the total padding split so that the
    /// smaller half goes *before* (4x4 kernel, stride 1: 1 before, 2 after).
    Same,
    /// Explicit padding per side.
    Explicit { top: usize, left: usize, bottom: usize, right: usize },
}

/// One layer of a sequential model, as configured (no weights).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum LayerConfig {
    Conv2d {
        filters: usize,
        kernel: [usize; 2],
        stride: usize,
        padding: Padding,
    },
    MaxPool2d {
        size: usize,
        stride: usize,
    },
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
    BatchNorm {
        momentum: f32,
        eps: f32,
    },
}

impl LayerConfig {
    /// A conv layer with a square kernel and stride 1.
    pub fn conv(filters: usize, k: usize, padding: Padding) -> Self {
        LayerConfig::Conv2d { filters, kernel: [k, k], stride: 1, padding }
    }
    /// Keras's defaults: momentum 0.99, eps 1e-3.
    pub fn batch_norm() -> Self {
        LayerConfig::BatchNorm { momentum: 0.99, eps: 1e-3 }
    }
    fn kind(&self) -> &'static str {
        match self {
            LayerConfig::Conv2d { .. } => "conv2d",
            LayerConfig::MaxPool2d { .. } => "max_pool2d",
            LayerConfig::Relu => "relu",
            LayerConfig::Flatten => "flatten",
            LayerConfig::Dropout { .. } => "dropout",
            LayerConfig::Dense { .. } => "dense",
            LayerConfig::BatchNorm { .. } => "batch_norm",
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
    Relu,
    Flatten,
    Dropout { rate: f32 },
    Dense { w: ParamId, b: ParamId, plan: Arc<DensePlan> },
    BatchNorm(BatchNormState),
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

/// TensorFlow's 'same' padding along one axis: `(before, after, out)`.
fn same_padding(input: usize, k: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + k).saturating_sub(input);
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

    #[allow(clippy::too_many_arguments)]
    fn build(
        index: usize,
        config: &LayerConfig,
        in_shape: &[usize],
        params: &mut Params,
        init: Init,
        rng: &mut Rng,
        engine: Engine,
    ) -> Result<Layer, ModelError> {
        let name = |what: &str| format!("{index}.{}.{what}", config.kind());
        let err = |why: String| ModelError(format!("layer {index} ({}): {why}", config.kind()));
        let image = |shape: &[usize]| match *shape {
            [c, h, w] => Ok((c, h, w)),
            _ => Err(err(format!("needs an image input [C, H, W], got {shape:?}"))),
        };
        let (kind, out_shape) = match *config {
            LayerConfig::Conv2d { filters, kernel: [kh, kw], stride, padding } => {
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
                if h + pt + pb < kh || w + pl + pr < kw {
                    return Err(err(format!("{kh}x{kw} kernel is larger than the padded {h}x{w} input")));
                }
                let geom = ConvGeom::new(c, h, w, kh, kw, (stride, stride), (pt, pl, pb, pr));
                let mut wt = Tensor::zeros(&[filters, c, kh, kw]);
                init.fill(c * kh * kw, filters * kh * kw, rng, &mut wt);
                let w_id = params.add(name("weight"), wt);
                let b_id = params.add(name("bias"), Tensor::zeros(&[filters]));
                let plan = Arc::new(ConvPlan::new(engine, geom, filters));
                (Built::Conv { w: w_id, b: b_id, plan }, vec![filters, geom.oh, geom.ow])
            }
            LayerConfig::MaxPool2d { size, stride } => {
                let (c, h, w) = image(in_shape)?;
                if size == 0 || stride == 0 {
                    return Err(err("size and stride must be positive".into()));
                }
                if h < size || w < size {
                    return Err(err(format!("{size}x{size} window is larger than the {h}x{w} input")));
                }
                (Built::Pool { size, stride }, vec![c, (h - size) / stride + 1, (w - size) / stride + 1])
            }
            LayerConfig::Relu => (Built::Relu, in_shape.to_vec()),
            LayerConfig::Flatten => (Built::Flatten, vec![in_shape.iter().product()]),
            LayerConfig::Dropout { rate } => {
                if !(0.0..1.0).contains(&rate) {
                    return Err(err(format!("rate {rate} is not in [0, 1)")));
                }
                (Built::Dropout { rate }, in_shape.to_vec())
            }
            LayerConfig::Dense { units } => {
                let [fin] = *in_shape else {
                    return Err(err(format!(
                        "needs a vector input [F] (add a flatten layer), got {in_shape:?}"
                    )));
                };
                if units == 0 {
                    return Err(err("units must be positive".into()));
                }
                let mut wt = Tensor::zeros(&[fin, units]);
                init.fill(fin, units, rng, &mut wt);
                let w = params.add(name("weight"), wt);
                let b = params.add(name("bias"), Tensor::zeros(&[units]));
                let plan = Arc::new(DensePlan::new(engine, fin, units));
                (Built::Dense { w, b, plan }, vec![units])
            }
            LayerConfig::BatchNorm { momentum, eps } => {
                if !(0.0..=1.0).contains(&momentum) || eps <= 0.0 {
                    return Err(err(format!("momentum {momentum} must be in [0, 1] and eps {eps} positive")));
                }
                let c = in_shape[0];
                let st = BatchNormState {
                    gamma: params.add(name("gamma"), Tensor::full(&[c], 1.0)),
                    beta: params.add(name("beta"), Tensor::zeros(&[c])),
                    running_mean: params.add_buffer(name("running_mean"), Tensor::zeros(&[c])),
                    running_var: params.add_buffer(name("running_var"), Tensor::full(&[c], 1.0)),
                    momentum,
                    eps,
                    engine,
                };
                (Built::BatchNorm(st), in_shape.to_vec())
            }
        };
        Ok(Layer { config: config.clone(), in_shape: in_shape.to_vec(), out_shape, kind, engine })
    }

    /// The same layer, with the same parameters, on another engine (fresh plans, to be
    /// refreshed).
    fn on_engine(&self, engine: Engine) -> Layer {
        let kind = match &self.kind {
            Built::Conv { w, b, plan } => {
                let plan = Arc::new(ConvPlan::new(engine, *plan.geom(), self.out_shape[0]));
                Built::Conv { w: *w, b: *b, plan }
            }
            Built::Dense { w, b, .. } => {
                let fin = self.in_shape.iter().product();
                Built::Dense { w: *w, b: *b, plan: Arc::new(DensePlan::new(engine, fin, self.out_shape[0])) }
            }
            Built::Pool { size, stride } => Built::Pool { size: *size, stride: *stride },
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

    /// Prepares this layer's plan for the current values of its weights (see
    /// [`Sequential::refresh_plan`]).
    pub fn refresh(&self, params: &Params) {
        match &self.kind {
            Built::Conv { w, plan, .. } => plan.refresh(params.value(*w).data()),
            Built::Dense { w, plan, .. } => plan.refresh(params.value(*w).data()),
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

    /// The ids of this layer's parameters and buffers, in creation order.
    pub fn param_ids(&self) -> Vec<ParamId> {
        match &self.kind {
            Built::Conv { w, b, .. } | Built::Dense { w, b, .. } => vec![*w, *b],
            Built::BatchNorm(st) => vec![st.gamma, st.beta, st.running_mean, st.running_var],
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
            let layer = Layer::build(i, cfg, &shape, &mut params, init, rng, engine)?;
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

    /// The architecture as a table, like Keras's `model.summary()`.
    pub fn summary(&self) -> String {
        let mut rows = vec![(
            "Layer (type)".to_string(),
            "Output shape".to_string(),
            "Param #".to_string(),
            "Runs as".to_string(),
        )];
        for (i, layer) in self.layers.iter().enumerate() {
            let count: usize = layer.param_ids().iter().map(|&id| self.params.value(id).len()).sum();
            let desc = match &layer.config {
                LayerConfig::Conv2d { filters, kernel, stride, padding } => {
                    let pad = match padding {
                        Padding::Valid => "valid".to_string(),
                        Padding::Same => "same".to_string(),
                        Padding::Explicit { top, left, bottom, right } => {
                            format!("pad {top},{left},{bottom},{right}")
                        }
                    };
                    format!("{i} conv2d {filters}@{}x{} s{stride} {pad}", kernel[0], kernel[1])
                }
                LayerConfig::MaxPool2d { size, stride } => format!("{i} max_pool2d {size}x{size} s{stride}"),
                LayerConfig::Dropout { rate } => format!("{i} dropout {rate}"),
                LayerConfig::Dense { units } => format!("{i} dense {units}"),
                other => format!("{i} {}", other.kind()),
            };
            let shape = format!(
                "(None, {})",
                layer.out_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
            );
            let mut runs = plan::describe(&self.steps, i);
            if let Some(p) = layer.conv_plan() {
                let path = format!("{} path", p.path_name());
                runs = if runs.is_empty() { path } else { format!("{runs}, {path}") };
            }
            rows.push((desc, shape, count.to_string(), runs));
        }
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(28);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(20);
        let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(8);
        let w3 = rows.iter().map(|r| r.3.len()).max().unwrap_or(0);
        let rule = |c: char| c.to_string().repeat(w0 + w1 + w2 + w3 + 6);
        let mut out = String::new();
        let input = self.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        out += &format!("Input shape: (None, {input}), {} engine\n{}\n", self.engine.name(), rule('_'));
        for (k, (a, b, c, d)) in rows.iter().enumerate() {
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
