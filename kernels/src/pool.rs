//! Max-pooling over `KxK` windows with stride `S` and no padding (Keras `MaxPooling2D`
//! default 'valid': a last partial window is dropped, `OH = (H - K) / S + 1`).
//!
//! Forward saves, for every output, the index *within its input plane* of the maximum, so
//! backward is a scatter. Tie convention: the first maximum in row-major window order wins
//! (a strict `>` comparison), and only it receives gradient.
//!
//! Layout: `planes` independent `H x W` planes (N*C of them for an NCHW tensor).
//! Reference twins: [`maxpool_forward_ref`], [`maxpool_backward_ref`].

/// Geometry of one pooling plane.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub oh: usize,
    pub ow: usize,
}

impl PoolGeom {
    /// # Panics
    /// When the window is 0, the stride is 0, or the plane is smaller than the window.
    pub fn new(h: usize, w: usize, k: usize, stride: usize) -> Self {
        assert!(k > 0 && stride > 0, "PoolGeom: zero window or stride");
        assert!(h >= k && w >= k, "PoolGeom: {h}x{w} plane is smaller than the {k}x{k} window");
        PoolGeom { h, w, k, stride, oh: (h - k) / stride + 1, ow: (w - k) / stride + 1 }
    }
}

fn check(g: &PoolGeom, planes: usize, x: usize, y: usize, idx: usize) {
    assert_eq!(x, planes * g.h * g.w, "maxpool: x has {x} values, needs planes*H*W = {}", planes * g.h * g.w);
    assert_eq!(
        y,
        planes * g.oh * g.ow,
        "maxpool: y has {y} values, needs planes*OH*OW = {}",
        planes * g.oh * g.ow
    );
    assert_eq!(idx, y, "maxpool: argmax has {idx} entries, y has {y}");
}

/// `y[p, oh, ow] = max over the window of x[p]`, `argmax` the winner's index in the plane.
pub fn maxpool_forward(g: &PoolGeom, planes: usize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    check(g, planes, x.len(), y.len(), argmax.len());
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    if out_plane == 0 {
        return;
    }
    for ((xp, yp), ap) in
        x.chunks_exact(in_plane).zip(y.chunks_exact_mut(out_plane)).zip(argmax.chunks_exact_mut(out_plane))
    {
        if g.k == 2 && g.stride == 2 {
            // The common case: two input rows feed one output row. Written with row slices
            // and value selects (no bounds checks, and compare-and-select instead of
            // branches, which random data would mispredict half the time).
            let w = g.w as u32;
            for oh in 0..g.oh {
                let r0 = &xp[2 * oh * g.w..][..g.w];
                let r1 = &xp[(2 * oh + 1) * g.w..][..g.w];
                let yr = &mut yp[oh * g.ow..][..g.ow];
                let ar = &mut ap[oh * g.ow..][..g.ow];
                let pairs = r0.chunks_exact(2).zip(r1.chunks_exact(2));
                for (ow, ((y, a), (p0, p1))) in yr.iter_mut().zip(ar.iter_mut()).zip(pairs).enumerate() {
                    let base = (2 * oh * g.w + 2 * ow) as u32;
                    (*y, *a) = first_max_2x2([p0[0], p0[1]], [p1[0], p1[1]], base, w);
                }
            }
        } else {
            maxpool_plane_ref(g, xp, yp, ap);
        }
    }
}

/// The first maximum of a 2x2 window, `top = [a, b]` above `bottom = [c, d]`, in row-major
/// order (a strict `>`, so the earliest of equal values wins), and its index: `at` for `a`,
/// `at + 1`, `at + w`, `at + w + 1` for the others. Compare-and-select, no branches.
#[inline(always)]
pub(crate) fn first_max_2x2(top: [f32; 2], bottom: [f32; 2], at: u32, w: u32) -> (f32, u32) {
    let (mut m, mut i) = (top[0], at);
    for (v, j) in [(top[1], at + 1), (bottom[0], at + w), (bottom[1], at + w + 1)] {
        (m, i) = if v > m { (v, j) } else { (m, i) };
    }
    (m, i)
}

