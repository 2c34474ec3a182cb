//! Element-wise sum of two tensors of the same shape (the join of a residual connection).
//! Backward hands the upstream gradient to both inputs unchanged.

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records `a + b`.
///
/// # Shapes
/// `a` and `b` the same shape -> that shape.
pub fn add(tape: &mut Tape, a: Var, b: Var) -> Var {
    let mut y = tape.value(a).clone();
    y.add_assign(tape.value(b));
    let needs = tape.needs_grad(a) || tape.needs_grad(b);
    tape.push(y, needs, Box::new(AddBackward { a, b }))
}

struct AddBackward {
    a: Var,
    b: Var,
}

impl Backward for AddBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        for v in [self.a, self.b] {
            if grads.nodes.needs_grad(v) {
                grads.nodes.grad_mut(v).add_assign(dout);
            }
        }
    }
}
