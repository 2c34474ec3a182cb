//! 2-D convolution, `y = w (*) x + b`, and its fusion with a following ReLU and max-pool.
//!
//! Three paths compute the convolution:
//! - **direct** (`kernels::conv_direct`) when the input has one channel (the GEMM's inner
//!   dimension would be only `KH*KW`, 9 or 16, too thin for a GEMM to pay for the column
//!   matrix), and for stride-1 layers with large output planes ([`DIRECT_MIN_PLANE`]). Its
//!   weight gradient takes a group of images per call; its input gradient is a convolution
//!   with transposed weights ([`InputGrad`], prepared once per batch), except with one input
//!   channel, where that convolution would have one output channel and `w^T dy` by GEMM, then
//!   col2im, is faster (as on im2col);
//! - **implicit GEMM** (`kernels::conv_implicit`) for the other layers with kernels up to 5
//!   wide: the GEMM of im2col computed straight from the padded images, output channels along
//!   the SIMD lanes, so no column matrix is built or packed. The weights are transposed when
//!   they change ([`Conv::prepare`]: once per batch in training, once in all at inference);
//!   the weight gradient is summed over a chunk of images in the kernel's layout and added to
//!   `dw` once; the input gradient of a stride-1 layer is again a convolution (with a stride
//!   of 2 it is `w^T dy` by GEMM, then col2im);
//! - **im2col + GEMM** otherwise, per group of images: `y[OC, G*OH*OW] = w[OC, C*KH*KW] * col`.
//!   Backward: `dw += dy * col^T`, `dcol = w^T * dy`, then `col2im(dcol)` into `dx`.
//!   The column matrix is rebuilt in backward rather than stored: it is cheap next to the GEMMs
//!   and storing it for a batch would cost `N * C*KH*KW * OH*OW` floats.
//!
//! [`conv2d_relu_maxpool`] computes conv -> ReLU -> max-pool image by image without ever
//! storing the full-size convolution output: ReLU commutes with max
//! (`max(relu(a), relu(b)) = relu(max(a, b))`), so it pools the raw convolution, keeps each
//! window's argmax, and applies ReLU to the pooled value. On the direct path with stride 1 and
//! a 2x2/2 pool one kernel does all of it (`conv_direct::conv_forward_relu_pool2`), pooling
//! each block of channels while it is in L1; the other paths convolve a group of images into a
//! buffer and pool that. Backward rebuilds each image's
//! convolution gradient from the pooled gradient (non-zero only at an argmax whose pooled
//! value is positive) and runs the same per-image backward as [`conv2d`]. The model uses it
//! whenever those three layers follow each other; the result equals the three separate ops.

use kernels::bias::{bias_add, channel_sums};
use kernels::conv_direct::{conv_backward_weights, conv_forward, conv_forward_relu_pool2, InputGrad};
use kernels::conv_implicit::{self, ImplicitConv, ImplicitInputGrad, ImplicitScratch, WeightGrad};
use kernels::gemm::matmul;
use kernels::im2col::{col2im_ld, im2col_ld, ConvGeom};
use kernels::pool::PoolGeom;
use rayon::prelude::*;
use std::sync::Arc;

use super::{sum_into, IMAGES_PER_CHUNK};
use crate::params::{ParamId, Params};
use crate::tape::{Backward, Grads, Tape, Var};
use crate::tensor::Tensor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Direct,
    Im2col,
    /// Implicit GEMM (`kernels::conv_implicit`): forward, weight gradient, and the input
    /// gradient when the stride is 1 (otherwise `w^T dy` by GEMM, then col2im).
    Implicit,
}

/// The convolution of one layer: geometry, filter count and path.
#[derive(Clone, Copy, Debug)]
struct Conv {
    g: ConvGeom,
    oc: usize,
    path: Path,
}

/// Values in a group's column matrix that the im2col path aims for (1 MiB of `f32`): enough
/// images per GEMM that packing the weights is amortised and the GEMM is wide, few enough that
/// the column matrix stays near the core's cache.
const GROUP_VALUES: usize = 1 << 18;

