//! An exponential moving average of the weights (Polyak averaging, as TensorFlow's
//! `tf.train.ExponentialMovingAverage`, Keras's `use_ema` and timm's `ModelEmaV2` keep it):
//! after every optimizer update `t` (0-based), every trainable parameter's average moves
//! towards the raw weight,
//!
//! ```text
//! d_t = min(decay, (1 + t) / (10 + t))      (TF's `num_updates` warm-up)
//! ema = d_t * ema + (1 - d_t) * w
//! ```
//!
//! starting from the initial weights. The warm-up is always on: early in a run `(1+t)/(10+t)`
//! is small (0.1 at the first update, 0.5 at `t = 8`, 0.9 at `t = 80`, 0.99 at `t = 890`), so
//! the average forgets the random initial weights within a few hundred updates instead of the
//! `1 / (1 - decay)` updates a plain 0.999 average needs (it would still hold 22% of the
//! initial weights after 1,500 updates, one epoch at batch 32).
//!
//! Batch-norm running statistics (non-trainable buffers) are copied from the raw model, not
//! averaged. That is Keras's choice (its `use_ema` averages the trainable variables only);
//! timm's `ModelEmaV2` averages every entry of the state dict, buffers included. We copy
//! because the running statistics are already a moving average (momentum 0.99) of the raw
//! network's activations; averaging them again would make them lag twice.
//!
//! The [`Trainer`](crate::train::Trainer) keeps the average beside the raw weights (which
//! go on training) and validates, picks the best epoch and ends with the averaged weights.

use crate::params::Params;

/// The decay of update `t` (0-based): `min(decay, (1 + t) / (10 + t))`, computed in `f64`.
pub fn ema_decay_at(decay: f32, t: usize) -> f32 {
    (decay as f64).min((1.0 + t as f64) / (10.0 + t as f64)) as f32
}

/// One update of the average `ema` towards `model` after optimizer update `t` (0-based):
/// trainable parameters `ema = d * ema + (1 - d) * w` in `f32` with `d =
/// `[`ema_decay_at`]`(decay, t)`; buffers copied.
///
/// # Panics
/// If `ema` and `model` do not hold the same parameters (names and lengths).
pub fn ema_update(ema: &mut Params, model: &Params, decay: f32, t: usize) {
    assert_eq!(ema.len(), model.len(), "ema_update: {} parameters, the model has {}", ema.len(), model.len());
    let d = ema_decay_at(decay, t);
    for (e, w) in ema.iter_mut().zip(model.iter()) {
        assert_eq!(e.value.len(), w.value.len(), "ema_update: parameter {} has another length", w.name);
        if w.trainable {
            for (ev, &wv) in e.value.data_mut().iter_mut().zip(w.value.data()) {
                *ev = d * *ev + (1.0 - d) * wv;
            }
        } else {
            e.value.data_mut().copy_from_slice(w.value.data());
        }
    }
}