fn maxpool_plane_ref(g: &PoolGeom, xp: &[f32], yp: &mut [f32], ap: &mut [u32]) {
    for oh in 0..g.oh {
        for ow in 0..g.ow {
            let mut best = (oh * g.stride) * g.w + ow * g.stride;
            for kh in 0..g.k {
                for kw in 0..g.k {
                    let i = (oh * g.stride + kh) * g.w + ow * g.stride + kw;
                    if xp[i] > xp[best] {
                        best = i;
                    }
                }
            }
            yp[oh * g.ow + ow] = xp[best];
            ap[oh * g.ow + ow] = best as u32;
        }
    }
}

/// `dx[p, argmax[p, o]] += dy[p, o]` for every output `o`.
pub fn maxpool_backward(g: &PoolGeom, planes: usize, dy: &[f32], argmax: &[u32], dx: &mut [f32]) {
    check(g, planes, dx.len(), dy.len(), argmax.len());
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    if out_plane == 0 {
        return;
    }
    for ((dxp, dyp), ap) in
        dx.chunks_exact_mut(in_plane).zip(dy.chunks_exact(out_plane)).zip(argmax.chunks_exact(out_plane))
    {
        for (d, &i) in dyp.iter().zip(ap) {
            dxp[i as usize] += d;
        }
    }
}

/// Reference twin of [`maxpool_forward`].
pub fn maxpool_forward_ref(g: &PoolGeom, planes: usize, x: &[f32], y: &mut [f32], argmax: &mut [u32]) {
    check(g, planes, x.len(), y.len(), argmax.len());
    let (in_plane, out_plane) = (g.h * g.w, g.oh * g.ow);
    for p in 0..planes {
        maxpool_plane_ref(
            g,
            &x[p * in_plane..(p + 1) * in_plane],
            &mut y[p * out_plane..(p + 1) * out_plane],
            &mut argmax[p * out_plane..(p + 1) * out_plane],
        );
    }
}

/// Reference twin of [`maxpool_backward`]: recomputes each window's first maximum from `x`
/// instead of trusting a saved index.
pub fn maxpool_backward_ref(g: &PoolGeom, planes: usize, x: &[f32], dy: &[f32], dx: &mut [f32]) {
    assert_eq!(x.len(), dx.len());
    for p in 0..planes {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let mut best = None;
                for kh in 0..g.k {
                    for kw in 0..g.k {
                        let i = p * g.h * g.w + (oh * g.stride + kh) * g.w + ow * g.stride + kw;
                        if best.is_none_or(|b: usize| x[i] > x[b]) {
                            best = Some(i);
                        }
                    }
                }
                dx[best.unwrap()] += dy[(p * g.oh + oh) * g.ow + ow];
            }
        }
    }
}

/// `y[p, oh, ow] =` the mean of the window of `x[p]` (average pooling, no padding: every window
/// lies inside the plane, so every mean is over `K*K` values).
pub fn avgpool_forward(g: &PoolGeom, planes: usize, x: &[f32], y: &mut [f32]) {
    check(g, planes, x.len(), y.len(), y.len());
    let (in_plane, out_plane, inv) = (g.h * g.w, g.oh * g.ow, 1.0 / (g.k * g.k) as f32);
    if out_plane == 0 {
        return;
    }
    for (xp, yp) in x.chunks_exact(in_plane).zip(y.chunks_exact_mut(out_plane)) {
        for (oh, y_row) in yp.chunks_exact_mut(g.ow).enumerate() {
            y_row.fill(0.0);
            for kh in 0..g.k {
                let x_row = &xp[(oh * g.stride + kh) * g.w..][..g.w];
                for (ow, out) in y_row.iter_mut().enumerate() {
                    *out += x_row[ow * g.stride..][..g.k].iter().sum::<f32>();
                }
            }
            y_row.iter_mut().for_each(|v| *v *= inv);
        }
    }
}

