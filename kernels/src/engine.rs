//! The one door between the engine's math and its speed.
//!
//! Every op of the main crate computes through this module, and [`Engine`] says how:
//! - [`Engine::Reference`] runs each op on its plain twin (the `*_ref` functions of this
//!   crate: nested loops, no SIMD, no fusion, nothing kept between calls). It is the code to
//!   read first, and it is slow.
//! - [`Engine::Fast`] runs the SIMD kernels, split over the threads with rayon.
//!
//! Stateless ops (ReLU, pooling, batch-norm, softmax, dropout, the optimizer updates) are
//! methods of [`Engine`] below. The two layers with weights get a per-layer plan object
//! instead, built once with the model, which owns what being fast needs: the choice of path
//! ([`ConvChoice`], [`DenseChoice`]: by a rule, or measured by [`crate::planner`]), the
//! weights prepared (transposed) for the kernels, and scratch buffers.
//! See [`ConvPlan`] and [`DensePlan`]. A plan is refreshed by an explicit call after its
//! weights change; nothing here is global or per-thread.
//!
//! Parallel reductions (weight and bias gradients) are summed over fixed chunks of
//! [`IMAGES_PER_CHUNK`] images and added in chunk order, so results do not depend on the
//! number of threads, on either engine.

use rayon::prelude::*;

use crate::pool::PoolGeom;
use crate::{activation, batchnorm, dropout, optim, pool, softmax};

pub use crate::conv_plan::{ConvChoice, ConvGrad, ConvPath, ConvPlan, InputGradWay};
pub use crate::dense_plan::{DenseChoice, DensePlan};

/// Images per partial sum in batch reductions: large enough to amortise a partial buffer,
/// small enough to give two threads several chunks each at batch 64 and up. Fixed, so that a
/// sum's order never depends on the thread count.
pub const IMAGES_PER_CHUNK: usize = 16;

/// Elements per rayon task in the fast element-wise ops: a multiple of every SIMD width, so a
/// kernel run chunk by chunk splits its vector loop and scalar tail where one call would (the
/// same bits).
const ELEMS_PER_TASK: usize = 1 << 15;

/// Which implementation the ops run on (see the module docs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Engine {
    /// The plain twins: the definition of every op, as loops.
    Reference,
    /// SIMD kernels over rayon, with per-layer plans.
    #[default]
    Fast,
}