/// The smallest output plane (`OH*OW`) for which a stride-1 convolution with several input
/// channels takes the direct path. Measured (`cargo bench --bench kernels -- conv/`, one core):
/// on 28x28 planes the direct path's three passes take 0.8x the time of im2col + GEMM; on
/// 14x14 and 11x11 planes im2col + GEMM, which puts several images into one GEMM, is as fast
/// or faster.
const DIRECT_MIN_PLANE: usize = 24 * 24;

/// Per-thread buffers, kept from call to call ([`with_scratch`]), so that a step allocates no
/// column matrices or padded images after the first.
#[derive(Default)]
struct Scratch {
    /// The (group's) column matrix, the direct path's padded input, or an input gradient's
    /// column matrix `w^T dy` before col2im.
    col: Vec<f32>,
    /// The group's output or output gradient in `[OC, G*OH*OW]` layout.
    out: Vec<f32>,
    /// One image's rebuilt output gradient (fused op).
    dy: Vec<f32>,
    implicit: ImplicitScratch,
    /// The implicit path's weight-gradient sums of the chunk so far.
    weight_grad: Option<WeightGrad>,
    /// The fused op's full-size convolution output of a group, and its argmaxes on a no-grad
    /// tape.
    conv_out: Vec<f32>,
    argmax: Vec<u32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
    /// [`Conv::prepare`]'s transposed weights, valid while their `version` is the
    /// parameters' current one.
    static PREPARED: std::cell::RefCell<Vec<Prepared>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// One layer's weights transposed for the implicit GEMM, and what they were made from.
struct Prepared {
    /// [`Params::version`] when they were made: equal versions mean equal weights.
    version: u64,
    w: ParamId,
    conv: Arc<ImplicitConv>,
}

/// Runs `f` with this thread's [`Scratch`]. The kernels inside never re-enter rayon, so the
/// borrow is never nested.
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with_borrow_mut(f)
}

/// Which of the three paths (module docs) a convolution of geometry `g` takes: "direct",
/// "implicit GEMM" or "im2col", for reports and benchmarks.
pub fn path_name(g: &ConvGeom) -> &'static str {
    match Conv::new(*g, 1).path {
        Path::Direct => "direct",
        Path::Implicit => "implicit GEMM",
        Path::Im2col => "im2col",
    }
}

impl Conv {
    fn new(g: ConvGeom, oc: usize) -> Self {
        let path = if g.c == 1 || (g.unit_stride() && g.out_plane() >= DIRECT_MIN_PLANE) {
            Path::Direct
        } else if conv_implicit::supports(&g) {
            Path::Implicit
        } else {
            Path::Im2col
        };
        Conv { g, oc, path }
    }

    /// The weights `w` prepared for the forward pass: transposed for [`Path::Implicit`],
    /// nothing for the others. The transposed weights are kept per thread ([`PREPARED`]) for
    /// as long as the parameters' version does not change, so inference transposes each layer
    /// once, not on every call (one image of E at 1 thread: 131 -> 105-107 us in alternating
    /// runs), while training, which changes the weights every step, transposes them once per
    /// batch.
    fn prepare(&self, params: &Params, w: ParamId) -> Option<Arc<ImplicitConv>> {
        if self.path != Path::Implicit {
            return None;
        }
        let version = params.version();
        PREPARED.with_borrow_mut(|kept| {
            kept.retain(|p| p.version == version);
            if let Some(p) = kept.iter().find(|p| p.w == w && p.conv.fits(&self.g, self.oc)) {
                return Some(Arc::clone(&p.conv));
            }
            let conv = Arc::new(ImplicitConv::new(&self.g, self.oc, params.value(w).data()));
            kept.push(Prepared { version, w, conv: Arc::clone(&conv) });
            Some(conv)
        })
    }

    fn out_len(&self) -> usize {
        self.oc * self.g.out_plane()
    }

    /// Images per GEMM: 1 on the direct path; on the im2col path as many as fit
    /// [`GROUP_VALUES`], at most a chunk. Depends only on the geometry, never on threads.
    fn group(&self) -> usize {
        match self.path {
            // Enough images for the weight gradient's long sums, their padded copies near the
            // core's cache (the forward runs image by image either way).
            Path::Direct => (GROUP_VALUES / self.g.in_len().max(1)).clamp(1, IMAGES_PER_CHUNK),
            Path::Im2col | Path::Implicit => {
                (GROUP_VALUES / (self.g.col_rows() * self.g.out_plane()).max(1)).clamp(1, IMAGES_PER_CHUNK)
            }
        }
    }

