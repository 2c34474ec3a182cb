//! Softmax cross-entropy loss, fused (`kernels::softmax`): the mean over the batch of
//! `-sum_k t_k log softmax(z)_k`, with optional label smoothing. Forward keeps the
//! probabilities; backward is `(p - t) / N` times the upstream gradient.

use kernels::softmax::{softmax_xent_backward, softmax_xent_forward};

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records the mean softmax cross-entropy of `logits` against `labels`.
///
/// # Shapes
/// `logits: [N, K]`, `labels: N` values below K -> `[1]`.
pub fn softmax_cross_entropy(tape: &mut Tape, logits: Var, labels: &[u8], smoothing: f32) -> Var {
    let z = tape.value(logits);
    let &[n, k] = z.shape() else { panic!("softmax_cross_entropy: logits {:?} are not [N, K]", z.shape()) };
    let mut probs = vec![0.0; n * k];
    let total = softmax_xent_forward(z.data(), labels, n, k, smoothing, &mut probs);
    let mean = if n > 0 { total / n as f64 } else { 0.0 };
    let needs = tape.needs_grad(logits);
    let op = SoftmaxXentBackward { logits, labels: labels.to_vec(), probs, n, k, smoothing };
    tape.push(Tensor::scalar(mean as f32), needs, Box::new(op))
}

struct SoftmaxXentBackward {
    logits: Var,
    labels: Vec<u8>,
    probs: Vec<f32>,
    n: usize,
    k: usize,
    smoothing: f32,
}

impl Backward for SoftmaxXentBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        if self.n == 0 {
            return;
        }
        let scale = dout.data()[0] / self.n as f32;
        let dz = grads.nodes.grad_mut(self.logits);
        softmax_xent_backward(
            &self.probs,
            &self.labels,
            self.n,
            self.k,
            self.smoothing,
            scale,
            dz.data_mut(),
        );
    }
}
