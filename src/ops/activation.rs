//! ReLU, `y = max(x, 0)`. Its derivative is 1 where `x > 0` and 0 elsewhere (at exactly 0 it is
//! taken as 0), so backward passes the gradient where the op's own output `y > 0`.

use kernels::Engine;

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records `max(x, 0)`.
///
/// # Shapes
/// Any shape; the output has the input's shape.
pub fn relu(tape: &mut Tape, x: Var, engine: Engine) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let mut y = tape.scratch(&shape);
    engine.relu_forward(tape.value(x).data(), y.data_mut());
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(ReluBackward { x, engine }))
}

struct ReluBackward {
    x: Var,
    engine: Engine,
}

impl Backward for ReluBackward {
    fn backward(&self, out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let (_, dx, accumulate) = grads.nodes.value_and_grad_to_set(self.x);
        self.engine.relu_backward(out.data(), dout.data(), dx.data_mut(), accumulate);
    }
}
