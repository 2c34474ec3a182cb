//! Evaluation: a model's loss, accuracy and class probabilities on a dataset ([`evaluate`]),
//! the same with horizontal-flip test-time augmentation ([`evaluate_flip_tta`]), and the
//! ensemble that averages several models' probabilities ([`ensemble`]). Evaluation mode only:
//! no gradients, no updates; training is [`fit`](crate::train::fit)'s.

use kernels::Rng;

use super::Normalization;
use crate::augment;
use crate::data::Dataset;
use crate::tape::Tape;
use crate::{Mode, Sequential};

/// Loss, accuracy and per-image predictions of a model on a dataset.
#[derive(Clone, Debug)]
pub struct Evaluation {
    pub loss: f32,
    pub accuracy: f32,
    /// `[N, 10]` class probabilities.
    pub probabilities: Vec<f32>,
    pub predictions: Vec<u8>,
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, &x)| if x > v[best] { i } else { best })
}

/// Runs the model in evaluation mode over `ds` in batches of `batch_size`.
pub fn evaluate(model: &mut Sequential, norm: &Normalization, ds: &Dataset, batch_size: usize) -> Evaluation {
    let k = model.output_shape().iter().product::<usize>();
    let mut probabilities = vec![0.0; ds.len() * k];
    let mut total_loss = 0.0f64;
    let mut rng = Rng::new(0); // unused in Eval mode: dropout is the identity
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut tape = Tape::no_grad();
    for (b, idx) in all.chunks(batch_size.max(1)).enumerate() {
        tape.reset();
        let x = tape.input(norm.batch(ds, idx));
        let logits = model.forward(&mut tape, x, Mode::Eval, &mut rng);
        let labels = &ds.labels[idx[0]..idx[0] + idx.len()];
        let out = &mut probabilities[b * batch_size * k..][..idx.len() * k];
        let engine = model.engine();
        total_loss +=
            engine.softmax_xent_forward(tape.value(logits).data(), labels, (idx.len(), k), 0.0, out);
    }
    let predictions: Vec<u8> = probabilities.chunks(k.max(1)).map(|p| argmax(p) as u8).collect();
    let correct = predictions.iter().zip(&ds.labels).filter(|(p, l)| p == l).count();
    let n = ds.len().max(1) as f32;
    Evaluation {
        loss: (total_loss / n as f64) as f32,
        accuracy: correct as f32 / n,
        probabilities,
        predictions,
    }
}

/// The model's logits `[N, K]` for every image of `ds` (evaluation mode), for comparing with
/// another implementation (`eval --predictions`).
pub fn logits(model: &mut Sequential, norm: &Normalization, ds: &Dataset, batch_size: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(ds.len() * model.output_shape().iter().product::<usize>());
    let mut rng = Rng::new(0);
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut tape = Tape::no_grad();
    for idx in all.chunks(batch_size.max(1)) {
        tape.reset();
        let x = tape.input(norm.batch(ds, idx));
        let y = model.forward(&mut tape, x, Mode::Eval, &mut rng);
        out.extend_from_slice(tape.value(y).data());
    }
    out
}

/// [`evaluate`] with test-time augmentation by horizontal flips: the model sees every image
/// and its mirror image, and the two probability vectors are averaged ([`ensemble`]'s
/// arithmetic). Meant for models trained with flips; one model, twice the evaluation time.
pub fn evaluate_flip_tta(
    model: &mut Sequential,
    norm: &Normalization,
    ds: &Dataset,
    batch_size: usize,
) -> Evaluation {
    let plain = evaluate(model, norm, ds, batch_size);
    let mut mirrored = ds.clone();
    let p = ds.pixels().max(1);
    for (dst, src) in mirrored.images.chunks_exact_mut(p).zip(ds.images.chunks_exact(p)) {
        augment::flip_horizontal(src, ds.rows, ds.cols, dst);
    }
    let flipped = evaluate(model, norm, &mirrored, batch_size);
    let k = model.output_shape().iter().product::<usize>();
    ensemble(&[&plain.probabilities, &flipped.probabilities], &ds.labels, k)
}

/// Smallest probability the ensemble's loss takes the log of (Keras's `epsilon()`, with
/// which its cross-entropy on probabilities clips), so a class every model ruled out costs
/// `-ln(1e-7) = 16.1` rather than infinity.
pub const ENSEMBLE_EPS: f32 = 1e-7;

/// The ensemble that averages several models' class probabilities: its accuracy, its loss
/// (mean of `-ln(max(p_true, 1e-7))`, see [`ENSEMBLE_EPS`]), its probabilities and its
/// predictions (argmax, first on ties).
///
/// # Shapes
/// Each of `probabilities`: `[N, K]` (as [`Evaluation::probabilities`]); `labels`: `[N]`.
///
/// # Panics
/// If there is no model, or a model's probabilities are not `labels.len() * k` long.
pub fn ensemble(probabilities: &[&[f32]], labels: &[u8], k: usize) -> Evaluation {
    assert!(!probabilities.is_empty(), "ensemble of no models");
    let n = labels.len();
    for (m, p) in probabilities.iter().enumerate() {
        assert_eq!(p.len(), n * k, "ensemble: model {m} has {} probabilities for {n} images x {k}", p.len());
    }
    let inv = 1.0 / probabilities.len() as f64;
    let mean: Vec<f32> =
        (0..n * k).map(|j| (probabilities.iter().map(|p| p[j] as f64).sum::<f64>() * inv) as f32).collect();
    let predictions: Vec<u8> = mean.chunks(k.max(1)).map(|p| argmax(p) as u8).collect();
    let correct = predictions.iter().zip(labels).filter(|(p, l)| p == l).count();
    let total_loss: f64 =
        mean.chunks(k.max(1)).zip(labels).map(|(p, &l)| -(p[l as usize].max(ENSEMBLE_EPS) as f64).ln()).sum();
    // The same arithmetic as `evaluate`, so one model's ensemble reports its figures.
    let n_f = n.max(1) as f32;
    Evaluation {
        loss: (total_loss / n_f as f64) as f32,
        accuracy: correct as f32 / n_f,
        probabilities: mean,
        predictions,
    }
}