    /// `y_j[OC, OH*OW] = w (*) x_j + b` for consecutive images `xs: [G, C, H, W]`; `prepared`
    /// is [`Conv::prepare`]'s result.
    fn forward_images(
        &self,
        xs: &[f32],
        w: &[f32],
        prepared: Option<&ImplicitConv>,
        b: &[f32],
        ys: &mut [f32],
        s: &mut Scratch,
    ) {
        let (g, oc, plane, ckk) = (&self.g, self.oc, self.g.out_plane(), self.g.col_rows());
        let count = xs.len() / g.in_len();
        match self.path {
            Path::Implicit => {
                let implicit = prepared.expect("Conv::prepare's weights for the implicit path");
                implicit.forward(xs, b, ys, &mut s.implicit);
                return; // the bias included
            }
            Path::Direct => {
                for (xi, yi) in xs.chunks_exact(g.in_len()).zip(ys.chunks_exact_mut(self.out_len())) {
                    conv_forward(g, oc, xi, w, yi, &mut s.col);
                }
            }
            Path::Im2col => {
                // col[CKK, G*OH*OW], image j in columns j*OH*OW.., then one GEMM for the group:
                // out[OC, G*OH*OW] = w[OC, CKK] * col, scattered back to [G, OC, OH*OW].
                let ld = count * plane;
                s.col.resize(ckk * ld, 0.0);
                for (j, xi) in xs.chunks_exact(g.in_len()).enumerate() {
                    im2col_ld(g, xi, &mut s.col[j * plane..], ld);
                }
                s.out.resize(oc * ld, 0.0);
                matmul(false, false, oc, ckk, ld, w, &s.col, &mut s.out, false);
                for (j, yi) in ys.chunks_exact_mut(self.out_len()).enumerate() {
                    for (o, yo) in yi.chunks_exact_mut(plane).enumerate() {
                        yo.copy_from_slice(&s.out[o * ld + j * plane..][..plane]);
                    }
                }
            }
        }
        bias_add(ys, b, count, oc, plane);
    }

    /// Accumulates the gradients of consecutive images `first..first + G` (`xs: [G, C, H, W]`):
    /// `dw`, `db`, and `dxs` when given. Their output gradients come from `src`.
    #[allow(clippy::too_many_arguments)]
    fn backward_images(
        &self,
        src: &ConvGrad,
        first: usize,
        xs: &[f32],
        w: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        dxs: Option<&mut [f32]>,
        input_grad: Option<&InputGradOf>,
        s: &mut Scratch,
    ) {
        let (g, oc, plane, ckk) = (&self.g, self.oc, self.g.out_plane(), self.g.col_rows());
        let count = xs.len() / g.in_len();
        // The group's output gradients, rebuilt in this buffer when pooled; taken out of the
        // scratch so that the rest of it stays free for the passes below.
        let mut dy_buf = std::mem::take(&mut s.dy);
        let dys = src.images(first, count, self, &mut dy_buf);
        match self.path {
            Path::Direct => {
                conv_backward_weights(g, oc, xs, dys, dw, &mut s.col);
                channel_sums(dys, count, oc, plane, db);
                if let (Some(dxs), Some(how)) = (dxs, input_grad) {
                    self.input_grad(how, w, dys, dxs, s);
                }
            }
            Path::Implicit => {
                let sums = s.weight_grad.as_mut().expect("conv_backward_batch starts the chunk's sums");
                sums.add(xs, dys, &mut s.implicit);
                channel_sums(dys, count, oc, plane, db);
                if let (Some(dxs), Some(how)) = (dxs, input_grad) {
                    self.input_grad(how, w, dys, dxs, s);
                }
            }
            Path::Im2col => {
                let ld = count * plane;
                // dy[OC, G*OH*OW], gathered from the images' [OC, OH*OW] gradients.
                self.gather_dy(dys, &mut s.out);
                s.col.resize(ckk * ld, 0.0);
                for (j, xi) in xs.chunks_exact(g.in_len()).enumerate() {
                    im2col_ld(g, xi, &mut s.col[j * plane..], ld);
                }
                // dw[OC, CKK] += dy[OC, G*OH*OW] * col^T[G*OH*OW, CKK]
                matmul(false, true, oc, ld, ckk, &s.out, &s.col, dw, true);
                channel_sums(&s.out, 1, oc, ld, db);
                if let Some(dxs) = dxs {
                    // `InputGradOf::Gemm` on the dy gathered above, reusing col's buffer.
                    self.input_grad_by_gemm(w, &s.out, dxs, &mut s.col);
                }
            }
        }
        s.dy = dy_buf;
    }

