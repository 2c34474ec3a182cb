//! Shape-only ops: `flatten`, and `weighted_sum`, the scalar `sum(x * r)` that the gradient
//! checks use as a loss with a random upstream gradient `r`.

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records `x` reshaped to `[N, rest]`.
///
/// # Shapes
/// `[N, d1, d2, ...]` -> `[N, d1*d2*...]`.
pub fn flatten(tape: &mut Tape, x: Var) -> Var {
    let shape = [tape.value(x).dim(0), tape.value(x).row_len()];
    let mut y = tape.scratch(&shape);
    y.data_mut().copy_from_slice(tape.value(x).data());
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(FlattenBackward { x }))
}

struct FlattenBackward {
    x: Var,
}

impl Backward for FlattenBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let dx = grads.nodes.grad_mut(self.x);
        dx.add_slice(dout.data());
    }
}

/// Records the scalar `sum(x * r)`; its gradient with respect to `x` is `r`.
///
/// # Shapes
/// `x` and `r` the same shape -> `[1]`.
pub fn weighted_sum(tape: &mut Tape, x: Var, r: Tensor) -> Var {
    let xv = tape.value(x);
    assert_eq!(xv.shape(), r.shape(), "weighted_sum: x {:?} and r {:?}", xv.shape(), r.shape());
    let s: f64 = xv.data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum();
    let needs = tape.needs_grad(x);
    tape.push(Tensor::scalar(s as f32), needs, Box::new(WeightedSumBackward { x, r }))
}

struct WeightedSumBackward {
    x: Var,
    r: Tensor,
}

impl Backward for WeightedSumBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let dx = grads.nodes.grad_mut(self.x);
        let scale = dout.data()[0];
        dx.data_mut().iter_mut().zip(self.r.data()).for_each(|(d, &r)| *d += scale * r);
    }
}
