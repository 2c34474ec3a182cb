//! The optimizers' per-parameter update loops, in order of increasing complexity.
//!
//! - SGD with momentum and L2 weight decay, PyTorch's form: `g' = g + wd * p`,
//!   `v = momentum * v + g'`, `p -= lr * v`. (Keras writes `v = momentum * v - lr * g`,
//!   `p += v`: the same trajectory for a constant learning rate.) With `nesterov`, PyTorch's
//!   Nesterov form (Sutskever et al. 2013, as `torch.optim.SGD(nesterov=True)` writes it):
//!   the same `v`, but the step is `p -= lr * (g' + momentum * v)`.
//! - Adam (Kingma & Ba 2015, Algorithm 1) with bias correction, PyTorch's form:
//!   `m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`,
//!   `p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)`.
//!   Keras adds its `epsilon` (default 1e-7, PyTorch's 1e-8) to `sqrt(v)` before the
//!   correction instead, i.e. uses `eps * sqrt(1 - b2^t)` here; the difference matters only
//!   while `v` is near zero. Its `weight_decay` is the coupled L2 term `g' = g + wd * p`, as
//!   in PyTorch's `Adam`.
//! - AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), PyTorch's
//!   `AdamW`: first `p -= lr * wd * p` (the decay does not enter the moments), then the Adam
//!   step above with the plain gradient `g`.
//!
//! Reference twins: [`sgd_update_ref`], [`adam_update_ref`], [`adamw_update_ref`].

use crate::simd::{load, store, Fx, LANES};

/// SGD hyper-parameters.
#[derive(Clone, Copy, Debug)]
pub struct SgdParams {
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Nesterov's step `g' + momentum * v` instead of `v` (needs `momentum > 0`).
    pub nesterov: bool,
}

/// Adam and AdamW hyper-parameters; `t` is the 1-based step number. `weight_decay` is the
/// coupled L2 term for [`adam_update`], the decoupled decay for [`adamw_update`].
#[derive(Clone, Copy, Debug)]
pub struct AdamParams {
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub t: u64,
}

fn check3(p: usize, g: usize, s: usize) {
    assert!(p == g && g == s, "optimizer: param {p}, grad {g} and state {s} lengths differ");
}

/// One SGD step over a parameter slice; `vel` is the momentum buffer (unused when momentum 0).
pub fn sgd_update(h: &SgdParams, p: &mut [f32], g: &[f32], vel: &mut [f32]) {
    check3(p.len(), g.len(), vel.len());
    let (lr, mom, wd) = (Fx::splat(h.lr), Fx::splat(h.momentum), Fx::splat(h.weight_decay));
    let mut pc = p.chunks_exact_mut(LANES);
    let mut gc = g.chunks_exact(LANES);
    let mut vc = vel.chunks_exact_mut(LANES);
    for ((ps, gs), vs) in (&mut pc).zip(&mut gc).zip(&mut vc) {
        let pv = load(ps);
        let gv = load(gs).mul_add(Fx::splat(1.0), wd * pv);
        let v = if h.momentum != 0.0 { mom.mul_add(load(vs), gv) } else { gv };
        store(v, vs);
        let step = if h.nesterov { mom.mul_add(v, gv) } else { v };
        store(pv - lr * step, ps);
    }
    sgd_update_ref(h, pc.into_remainder(), gc.remainder(), vc.into_remainder());
}

/// Reference twin of [`sgd_update`].
pub fn sgd_update_ref(h: &SgdParams, p: &mut [f32], g: &[f32], vel: &mut [f32]) {
    for ((pv, &gv), vv) in p.iter_mut().zip(g).zip(vel.iter_mut()) {
        let gd = gv + h.weight_decay * *pv;
        *vv = if h.momentum != 0.0 { h.momentum * *vv + gd } else { gd };
        let step = if h.nesterov { gd + h.momentum * *vv } else { *vv };
        *pv -= h.lr * step;
    }
}

/// One Adam step over a parameter slice with first and second moment buffers `m`, `v`.
pub fn adam_update(h: &AdamParams, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    adam_core(h, h.weight_decay, 1.0, p, g, m, v);
}

/// One AdamW step: the parameters shrink by `1 - lr * wd` (PyTorch's `p.mul_(1 - lr * wd)`),
/// then take [`adam_update`]'s step without any L2 term in the gradient.
pub fn adamw_update(h: &AdamParams, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    adam_core(h, 0.0, 1.0 - h.lr * h.weight_decay, p, g, m, v);
}

/// Adam's loop: the parameter is first scaled by `shrink` (AdamW's decay; 1 for Adam, an
/// exact no-op), then `g' = g + l2 * p` (0 for AdamW) feeds the moments.
fn adam_core(h: &AdamParams, l2: f32, shrink: f32, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    check3(p.len(), g.len(), m.len());
    check3(p.len(), g.len(), v.len());
    assert!(h.t >= 1, "adam: step numbers start at 1");
    let bc1 = 1.0 - (h.beta1 as f64).powi(h.t.min(i32::MAX as u64) as i32);
    let bc2 = 1.0 - (h.beta2 as f64).powi(h.t.min(i32::MAX as u64) as i32);
    let step = Fx::splat((h.lr as f64 / bc1) as f32);
    let inv_bc2 = Fx::splat((1.0 / bc2) as f32);
    let (b1, b2, eps, wd) = (Fx::splat(h.beta1), Fx::splat(h.beta2), Fx::splat(h.eps), Fx::splat(l2));
    let shrink_v = Fx::splat(shrink);
    let (one_b1, one_b2) = (Fx::splat(1.0 - h.beta1), Fx::splat(1.0 - h.beta2));
    let mut pc = p.chunks_exact_mut(LANES);
    let mut gc = g.chunks_exact(LANES);
    let mut mc = m.chunks_exact_mut(LANES);
    let mut vc = v.chunks_exact_mut(LANES);
    for (((ps, gs), ms), vs) in (&mut pc).zip(&mut gc).zip(&mut mc).zip(&mut vc) {
        let pv = load(ps) * shrink_v;
        let gv = wd.mul_add(pv, load(gs));
        let mv = b1.mul_add(load(ms), one_b1 * gv);
        let vv = b2.mul_add(load(vs), one_b2 * gv * gv);
        store(mv, ms);
        store(vv, vs);
        store(pv - step * mv / ((vv * inv_bc2).sqrt() + eps), ps);
    }
    let (pr, gr, mr, vr) = (pc.into_remainder(), gc.remainder(), mc.into_remainder(), vc.into_remainder());
    adam_tail(h, (l2, shrink), bc1, bc2, pr, gr, mr, vr);
}

#[allow(clippy::too_many_arguments)]
fn adam_tail(
    h: &AdamParams,
    (l2, shrink): (f32, f32),
    bc1: f64,
    bc2: f64,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let step = (h.lr as f64 / bc1) as f32;
    let inv_bc2 = (1.0 / bc2) as f32;
    for (((pv, &gv), mv), vv) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *pv *= shrink;
        let gd = gv + l2 * *pv;
        *mv = h.beta1 * *mv + (1.0 - h.beta1) * gd;
        *vv = h.beta2 * *vv + (1.0 - h.beta2) * gd * gd;
        *pv -= step * *mv / ((*vv * inv_bc2).sqrt() + h.eps);
    }
}

