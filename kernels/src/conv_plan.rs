//! One convolution layer's plan: how its forward and backward passes run on an [`Engine`].
//!
//! The math is the main crate's (`ops::conv`); this is where the speed lives. A plan is
//! built once per layer and owns everything the fast engine keeps: the path, the weights
//! prepared for it ([`ConvPlan::refresh`], called after every change of the weights), and
//! scratch buffers (a small pool, one taken per parallel task).
//!
//! On [`Engine::Reference`] every pass is a loop over images calling the plain twins
//! ([`conv_forward_ref`], [`conv_backward_weights_ref`], [`conv_backward_input_ref`]).
//!
//! On [`Engine::Fast`] one of three paths computes the convolution:
//! - **direct** (`conv_direct`) when the input has one channel (the GEMM's inner dimension
//!   would be only `KH*KW`, too thin for a GEMM to pay for the column matrix), and for
//!   stride-1 layers with large output planes (`DIRECT_MIN_PLANE`). Its weight gradient
//!   takes a group of images per call; its input gradient is a convolution with transposed
//!   weights, except with one input channel, where `w^T dy` by GEMM, then col2im, is faster;
//! - **implicit GEMM** (`conv_implicit`) for the other layers with kernels up to 5 wide: the
//!   GEMM of im2col computed straight from the padded images, output channels along the SIMD
//!   lanes, so no column matrix is built or packed. The input gradient of a layer with as
//!   many outputs as inputs ('same', stride 1) is again a convolution; with fewer ('valid',
//!   or a stride over 1) it is scattered from the output side (`conv_scatter`), so that no
//!   padding is multiplied;
//! - **im2col + GEMM** otherwise, per group of images: `y[OC, G*OH*OW] = w[OC, C*KH*KW] * col`.
//!   Backward: `dw += dy * col^T`, `dcol = w^T * dy`, then `col2im(dcol)` into `dx`. The
//!   column matrix is rebuilt in backward rather than stored.
//!
//! **Fusion.** [`ConvPlan::forward_relu_pool`] computes conv -> ReLU -> max-pool without
//! storing the full-size convolution output: ReLU commutes with max
//! (`max(relu(a), relu(b)) = relu(max(a, b))`), so it pools the raw convolution, keeps each
//! window's argmax, and applies ReLU to the pooled value. On the direct path with stride 1
//! and a 2x2/2 pool one kernel does all of it (`conv_direct::conv_forward_relu_pool2`). The
//! backward ([`ConvGrad::Pooled`]) rebuilds each image's convolution gradient from the pooled
//! gradient and runs the convolution's own backward. The result equals the three separate
//! ops, bit for bit (tested). Or, when the choice says `sparse`, the backward runs over the
//! windows' argmaxes alone (`conv_sparse`): a quarter of the positions or fewer, no rebuilt
//! gradient, the sums in another order (tested against the reference within the rounding).
//!
//! **Choices.** Which path runs the forward pass, which the backward pass, how the input
//! gradient is computed and how many images go into one group are a [`ConvChoice`]: plain
//! data that [`ConvChoice::rule`] fills from the layer's geometry (the rule above), that
//! [`crate::planner`] fills by timing the candidates on the machine that runs, and that a
//! stored plan replays ([`ConvPlan::with_choice`]). Every choice computes the same
//! convolution; the sums may run in another order, so two choices may differ in the last
//! bits, while the same choice always gives the same bits.
//!
//! Parallelism: forward splits the batch into groups of images; backward sums the weight and
//! bias gradients over fixed chunks of [`IMAGES_PER_CHUNK`] images, added in chunk order. One
//! image is one group, so its forward pass runs on the calling thread alone.

use rayon::prelude::*;
use std::sync::{Arc, Mutex};

use crate::bias::{bias_add, bias_add_ref, channel_sums, channel_sums_ref};
use crate::conv_direct::{
    conv_backward_input_ref, conv_backward_weights, conv_backward_weights_ref, conv_forward,
    conv_forward_ref, conv_forward_relu_pool2, InputGrad,
};
use crate::conv_implicit::{self, ImplicitConv, ImplicitInputGrad, ImplicitScratch, WeightGrad};
use crate::conv_scatter::{ScatterInputGrad, ScatterScratch};
use crate::conv_sparse::{SparseConvGrad, SparseScratch, SparseSums};
use crate::engine::{sum_into, Engine, IMAGES_PER_CHUNK};
use crate::gemm::matmul;
use crate::im2col::{col2im_ld, im2col_ld, ConvGeom, Crop};
use crate::pool::{maxpool_forward, maxpool_forward_ref, PoolGeom};

/// Values in a group's column matrix that the im2col path aims for (1 MiB of `f32`): enough
/// images per GEMM that packing the weights is amortised, few enough that the column matrix
/// stays near the core's cache. The rule's constant (as [`DIRECT_MIN_PLANE`]), tuned on the
/// 2-core AMD EPYC (AVX-512, 1 MiB L2 per core) of the README's Performance section.
const GROUP_VALUES: usize = 1 << 18;