    /// `dxs[G, C, H, W] +=` the input gradient of a group whose output gradients are `dys[G,
    /// OC, OH*OW]`, computed as `how` says.
    fn input_grad(&self, how: &InputGradOf, w: &[f32], dys: &[f32], dxs: &mut [f32], s: &mut Scratch) {
        match how {
            InputGradOf::Direct(input_grad) => {
                for (dyi, dxi) in dys.chunks_exact(self.out_len()).zip(dxs.chunks_exact_mut(self.g.in_len()))
                {
                    input_grad.accumulate(dyi, dxi, &mut s.col);
                }
            }
            InputGradOf::Implicit(input_grad) => input_grad.accumulate(dys, dxs, &mut s.implicit),
            InputGradOf::Gemm => {
                self.gather_dy(dys, &mut s.out);
                self.input_grad_by_gemm(w, &s.out, dxs, &mut s.col);
            }
        }
    }

    /// `out[OC, G*OH*OW]` gathered from a group's gradients `dys[G, OC, OH*OW]`.
    fn gather_dy(&self, dys: &[f32], out: &mut Vec<f32>) {
        let plane = self.g.out_plane();
        let ld = dys.len() / self.oc;
        out.resize(self.oc * ld, 0.0);
        for (j, dyi) in dys.chunks_exact(self.out_len()).enumerate() {
            for (o, dyo) in dyi.chunks_exact(plane).enumerate() {
                out[o * ld + j * plane..][..plane].copy_from_slice(dyo);
            }
        }
    }

    /// `dxs[G, C, H, W] += col2im(dcol)` with `dcol[CKK, G*OH*OW] = w^T[CKK, OC] * dy[OC,
    /// G*OH*OW]` (`dy` as [`Conv::gather_dy`] lays it out), built in `dcol`'s buffer.
    fn input_grad_by_gemm(&self, w: &[f32], dy: &[f32], dxs: &mut [f32], dcol: &mut Vec<f32>) {
        let (g, plane, ckk) = (&self.g, self.g.out_plane(), self.g.col_rows());
        let ld = dy.len() / self.oc;
        dcol.resize(ckk * ld, 0.0);
        matmul(true, false, ckk, self.oc, ld, w, dy, dcol, false);
        for (j, dxi) in dxs.chunks_exact_mut(g.in_len()).enumerate() {
            col2im_ld(g, &dcol[j * plane..], ld, dxi);
        }
    }
}

/// How a batch computes its input gradient, with what is prepared once for it.
enum InputGradOf {
    /// A convolution of `dy` with the transposed weights, by the direct kernel.
    Direct(InputGrad),
    /// The same by the implicit GEMM (stride 1).
    Implicit(ImplicitInputGrad),
    /// `w^T dy` by GEMM, then col2im: im2col's way, and the others' where their convolution
    /// does not apply or is slow.
    Gemm,
}

