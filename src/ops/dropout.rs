//! Inverted dropout: in training each value is zeroed with probability `rate` and the others
//! are scaled by `1 / (1 - rate)`, so that the expected output equals the input and evaluation
//! needs no rescaling. `y = x * mask`, so `dx = dy * mask`. In [`Mode::Eval`] it is the
//! identity and records nothing. The mask is keyed by one draw from the generator it is given.

use kernels::{Engine, Rng};

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;
use crate::Mode;

/// Records dropout with probability `rate` of zeroing each value.
///
/// # Shapes
/// Any shape; the output has the input's shape.
pub fn dropout(tape: &mut Tape, x: Var, rate: f32, mode: Mode, rng: &mut Rng, engine: Engine) -> Var {
    if mode == Mode::Eval || rate == 0.0 {
        return x;
    }
    // One draw from the caller's generator keys this mask; each position of the mask is then
    // drawn on its own (see `kernels::dropout::uniform_at`), so both engines draw the same.
    let key = rng.next_u64();
    let mask = engine.dropout_mask(rate, key, tape.value(x).len());
    dropout_with_mask(tape, x, mask, engine)
}

/// Records `x * mask` with a given mask (values `0` or `1 / (1 - rate)`); the gradient checks
/// use it to hold the mask fixed.
pub fn dropout_with_mask(tape: &mut Tape, x: Var, mask: Vec<f32>, engine: Engine) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let mut y = tape.scratch(&shape);
    let xv = tape.value(x);
    assert_eq!(mask.len(), xv.len(), "dropout: mask has {} values, input {:?}", mask.len(), xv.shape());
    engine.apply_mask(xv.data(), &mask, y.data_mut(), false);
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(DropoutBackward { x, mask, engine }))
}

struct DropoutBackward {
    x: Var,
    mask: Vec<f32>,
    engine: Engine,
}

impl Backward for DropoutBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let (_, dx, accumulate) = grads.nodes.value_and_grad_to_set(self.x);
        self.engine.apply_mask(dout.data(), &self.mask, dx.data_mut(), accumulate);
    }
}
