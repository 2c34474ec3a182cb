//! Element-wise sum of two tensors of the same shape (the join of a residual connection).
//! Backward hands the upstream gradient to both inputs unchanged.

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records `a + b`.
///
/// # Shapes
/// `a` and `b` the same shape -> that shape.
pub fn add(tape: &mut Tape, a: Var, b: Var) -> Var {
    let (av, bv) = (tape.value(a), tape.value(b));
    assert_eq!(av.shape(), bv.shape(), "add: {:?} + {:?}", av.shape(), bv.shape());
    let shape = av.shape().to_vec();
    // The output from the tape's pool (a residual block adds once per step).
    let mut y = tape.scratch(&shape);
    let (av, bv) = (tape.value(a), tape.value(b));
    for ((o, &x), &z) in y.data_mut().iter_mut().zip(av.data()).zip(bv.data()) {
        *o = x + z;
    }
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