/// Where a convolution's output gradient comes from, image by image.
enum ConvGrad<'a> {
    /// The upstream gradient of the convolution itself, `[N, OC, OH, OW]`.
    Direct(&'a [f32]),
    /// The upstream gradient of the fused op's pooled output `dy`, with its values `y` and
    /// window argmaxes: the convolution gradient is `dy` placed at each argmax whose pooled
    /// value passed the ReLU, zero elsewhere.
    Pooled { dy: &'a [f32], y: &'a [f32], argmax: &'a [u32], pooled_plane: usize },
}

impl ConvGrad<'_> {
    /// The convolution gradients `[count, OC, OH*OW]` of images `first..first + count`, rebuilt
    /// into `buf` when pooled.
    ///
    /// Kept out of line: when the compiler inlined it into `conv_backward_batch`'s loop, the
    /// loop took 15.6% of C1's training step at 1 thread where this function alone had taken
    /// 12.1% (`perf record`), and C1 trained 2-3% slower in alternating runs.
    #[inline(never)]
    fn images<'b>(&'b self, first: usize, count: usize, conv: &Conv, buf: &'b mut Vec<f32>) -> &'b [f32] {
        let len = conv.out_len();
        match *self {
            ConvGrad::Direct(d) => &d[first * len..(first + count) * len],
            ConvGrad::Pooled { dy, y, argmax, pooled_plane } => {
                buf.clear();
                buf.resize(count * len, 0.0);
                let plane = conv.g.out_plane();
                let range = first * conv.oc * pooled_plane..(first + count) * conv.oc * pooled_plane;
                // Pooled plane `q` of the group (an image and a channel) pools convolution
                // plane `q`; a window's gradient goes to its argmax if it passed the ReLU.
                let pooled = dy[range.clone()]
                    .chunks_exact(pooled_plane)
                    .zip(y[range.clone()].chunks_exact(pooled_plane))
                    .zip(argmax[range].chunks_exact(pooled_plane));
                for (((dq, yq), aq), out) in pooled.zip(buf.chunks_exact_mut(plane)) {
                    for ((&d, &v), &a) in dq.iter().zip(yq).zip(aq) {
                        // Branch-free: whether a value passed the ReLU is a coin toss.
                        out[a as usize] += if v > 0.0 { d } else { 0.0 };
                    }
                }
                buf
            }
        }
    }
}

/// The batch's backward: per image (see [`Conv::backward_image`]), with weight and bias
/// gradients summed over fixed chunks of images and added in chunk order.
fn conv_backward_batch(conv: &Conv, x: Var, w: ParamId, b: ParamId, grads: &mut Grads, src: ConvGrad) {
    let in_len = conv.g.in_len();
    let ckk = conv.g.col_rows();
    let n = grads.nodes.value(x).dim(0);
    if n == 0 || in_len == 0 || conv.out_len() == 0 {
        return;
    }
    let wd = grads.params.value(w).data();
    let (xv, dx) = if grads.nodes.needs_grad(x) {
        let (v, g) = grads.nodes.value_and_grad(x);
        (v, Some(g))
    } else {
        (grads.nodes.value(x), None)
    };
    let xd = xv.data();
    let group = conv.group();
    // How the input gradient is computed, its transposed weights prepared once per batch.
    let input_grad = dx.is_some().then(|| match conv.path {
        // With one input channel the direct input gradient is a convolution with one output
        // channel, whose every input load feeds a single multiply-add; `w^T dy` by GEMM (KH*KW
        // rows) and col2im run at several times its rate.
        Path::Direct if conv.g.c == 1 => InputGradOf::Gemm,
        Path::Direct => InputGradOf::Direct(InputGrad::new(&conv.g, conv.oc, wd)),
        // A stride other than 1 has no implicit input gradient.
        Path::Implicit => {
            ImplicitInputGrad::new(&conv.g, conv.oc, wd).map_or(InputGradOf::Gemm, InputGradOf::Implicit)
        }
        Path::Im2col => InputGradOf::Gemm,
    });
    let work = |chunk: usize, mut dx_chunk: Option<&mut [f32]>| {
        let mut dw = vec![0.0f32; conv.oc * ckk];
        let mut db = vec![0.0f32; conv.oc];
        let start = chunk * IMAGES_PER_CHUNK;
        let end = (start + IMAGES_PER_CHUNK).min(n);
        with_scratch(|scratch| {
            if conv.path == Path::Implicit {
                // Zero sums for this layer, in the thread's buffer of the last chunk.
                match scratch.weight_grad.as_mut() {
                    Some(sums) => sums.reset(&conv.g, conv.oc),
                    None => scratch.weight_grad = Some(WeightGrad::new(&conv.g, conv.oc)),
                }
            }
            for g0 in (start..end).step_by(group) {
                let g1 = (g0 + group).min(end);
                let dxs =
                    dx_chunk.as_deref_mut().map(|d| &mut d[(g0 - start) * in_len..(g1 - start) * in_len]);
                let xs = &xd[g0 * in_len..g1 * in_len];
                conv.backward_images(&src, g0, xs, wd, &mut dw, &mut db, dxs, input_grad.as_ref(), scratch);
            }
            if conv.path == Path::Implicit {
                scratch.weight_grad.as_mut().expect("started above").finish(&mut dw);
            }
        });
        (dw, db)
    };
    let partials: Vec<(Vec<f32>, Vec<f32>)> = match dx {
        Some(dx) => dx
            .data_mut()
            .par_chunks_mut(IMAGES_PER_CHUNK * in_len)
            .enumerate()
            .map(|(chunk, dxc)| work(chunk, Some(dxc)))
            .collect(),
        None => (0..n.div_ceil(IMAGES_PER_CHUNK)).into_par_iter().map(|chunk| work(chunk, None)).collect(),
    };
    let (dws, dbs): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
    sum_into(grads.params.grad_mut(w).data_mut(), dws);
    sum_into(grads.params.grad_mut(b).data_mut(), dbs);
}