/// The smallest output plane (`OH*OW`) for which a stride-1 convolution with several input
/// channels takes the direct path: on large planes building and packing a column matrix costs
/// as much memory traffic as the GEMM reads, while on small planes im2col + GEMM puts several
/// images into one GEMM. The rule's constant, tuned on the 2-core AMD EPYC (AVX-512) of the
/// README's Performance section; [`crate::planner`] measures instead.
const DIRECT_MIN_PLANE: usize = 24 * 24;

/// The fast engine's three ways to compute a convolution (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvPath {
    Direct,
    Implicit,
    Im2col,
}

impl ConvPath {
    /// "direct", "implicit GEMM" or "im2col".
    pub fn name(self) -> &'static str {
        match self {
            ConvPath::Direct => "direct",
            ConvPath::Implicit => "implicit GEMM",
            ConvPath::Im2col => "im2col",
        }
    }

    /// Whether this path computes the layer `g`: the implicit GEMM takes kernels up to 5
    /// wide, the others any layer.
    pub fn supports(self, g: &ConvGeom) -> bool {
        self != ConvPath::Implicit || conv_implicit::supports(g)
    }
}

/// How the fast engine computes a layer's input gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum InputGradWay {
    /// A convolution of `dy` with the transposed weights, by the direct kernel (any layer).
    Direct,
    /// The same by the implicit GEMM (stride 1, kernels up to 5 wide).
    Implicit,
    /// `col2im(w^T dy)` from the output side, without the column matrix and without
    /// multiplying padding (`conv_scatter`; any layer).
    Scatter,
    /// `w^T dy` by GEMM, then col2im (any layer).
    Gemm,
}

impl InputGradWay {
    /// "direct", "implicit GEMM", "scatter" or "GEMM + col2im".
    pub fn name(self) -> &'static str {
        match self {
            InputGradWay::Direct => "direct",
            InputGradWay::Implicit => "implicit GEMM",
            InputGradWay::Scatter => "scatter",
            InputGradWay::Gemm => "GEMM + col2im",
        }
    }

    /// Whether this way computes the input gradient of the layer `g` with `oc` filters: the
    /// implicit GEMM's needs stride 1, padding narrower than the kernel and a kernel it takes
    /// (the conditions of [`ImplicitInputGrad::new`], read from the geometry without building
    /// the weights; a unit test checks the two agree).
    pub fn supports(self, g: &ConvGeom, oc: usize) -> bool {
        let fits = g.pad_top < g.kh && g.pad_bottom < g.kh && g.pad_left < g.kw && g.pad_right < g.kw;
        self != InputGradWay::Implicit
            || (g.unit_stride()
                && fits
                && g.out_plane() > 0
                && g.in_len() > 0
                && oc > 0
                && conv_implicit::supports(g))
    }
}

/// How one convolution layer runs on the fast engine (module docs): plain data, so that a
/// plan can be measured, stored and replayed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvChoice {
    /// The path of the forward pass.
    pub forward: ConvPath,
    /// The path of the weight and bias gradients.
    pub backward: ConvPath,
    /// How the input gradient is computed.
    pub input_grad: InputGradWay,
    /// Images per group (per GEMM on the im2col path, per call of the implicit GEMM and of
    /// the direct weight gradient), 1 to [`IMAGES_PER_CHUNK`].
    pub group: usize,
    /// Whether the backward of a pooled gradient ([`ConvGrad::Pooled`]) runs over the
    /// windows' argmaxes alone (`conv_sparse`) instead of the path and way above, which then
    /// serve only a plain gradient ([`ConvGrad::Direct`]).
    pub sparse: bool,
}

impl ConvChoice {
    /// The rule (module docs): direct for one input channel or stride 1 with output planes of
    /// at least `DIRECT_MIN_PLANE` (24x24), else the implicit GEMM where it applies, else im2col;
    /// the same path both ways; groups of about `GROUP_VALUES` (2^18) values.
    pub fn rule(g: &ConvGeom) -> ConvChoice {
        let path = if g.c == 1 || (g.unit_stride() && g.out_plane() >= DIRECT_MIN_PLANE) {
            ConvPath::Direct
        } else if conv_implicit::supports(g) {
            ConvPath::Implicit
        } else {
            ConvPath::Im2col
        };
        let input_grad = match path {
            // With one input channel the direct input gradient is a convolution with one
            // output channel, whose every input load feeds a single multiply-add.
            ConvPath::Direct if g.c == 1 => InputGradWay::Gemm,
            ConvPath::Direct => InputGradWay::Direct,
            // Fewer outputs than inputs (a 'valid' layer, or a stride over 1): the turned
            // convolution would multiply padding (38% of E conv2's work), the scatter does not.
            ConvPath::Implicit if g.out_plane() < g.h * g.w => InputGradWay::Scatter,
            ConvPath::Implicit if InputGradWay::Implicit.supports(g, 1) => InputGradWay::Implicit,
            ConvPath::Implicit | ConvPath::Im2col => InputGradWay::Gemm,
        };
        ConvChoice { forward: path, backward: path, input_grad, group: rule_group(g, path), sparse: false }
    }

