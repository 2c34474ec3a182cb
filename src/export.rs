//! Export to PyTorch: a saved model as an `nn.Module` (`model.py`) and its weights under
//! PyTorch's names and layouts (`state_dict.safetensors`), so that
//! `model.load_state_dict(safetensors.torch.load_file(...), strict=True)` works and gives the
//! same logits.
//!
//! The translation, layer by layer (the module is an `nn.Sequential`, so the first layer's
//! weight is `0.weight`):
//! - `conv2d` -> `nn.Conv2d`, weights `[OC, C, KH, KW]` as here; TensorFlow's asymmetric
//!   'same' padding (a 4x4 kernel pads 1 before and 2 after) becomes a `Conv2d` subclass that
//!   pads with `F.pad` first, so the names stay `i.weight` and `i.bias`;
//! - `dense` -> `nn.Linear`: the weight is transposed, `[IN, OUT]` here, `[OUT, IN]` there;
//! - `batch_norm` -> `nn.BatchNorm2d` (images) or `nn.BatchNorm1d` (vectors): `gamma`, `beta`
//!   become `weight`, `bias`; the running statistics keep their names; `num_batches_tracked`
//!   is written as 0 (PyTorch reads it only with `momentum=None`); the momentum is translated
//!   from Keras's convention (`running = m * running + (1 - m) * batch`) to PyTorch's
//!   (`1 - m`), `eps` is kept;
//! - `max_pool`, `avg_pool`, `relu`, `dropout`, `flatten` -> their `nn` modules;
//!   `global_avg_pool` -> a module taking the mean over height and width;
//! - `residual` -> a `Residual` module with a `body` (`nn.Sequential`) and a `proj` (the 1x1
//!   convolution and batch-norm, or `nn.Identity`).
//!
//! The input normalisation (`x = (byte * scale - mean) / std`) is the module's first step:
//! `Net` takes the raw pixel values 0..255 as floats, `[N, 1, 28, 28]`.

use std::fmt::Write as _;

use safetensors::tensor::{Dtype, TensorView};

use crate::model::{Layer, LayerConfig};
use crate::modelfile::SavedModel;
use crate::params::Params;

/// One tensor of the state dict: name, dtype, shape, little-endian bytes.
pub struct StateTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

fn f32_tensor(name: String, shape: &[usize], values: &[f32]) -> StateTensor {
    let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    StateTensor { name, dtype: Dtype::F32, shape: shape.to_vec(), bytes }
}

/// `model.py` and the state dict of `saved`.
pub fn pytorch(saved: &SavedModel) -> (String, Vec<StateTensor>) {
    let model = &saved.model;
    let mut code = String::new();
    let mut tensors = Vec::new();
    let mut modules = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        modules.push(module(layer, &i.to_string(), model.params(), &mut tensors));
    }
    let n = saved.normalization;
    let _ = write!(
        code,
        r#""""The fmnist model `{preset}` as a PyTorch module, written by `fmnist export`.

Load it with:
    import torch, safetensors.torch
    from model import Net
    net = Net().eval()
    net.load_state_dict(safetensors.torch.load_file("state_dict.safetensors"), strict=True)
    logits = net(pixels)  # pixels: float tensor [N, 1, 28, 28] of raw values 0..255

Classes: {classes}
"""
import torch
import torch.nn as nn
import torch.nn.functional as F


class PadConv2d(nn.Conv2d):
    """A Conv2d whose zero padding may differ before and after (TensorFlow's 'same' with an
    even kernel); `pads` is (left, right, top, bottom), as F.pad takes it."""

    def __init__(self, *args, pads, **kwargs):
        super().__init__(*args, padding=0, **kwargs)
        self.pads = pads

    def forward(self, x):
        return super().forward(F.pad(x, self.pads))


class GlobalAvgPool(nn.Module):
    """The mean of every channel: [N, C, H, W] -> [N, C]."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


class Residual(nn.Module):
    """body(x) + proj(x)."""

    def __init__(self, body, proj):
        super().__init__()
        self.body = body
        self.proj = proj

    def forward(self, x):
        return self.body(x) + self.proj(x)


class Net(nn.Sequential):
    """Raw pixels 0..255 in, one logit per class out."""

    def __init__(self):
        super().__init__(
{modules}
        )

    def forward(self, x):
        x = (x * {scale:?} - {mean:?}) / {std:?}
        return super().forward(x)
"#,
        preset = saved.preset,
        classes = saved.classes.join(", "),
        modules = modules.iter().map(|m| format!("            {m},")).collect::<Vec<_>>().join("\n"),
        scale = n.scale,
        mean = n.mean,
        std = n.std,
    );
    (code, tensors)
}

