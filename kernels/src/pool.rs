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
