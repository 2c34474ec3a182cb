//! Pooling over `k x k` windows with stride `stride`, no padding (Keras's 'valid': a last
//! partial window is dropped): max-pooling, average pooling, and global average pooling.
//!
//! Max-pooling: `y[n, c, oh, ow] = max_{kh, kw} x[n, c, oh*S + kh, ow*S + kw]`. The maximum is a selection,
//! so its derivative is 1 for the selected input and 0 for the others: backward adds each
//! window's gradient to the input that won it. Ties: the first maximum in row-major window
//! order wins, and only it receives gradient. Forward keeps each window's winner (its argmax)
//! for backward, except on a no-grad tape.

use kernels::pool::PoolGeom;
use kernels::Engine;

use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

/// Records max-pooling with a `k x k` window and stride `stride`.
///
/// # Shapes
/// `x: [N, C, H, W]` -> `[N, C, OH, OW]`, `OH = (H - k) / stride + 1`.
pub fn max_pool2d(tape: &mut Tape, x: Var, k: usize, stride: usize, engine: Engine) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let &[n, c, h, w] = &shape[..] else { panic!("max_pool2d: input {shape:?} is not [N, C, H, W]") };
    let g = PoolGeom::new(h, w, k, stride);
    let mut y = tape.scratch(&[n, c, g.oh, g.ow]);
    let mut argmax = if tape.records_grad() { vec![0u32; y.len()] } else { Vec::new() };
    let args = tape.records_grad().then_some(&mut argmax[..]);
    engine.maxpool_forward(&g, n, c, tape.value(x).data(), y.data_mut(), args);
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(MaxPoolBackward { x, g, c, argmax, engine }))
}

struct MaxPoolBackward {
    x: Var,
    g: PoolGeom,
    c: usize,
    /// `[N, C, OH, OW]`: index of each window's maximum within its `H x W` plane.
    argmax: Vec<u32>,
    engine: Engine,
}

impl Backward for MaxPoolBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let (x, dx) = grads.nodes.value_and_grad(self.x);
        let n = x.dim(0);
        self.engine.maxpool_backward(&self.g, n, self.c, x.data(), dout.data(), &self.argmax, dx.data_mut());
    }
}

/// Records average pooling with a `k x k` window and stride `stride` (no padding).
///
/// `y[n, c, oh, ow] = (1 / k^2) sum_{kh, kw} x[n, c, oh*S + kh, ow*S + kw]`: a linear map, so
/// `dx[n, c, oh*S + kh, ow*S + kw] += dy[n, c, oh, ow] / k^2` for every window position.
///
/// # Shapes
/// `x: [N, C, H, W]` -> `[N, C, OH, OW]`, `OH = (H - k) / stride + 1`.
pub fn avg_pool2d(tape: &mut Tape, x: Var, k: usize, stride: usize, engine: Engine) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let &[n, c, h, w] = &shape[..] else { panic!("avg_pool2d: input {shape:?} is not [N, C, H, W]") };
    let g = PoolGeom::new(h, w, k, stride);
    let mut y = tape.scratch(&[n, c, g.oh, g.ow]);
    engine.avgpool_forward(&g, n, c, tape.value(x).data(), y.data_mut());
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(AvgPoolBackward { x, g, n, c, engine }))
}

struct AvgPoolBackward {
    x: Var,
    g: PoolGeom,
    n: usize,
    c: usize,
    engine: Engine,
}

impl Backward for AvgPoolBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let dx = grads.nodes.grad_mut(self.x);
        self.engine.avgpool_backward(&self.g, self.n, self.c, dout.data(), dx.data_mut());
    }
}

/// Records global average pooling: the mean of every channel's plane, as a vector (Keras's
/// `GlobalAveragePooling2D`; PyTorch's `AdaptiveAvgPool2d(1)` then `Flatten`).
///
/// `y[n, c] = (1 / (H W)) sum_{h, w} x[n, c, h, w]`, so `dx[n, c, h, w] += dy[n, c] / (H W)`.
///
/// # Shapes
/// `x: [N, C, H, W]` -> `[N, C]`.
pub fn global_avg_pool(tape: &mut Tape, x: Var, engine: Engine) -> Var {
    let shape = tape.value(x).shape().to_vec();
    let &[n, c, h, w] = &shape[..] else { panic!("global_avg_pool: input {shape:?} is not [N, C, H, W]") };
    let mut y = tape.scratch(&[n, c]);
    engine.global_avgpool_forward(n, c, h * w, tape.value(x).data(), y.data_mut());
    let needs = tape.needs_grad(x);
    tape.push(y, needs, Box::new(GlobalAvgPoolBackward { x, n, c, s: h * w, engine }))
}

struct GlobalAvgPoolBackward {
    x: Var,
    n: usize,
    c: usize,
    s: usize,
    engine: Engine,
}

impl Backward for GlobalAvgPoolBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let dx = grads.nodes.grad_mut(self.x);
        self.engine.global_avgpool_backward(self.n, self.c, self.s, dout.data(), dx.data_mut());
    }
}