    /// Whether every part of this choice computes the layer `g` with `oc` filters; the
    /// reason when not.
    pub fn check(&self, g: &ConvGeom, oc: usize) -> Result<(), String> {
        for path in [self.forward, self.backward] {
            if !path.supports(g) {
                return Err(format!("the {} path does not take a {}x{} kernel", path.name(), g.kh, g.kw));
            }
        }
        if !self.input_grad.supports(g, oc) {
            return Err(format!("the {} input gradient does not take this layer", self.input_grad.name()));
        }
        if !(1..=IMAGES_PER_CHUNK).contains(&self.group) {
            return Err(format!("a group of {} images is not in 1..={IMAGES_PER_CHUNK}", self.group));
        }
        Ok(())
    }
}

/// Images per group under the rule: enough for the weight gradient's long sums or, on the
/// GEMM paths, as many as fit `GROUP_VALUES` (2^18); at most a chunk. Depends only on the
/// geometry, never on threads.
pub fn rule_group(g: &ConvGeom, path: ConvPath) -> usize {
    let per_image = match path {
        ConvPath::Direct => g.in_len(),
        ConvPath::Im2col | ConvPath::Implicit => g.col_rows() * g.out_plane(),
    };
    (GROUP_VALUES / per_image.max(1)).clamp(1, IMAGES_PER_CHUNK)
}

/// One convolution layer's plan (module docs).
pub struct ConvPlan {
    g: ConvGeom,
    oc: usize,
    fast: Option<Fast>,
}

/// What the fast engine keeps for one layer.
struct Fast {
    choice: ConvChoice,
    /// The weights in the kernels' forms, made by [`ConvPlan::refresh`].
    prepared: Mutex<Option<Arc<Prepared>>>,
    /// Free scratch buffers; each parallel task takes one and gives it back.
    scratch: Mutex<Vec<Scratch>>,
}

/// The current weights, prepared for the fast kernels.
struct Prepared {
    /// Transposed for the implicit GEMM's forward.
    implicit: Option<ImplicitConv>,
    /// How the input gradient is computed, with its transposed weights.
    input_grad: InputGradOf,
    /// The weights of the sparse backward of a pooled gradient, when the choice takes it.
    sparse: Option<SparseConvGrad>,
}

/// A layer's input gradient, prepared as its [`InputGradWay`] says.
enum InputGradOf {
    /// A convolution of `dy` with the transposed weights, by the direct kernel.
    Direct(InputGrad),
    /// The same by the implicit GEMM (stride 1).
    Implicit(ImplicitInputGrad),
    /// `col2im(w^T dy)` from the output side, without the column matrix (`conv_scatter`).
    Scatter(ScatterInputGrad),
    /// `w^T dy` by GEMM, then col2im.
    Gemm,
}

/// Buffers of one task, kept from call to call so that a step allocates no column matrices
/// or padded images after the first.
#[derive(Default)]
struct Scratch {
    /// The group's column matrix, the direct path's padded input, or an input gradient's
    /// column matrix `w^T dy` before col2im.
    col: Vec<f32>,
    /// The group's output or output gradient in `[OC, G*OH*OW]` layout.
    out: Vec<f32>,
    /// A group's rebuilt output gradient (fused op).
    dy: Vec<f32>,
    implicit: ImplicitScratch,
    scatter: ScatterScratch,
    sparse: SparseScratch,
    /// The weight-gradient sums of one chunk: the implicit path's, the sparse backward's.
    weight_grad: Option<WeightGrad>,
    sparse_sums: SparseSums,
    /// The fused op's full-size convolution output of a group, and its argmaxes in inference.
    conv_out: Vec<f32>,
    argmax: Vec<u32>,
}

