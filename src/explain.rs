//! What a network does with one image, computed by the engine itself: the class
//! probabilities, the first convolution's filters, the activation maps of each convolution,
//! and a saliency map (Simonyan, Vedaldi & Zisserman 2014, "Deep inside convolutional
//! networks", section 3): the gradient of the predicted class's score with respect to the
//! input pixels.
//!
//! The class score is the *logit* `z_c`, before the softmax, as in the paper: the softmax
//! probability's gradient also depends on every other class's score, so it mixes "more of
//! class c" with "less of the others". The gradient comes from the tape: the input is a
//! [`Tape::leaf`], the loss is `ops::weighted_sum(z, r)` with `r` one-hot on the class, so
//! `d loss / d x = d z_c / d x`. Its unit is logit per unit of the network's input (a pixel
//! byte over 255 under the write-ups' normalisation). The model runs in [`Mode::Eval`]
//! (dropout off, batch-norm on its running statistics) on its own engine; its parameters are
//! left as they were, their gradients zeroed.
//!
//! Drawing these is [`crate::plots::explain`]'s; nothing here draws or writes.

use kernels::Rng;

use crate::model::LayerConfig;
use crate::ops;
use crate::tape::Tape;
use crate::tensor::Tensor;
use crate::train::argmax;
use crate::{Mode, Sequential};

/// The saliency of one image: its class probabilities, the class explained and the gradient.
#[derive(Clone, Debug)]
pub struct Saliency {
    /// Softmax of the logits, `[K]`.
    pub probabilities: Vec<f32>,
    /// The predicted class (argmax of the logits, first on ties).
    pub class: usize,
    /// `d z_class / d x`, the shape of one input (`[C, H, W]` without the batch dimension).
    pub gradient: Tensor,
}

/// One convolution's activation maps for the image.
#[derive(Clone, Debug)]
pub struct Activation {
    /// Index of the convolution in the model's layers.
    pub layer: usize,
    /// What the maps are: `"layer 0: conv2d 32@3x3, after ReLU (layer 1)"`.
    pub description: String,
    /// `[C, H, W]`.
    pub maps: Tensor,
}

/// The logits of one input `x` (`[1, ...input_shape]`), in evaluation mode.
pub fn logits(model: &mut Sequential, x: &Tensor) -> Vec<f32> {
    let mut tape = Tape::no_grad();
    let xv = tape.input(x.clone());
    let z = model.forward(&mut tape, xv, Mode::Eval, &mut Rng::new(0));
    tape.value(z).data().to_vec()
}

/// The softmax of `z`, with the max shift (no overflow).
pub fn softmax(z: &[f32]) -> Vec<f32> {
    let m = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = z.iter().map(|&v| ((v - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&v| (v / s) as f32).collect()
}

/// The saliency map of `x` for the predicted class (`class: None`) or a given one.
///
/// # Shapes
/// `x`: `[1, ...input_shape]` (one image) -> `gradient`: `input_shape`.
///
/// # Panics
/// If `x` is not one input of the model's shape, or `class` is not one of its outputs.
pub fn saliency(model: &mut Sequential, x: &Tensor, class: Option<usize>) -> Saliency {
    let mut want = vec![1];
    want.extend_from_slice(&model.input_shape);
    assert_eq!(x.shape(), &want[..], "saliency: input {:?}, the model takes {want:?}", x.shape());
    let mut tape = Tape::new();
    let xv = tape.leaf(x.clone());
    let z = model.forward(&mut tape, xv, Mode::Eval, &mut Rng::new(0));
    let zs = tape.value(z).data().to_vec();
    let class = class.unwrap_or_else(|| argmax(&zs));
    assert!(class < zs.len(), "saliency: class {class} of {} outputs", zs.len());
    let mut r = Tensor::zeros(tape.value(z).shape()); // [1, K], one-hot on the class
    r.data_mut()[class] = 1.0;
    let score = ops::weighted_sum(&mut tape, z, r);
    model.backward(&mut tape, score);
    // The backward pass also filled the parameters' gradients; they are not wanted here.
    model.zero_grads();
    let gradient = match tape.grad(xv) {
        Some(g) => g.clone().reshape(&model.input_shape),
        None => Tensor::zeros(&model.input_shape),
    };
    Saliency { probabilities: softmax(&zs), class, gradient }
}

/// The first convolution's weights, `[OC, C, KH, KW]`, if the model has a convolution.
pub fn first_filters(model: &Sequential) -> Option<(usize, Tensor)> {
    let (i, layer) =
        model.layers.iter().enumerate().find(|(_, l)| matches!(l.config, LayerConfig::Conv2d { .. }))?;
    let w = layer.param_ids()[0];
    Some((i, model.params().value(w).clone()))
}

/// The activation maps of every convolution for one input `x` (`[1, ...input_shape]`): each
/// convolution's output after the ReLU that follows it (directly, or after a batch-norm), else
/// its raw output. Runs layer by layer in evaluation mode, without the engine's fusions, so
/// every intermediate output exists.
pub fn conv_activations(model: &mut Sequential, x: &Tensor) -> Vec<Activation> {
    model.refresh_plan();
    let mut params = model.params().clone();
    let mut tape = Tape::no_grad();
    let mut rng = Rng::new(0);
    let mut h = tape.input(x.clone());
    let mut outputs = Vec::with_capacity(model.layers.len());
    for layer in &model.layers {
        h = layer.forward(&mut tape, &mut params, h, Mode::Eval, &mut rng);
        outputs.push(h);
    }
    let kind = |i: usize| model.layers.get(i).map(|l| &l.config);
    let mut found = Vec::new();
    for (i, layer) in model.layers.iter().enumerate() {
        let LayerConfig::Conv2d { filters, kernel, .. } = layer.config else { continue };
        let name = format!("layer {i}: conv2d {filters}@{}x{}", kernel[0], kernel[1]);
        let (at, description) = match (kind(i + 1), kind(i + 2)) {
            (Some(LayerConfig::Relu), _) => (i + 1, format!("{name}, after ReLU (layer {})", i + 1)),
            (Some(LayerConfig::BatchNorm { .. }), Some(LayerConfig::Relu)) => {
                (i + 2, format!("{name}, after batch-norm and ReLU (layer {})", i + 2))
            }
            _ => (i, format!("{name}, its raw output")),
        };
        let maps = tape.value(outputs[at]).clone().reshape(&model.layers[at].out_shape);
        found.push(Activation { layer: i, description, maps });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_matches_a_hand_computed_case() {
        // e^0, e^ln2, e^ln5 over their sum 8.
        let p = softmax(&[0.0, 2f32.ln(), 5f32.ln()]);
        for (a, b) in p.iter().zip([1.0 / 8.0, 2.0 / 8.0, 5.0 / 8.0]) {
            assert!((a - b).abs() < 1e-6, "{p:?}");
        }
        // Large logits do not overflow.
        assert!(softmax(&[1000.0, 0.0])[0] > 0.999);
    }
}