impl Engine {
    /// "reference" or "fast", for reports.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Reference => "reference",
            Engine::Fast => "fast",
        }
    }

    /// `n` zeros (a buffer that an op then fills). The fast engine writes them from all
    /// threads: one thread zeroing a batch's 12 MB argmax or dropout mask is a pass over memory
    /// that the other thread waits for.
    pub fn zeroed<T: Copy + Default + Send + Sync>(self, n: usize) -> Vec<T> {
        match self {
            Engine::Reference => vec![T::default(); n],
            Engine::Fast => {
                let mut v = Vec::with_capacity(n);
                v.par_extend(rayon::iter::repeat_n(T::default(), n));
                v
            }
        }
    }

    /// Sets every value of `buf` to zero (from all threads on the fast engine).
    pub fn fill_zero(self, buf: &mut [f32]) {
        match self {
            Engine::Reference => buf.fill(0.0),
            Engine::Fast => buf.par_chunks_mut(ELEMS_PER_TASK).for_each(|c| c.fill(0.0)),
        }
    }

    /// `y = max(x, 0)`.
    pub fn relu_forward(self, x: &[f32], y: &mut [f32]) {
        match self {
            Engine::Reference => activation::relu_forward_ref(x, y),
            Engine::Fast => y
                .par_chunks_mut(ELEMS_PER_TASK)
                .zip(x.par_chunks(ELEMS_PER_TASK))
                .for_each(|(yc, xc)| activation::relu_forward(xc, yc)),
        }
    }

    /// `dx += dy` where `y > 0`; with `accumulate` false, `dx` is overwritten instead.
    pub fn relu_backward(self, y: &[f32], dy: &[f32], dx: &mut [f32], accumulate: bool) {
        match self {
            Engine::Reference => activation::relu_backward_ref(y, dy, dx, accumulate),
            Engine::Fast => dx
                .par_chunks_mut(ELEMS_PER_TASK)
                .zip(y.par_chunks(ELEMS_PER_TASK))
                .zip(dy.par_chunks(ELEMS_PER_TASK))
                .for_each(|((dxc, yc), dyc)| activation::relu_backward(yc, dyc, dxc, accumulate)),
        }
    }

    /// Max-pools `n` images of `c` planes each: `y[N, C, OH, OW]` from `x[N, C, H, W]`, with
    /// each window's argmax (its index within the plane) in `argmax` when given.
    pub fn maxpool_forward(
        self,
        g: &PoolGeom,
        n: usize,
        c: usize,
        x: &[f32],
        y: &mut [f32],
        argmax: Option<&mut [u32]>,
    ) {
        let (in_img, out_img) = (c * g.h * g.w, c * g.oh * g.ow);
        if n == 0 || out_img == 0 {
            return;
        }
        match (self, argmax) {
            (Engine::Reference, Some(a)) => pool::maxpool_forward_ref(g, n * c, x, y, a),
            (Engine::Reference, None) => pool::maxpool_forward_ref(g, n * c, x, y, &mut vec![0; y.len()]),
            (Engine::Fast, Some(a)) => y
                .par_chunks_mut(out_img)
                .zip(a.par_chunks_mut(out_img))
                .zip(x.par_chunks(in_img))
                .for_each(|((yi, ai), xi)| pool::maxpool_forward(g, c, xi, yi, ai)),
            // Inference keeps no argmaxes: each image's live in a buffer reused by its task.
            (Engine::Fast, None) => y.par_chunks_mut(out_img).zip(x.par_chunks(in_img)).for_each_init(
                || vec![0u32; out_img],
                |ai, (yi, xi)| pool::maxpool_forward(g, c, xi, yi, ai),
            ),
        }
    }

    /// `dx += dy` routed to each window's maximum. The fast engine reads the saved `argmax`;
    /// the reference finds each window's first maximum again in `x`.
    #[allow(clippy::too_many_arguments)]
    pub fn maxpool_backward(
        self,
        g: &PoolGeom,
        n: usize,
        c: usize,
        x: &[f32],
        dy: &[f32],
        argmax: &[u32],
        dx: &mut [f32],
    ) {
        let (in_img, out_img) = (c * g.h * g.w, c * g.oh * g.ow);
        if n == 0 || out_img == 0 || in_img == 0 {
            return;
        }
        match self {
            Engine::Reference => pool::maxpool_backward_ref(g, n * c, x, dy, dx),
            Engine::Fast => dx
                .par_chunks_mut(in_img)
                .zip(dy.par_chunks(out_img))
                .zip(argmax.par_chunks(out_img))
                .for_each(|((dxi, dyi), ai)| pool::maxpool_backward(g, c, dyi, ai, dxi)),
        }
    }

    /// Average-pools `n` images of `c` planes each: `y[N, C, OH, OW]` from `x[N, C, H, W]`.
    pub fn avgpool_forward(self, g: &PoolGeom, n: usize, c: usize, x: &[f32], y: &mut [f32]) {
        let (in_img, out_img) = (c * g.h * g.w, c * g.oh * g.ow);
        if n == 0 || out_img == 0 {
            return;
        }
        match self {
            Engine::Reference => pool::avgpool_forward_ref(g, n * c, x, y),
            Engine::Fast => y
                .par_chunks_mut(out_img)
                .zip(x.par_chunks(in_img))
                .for_each(|(yi, xi)| pool::avgpool_forward(g, c, xi, yi)),
        }
    }

    /// `dx += ` each window's gradient shared equally among its inputs.
    pub fn avgpool_backward(self, g: &PoolGeom, n: usize, c: usize, dy: &[f32], dx: &mut [f32]) {
        let (in_img, out_img) = (c * g.h * g.w, c * g.oh * g.ow);
        if n == 0 || out_img == 0 || in_img == 0 {
            return;
        }
        match self {
            Engine::Reference => pool::avgpool_backward_ref(g, n * c, dy, dx),
            Engine::Fast => dx
                .par_chunks_mut(in_img)
                .zip(dy.par_chunks(out_img))
                .for_each(|(dxi, dyi)| pool::avgpool_backward(g, c, dyi, dxi)),
        }
    }

    /// Global average pooling of `n` images of `c` planes of `s` values: `y[N, C]`.
    pub fn global_avgpool_forward(self, n: usize, c: usize, s: usize, x: &[f32], y: &mut [f32]) {
        if n == 0 || c == 0 || s == 0 {
            y.fill(0.0); // the mean of nothing, by convention
            return;
        }
        match self {
            Engine::Reference => pool::global_avgpool_forward_ref(n * c, s, x, y),
            Engine::Fast => y
                .par_chunks_mut(c)
                .zip(x.par_chunks((c * s).max(1)))
                .for_each(|(yi, xi)| pool::global_avgpool_forward(c, s, xi, yi)),
        }
    }

    /// `dx[N, C, S] += dy[N, C] / S`.
    pub fn global_avgpool_backward(self, n: usize, c: usize, s: usize, dy: &[f32], dx: &mut [f32]) {
        if n == 0 || c == 0 || s == 0 {
            return;
        }
        match self {
            Engine::Reference => pool::global_avgpool_backward_ref(n * c, s, dy, dx),
            Engine::Fast => dx
                .par_chunks_mut(c * s)
                .zip(dy.par_chunks(c))
                .for_each(|(dxi, dyi)| pool::global_avgpool_backward(c, s, dyi, dxi)),
        }
    }

    /// Per-channel mean and biased variance of `x[N, C, S]`.
    pub fn batchnorm_stats(self, x: &[f32], n: usize, c: usize, s: usize, mean: &mut [f32], var: &mut [f32]) {
        match self {
            Engine::Reference => batchnorm::batchnorm_stats_ref(x, n, c, s, mean, var),
            Engine::Fast => batchnorm::batchnorm_stats(x, n, c, s, mean, var),
        }
    }

    /// `y = (x - mean) * inv_std * gamma + beta`, per channel.
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_normalize(
        self,
        x: &[f32],
        (n, c, s): (usize, usize, usize),
        mean: &[f32],
        inv_std: &[f32],
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
    ) {
        match self {
            Engine::Reference => {
                batchnorm::batchnorm_normalize_ref(x, n, c, s, mean, inv_std, gamma, beta, y)
            }
            Engine::Fast => batchnorm::batchnorm_normalize(x, n, c, s, mean, inv_std, gamma, beta, y),
        }
    }

    /// `y = max((x - mean) * inv_std * gamma + beta, 0)`: batch-norm then ReLU. The fast
    /// engine does both in one pass (the same bits); the reference runs the two plain twins.
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_relu_normalize(
        self,
        x: &[f32],
        (n, c, s): (usize, usize, usize),
        mean: &[f32],
        inv_std: &[f32],
        gamma: &[f32],
        beta: &[f32],
        y: &mut [f32],
    ) {
        match self {
            Engine::Reference => {
                batchnorm::batchnorm_normalize_ref(x, n, c, s, mean, inv_std, gamma, beta, y);
                let normalized = y.to_vec();
                activation::relu_forward_ref(&normalized, y);
            }
            Engine::Fast => batchnorm::batchnorm_relu_normalize(x, n, c, s, mean, inv_std, gamma, beta, y),
        }
    }

    /// Backward of batch-norm (batch statistics) then ReLU, from the ReLU's output `y` and
    /// output gradient `dy`; accumulates `dx`, `dgamma`, `dbeta`. The fast engine does both in
    /// one kernel (the same bits); the reference runs the two plain twins.
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_relu_backward(
        self,
        x: &[f32],
        (y, dy): (&[f32], &[f32]),
        (n, c, s): (usize, usize, usize),
        mean: &[f32],
        inv_std: &[f32],
        gamma: &[f32],
        (dx, accumulate): (&mut [f32], bool),
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let dx = (dx, accumulate);
        match self {
            Engine::Reference => {
                let mut d_normalized = vec![0.0; dy.len()];
                activation::relu_backward_ref(y, dy, &mut d_normalized, false);
                batchnorm::batchnorm_backward_ref(
                    x,
                    &d_normalized,
                    n,
                    c,
                    s,
                    mean,
                    inv_std,
                    gamma,
                    dx,
                    dgamma,
                    dbeta,
                )
            }
            Engine::Fast => {
                batchnorm::batchnorm_relu_backward(x, y, dy, n, c, s, mean, inv_std, gamma, dx, dgamma, dbeta)
            }
        }
    }

    /// Backward of batch-norm with batch statistics; accumulates `dx`, `dgamma`, `dbeta`.
    #[allow(clippy::too_many_arguments)]
    pub fn batchnorm_backward(
        self,
        x: &[f32],
        dy: &[f32],
        (n, c, s): (usize, usize, usize),
        mean: &[f32],
        inv_std: &[f32],
        gamma: &[f32],
        (dx, accumulate): (&mut [f32], bool),
        dgamma: &mut [f32],
        dbeta: &mut [f32],
    ) {
        let dx = (dx, accumulate);
        match self {
            Engine::Reference => {
                batchnorm::batchnorm_backward_ref(x, dy, n, c, s, mean, inv_std, gamma, dx, dgamma, dbeta)
            }
            Engine::Fast => {
                batchnorm::batchnorm_backward(x, dy, n, c, s, mean, inv_std, gamma, dx, dgamma, dbeta)
            }
        }
    }

    /// Writes `probs[N, K]` and returns the softmax cross-entropy summed over the batch.
    pub fn softmax_xent_forward(
        self,
        z: &[f32],
        labels: &[u8],
        (n, k): (usize, usize),
        smoothing: f32,
        probs: &mut [f32],
    ) -> f64 {
        match self {
            Engine::Reference => softmax::softmax_xent_forward_ref(z, labels, n, k, smoothing, probs),
            Engine::Fast => softmax::softmax_xent_forward(z, labels, n, k, smoothing, probs),
        }
    }

    /// `dz += scale * (p - t)`.
    pub fn softmax_xent_backward(
        self,
        probs: &[f32],
        labels: &[u8],
        (n, k): (usize, usize),
        smoothing: f32,
        scale: f32,
        dz: &mut [f32],
    ) {
        match self {
            Engine::Reference => {
                softmax::softmax_xent_backward_ref(probs, labels, n, k, smoothing, scale, dz)
            }
            Engine::Fast => softmax::softmax_xent_backward(probs, labels, n, k, smoothing, scale, dz),
        }
    }

    /// A dropout mask of `len` values from the stream `key` (the same values on both
    /// engines: each position is drawn on its own).
    pub fn dropout_mask(self, rate: f32, key: u64, len: usize) -> Vec<f32> {
        match self {
            Engine::Reference => dropout::dropout_mask_ref(rate, key, 0, len),
            Engine::Fast => {
                let mut mask = self.zeroed(len);
                mask.par_chunks_mut(ELEMS_PER_TASK)
                    .enumerate()
                    .for_each(|(i, chunk)| dropout::dropout_mask(rate, key, i * ELEMS_PER_TASK, chunk));
                mask
            }
        }
    }

    /// `y = x * mask`, or `y += x * mask` with `accumulate`.
    pub fn apply_mask(self, x: &[f32], mask: &[f32], y: &mut [f32], accumulate: bool) {
        assert!(x.len() == mask.len() && x.len() == y.len(), "dropout: lengths differ");
        match self {
            Engine::Reference => dropout::apply_mask_ref(x, mask, y, accumulate),
            Engine::Fast => y
                .par_chunks_mut(ELEMS_PER_TASK)
                .zip(x.par_chunks(ELEMS_PER_TASK))
                .zip(mask.par_chunks(ELEMS_PER_TASK))
                .for_each(|((yc, xc), mc)| dropout::apply_mask(xc, mc, yc, accumulate)),
        }
    }

    /// One SGD update of a parameter (see [`optim`]).
    pub fn sgd_update(self, h: &optim::SgdParams, p: &mut [f32], g: &[f32], vel: &mut [f32]) {
        match self {
            Engine::Reference => optim::sgd_update_ref(h, p, g, vel),
            Engine::Fast => {
                assert!(p.len() == g.len() && p.len() == vel.len(), "sgd: lengths differ");
                p.par_chunks_mut(ELEMS_PER_TASK)
                    .zip(g.par_chunks(ELEMS_PER_TASK))
                    .zip(vel.par_chunks_mut(ELEMS_PER_TASK))
                    .for_each(|((p, g), vel)| optim::sgd_update(h, p, g, vel))
            }
        }
    }

    /// One Adam update of a parameter (see [`optim`]).
    pub fn adam_update(self, h: &optim::AdamParams, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        match self {
            Engine::Reference => optim::adam_update_ref(h, p, g, m, v),
            Engine::Fast => adam_chunks(p, g, m, v, |p, g, m, v| optim::adam_update(h, p, g, m, v)),
        }
    }

    /// One AdamW update of a parameter (decoupled weight decay, see [`optim`]).
    pub fn adamw_update(self, h: &optim::AdamParams, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        match self {
            Engine::Reference => optim::adamw_update_ref(h, p, g, m, v),
            Engine::Fast => adam_chunks(p, g, m, v, |p, g, m, v| optim::adamw_update(h, p, g, m, v)),
        }
    }
}

/// Runs an Adam-style update over chunks of a parameter in parallel: each value's update reads
/// only its own gradient and moments, so the chunks give the same bits as one call.
fn adam_chunks(
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    update: impl Fn(&mut [f32], &[f32], &mut [f32], &mut [f32]) + Sync,
) {
    assert!(p.len() == g.len() && p.len() == m.len() && p.len() == v.len(), "adam: lengths differ");
    p.par_chunks_mut(ELEMS_PER_TASK)
        .zip(g.par_chunks(ELEMS_PER_TASK))
        .zip(m.par_chunks_mut(ELEMS_PER_TASK))
        .zip(v.par_chunks_mut(ELEMS_PER_TASK))
        .for_each(|(((p, g), m), v)| update(p, g, m, v));
}

/// Adds `parts` (in order) into `dst`.
pub(crate) fn sum_into(dst: &mut [f32], parts: impl IntoIterator<Item = Vec<f32>>) {
    for p in parts {
        crate::simd::axpy(1.0, &p, dst);
    }
}
