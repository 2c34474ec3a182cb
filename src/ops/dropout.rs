//! Inverted dropout (`kernels::dropout`). In [`Mode::Eval`] it is the identity and records
//! nothing; in [`Mode::Train`] it draws a fresh mask, keyed by one draw from the generator it
//! is given.

use kernels::dropout::{apply_mask, dropout_mask};
use kernels::Rng;
use rayon::prelude::*;

use super::ELEMS_PER_TASK;

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;
use crate::Mode;

/// Records dropout with probability `rate` of zeroing each value.
///
/// # Shapes
/// Any shape; the output has the input's shape.
pub fn dropout(tape: &mut Tape, x: Var, rate: f32, mode: Mode, rng: &mut Rng) -> Var {
    if mode == Mode::Eval || rate == 0.0 {
        return x;
    }
    // One draw from the caller's generator keys this mask; the mask itself is filled in
    // parallel chunks from that key (see `kernels::dropout::uniform_at`).
    let key = rng.next_u64();
    let mut mask = vec![0.0; tape.value(x).len()];
    mask.par_chunks_mut(ELEMS_PER_TASK)
        .enumerate()
        .for_each(|(i, chunk)| dropout_mask(rate, key, i * ELEMS_PER_TASK, chunk));
    dropout_with_mask(tape, x, mask)
}

/// Records `x * mask` with a given mask (values `0` or `1 / (1 - rate)`); the gradient checks
/// use it to hold the mask fixed.
pub fn dropout_with_mask(tape: &mut Tape, x: Var, mask: Vec<f32>) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let mut y = tape.scratch(&shape);
    let xv = tape.value(x);
    assert_eq!(mask.len(), xv.len(), "dropout: mask has {} values, input {:?}", mask.len(), xv.shape());
    apply_mask(xv.data(), &mask, y.data_mut(), false);
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(DropoutBackward { x, mask }))
}

struct DropoutBackward {
    x: Var,
    mask: Vec<f32>,
}

impl Backward for DropoutBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let dx = grads.nodes.grad_mut(self.x);
        apply_mask(dout.data(), &self.mask, dx.data_mut(), true);
    }
}