fn check_input(xv: &Tensor, wv: &Tensor, g: &ConvGeom) {
    assert_eq!(
        &xv.shape()[1..],
        &[g.c, g.h, g.w],
        "conv2d: input {:?} does not match geometry [N, {}, {}, {}]",
        xv.shape(),
        g.c,
        g.h,
        g.w
    );
    assert_eq!(wv.shape()[1..], [g.c, g.kh, g.kw], "conv2d: weight shape {:?}", wv.shape());
}

/// Records a convolution of `x` with weights `w` and bias `b`.
///
/// # Shapes
/// `x: [N, C, H, W]`, `w: [OC, C, KH, KW]`, `b: [OC]` -> `[N, OC, OH, OW]`, with `C, H, W, KH, KW`,
/// strides, padding and `OH, OW` given by `g`.
pub fn conv2d(tape: &mut Tape, params: &Params, x: Var, w: ParamId, b: ParamId, g: ConvGeom) -> Var {
    let conv = Conv::new(g, params.value(w).dim(0));
    let n = tape.value(x).dim(0);
    let mut y = tape.scratch(&[n, conv.oc, g.oh, g.ow]);
    let xv = tape.value(x);
    check_input(xv, params.value(w), &g);
    if n > 0 && conv.out_len() > 0 {
        let (wd, bd) = (params.value(w).data(), params.value(b).data());
        let prepared = conv.prepare(params, w);
        let group = conv.group();
        y.data_mut()
            .par_chunks_mut(group * conv.out_len())
            .zip(xv.data().par_chunks(group * g.in_len().max(1)))
            .for_each(|(ys, xs)| {
                with_scratch(|s| conv.forward_images(xs, wd, prepared.as_deref(), bd, ys, s))
            });
    }
    tape.push(y, true, Box::new(Conv2dBackward { x, w, b, conv }))
}

struct Conv2dBackward {
    x: Var,
    w: ParamId,
    b: ParamId,
    conv: Conv,
}

impl Backward for Conv2dBackward {
    fn backward(&self, _out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        conv_backward_batch(&self.conv, self.x, self.w, self.b, grads, ConvGrad::Direct(dout.data()));
    }
}