/// `dx[p, window] += dy[p, o] / (K*K)` for every output `o`: each input of a window receives
/// an equal share of its gradient.
pub fn avgpool_backward(g: &PoolGeom, planes: usize, dy: &[f32], dx: &mut [f32]) {
    check(g, planes, dx.len(), dy.len(), dy.len());
    let (in_plane, out_plane, inv) = (g.h * g.w, g.oh * g.ow, 1.0 / (g.k * g.k) as f32);
    if out_plane == 0 {
        return;
    }
    for (dxp, dyp) in dx.chunks_exact_mut(in_plane).zip(dy.chunks_exact(out_plane)) {
        for (oh, dy_row) in dyp.chunks_exact(g.ow).enumerate() {
            for kh in 0..g.k {
                let dx_row = &mut dxp[(oh * g.stride + kh) * g.w..][..g.w];
                for (ow, &d) in dy_row.iter().enumerate() {
                    dx_row[ow * g.stride..][..g.k].iter_mut().for_each(|v| *v += d * inv);
                }
            }
        }
    }
}

/// Reference twin of [`avgpool_forward`]: each window summed in `f64`, straight from the
/// definition.
pub fn avgpool_forward_ref(g: &PoolGeom, planes: usize, x: &[f32], y: &mut [f32]) {
    for p in 0..planes {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let mut s = 0.0f64;
                for kh in 0..g.k {
                    for kw in 0..g.k {
                        s += x[p * g.h * g.w + (oh * g.stride + kh) * g.w + ow * g.stride + kw] as f64;
                    }
                }
                y[(p * g.oh + oh) * g.ow + ow] = (s / (g.k * g.k) as f64) as f32;
            }
        }
    }
}

/// Reference twin of [`avgpool_backward`].
pub fn avgpool_backward_ref(g: &PoolGeom, planes: usize, dy: &[f32], dx: &mut [f32]) {
    for p in 0..planes {
        for oh in 0..g.oh {
            for ow in 0..g.ow {
                let d = dy[(p * g.oh + oh) * g.ow + ow] / (g.k * g.k) as f32;
                for kh in 0..g.k {
                    for kw in 0..g.k {
                        dx[p * g.h * g.w + (oh * g.stride + kh) * g.w + ow * g.stride + kw] += d;
                    }
                }
            }
        }
    }
}

/// Global average pooling: `y[p] =` the mean of plane `p` of `x[planes, S]` (`S = H*W`).
pub fn global_avgpool_forward(planes: usize, s: usize, x: &[f32], y: &mut [f32]) {
    assert!(
        x.len() == planes * s && y.len() == planes,
        "global_avgpool: x has {} values, y {}",
        x.len(),
        y.len()
    );
    if s == 0 {
        y.fill(0.0);
        return;
    }
    for (yp, xp) in y.iter_mut().zip(x.chunks_exact(s)) {
        *yp = xp.iter().sum::<f32>() / s as f32;
    }
}

/// `dx[p, i] += dy[p] / S`.
pub fn global_avgpool_backward(planes: usize, s: usize, dy: &[f32], dx: &mut [f32]) {
    assert!(
        dx.len() == planes * s && dy.len() == planes,
        "global_avgpool: dx has {} values, dy {}",
        dx.len(),
        dy.len()
    );
    if s == 0 {
        return;
    }
    for (&d, dxp) in dy.iter().zip(dx.chunks_exact_mut(s)) {
        let share = d / s as f32;
        dxp.iter_mut().for_each(|v| *v += share);
    }
}

/// Reference twin of [`global_avgpool_forward`] (sums in `f64`).
pub fn global_avgpool_forward_ref(planes: usize, s: usize, x: &[f32], y: &mut [f32]) {
    for p in 0..planes {
        let mut sum = 0.0f64;
        for i in 0..s {
            sum += x[p * s + i] as f64;
        }
        y[p] = if s == 0 { 0.0 } else { (sum / s as f64) as f32 };
    }
}

/// Reference twin of [`global_avgpool_backward`].
pub fn global_avgpool_backward_ref(planes: usize, s: usize, dy: &[f32], dx: &mut [f32]) {
    for p in 0..planes {
        for i in 0..s {
            dx[p * s + i] += dy[p] / s as f32;
        }
    }
}
