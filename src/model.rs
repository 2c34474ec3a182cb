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
use kernels::Rng;
use serde::{Deserialize, Serialize};

use crate::ops;
use crate::ops::BatchNormState;
use crate::params::{ParamId, Params};
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

/// A layer built for a known input shape.
#[derive(Clone, Debug)]
pub struct Layer {
    pub config: LayerConfig,
    pub in_shape: Vec<usize>,
    pub out_shape: Vec<usize>,
    kind: Built,
}

#[derive(Clone, Debug)]
enum Built {
    Conv { geom: ConvGeom, w: ParamId, b: ParamId },
    Pool { size: usize, stride: usize },
    Relu,
    Flatten,
    Dropout { rate: f32 },
    Dense { w: ParamId, b: ParamId },
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
        match self.kind {
            Built::Conv { geom, .. } => Some(geom),
            _ => None,
        }
    }

    fn build(
        index: usize,
        config: &LayerConfig,
        in_shape: &[usize],
        params: &mut Params,
        init: Init,
        rng: &mut Rng,
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
                (Built::Conv { geom, w: w_id, b: b_id }, vec![filters, geom.oh, geom.ow])
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
                (Built::Dense { w, b }, vec![units])
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
                };
                (Built::BatchNorm(st), in_shape.to_vec())
            }
        };
        Ok(Layer { config: config.clone(), in_shape: in_shape.to_vec(), out_shape, kind })
    }

    /// Records this layer's op(s) on the tape.
    ///
    /// # Shapes
    /// `x: [N, in_shape...]` -> `[N, out_shape...]`.
    pub fn forward(&self, tape: &mut Tape, params: &mut Params, x: Var, mode: Mode, rng: &mut Rng) -> Var {
        match &self.kind {
            Built::Conv { geom, w, b } => ops::conv2d(tape, params, x, *w, *b, *geom),
            Built::Pool { size, stride } => ops::max_pool2d(tape, x, *size, *stride),
            Built::Relu => ops::relu(tape, x),
            Built::Flatten => ops::flatten(tape, x),
            Built::Dropout { rate } => ops::dropout(tape, x, *rate, mode, rng),
            Built::Dense { w, b } => ops::dense(tape, params, x, *w, *b),
            Built::BatchNorm(st) => ops::batch_norm(tape, params, x, st, mode),
        }
    }

    /// The ids of this layer's parameters and buffers, in creation order.
    pub fn param_ids(&self) -> Vec<ParamId> {
        match &self.kind {
            Built::Conv { w, b, .. } | Built::Dense { w, b } => vec![*w, *b],
            Built::BatchNorm(st) => vec![st.gamma, st.beta, st.running_mean, st.running_var],
            _ => vec![],
        }
    }
}

/// A stack of layers applied in order, with all their parameters.
#[derive(Clone, Debug)]
pub struct Sequential {
    pub input_shape: Vec<usize>,
    pub configs: Vec<LayerConfig>,
    pub layers: Vec<Layer>,
    pub params: Params,
}

impl Sequential {
    /// Builds the layers for `input_shape` (without the batch dimension) and initialises their
    /// parameters from `rng`.
    pub fn new(
        input_shape: &[usize],
        configs: &[LayerConfig],
        init: Init,
        rng: &mut Rng,
    ) -> Result<Self, ModelError> {
        let mut params = Params::new();
        let mut layers = Vec::with_capacity(configs.len());
        let mut shape = input_shape.to_vec();
        for (i, cfg) in configs.iter().enumerate() {
            let layer = Layer::build(i, cfg, &shape, &mut params, init, rng)?;
            shape = layer.out_shape.clone();
            layers.push(layer);
        }
        Ok(Sequential { input_shape: input_shape.to_vec(), configs: configs.to_vec(), layers, params })
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
        let mut h = x;
        let mut i = 0;
        while i < self.layers.len() {
            let rest = &self.layers[i..];
            match rest {
                // Conv -> ReLU -> max-pool runs as one fused op (see `ops::conv2d_relu_maxpool`):
                // the same function, without materialising the full-size activations.
                [Layer { kind: Built::Conv { geom, w, b }, .. }, Layer { kind: Built::Relu, .. }, Layer { kind: Built::Pool { size, stride }, .. }, ..] =>
                {
                    h = ops::conv2d_relu_maxpool(tape, &self.params, h, *w, *b, *geom, *size, *stride);
                    i += 3;
                }
                // Dense reads any [N, ...] input as [N, IN], so a flatten right before it is free.
                [Layer { kind: Built::Flatten, .. }, Layer { kind: Built::Dense { .. }, .. }, ..] => i += 1,
                [layer, ..] => {
                    h = layer.forward(tape, &mut self.params, h, mode, rng);
                    i += 1;
                }
                [] => unreachable!(),
            }
        }
        h
    }

    /// The architecture as a table, like Keras's `model.summary()`.
    pub fn summary(&self) -> String {
        let mut rows = vec![("Layer (type)".to_string(), "Output shape".to_string(), "Param #".to_string())];
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
            rows.push((desc, shape, count.to_string()));
        }
        let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(28);
        let w1 = rows.iter().map(|r| r.1.len()).max().unwrap_or(0).max(20);
        let w2 = rows.iter().map(|r| r.2.len()).max().unwrap_or(0).max(8);
        let rule = |c: char| c.to_string().repeat(w0 + w1 + w2 + 4);
        let mut out = String::new();
        let input = self.input_shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ");
        out += &format!("Input shape: (None, {input})\n{}\n", rule('_'));
        for (k, (a, b, c)) in rows.iter().enumerate() {
            out += &format!("{a:<w0$}  {b:<w1$}  {c:>w2$}\n");
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