/// Reference twin of [`adam_update`], written as Algorithm 1 of the paper in `f64`.
pub fn adam_update_ref(h: &AdamParams, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let t = h.t as i32;
    for i in 0..p.len() {
        let gd = g[i] as f64 + h.weight_decay as f64 * p[i] as f64;
        let mi = h.beta1 as f64 * m[i] as f64 + (1.0 - h.beta1 as f64) * gd;
        let vi = h.beta2 as f64 * v[i] as f64 + (1.0 - h.beta2 as f64) * gd * gd;
        let mhat = mi / (1.0 - (h.beta1 as f64).powi(t));
        let vhat = vi / (1.0 - (h.beta2 as f64).powi(t));
        p[i] = (p[i] as f64 - h.lr as f64 * mhat / (vhat.sqrt() + h.eps as f64)) as f32;
        m[i] = mi as f32;
        v[i] = vi as f32;
    }
}

/// Reference twin of [`adamw_update`], in `f64`: PyTorch's `AdamW` (decay, then Adam's
/// Algorithm 1 on the plain gradient).
pub fn adamw_update_ref(h: &AdamParams, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let t = h.t as i32;
    let (lr, b1, b2) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64);
    for i in 0..p.len() {
        let decayed = p[i] as f64 * (1.0 - lr * h.weight_decay as f64);
        let gi = g[i] as f64;
        let mi = b1 * m[i] as f64 + (1.0 - b1) * gi;
        let vi = b2 * v[i] as f64 + (1.0 - b2) * gi * gi;
        let mhat = mi / (1.0 - b1.powi(t));
        let vhat = vi / (1.0 - b2.powi(t));
        p[i] = (decayed - lr * mhat / (vhat.sqrt() + h.eps as f64)) as f32;
        m[i] = mi as f32;
        v[i] = vi as f32;
    }
}
