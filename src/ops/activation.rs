//! ReLU (`kernels::activation`). Backward reads the op's own output: the gradient passes
//! where `y > 0` (the derivative at exactly 0 is taken as 0).

use kernels::activation::{relu_backward, relu_forward};
use rayon::prelude::*;

use super::ELEMS_PER_TASK;
use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records `max(x, 0)`.
///
/// # Shapes
/// Any shape; the output has the input's shape.
pub fn relu(tape: &mut Tape, x: Var) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let mut y = tape.scratch(&shape);
    let xv = tape.value(x);
    y.data_mut()
        .par_chunks_mut(ELEMS_PER_TASK)
        .zip(xv.data().par_chunks(ELEMS_PER_TASK))
        .for_each(|(yc, xc)| relu_forward(xc, yc));
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(ReluBackward { x }))
}

struct ReluBackward {
    x: Var,
}

impl Backward for ReluBackward {
    fn backward(&self, out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let dx = grads.nodes.grad_mut(self.x);
        dx.data_mut()
            .par_chunks_mut(ELEMS_PER_TASK)
            .zip(out.data().par_chunks(ELEMS_PER_TASK))
            .zip(dout.data().par_chunks(ELEMS_PER_TASK))
            .for_each(|((dxc, yc), dyc)| relu_backward(yc, dyc, dxc));
    }
}