/// Where a convolution's output gradient comes from.
pub enum ConvGrad<'a> {
    /// The upstream gradient of the convolution itself, `[N, OC, OH, OW]`.
    Direct(&'a [f32]),
    /// The upstream gradient `dy` of the fused op's pooled output `y`, with the window
    /// argmaxes: the convolution gradient is `dy` placed at each argmax whose pooled value
    /// passed the ReLU, zero elsewhere.
    Pooled { dy: &'a [f32], y: &'a [f32], argmax: &'a [u32], pool: PoolGeom },
}

impl ConvPlan {
    /// A plan for a layer of geometry `g` with `oc` filters, by the rule
    /// ([`ConvChoice::rule`]). Call [`ConvPlan::refresh`] with the weights before the first
    /// pass.
    pub fn new(engine: Engine, g: ConvGeom, oc: usize) -> Self {
        Self::with_choice(engine, g, oc, ConvChoice::rule(&g))
    }

    /// A plan that runs as `choice` says on the fast engine (ignored on the reference).
    ///
    /// # Panics
    /// If `choice` does not take this layer ([`ConvChoice::check`]): check a stored choice
    /// first.
    pub fn with_choice(engine: Engine, g: ConvGeom, oc: usize, choice: ConvChoice) -> Self {
        let fast = (engine == Engine::Fast).then(|| {
            if let Err(why) = choice.check(&g, oc) {
                panic!("ConvPlan::with_choice: {choice:?} for {g:?}: {why}");
            }
            Fast { choice, prepared: Mutex::new(None), scratch: Mutex::new(Vec::new()) }
        });
        ConvPlan { g, oc, fast }
    }

    /// The engine this plan runs on.
    pub fn engine(&self) -> Engine {
        if self.fast.is_some() {
            Engine::Fast
        } else {
            Engine::Reference
        }
    }

    /// The filters (output channels).
    pub fn filters(&self) -> usize {
        self.oc
    }

    /// How the fast engine runs this layer; `None` on the reference engine.
    pub fn choice(&self) -> Option<ConvChoice> {
        self.fast.as_ref().map(|f| f.choice)
    }

    pub fn geom(&self) -> &ConvGeom {
        &self.g
    }

    /// The path that runs this layer's forward pass: "reference", "direct", "implicit GEMM"
    /// or "im2col".
    pub fn path_name(&self) -> &'static str {
        self.fast.as_ref().map_or("reference", |f| f.choice.forward.name())
    }

    /// Whether [`ConvPlan::forward_relu_pool`] gains over the separate ops for this pool:
    /// on the fast engine always (no full-size output is stored); on the reference, never
    /// used.
    pub fn fuses(&self) -> bool {
        self.fast.is_some()
    }

    /// Prepares the weights `w[OC, C, KH, KW]` for the kernels. Call it after building the
    /// plan and after every change of the weights; it does nothing on the reference engine.
    pub fn refresh(&self, w: &[f32]) {
        let Some(fast) = &self.fast else { return };
        assert_eq!(w.len(), self.oc * self.g.col_rows(), "ConvPlan::refresh: weights of another layer");
        let (g, oc) = (&self.g, self.oc);
        let implicit = (fast.choice.forward == ConvPath::Implicit).then(|| ImplicitConv::new(g, oc, w));
        let input_grad = match fast.choice.input_grad {
            InputGradWay::Direct => InputGradOf::Direct(InputGrad::new(g, oc, w)),
            InputGradWay::Implicit => {
                InputGradOf::Implicit(ImplicitInputGrad::new(g, oc, w).expect("checked by ConvChoice::check"))
            }
            InputGradWay::Scatter => InputGradOf::Scatter(ScatterInputGrad::new(g, oc, w)),
            InputGradWay::Gemm => InputGradOf::Gemm,
        };
        let sparse = fast.choice.sparse.then(|| SparseConvGrad::new(g, oc, w));
        *fast.prepared.lock().expect("prepared weights") =
            Some(Arc::new(Prepared { implicit, input_grad, sparse }));
    }

    fn in_len(&self) -> usize {
        self.g.in_len()
    }

    fn out_len(&self) -> usize {
        self.oc * self.g.out_plane()
    }

    /// `ys[N, OC, OH, OW] = w (*) xs + b` for the images `xs[N, C, H, W]`.
    pub fn forward(&self, xs: &[f32], w: &[f32], b: &[f32], ys: &mut [f32]) {
        let (g, oc, in_len, out_len) = (&self.g, self.oc, self.in_len(), self.out_len());
        if ys.is_empty() {
            return;
        }
        if in_len == 0 {
            // No input values: every output is the empty sum plus its bias.
            ys.fill(0.0);
            bias_add_ref(ys, b, ys.len() / out_len, oc, g.out_plane());
            return;
        }
        let Some(fast) = &self.fast else {
            // Reference: image by image, the definition as loops.
            ys.par_chunks_mut(out_len).zip(xs.par_chunks(in_len)).for_each(|(y, x)| {
                conv_forward_ref(g, oc, x, w, y);
                bias_add_ref(y, b, 1, oc, g.out_plane());
            });
            return;
        };
        let prepared = fast.prepared();
        let (path, group) = (fast.choice.forward, fast.choice.group);
        ys.par_chunks_mut(group * out_len).zip(xs.par_chunks(group * in_len)).for_each(|(ys, xs)| {
            fast.with_scratch(|s| self.forward_group(path, &prepared, xs, w, b, ys, Crop::full(g), s))
        });
    }

    /// Conv -> ReLU -> max-pool: `ys[N, OC, PH, PW]` for the images `xs[N, C, H, W]`, with
    /// each window's argmax within its `OH x OW` plane in `argmax` when given (training).
    /// Equal to [`ConvPlan::forward`], ReLU and max-pool in sequence.
    pub fn forward_relu_pool(
        &self,
        pg: &PoolGeom,
        xs: &[f32],
        w: &[f32],
        b: &[f32],
        ys: &mut [f32],
        argmax: Option<&mut [u32]>,
    ) {
        let (g, oc, in_len) = (&self.g, self.oc, self.in_len());
        let per_image = oc * pg.oh * pg.ow;
        let n = ys.len() / per_image.max(1);
        if n == 0 || per_image == 0 {
            return;
        }
        let Some(fast) = &self.fast else {
            // Reference: the three ops in sequence.
            let mut conv = vec![0.0; n * self.out_len()];
            self.forward(xs, w, b, &mut conv);
            let mut throwaway = Vec::new();
            let argmax = argmax.unwrap_or_else(|| {
                throwaway.resize(ys.len(), 0);
                &mut throwaway
            });
            maxpool_forward_ref(pg, n * oc, &conv, ys, argmax);
            ys.iter_mut().for_each(|v| *v = v.max(0.0));
            return;
        };
        let prepared = fast.prepared();
        let (path, group) = (fast.choice.forward, fast.choice.group);
        // On the direct path with the common pool, each image's convolution is pooled straight
        // from the kernel's buffer (`conv_forward_relu_pool2`, equal to the steps below).
        let pool_direct = path == ConvPath::Direct && g.unit_stride() && pg.k == 2 && pg.stride == 2;
        let pool_group = |ys: &mut [f32], args: Option<&mut [u32]>, xs: &[f32]| {
            fast.with_scratch(|s| {
                if pool_direct {
                    let mut args = args.map(|a| a.chunks_exact_mut(per_image));
                    for (xi, yi) in xs.chunks_exact(in_len).zip(ys.chunks_exact_mut(per_image)) {
                        let ai = args.as_mut().and_then(Iterator::next);
                        conv_forward_relu_pool2(g, oc, xi, w, b, yi, ai, &mut s.col);
                    }
                    return;
                }
                let count = xs.len() / in_len;
                let mut conv_out = std::mem::take(&mut s.conv_out);
                conv_out.resize(count * self.out_len(), 0.0);
                // Only the outputs the pool reads (the implicit path computes no others).
                self.forward_group(path, &prepared, xs, w, b, &mut conv_out, Crop::pooled(g, pg), s);
                let args = match args {
                    Some(a) => a,
                    None => {
                        s.argmax.resize(ys.len(), 0);
                        &mut s.argmax[..]
                    }
                };
                maxpool_forward(pg, count * oc, &conv_out, ys, args);
                ys.iter_mut().for_each(|v| *v = v.max(0.0));
                s.conv_out = conv_out;
            })
        };
        let ys = ys.par_chunks_mut(group * per_image);
        let xs = xs.par_chunks(group * in_len);
        match argmax {
            Some(argmax) => {
                let args = argmax.par_chunks_mut(group * per_image);
                ys.zip(args).zip(xs).for_each(|((ys, args), xs)| pool_group(ys, Some(args), xs));
            }
            None => ys.zip(xs).for_each(|(ys, xs)| pool_group(ys, None, xs)),
        }
    }

    /// Adds the gradients of the images `xs[N, C, H, W]` whose output gradients come from
    /// `src`: into `dw[OC, C, KH, KW]`, `db[OC]`, and `dxs[N, C, H, W]` when given.
    pub fn backward(
        &self,
        src: &ConvGrad,
        xs: &[f32],
        w: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        dxs: Option<&mut [f32]>,
    ) {
        let (g, oc, in_len, out_len) = (&self.g, self.oc, self.in_len(), self.out_len());
        if in_len == 0 || out_len == 0 || xs.is_empty() {
            return;
        }
        let n = xs.len() / in_len;
        let Some(fast) = &self.fast else {
            // Reference: image by image; the sums over images run in image order.
            let mut dy = Vec::new();
            for (i, x) in xs.chunks_exact(in_len).enumerate() {
                let dy_i = src.images(i, 1, self, &mut dy);
                conv_backward_weights_ref(g, oc, x, dy_i, dw);
                channel_sums_ref(dy_i, 1, oc, g.out_plane(), db);
            }
            if let Some(dxs) = dxs {
                dxs.par_chunks_mut(in_len).enumerate().for_each_init(Vec::new, |dy, (i, dx)| {
                    conv_backward_input_ref(g, oc, w, src.images(i, 1, self, dy), dx)
                });
            }
            return;
        };
        let prepared = fast.prepared();
        let (path, group) = (fast.choice.backward, fast.choice.group);
        let crop = src.crop(g);
        let work = |chunk: usize, mut dx_chunk: Option<&mut [f32]>| {
            let (mut dw, mut db) = (vec![0.0f32; oc * g.col_rows()], vec![0.0f32; oc]);
            let start = chunk * IMAGES_PER_CHUNK;
            let end = (start + IMAGES_PER_CHUNK).min(n);
            // A pooled gradient's backward from the argmaxes alone (`conv_sparse`), when the
            // choice takes it; else the path's, on the gradient rebuilt at full size.
            let sparse = match (&prepared.sparse, src) {
                (Some(sparse), &ConvGrad::Pooled { dy, y, argmax, pool }) => {
                    Some((sparse, dy, y, argmax, pool))
                }
                _ => None,
            };
            fast.with_scratch(|s| {
                // Sums kept in the thread's scratch: a fresh 256 KiB block a chunk would be new
                // pages to fault in.
                if sparse.is_some() {
                    s.sparse_sums.reset(g, oc);
                }
                let mut sums = (sparse.is_none() && path == ConvPath::Implicit).then(|| {
                    let mut sums = s.weight_grad.take().unwrap_or_else(|| WeightGrad::new(g, oc));
                    sums.reset(g, oc);
                    sums
                });
                for g0 in (start..end).step_by(group) {
                    let g1 = (g0 + group).min(end);
                    let dxs =
                        dx_chunk.as_deref_mut().map(|d| &mut d[(g0 - start) * in_len..(g1 - start) * in_len]);
                    let xs = &xs[g0 * in_len..g1 * in_len];
                    if let Some((sparse, dy, y, argmax, pool)) = sparse {
                        let range = g0 * oc * pool.oh * pool.ow..g1 * oc * pool.oh * pool.ow;
                        let (dy, y, argmax) = (&dy[range.clone()], &y[range.clone()], &argmax[range]);
                        sparse.backward(
                            &pool,
                            xs,
                            dy,
                            y,
                            argmax,
                            &mut s.sparse_sums,
                            &mut db,
                            dxs,
                            &mut s.sparse,
                        );
                        continue;
                    }
                    let mut dy_buf = std::mem::take(&mut s.dy);
                    let dys = src.images(g0, g1 - g0, self, &mut dy_buf);
                    self.backward_group(
                        path,
                        &prepared,
                        sums.as_mut(),
                        xs,
                        dys,
                        crop,
                        w,
                        &mut dw,
                        &mut db,
                        dxs,
                        s,
                    );
                    s.dy = dy_buf;
                }
                if sparse.is_some() {
                    s.sparse_sums.finish(&mut dw);
                }
                if let Some(mut sums) = sums {
                    sums.finish(&mut dw);
                    s.weight_grad = Some(sums);
                }
            });
            (dw, db)
        };
        let partials: Vec<(Vec<f32>, Vec<f32>)> = match dxs {
            Some(dx) => dx
                .par_chunks_mut(IMAGES_PER_CHUNK * in_len)
                .enumerate()
                .map(|(chunk, dxc)| work(chunk, Some(dxc)))
                .collect(),
            None => {
                (0..n.div_ceil(IMAGES_PER_CHUNK)).into_par_iter().map(|chunk| work(chunk, None)).collect()
            }
        };
        let (dws, dbs): (Vec<_>, Vec<_>) = partials.into_iter().unzip();
        sum_into(dw, dws);
        sum_into(db, dbs);
    }

    /// The fast forward of one group of images `xs[G, C, H, W]` into `ys[G, OC, OH*OW]`: at
    /// least the outputs in `crop` (the implicit path computes only those).
    #[allow(clippy::too_many_arguments)]
    fn forward_group(
        &self,
        path: ConvPath,
        prepared: &Prepared,
        xs: &[f32],
        w: &[f32],
        b: &[f32],
        ys: &mut [f32],
        crop: Crop,
        s: &mut Scratch,
    ) {
        let (g, oc, plane, ckk) = (&self.g, self.oc, self.g.out_plane(), self.g.col_rows());
        let count = xs.len() / g.in_len();
        match path {
            ConvPath::Implicit => {
                let implicit = prepared.implicit.as_ref().expect("implicit weights prepared by refresh");
                implicit.forward(xs, b, ys, crop, &mut s.implicit);
                return; // the bias included
            }
            ConvPath::Direct => {
                for (xi, yi) in xs.chunks_exact(g.in_len()).zip(ys.chunks_exact_mut(self.out_len())) {
                    conv_forward(g, oc, xi, w, yi, &mut s.col);
                }
            }
            ConvPath::Im2col => {
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

    /// The fast backward of one group with output gradients `dys`, zero outside `crop`: adds to
    /// `dw` (or the implicit path's `sums`), `db`, and `dxs` when given.
    #[allow(clippy::too_many_arguments)]
    fn backward_group(
        &self,
        path: ConvPath,
        prepared: &Prepared,
        sums: Option<&mut WeightGrad>,
        xs: &[f32],
        dys: &[f32],
        crop: Crop,
        w: &[f32],
        dw: &mut [f32],
        db: &mut [f32],
        dxs: Option<&mut [f32]>,
        s: &mut Scratch,
    ) {
        let (g, oc, plane, ckk) = (&self.g, self.oc, self.g.out_plane(), self.g.col_rows());
        let count = xs.len() / g.in_len();
        match path {
            ConvPath::Direct | ConvPath::Implicit => {
                match sums {
                    Some(sums) => sums.add(xs, dys, crop, &mut s.implicit),
                    None => conv_backward_weights(g, oc, xs, dys, dw, &mut s.col),
                }
                channel_sums(dys, count, oc, plane, db);
                if let Some(dxs) = dxs {
                    self.input_grad(&prepared.input_grad, w, dys, crop, dxs, s);
                }
            }
            ConvPath::Im2col => {
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
                match (dxs, &prepared.input_grad) {
                    (None, _) => {}
                    // `dy` is gathered already.
                    (Some(dxs), InputGradOf::Gemm) => self.input_grad_by_gemm(w, &s.out, dxs, &mut s.col),
                    (Some(dxs), how) => self.input_grad(how, w, dys, crop, dxs, s),
                }
            }
        }
    }

    /// `dxs[G, C, H, W] +=` the input gradient of a group with output gradients `dys`, zero
    /// outside `crop` (the scatter skips those positions).
    fn input_grad(
        &self,
        how: &InputGradOf,
        w: &[f32],
        dys: &[f32],
        crop: Crop,
        dxs: &mut [f32],
        s: &mut Scratch,
    ) {
        match how {
            InputGradOf::Direct(input_grad) => {
                for (dyi, dxi) in dys.chunks_exact(self.out_len()).zip(dxs.chunks_exact_mut(self.in_len())) {
                    input_grad.accumulate(dyi, dxi, &mut s.col);
                }
            }
            InputGradOf::Implicit(input_grad) => input_grad.accumulate(dys, dxs, &mut s.implicit),
            InputGradOf::Scatter(input_grad) => input_grad.accumulate(dys, dxs, crop, &mut s.scatter),
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
    /// G*OH*OW]` (`dy` as [`ConvPlan::gather_dy`] lays it out), built in `dcol`'s buffer.
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

impl Fast {
    /// The prepared weights.
    ///
    /// # Panics
    /// If [`ConvPlan::refresh`] was never called.
    fn prepared(&self) -> Arc<Prepared> {
        let prepared = self.prepared.lock().expect("prepared weights");
        Arc::clone(prepared.as_ref().expect("ConvPlan: call refresh(weights) before the first pass"))
    }

    /// Runs `f` with a scratch buffer from the pool, and returns it to the pool.
    fn with_scratch<R>(&self, f: impl FnOnce(&mut Scratch) -> R) -> R {
        let mut s = self.scratch.lock().expect("scratch pool").pop().unwrap_or_default();
        let r = f(&mut s);
        self.scratch.lock().expect("scratch pool").push(s);
        r
    }
}

impl ConvGrad<'_> {
    /// The outputs of `g` whose gradients may be non-zero: those the pool read when pooled.
    fn crop(&self, g: &ConvGeom) -> Crop {
        match self {
            ConvGrad::Direct(_) => Crop::full(g),
            ConvGrad::Pooled { pool, .. } => Crop::pooled(g, pool),
        }
    }

    /// The convolution gradients `[count, OC, OH*OW]` of images `first..first + count`,
    /// rebuilt into `buf` when pooled.
    fn images<'b>(&'b self, first: usize, count: usize, plan: &ConvPlan, buf: &'b mut Vec<f32>) -> &'b [f32] {
        let len = plan.out_len();
        match *self {
            ConvGrad::Direct(d) => &d[first * len..(first + count) * len],
            ConvGrad::Pooled { dy, y, argmax, pool } => {
                buf.clear();
                buf.resize(count * len, 0.0);
                let (plane, pooled_plane) = (plan.g.out_plane(), pool.oh * pool.ow);
                let range = first * plan.oc * pooled_plane..(first + count) * plan.oc * pooled_plane;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The paths of the reference models' layers.
    #[test]
    fn paths_of_the_reference_layers() {
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
            assert_eq!(ConvPlan::new(Engine::Fast, g, 1).path_name(), want, "{g:?}");
            assert_eq!(ConvPlan::new(Engine::Reference, g, 1).path_name(), "reference");
        }
    }

    /// The sparse backward of a pooled gradient computes what the reference engine does (the
    /// gradient rebuilt at the argmaxes, through the plain loops), within the rounding of sums
    /// of `N*OH*OW` (weights) or `OC*KH*KW` (input) products: on write-up E's two layers, on
    /// padding, strides, channels that are not whole vectors, overlapping pools (two windows
    /// with one argmax) and one input channel, in both of `conv_sparse`'s layouts; in groups that split the batch, added into
    /// gradients that are not zero, and the same bits when called again.
    #[test]
    fn sparse_pooled_backward_matches_the_reference() {
        use crate::Rng;
        let cases = [
            (ConvGeom::new(64, 14, 14, 4, 4, (1, 1), (0, 0, 0, 0)), 64, 2, 2), // E conv2
            (ConvGeom::new(3, 9, 8, 3, 3, (1, 1), (1, 1, 1, 1)), 5, 2, 2),
            (ConvGeom::new(20, 9, 9, 3, 2, (2, 1), (1, 0, 2, 1)), 17, 3, 2),
            (ConvGeom::new(1, 6, 6, 2, 2, (1, 1), (0, 0, 0, 0)), 3, 2, 1),
            (ConvGeom::new(40, 7, 7, 5, 5, (1, 1), (2, 2, 2, 2)), 70, 2, 2),
            (ConvGeom::new(16, 9, 9, 3, 3, (2, 2), (1, 1, 1, 1)), 20, 2, 2),
            (ConvGeom::new(32, 8, 8, 3, 3, (1, 1), (1, 1, 1, 1)), 17, 3, 2),
            (ConvGeom::new(1, 28, 28, 4, 4, (1, 1), (1, 1, 2, 2)), 64, 2, 2), // E conv1
        ];
        let n = 5;
        for (g, oc, k, stride) in cases {
            let pool = PoolGeom::new(g.oh, g.ow, k, stride);
            let mut rng = Rng::new(3);
            let mut rand = |len: usize| (0..len).map(|_| rng.uniform(-1.0, 1.0)).collect::<Vec<f32>>();
            let (xs, w, b) = (rand(n * g.in_len()), rand(oc * g.col_rows()), rand(oc));
            let pooled = n * oc * pool.oh * pool.ow;
            let mut dy = rand(pooled);
            dy[1] = 0.0;
            let reference = ConvPlan::new(Engine::Reference, g, oc);
            let (mut y, mut argmax) = (vec![0.0; pooled], vec![0u32; pooled]);
            reference.forward_relu_pool(&pool, &xs, &w, &b, &mut y, Some(&mut argmax));
            let src = ConvGrad::Pooled { dy: &dy, y: &y, argmax: &argmax, pool };
            let start = (rand(w.len()), rand(oc), rand(xs.len()));
            let (mut dw0, mut db0, mut dx0) = start.clone();
            reference.backward(&src, &xs, &w, &mut dw0, &mut db0, Some(&mut dx0));

            let choice = ConvChoice { sparse: true, group: 2, ..ConvChoice::rule(&g) };
            let fast = ConvPlan::with_choice(Engine::Fast, g, oc, choice);
            fast.refresh(&w);
            let (mut dw, mut db, mut dx) = start.clone();
            fast.backward(&src, &xs, &w, &mut dw, &mut db, Some(&mut dx));
            let tol = |k: usize, r: f32| k as f32 * f32::EPSILON * (2.0 + r.abs()) + 1e-5;
            let close = |a: &[f32], r: &[f32], k: usize, what: &str| {
                for (i, (a, r)) in a.iter().zip(r).enumerate() {
                    assert!((a - r).abs() <= tol(k, *r), "{g:?} {what}[{i}]: {a} vs {r}");
                }
            };
            close(&dw, &dw0, n * g.out_plane(), "dw");
            close(&db, &db0, n * g.out_plane(), "db");
            close(&dx, &dx0, oc * g.kh * g.kw, "dx");
            let (mut dw2, mut db2, mut dx2) = start;
            fast.backward(&src, &xs, &w, &mut dw2, &mut db2, Some(&mut dx2));
            assert!(dw2 == dw && db2 == db && dx2 == dx, "{g:?}: another call, other bits");
        }
    }

    /// `InputGradWay::Implicit.supports` reads from the geometry what `ImplicitInputGrad::new`
    /// decides by building the transposed weights.
    #[test]
    fn implicit_input_grad_support_is_read_from_the_geometry() {
        for (c, h, k, stride, pad) in [
            (3, 9, 3, 1, (1, 1, 1, 1)),
            (3, 9, 3, 2, (1, 1, 1, 1)),
            (3, 9, 3, 1, (3, 0, 0, 0)),
            (2, 10, 6, 1, (0, 0, 0, 0)),
            (1, 5, 5, 1, (4, 4, 4, 4)),
            (4, 6, 4, 1, (1, 1, 2, 2)),
        ] {
            let g = ConvGeom::new(c, h, h, k, k, (stride, stride), pad);
            let built = ImplicitInputGrad::new(&g, 5, &vec![0.0; 5 * g.col_rows()]).is_some();
            assert_eq!(InputGradWay::Implicit.supports(&g, 5), built, "{g:?}");
        }
    }
}
