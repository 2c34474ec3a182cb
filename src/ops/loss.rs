//! Softmax cross-entropy loss, fused: the mean over the batch of `-sum_k t_k log p_k` with
//! `p = softmax(z)` and targets `t` (one-hot, or smoothed: `t_k = s/K + (1 - s) [k = label]`).
//! Computed as `log p_k = z_k - max(z) - log sum_j exp(z_j - max(z))`, which cannot overflow.
//! Its gradient is `dz = (p - t) / N`: the softmax's Jacobian and the log's derivative cancel
//! to that when `sum_k t_k = 1`. Forward keeps `p` for backward.

use kernels::Engine;

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records the mean softmax cross-entropy of `logits` against `labels`.
///
/// # Shapes
/// `logits: [N, K]`, `labels: N` values below K -> `[1]`.
pub fn softmax_cross_entropy(
    tape: &mut Tape,
    logits: Var,
    labels: &[u8],
    smoothing: f32,
    engine: Engine,
) -> Var {
    record(tape, logits, labels, None, smoothing, engine)
}

/// Records the loss of a mixed batch (mixup, CutMix: [`crate::mix`]): `lam` times the
/// cross-entropy against `labels` plus `1 - lam` times that against `partners`, which is the
/// cross-entropy against the mixed target `lam t + (1 - lam) t'` since it is linear in the
/// target; so is its gradient, `dz = (p - lam t - (1 - lam) t') / N`.
///
/// # Shapes
/// `logits: [N, K]`, `labels` and `partners`: N values below K -> `[1]`.
pub fn softmax_cross_entropy_mixed(
    tape: &mut Tape,
    logits: Var,
    labels: &[u8],
    partners: &[u8],
    lam: f32,
    smoothing: f32,
    engine: Engine,
) -> Var {
    assert_eq!(
        labels.len(),
        partners.len(),
        "softmax_cross_entropy_mixed: labels and partners differ in length"
    );
    record(tape, logits, labels, Some((partners.to_vec(), lam)), smoothing, engine)
}

fn record(
    tape: &mut Tape,
    logits: Var,
    labels: &[u8],
    mix: Option<(Vec<u8>, f32)>,
    smoothing: f32,
    engine: Engine,
) -> Var {
    let z = tape.value(logits);
    let &[n, k] = z.shape() else { panic!("softmax_cross_entropy: logits {:?} are not [N, K]", z.shape()) };
    let mut probs = vec![0.0; n * k];
    let mut total = engine.softmax_xent_forward(z.data(), labels, (n, k), smoothing, &mut probs);
    if let Some((partners, lam)) = &mix {
        // The same probabilities again, against the partners' labels.
        let other = engine.softmax_xent_forward(z.data(), partners, (n, k), smoothing, &mut probs);
        total = *lam as f64 * total + (1.0 - *lam as f64) * other;
    }
    let mean = if n > 0 { total / n as f64 } else { 0.0 };
    let needs = tape.needs_grad(logits);
    let op = SoftmaxXentBackward { logits, labels: labels.to_vec(), mix, probs, n, k, smoothing, engine };
    tape.push(Tensor::scalar(mean as f32), needs, Box::new(op))
}

struct SoftmaxXentBackward {
    logits: Var,
    labels: Vec<u8>,
    /// A mixed batch's partner labels and the share `lam` of `labels`.
    mix: Option<(Vec<u8>, f32)>,
    probs: Vec<f32>,
    n: usize,
    k: usize,
    smoothing: f32,
    engine: Engine,
}

impl Backward for SoftmaxXentBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        if self.n == 0 {
            return;
        }
        let scale = dout.data()[0] / self.n as f32;
        let dz = grads.nodes.grad_mut(self.logits);
        let (nk, s) = ((self.n, self.k), self.smoothing);
        match &self.mix {
            None => self.engine.softmax_xent_backward(&self.probs, &self.labels, nk, s, scale, dz.data_mut()),
            Some((partners, lam)) => {
                // dz += scale lam (p - t) + scale (1 - lam) (p - t') = scale (p - mixed t).
                let e = self.engine;
                e.softmax_xent_backward(&self.probs, &self.labels, nk, s, scale * lam, dz.data_mut());
                e.softmax_xent_backward(&self.probs, partners, nk, s, scale * (1.0 - lam), dz.data_mut());
            }
        }
    }
}