/// Records conv -> ReLU -> max-pool (`k x k` windows, stride `stride`) as one op; equal to
/// [`conv2d`], [`relu`](super::relu) and [`max_pool2d`](super::max_pool2d) in sequence.
///
/// # Shapes
/// `x: [N, C, H, W]` -> `[N, OC, PH, PW]`, `PH = (OH - k) / stride + 1`.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_relu_maxpool(
    tape: &mut Tape,
    params: &Params,
    x: Var,
    w: ParamId,
    b: ParamId,
    g: ConvGeom,
    k: usize,
    stride: usize,
) -> Var {
    let conv = Conv::new(g, params.value(w).dim(0));
    let pg = PoolGeom::new(g.oh, g.ow, k, stride);
    let pooled_plane = pg.oh * pg.ow;
    let per_image = conv.oc * pooled_plane;
    let n = tape.value(x).dim(0);
    let mut y = tape.scratch(&[n, conv.oc, pg.oh, pg.ow]);
    // The argmaxes are kept for backward; a no-grad tape only needs each group's, briefly.
    let record = tape.records_grad();
    let mut argmax = if record { vec![0u32; n * per_image] } else { Vec::new() };
    let xv = tape.value(x);
    check_input(xv, params.value(w), &g);
    if n > 0 && per_image > 0 {
        let (wd, bd) = (params.value(w).data(), params.value(b).data());
        let prepared = conv.prepare(params, w);
        let group = conv.group();
        // On the direct path with the common pool, each image's convolution is pooled straight
        // from the kernel's buffer (`conv_forward_relu_pool2`, equal to the steps below).
        let pool_direct = conv.path == Path::Direct && g.unit_stride() && k == 2 && stride == 2;
        let pool_group = |ys: &mut [f32], args: Option<&mut [u32]>, xs: &[f32]| {
            with_scratch(|s| {
                if pool_direct {
                    let mut args = args.map(|a| a.chunks_exact_mut(per_image));
                    for (xi, yi) in xs.chunks_exact(g.in_len()).zip(ys.chunks_exact_mut(per_image)) {
                        let ai = args.as_mut().and_then(Iterator::next);
                        conv_forward_relu_pool2(&g, conv.oc, xi, wd, bd, yi, ai, &mut s.col);
                    }
                    return;
                }
                let count = xs.len() / g.in_len();
                let mut conv_out = std::mem::take(&mut s.conv_out);
                conv_out.resize(count * conv.out_len(), 0.0);
                conv.forward_images(xs, wd, prepared.as_deref(), bd, &mut conv_out, s);
                let args = match args {
                    Some(a) => a,
                    None => {
                        s.argmax.resize(ys.len(), 0);
                        &mut s.argmax[..]
                    }
                };
                kernels::pool::maxpool_forward(&pg, count * conv.oc, &conv_out, ys, args);
                ys.iter_mut().for_each(|v| *v = v.max(0.0));
                s.conv_out = conv_out;
            })
        };
        let ys = y.data_mut().par_chunks_mut(group * per_image);
        let xs = xv.data().par_chunks(group * g.in_len().max(1));
        if record {
            let args = argmax.par_chunks_mut(group * per_image);
            ys.zip(args).zip(xs).for_each(|((ys, args), xs)| pool_group(ys, Some(args), xs));
        } else {
            ys.zip(xs).for_each(|(ys, xs)| pool_group(ys, None, xs));
        }
    }
    tape.push(y, true, Box::new(ConvReluPoolBackward { x, w, b, conv, pooled_plane, argmax }))
}

struct ConvReluPoolBackward {
    x: Var,
    w: ParamId,
    b: ParamId,
    conv: Conv,
    pooled_plane: usize,
    /// `[N, OC, PH, PW]`: each window's argmax within its `OH x OW` convolution plane.
    argmax: Vec<u32>,
}

impl Backward for ConvReluPoolBackward {
    fn backward(&self, out: &Tensor, dout: &Tensor, grads: &mut Grads) {
        let src = ConvGrad::Pooled {
            dy: dout.data(),
            y: out.data(),
            argmax: &self.argmax,
            pooled_plane: self.pooled_plane,
        };
        conv_backward_batch(&self.conv, self.x, self.w, self.b, grads, src);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths of the reference models' layers, as the module docs and the README give them.
    #[test]
    fn path_names_of_the_reference_layers() {
        let valid = (0, 0, 0, 0);
        let same = (1, 1, 1, 1);
        let cases = [
            (ConvGeom::new(1, 28, 28, 3, 3, (1, 1), valid), "direct"), // C1, A/B
            (ConvGeom::new(1, 28, 28, 4, 4, (1, 1), (1, 1, 2, 2)), "direct"), // E conv1
            (ConvGeom::new(64, 14, 14, 4, 4, (1, 1), valid), "implicit GEMM"), // E conv2
            (ConvGeom::new(32, 28, 28, 3, 3, (1, 1), same), "direct"), // `ours` conv2
            (ConvGeom::new(32, 14, 14, 3, 3, (1, 1), same), "implicit GEMM"), // `ours` conv3
            (ConvGeom::new(2, 10, 10, 6, 6, (1, 1), valid), "im2col"), // kernels over 5 wide
        ];
        for (g, want) in cases {
            assert_eq!(path_name(&g), want, "{g:?}");
        }
    }
}