/// The PyTorch expression of `layer`, whose state-dict names start with `prefix`; its
/// tensors are appended to `out`.
fn module(layer: &Layer, prefix: &str, params: &Params, out: &mut Vec<StateTensor>) -> String {
    let ids = layer.param_ids();
    let value = |k: usize| params.value(ids[k]);
    match &layer.config {
        LayerConfig::Conv2d { filters, kernel: [kh, kw], stride, .. } => {
            let c = layer.in_shape[0];
            out.push(f32_tensor(format!("{prefix}.weight"), value(0).shape(), value(0).data()));
            out.push(f32_tensor(format!("{prefix}.bias"), value(1).shape(), value(1).data()));
            let g = layer.conv_geom().expect("a conv layer has a geometry");
            let (t, l, b, r) = (g.pad_top, g.pad_left, g.pad_bottom, g.pad_right);
            let head = format!("{c}, {filters}, ({kh}, {kw}), stride={stride}");
            if t == b && l == r {
                format!("nn.Conv2d({head}, padding=({t}, {l}))")
            } else {
                format!("PadConv2d({head}, pads=({l}, {r}, {t}, {b}))")
            }
        }
        LayerConfig::Dense { units } => {
            let (w, fin) = (value(0), layer.in_shape[0]);
            // [IN, OUT] here, [OUT, IN] in PyTorch.
            let mut t = vec![0.0f32; w.len()];
            for i in 0..fin {
                for o in 0..*units {
                    t[o * fin + i] = w.data()[i * units + o];
                }
            }
            out.push(f32_tensor(format!("{prefix}.weight"), &[*units, fin], &t));
            out.push(f32_tensor(format!("{prefix}.bias"), value(1).shape(), value(1).data()));
            format!("nn.Linear({fin}, {units})")
        }
        LayerConfig::BatchNorm { momentum, eps } => {
            let c = layer.in_shape[0];
            for (k, name) in ["weight", "bias", "running_mean", "running_var"].iter().enumerate() {
                out.push(f32_tensor(format!("{prefix}.{name}"), &[c], value(k).data()));
            }
            out.push(StateTensor {
                name: format!("{prefix}.num_batches_tracked"),
                dtype: Dtype::I64,
                shape: vec![],
                bytes: 0i64.to_le_bytes().to_vec(),
            });
            let kind = if layer.in_shape.len() == 3 { "BatchNorm2d" } else { "BatchNorm1d" };
            format!("nn.{kind}({c}, eps={eps:?}, momentum={})", decimal(1.0 - decimal_f64(*momentum)))
        }
        LayerConfig::MaxPool2d { size, stride } => format!("nn.MaxPool2d({size}, stride={stride})"),
        LayerConfig::AvgPool { size, stride } => format!("nn.AvgPool2d({size}, stride={stride})"),
        LayerConfig::GlobalAvgPool => "GlobalAvgPool()".into(),
        LayerConfig::Relu => "nn.ReLU()".into(),
        LayerConfig::Flatten => "nn.Flatten()".into(),
        LayerConfig::Dropout { rate } => format!("nn.Dropout({rate:?})"),
        LayerConfig::Residual { .. } => {
            let (body, shortcut) = layer.children();
            let body: Vec<String> = body
                .iter()
                .enumerate()
                .map(|(j, l)| module(l, &format!("{prefix}.body.{j}"), params, out))
                .collect();
            let proj = if shortcut.is_empty() {
                "nn.Identity()".to_string()
            } else {
                let parts: Vec<String> = shortcut
                    .iter()
                    .enumerate()
                    .map(|(j, l)| module(l, &format!("{prefix}.proj.{j}"), params, out))
                    .collect();
                format!("nn.Sequential({})", parts.join(", "))
            };
            format!("Residual(nn.Sequential({}), {proj})", body.join(", "))
        }
    }
}

/// `v` as its shortest decimal, widened to `f64` (0.99f32 -> 0.99, not 0.9900000095...).
fn decimal_f64(v: f32) -> f64 {
    v.to_string().parse().unwrap_or(v as f64)
}

/// `v` with at most 9 decimals and no trailing zeros (`1 - 0.99` -> `0.01`).
fn decimal(v: f64) -> String {
    let s = format!("{v:.9}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

/// The state dict as safetensors bytes.
pub fn state_dict_bytes(tensors: &[StateTensor]) -> Result<Vec<u8>, String> {
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| format!("tensor {}: {e}", t.name))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, None).map_err(|e| e.to_string())
}
