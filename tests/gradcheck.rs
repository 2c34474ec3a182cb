//! Finite-difference gradient checks of every op and of a whole small model.
//!
//! Each op is checked with the loss `L = sum(out * r)` for a random `r` (a random upstream
//! gradient: `sum(out)` alone would hide errors that cancel across outputs), by central
//! differences `(L(x + eps) - L(x - eps)) / (2 eps)` with `eps = 1e-2` on inputs of order 1,
//! where f32 still resolves the difference. Inputs are kept away from ReLU kinks
//! (|x| >= 0.1) and from pooling ties (distinct values at least 0.05 apart), and the checks
//! assert that the perturbations did not cross one.
//!
//! Every check runs on both engines: the reference twins and the fast kernels.

use fmnist::model::Padding;
use fmnist::ops::{self, BatchNormState};
use fmnist::{Engine, LayerConfig, Mode, ParamId, Params, Rng, Sequential, Tape, Tensor, Var};
use kernels::im2col::ConvGeom;
use kernels::{ConvPlan, DensePlan};

use std::cell::RefCell;
use std::sync::Arc;

const ENGINES: [Engine; 2] = [Engine::Reference, Engine::Fast];

const EPS: f32 = 1e-2;

thread_local! {
    /// The kink pattern of the last forward pass (ReLU input signs, pooling argmaxes), for
    /// models that record one; the check asserts perturbations leave it unchanged.
    static PATTERN: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

fn pattern() -> Vec<u32> {
    PATTERN.with(|p| p.borrow().clone())
}
/// The whole model's loss is a mean over a few values: a smaller step keeps every ReLU and
/// pooling window on its side of the kink.
const MODEL_EPS: f32 = 1e-3;

fn random(shape: &[usize], rng: &mut Rng, scale: f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| rng.uniform(-scale, scale)).collect())
}

/// Values whose magnitude is at least 0.1 (away from the ReLU kink).
fn away_from_zero(shape: &[usize], rng: &mut Rng) -> Tensor {
    let mut t = random(shape, rng, 1.0);
    for v in t.data_mut() {
        *v = v.signum() * (0.1 + v.abs());
    }
    t
}

/// A permutation of evenly spaced values: no two within 0.05 of each other (no pooling ties).
fn distinct(shape: &[usize], rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| -1.0 + 0.05 * i as f32).collect();
    rng.shuffle(&mut v);
    Tensor::from_vec(shape, v)
}

fn close(analytic: f32, numeric: f32) -> bool {
    (analytic - numeric).abs() <= 2e-3 + 2e-2 * analytic.abs().max(numeric.abs())
}

/// What is being differentiated: an input leaf or a parameter.
#[derive(Clone, Copy)]
enum Wrt {
    Input,
    Param(ParamId),
}

/// Checks d(sum(f(x) * r))/d(wrt) against central differences on every coordinate.
/// `f` records ops on the tape from the input leaf and returns the output.
fn check(
    name: &str,
    x: &Tensor,
    params: &mut Params,
    wrt: Wrt,
    f: &dyn Fn(&mut Tape, &mut Params, Var) -> Var,
) {
    check_eps(name, x, params, wrt, f, EPS)
}

fn check_eps(
    name: &str,
    x: &Tensor,
    params: &mut Params,
    wrt: Wrt,
    f: &dyn Fn(&mut Tape, &mut Params, Var) -> Var,
    eps: f32,
) {
    let mut rng = Rng::new(99);
    // Output shape and the random upstream gradient r.
    let out_shape = {
        let mut t = Tape::new();
        let xv = t.leaf(x.clone());
        let y = f(&mut t, params, xv);
        t.value(y).shape().to_vec()
    };
    let r = random(&out_shape, &mut rng, 1.0);
    let loss = |params: &mut Params, x: &Tensor| -> f64 {
        let mut t = Tape::new();
        let xv = t.leaf(x.clone());
        let y = f(&mut t, params, xv);
        t.value(y).data().iter().zip(r.data()).map(|(&a, &b)| a as f64 * b as f64).sum()
    };
    // Analytic gradient.
    params.zero_grads();
    let mut t = Tape::new();
    let xv = t.leaf(x.clone());
    let y = f(&mut t, params, xv);
    let l = ops::weighted_sum(&mut t, y, r.clone());
    t.backward(l, params);
    let analytic: Vec<f32> = match wrt {
        Wrt::Input => t.grad(xv).expect("input gradient").data().to_vec(),
        Wrt::Param(id) => params.get(id).grad.data().to_vec(),
    };
    drop(t);
    // Numeric gradient, coordinate by coordinate.
    let count = analytic.len();
    let base_pattern = {
        loss(params, x);
        pattern()
    };
    for (i, &a) in analytic.iter().enumerate().take(count) {
        let mut x2 = x.clone();
        let nudge = |params: &mut Params, x2: &mut Tensor, d: f32| match wrt {
            Wrt::Input => x2.data_mut()[i] += d,
            Wrt::Param(id) => params.value_mut(id).data_mut()[i] += d,
        };
        nudge(params, &mut x2, eps);
        let lp = loss(params, &x2);
        let pp = pattern();
        nudge(params, &mut x2, -2.0 * eps);
        let lm = loss(params, &x2);
        let pm = pattern();
        assert!(
            pp == base_pattern && pm == base_pattern,
            "{name}: coordinate {i}: the perturbation crossed a ReLU kink or changed a pooling winner"
        );
        nudge(params, &mut x2, eps);
        let numeric = ((lp - lm) / (2.0 * eps as f64)) as f32;
        assert!(close(a, numeric), "{name}: coordinate {i}: analytic {a} vs numeric {numeric}");
    }
}

fn conv_case(g: ConvGeom, oc: usize, seed: u64) {
    let mut rng = Rng::new(seed);
    let mut params = Params::new();
    let w = params.add("w", random(&[oc, g.c, g.kh, g.kw], &mut rng, 0.5));
    let b = params.add("b", random(&[oc], &mut rng, 0.5));
    let x = random(&[2, g.c, g.h, g.w], &mut rng, 1.0);
    for engine in ENGINES {
        let plan = Arc::new(ConvPlan::new(engine, g, oc));
        // The checks change the weights between passes: the plan is refreshed before each.
        let f = move |t: &mut Tape, p: &mut Params, x: Var| {
            plan.refresh(p.value(w).data());
            ops::conv2d(t, p, x, w, b, &plan)
        };
        let name = format!("conv2d {g:?} oc={oc} {engine:?}");
        check(&name, &x, &mut params, Wrt::Input, &f);
        check(&name, &x, &mut params, Wrt::Param(w), &f);
        check(&name, &x, &mut params, Wrt::Param(b), &f);
    }
}

#[test]
fn conv2d_direct_path_one_channel() {
    // One input channel takes the direct SIMD path; 'same' 4x4 pads 1 before and 2 after.
    conv_case(ConvGeom::new(1, 9, 10, 3, 3, (1, 1), (0, 0, 0, 0)), 3, 1);
    conv_case(ConvGeom::new(1, 8, 8, 4, 4, (1, 1), (1, 1, 2, 2)), 2, 2);
    conv_case(ConvGeom::new(1, 9, 9, 3, 3, (2, 2), (1, 1, 1, 1)), 2, 3);
}

#[test]
fn conv2d_implicit_gemm_path_several_channels() {
    // Several channels and kernels up to 5 wide take the implicit GEMM; with stride 2 its input
    // gradient goes through a GEMM and col2im instead.
    conv_case(ConvGeom::new(3, 7, 6, 3, 3, (1, 1), (0, 0, 0, 0)), 4, 4);
    conv_case(ConvGeom::new(2, 7, 7, 3, 3, (2, 2), (1, 1, 1, 1)), 3, 5);
    conv_case(ConvGeom::new(2, 6, 6, 4, 4, (1, 1), (1, 1, 2, 2)), 2, 6);
    // 17 filters: two channel blocks with AVX2, a partly filled one with AVX-512.
    conv_case(ConvGeom::new(2, 5, 5, 3, 3, (1, 1), (1, 1, 1, 1)), 17, 7);
}

#[test]
fn conv2d_im2col_path_wide_kernels() {
    // Kernels wider than 5 take im2col + GEMM.
    conv_case(ConvGeom::new(2, 8, 8, 6, 6, (1, 1), (0, 0, 0, 0)), 3, 8);
    conv_case(ConvGeom::new(2, 9, 9, 6, 6, (2, 2), (2, 2, 3, 3)), 2, 9);
}

/// Gradients of a dense layer with `fin` inputs (the trailing dimensions of `x_shape`) and
/// `fout` outputs, with respect to its input, weights and bias.
fn check_dense(name: &str, x_shape: &[usize], fout: usize, w_scale: f32, seed: u64) {
    let fin: usize = x_shape[1..].iter().product();
    let mut rng = Rng::new(seed);
    let mut params = Params::new();
    let w = params.add("w", random(&[fin, fout], &mut rng, w_scale));
    let b = params.add("b", random(&[fout], &mut rng, 0.5));
    let x = random(x_shape, &mut rng, 1.0);
    for engine in ENGINES {
        let plan = Arc::new(DensePlan::new(engine, fin, fout));
        let f = move |t: &mut Tape, p: &mut Params, x: Var| {
            plan.refresh(p.value(w).data());
            ops::dense(t, p, x, w, b, &plan)
        };
        let name = format!("{name} {engine:?}");
        check(&name, &x, &mut params, Wrt::Input, &f);
        check(&name, &x, &mut params, Wrt::Param(w), &f);
        check(&name, &x, &mut params, Wrt::Param(b), &f);
    }
}

#[test]
fn dense_layer() {
    // A [N, C, H, W] input: dense flattens the trailing dimensions itself. 3 rows: the
    // one-image path (`vecmat`), 5 outputs: not whole SIMD vectors.
    check_dense("dense", &[3, 2, 1, 3], 5, 0.5, 7);
}

/// Widths of whole SIMD vectors (16 and 32): the forward and the input gradient then run
/// `kernels::gemv::rowsmat` instead of the GEMM, on a batch larger than the one-image path's.
#[test]
fn dense_layer_with_vector_wide_inputs_and_outputs() {
    check_dense("dense32x16", &[7, 32], 16, 0.3, 9);
}

#[test]
fn dense_layer_with_more_rows_than_a_task_block() {
    // 70 rows: the batch path (by GEMM: 3 outputs), split into one row block per thread.
    check_dense("dense70", &[70, 4], 3, 0.5, 8);
}

#[test]
fn relu_away_from_the_kink() {
    let mut rng = Rng::new(9);
    let x = away_from_zero(&[2, 3, 4, 5], &mut rng);
    for e in ENGINES {
        check(&format!("relu {e:?}"), &x, &mut Params::new(), Wrt::Input, &|t, _, x| ops::relu(t, x, e));
    }
}

#[test]
fn max_pool_without_ties() {
    let mut rng = Rng::new(10);
    let x = distinct(&[2, 2, 6, 7], &mut rng);
    for e in ENGINES {
        check(&format!("maxpool 2/2 {e:?}"), &x, &mut Params::new(), Wrt::Input, &|t, _, x| {
            ops::max_pool2d(t, x, 2, 2, e)
        });
        check(&format!("maxpool 3/2 (overlapping) {e:?}"), &x, &mut Params::new(), Wrt::Input, &|t, _, x| {
            ops::max_pool2d(t, x, 3, 2, e)
        });
    }
}

#[test]
fn dropout_with_a_fixed_mask() {
    let mut rng = Rng::new(11);
    let x = random(&[3, 10], &mut rng, 1.0);
    let mut mask = vec![0.0; 30];
    kernels::dropout::dropout_mask(0.4, rng.next_u64(), 0, &mut mask);
    for e in ENGINES {
        check(&format!("dropout {e:?}"), &x, &mut Params::new(), Wrt::Input, &|t, _, x| {
            ops::dropout_with_mask(t, x, mask.clone(), e)
        });
    }
}

#[test]
fn flatten_passes_gradient_through() {
    let mut rng = Rng::new(12);
    let x = random(&[2, 3, 2, 2], &mut rng, 1.0);
    check("flatten", &x, &mut Params::new(), Wrt::Input, &|t, _, x| ops::flatten(t, x));
}

fn bn_params(c: usize, rng: &mut Rng, engine: Engine) -> (Params, BatchNormState) {
    let mut params = Params::new();
    let st = BatchNormState {
        gamma: params.add("gamma", random(&[c], rng, 1.0)),
        beta: params.add("beta", random(&[c], rng, 1.0)),
        running_mean: params.add_buffer("mean", random(&[c], rng, 0.5)),
        running_var: params.add_buffer("var", Tensor::full(&[c], 1.5)),
        momentum: 0.9,
        eps: 1e-3,
        engine,
    };
    (params, st)
}

#[test]
fn batch_norm_over_image_channels_and_vector_features() {
    let cases = [
        (vec![4, 3, 2, 3], Mode::Train),
        (vec![6, 5], Mode::Train),
        (vec![4, 3, 2, 3], Mode::Eval),
        (vec![6, 5], Mode::Eval),
    ];
    for ((shape, mode), engine) in cases.into_iter().flat_map(|c| ENGINES.map(|e| (c.clone(), e))) {
        let mut rng = Rng::new(13);
        let (mut params, st) = bn_params(shape[1], &mut rng, engine);
        let x = random(&shape, &mut rng, 2.0);
        let f = move |t: &mut Tape, p: &mut Params, x: Var| ops::batch_norm(t, p, x, &st, mode);
        let name = format!("batch_norm {shape:?} {mode:?} {engine:?}");
        check(&name, &x, &mut params, Wrt::Input, &f);
        check(&name, &x, &mut params, Wrt::Param(st.gamma), &f);
        check(&name, &x, &mut params, Wrt::Param(st.beta), &f);
    }
}

/// Batch-norm and ReLU as one op (the fast engine's fusion), against finite differences; the
/// inputs are chosen so that no normalised value sits within the difference step of the kink.
#[test]
fn batch_norm_relu_away_from_the_kink() {
    let cases = [(vec![4, 3, 2, 3], Mode::Train), (vec![6, 5], Mode::Train), (vec![4, 3, 2, 3], Mode::Eval)];
    for ((shape, mode), engine) in cases.into_iter().flat_map(|c| ENGINES.map(|e| (c.clone(), e))) {
        // The first seed whose values going into the ReLU are all at least 0.05 from 0, with
        // some below it.
        let away = (0..1000u64).find_map(|seed| {
            let mut rng = Rng::new(seed);
            let (params, st) = bn_params(shape[1], &mut rng, engine);
            let x = random(&shape, &mut rng, 2.0);
            let mut t = Tape::new();
            let xv = t.leaf(x.clone());
            let pre = ops::batch_norm(&mut t, &mut params.clone(), xv, &st, mode);
            let pre = t.value(pre).data();
            let ok = pre.iter().all(|v| v.abs() > 0.05) && pre.iter().any(|&v| v < 0.0);
            ok.then_some((params, st, x))
        });
        let (mut params, st, x) =
            away.unwrap_or_else(|| panic!("{shape:?} {mode:?}: no seed away from the kink"));
        let f = move |t: &mut Tape, p: &mut Params, x: Var| ops::batch_norm_relu(t, p, x, &st, mode);
        let name = format!("batch_norm_relu {shape:?} {mode:?} {engine:?}");
        check(&name, &x, &mut params, Wrt::Input, &f);
        check(&name, &x, &mut params, Wrt::Param(st.gamma), &f);
        check(&name, &x, &mut params, Wrt::Param(st.beta), &f);
    }
}

#[test]
fn softmax_cross_entropy_with_and_without_smoothing() {
    let mut rng = Rng::new(14);
    let x = random(&[5, 4], &mut rng, 3.0);
    let labels = [0u8, 3, 1, 1, 2];
    for (smoothing, e) in [0.0, 0.1].into_iter().flat_map(|s| ENGINES.map(|e| (s, e))) {
        let f = move |t: &mut Tape, _: &mut Params, x: Var| {
            ops::softmax_cross_entropy(t, x, &labels, smoothing, e)
        };
        check(&format!("softmax_xent smoothing {smoothing} {e:?}"), &x, &mut Params::new(), Wrt::Input, &f);
    }
}

#[test]
fn mixed_softmax_cross_entropy_is_the_blend_of_the_two_losses() {
    let mut rng = Rng::new(16);
    let x = random(&[5, 4], &mut rng, 3.0);
    let (labels, partners) = ([0u8, 3, 1, 1, 2], [2u8, 1, 1, 3, 0]);
    for (smoothing, e) in [0.0, 0.1].into_iter().flat_map(|s| ENGINES.map(|e| (s, e))) {
        let f = move |t: &mut Tape, _: &mut Params, x: Var| {
            ops::softmax_cross_entropy_mixed(t, x, &labels, &partners, 0.3, smoothing, e)
        };
        check(
            &format!("mixed softmax_xent smoothing {smoothing} {e:?}"),
            &x,
            &mut Params::new(),
            Wrt::Input,
            &f,
        );
        // Its value: 0.3 of the loss against the labels, 0.7 of that against the partners.
        let value = |f: &dyn Fn(&mut Tape, Var) -> Var| {
            let mut t = Tape::new();
            let v = t.input(x.clone());
            let l = f(&mut t, v);
            t.value(l).data()[0]
        };
        let mixed =
            value(&|t, v| ops::softmax_cross_entropy_mixed(t, v, &labels, &partners, 0.3, smoothing, e));
        let a = value(&|t, v| ops::softmax_cross_entropy(t, v, &labels, smoothing, e));
        let b = value(&|t, v| ops::softmax_cross_entropy(t, v, &partners, smoothing, e));
        assert!((mixed - (0.3 * a + 0.7 * b)).abs() <= 1e-5 * mixed.abs(), "{mixed} vs {a} {b}");
    }
}

#[test]
fn a_value_used_twice_accumulates_both_gradients() {
    // y = dense(x) + relu(dense(x)): x and the weights each feed two paths.
    let mut rng = Rng::new(15);
    let x = random(&[3, 6], &mut rng, 1.0);
    let mut params = Params::new();
    let w = params.add("w", random(&[6, 6], &mut rng, 0.5));
    let b = params.add("b", random(&[6], &mut rng, 0.5));
    for e in ENGINES {
        let plan = Arc::new(DensePlan::new(e, 6, 6));
        let f = move |t: &mut Tape, p: &mut Params, x: Var| {
            plan.refresh(p.value(w).data());
            let a = ops::dense(t, p, x, w, b, &plan);
            let c = ops::dense(t, p, x, w, b, &plan);
            let rc = ops::relu(t, c, e);
            ops::add(t, a, rc)
        };
        let name = format!("reuse {e:?}");
        check(&name, &x, &mut params, Wrt::Input, &f);
        check(&name, &x, &mut params, Wrt::Param(w), &f);
        check(&name, &x, &mut params, Wrt::Param(b), &f);
    }
}

/// Appends what decides the piecewise-linear branch of `layer` on input `x`: the sign of
/// every ReLU input, the winning index of every 2x2 pooling window.
fn record_kinks(layer: &LayerConfig, x: &Tensor, pat: &mut Vec<u32>) {
    match layer {
        LayerConfig::Relu => pat.extend(x.data().iter().map(|&v| (v > 0.0) as u32)),
        LayerConfig::MaxPool2d { size: 2, stride: 2 } => {
            let &[n, c, h, w] = x.shape() else { unreachable!() };
            for p in 0..n * c {
                for oh in 0..h / 2 {
                    for ow in 0..w / 2 {
                        let cands = [(0, 0), (0, 1), (1, 0), (1, 1)];
                        let at = |(a, b): (usize, usize)| x.data()[p * h * w + (2 * oh + a) * w + 2 * ow + b];
                        let best =
                            (0..4).fold(0, |best, k| if at(cands[k]) > at(cands[best]) { k } else { best });
                        pat.push(best as u32);
                    }
                }
            }
        }
        _ => {}
    }
}

/// A whole small model with write-up E's (`cmasch`) layer kinds in its order: batch-norm on the
/// input, conv, ReLU, max-pool, dropout with a fixed mask, flatten, dense, ReLU, batch-norm,
/// dense, softmax cross-entropy. Checked end to end, so an error in how the ops hand gradients
/// to each other shows even where every op passes alone.
#[test]
fn whole_small_model() {
    // Five models and batches. These seeds leave every pre-activation and pooling window
    // farther from its kink than the perturbation reaches (the check asserts it); about a
    // third of seeds do not, and the guard reports them instead of a false mismatch.
    for seed in [21, 23, 24, 26, 27] {
        for engine in ENGINES {
            whole_small_model_case(seed, engine);
        }
    }
}

fn whole_small_model_case(seed: u64, engine: Engine) {
    let mut rng = Rng::new(seed);
    let configs = [
        LayerConfig::batch_norm(),
        LayerConfig::conv(2, 3, Padding::Same),
        LayerConfig::Relu,
        LayerConfig::MaxPool2d { size: 2, stride: 2 },
        LayerConfig::Flatten,
        LayerConfig::Dense { units: 5 },
        LayerConfig::Relu,
        LayerConfig::batch_norm(),
        LayerConfig::Dense { units: 3 },
    ];
    let mut model = Sequential::new(&[1, 5, 5], &configs, fmnist::Init::GlorotUniform, &mut rng).unwrap();
    model.set_engine(engine);
    let x = random(&[4, 1, 5, 5], &mut rng, 1.0);
    let labels = [0u8, 1, 2, 1];
    let mut mask = vec![0.0; 4 * 2 * 2 * 2];
    kernels::dropout::dropout_mask(0.3, rng.next_u64(), 0, &mut mask);
    let layers = &model.layers;
    let mut params = model.params().clone();
    // Pre-activation and pooling-input values of the unperturbed pass, to detect kinks.
    let f = |t: &mut Tape, p: &mut Params, x: Var| -> Var {
        let mut h = x;
        let mut drng = Rng::new(0);
        let mut pat = Vec::new();
        for (i, layer) in layers.iter().enumerate() {
            record_kinks(&layer.config, t.value(h), &mut pat);
            layer.refresh(p); // the checks change the weights between passes
            h = layer.forward(t, p, h, Mode::Train, &mut drng);
            if i == 3 {
                h = ops::dropout_with_mask(t, h, mask.clone(), engine);
            }
        }
        PATTERN.with(|p| *p.borrow_mut() = pat);
        ops::softmax_cross_entropy(t, h, &labels, 0.0, engine)
    };
    // Running statistics change in Train mode; they do not affect the training-mode output,
    // so the repeated forwards of the check see the same function.
    let mut ids: Vec<ParamId> = Vec::new();
    for layer in &model.layers {
        ids.extend(layer.param_ids());
    }
    ids.retain(|&id| params.get(id).trainable);
    for id in ids {
        let name = params.get(id).name.clone();
        check_eps(
            &format!("seed {seed} {engine:?}: model param {name}"),
            &x,
            &mut params,
            Wrt::Param(id),
            &f,
            MODEL_EPS,
        );
    }
    check_eps(&format!("seed {seed} {engine:?}: model input"), &x, &mut params, Wrt::Input, &f, MODEL_EPS);
}

/// The fused conv -> ReLU -> max-pool op against the three separate ops: the same output and
/// the same gradients (bit for bit: the same kernels run on the same values), on the three
/// convolution paths (direct, implicit GEMM, im2col), with padding, an odd pooled size and overlapping windows.
/// Direct-path layers with stride 1 and a 2x2/2 pool (here the one-channel cases) run the
/// fused kernel `conv_forward_relu_pool2`, with argmaxes in training and without on a no-grad
/// tape; both are checked here against the separate ops. On the reference engine the fused op
/// is the three twins in sequence: the same check holds there too.
#[test]
fn fused_conv_relu_pool_equals_the_separate_ops() {
    for engine in ENGINES {
        fused_equals_separate(engine);
    }
}

fn fused_equals_separate(engine: Engine) {
    let cases = [
        (ConvGeom::new(1, 12, 12, 3, 3, (1, 1), (0, 0, 0, 0)), 4, 2, 2),
        (ConvGeom::new(1, 10, 10, 4, 4, (1, 1), (1, 1, 2, 2)), 3, 2, 2),
        (ConvGeom::new(1, 11, 11, 3, 3, (1, 1), (0, 0, 0, 0)), 6, 2, 2),
        (ConvGeom::new(3, 9, 8, 3, 3, (1, 1), (1, 1, 1, 1)), 5, 2, 2),
        (ConvGeom::new(2, 11, 11, 3, 3, (2, 2), (1, 1, 1, 1)), 3, 3, 2),
        (ConvGeom::new(2, 10, 10, 6, 6, (1, 1), (0, 0, 0, 0)), 3, 2, 2),
    ];
    for (seed, &(g, oc, k, s)) in cases.iter().enumerate() {
        let mut rng = Rng::new(40 + seed as u64);
        let mut params = Params::new();
        let w = params.add("w", random(&[oc, g.c, g.kh, g.kw], &mut rng, 0.5));
        let b = params.add("b", random(&[oc], &mut rng, 0.2));
        let x = random(&[3, g.c, g.h, g.w], &mut rng, 1.0);
        let plan = Arc::new(ConvPlan::new(engine, g, oc));
        plan.refresh(params.value(w).data());
        let run = |params: &mut Params, fused: bool| {
            params.zero_grads();
            let mut t = Tape::new();
            let xv = t.leaf(x.clone());
            let y = if fused {
                ops::conv2d_relu_maxpool(&mut t, params, xv, (w, b), &plan, (k, s))
            } else {
                let c = ops::conv2d(&mut t, params, xv, w, b, &plan);
                let r = ops::relu(&mut t, c, engine);
                ops::max_pool2d(&mut t, r, k, s, engine)
            };
            let r = random(t.value(y).shape(), &mut Rng::new(7), 1.0);
            let l = ops::weighted_sum(&mut t, y, r);
            t.backward(l, params);
            let out = t.value(y).data().to_vec();
            let dx = t.grad(xv).unwrap().data().to_vec();
            (out, dx, params.get(w).grad.data().to_vec(), params.get(b).grad.data().to_vec())
        };
        let separate = run(&mut params, false);
        let fused = run(&mut params, true);
        assert_eq!(fused.0, separate.0, "case {seed}: outputs");
        assert_eq!(fused.1, separate.1, "case {seed}: input gradients");
        assert_eq!(fused.2, separate.2, "case {seed}: weight gradients");
        assert_eq!(fused.3, separate.3, "case {seed}: bias gradients");
        assert!(fused.2.iter().any(|&v| v != 0.0), "case {seed}: a vacuous comparison");
        // On a no-grad tape (inference) the fused op keeps no argmaxes: the same output.
        let mut t = Tape::no_grad();
        let xv = t.input(x.clone());
        let y = ops::conv2d_relu_maxpool(&mut t, &params, xv, (w, b), &plan, (k, s));
        assert_eq!(t.value(y).data(), &fused.0[..], "case {seed}: no-grad output");
        // And so does the separate max-pool, which keeps none there either.
        let mut t = Tape::no_grad();
        let xv = t.input(x.clone());
        let c = ops::conv2d(&mut t, &params, xv, w, b, &plan);
        let r = ops::relu(&mut t, c, engine);
        let y = ops::max_pool2d(&mut t, r, k, s, engine);
        assert_eq!(t.value(y).data(), &fused.0[..], "case {seed}: no-grad separate output");
    }
}

/// The fast engine keeps its transposed weights in the layer's plan (`ConvPlan::refresh`): a
/// change to the weights through `params_mut` must reach the next forward pass, and a clone
/// with other weights must not be served the original's.
#[test]
fn conv2d_implicit_path_sees_weights_changed_between_calls() {
    let configs = [LayerConfig::conv(5, 3, Padding::Same)]; // 3 channels of 9x8: implicit path
    let mut model =
        Sequential::new(&[3, 9, 8], &configs, fmnist::Init::GlorotUniform, &mut Rng::new(60)).unwrap();
    assert_eq!(model.layers[0].conv_plan().unwrap().path_name(), "implicit GEMM");
    let w = model.layers[0].param_ids()[0];
    let b = model.layers[0].param_ids()[1];
    model.params_mut().value_mut(b).data_mut().iter_mut().enumerate().for_each(|(i, v)| *v = 0.1 * i as f32);
    let x = random(&[2, 3, 9, 8], &mut Rng::new(61), 1.0);
    let forward = |model: &mut Sequential| {
        let mut t = Tape::no_grad();
        let xv = t.input(x.clone());
        let y = model.forward(&mut t, xv, Mode::Eval, &mut Rng::new(0));
        t.value(y).data().to_vec()
    };
    let before = forward(&mut model);
    assert_eq!(forward(&mut model), before, "the same weights twice");
    // Negate the weights in place: the output minus the bias changes sign.
    model.params_mut().value_mut(w).data_mut().iter_mut().for_each(|v| *v = -*v);
    let after = forward(&mut model);
    let bias = model.params().value(b).data().to_vec();
    let plane = 9 * 8;
    for (i, (a, z)) in after.iter().zip(&before).enumerate() {
        let bo = bias[(i / plane) % 5];
        assert!(((a - bo) + (z - bo)).abs() <= 1e-5, "value {i}: {a} after negating, {z} before");
    }
    // A clone that is then changed, used alternately with the original.
    let mut other = model.clone();
    other.params_mut().value_mut(w).data_mut().iter_mut().for_each(|v| *v *= 2.0);
    assert_eq!(forward(&mut model), after, "the original after its clone changed");
    assert_ne!(forward(&mut other), after, "the changed clone was served the original's weights");
}

#[test]
#[should_panic(expected = "no_grad")]
fn backward_on_a_no_grad_tape_panics() {
    let mut params = Params::new();
    let w = params.add("w", random(&[1, 1, 2, 2], &mut Rng::new(1), 0.5));
    let b = params.add("b", random(&[1], &mut Rng::new(2), 0.5));
    let mut t = Tape::no_grad();
    let xv = t.input(random(&[1, 1, 4, 4], &mut Rng::new(3), 1.0));
    let plan = Arc::new(ConvPlan::new(Engine::Fast, ConvGeom::new(1, 4, 4, 2, 2, (1, 1), (0, 0, 0, 0)), 1));
    plan.refresh(params.value(w).data());
    let y = ops::conv2d_relu_maxpool(&mut t, &params, xv, (w, b), &plan, (2, 1));
    let l = ops::weighted_sum(&mut t, y, random(&[1, 1, 2, 2], &mut Rng::new(4), 1.0));
    t.backward(l, &mut params);
}

/// `Sequential::forward` takes the fused path and skips a flatten before a dense layer; the
/// result equals running every layer on its own.
#[test]
fn sequential_fusions_change_nothing() {
    sequential_fusions_change_nothing_in("cmasch", |s| matches!(s, fmnist::plan::Step::ConvReluPool(_)));
    sequential_fusions_change_nothing_in("ours", |s| matches!(s, fmnist::plan::Step::BatchNormRelu(_)));
}

fn sequential_fusions_change_nothing_in(preset: &str, fused_step: fn(&fmnist::plan::Step) -> bool) {
    let mut rng = Rng::new(50);
    let preset = fmnist::presets::preset(preset).unwrap();
    let mut model =
        Sequential::new(&[1, 28, 28], &preset.layers, fmnist::Init::GlorotUniform, &mut rng).unwrap();
    let x = random(&[4, 1, 28, 28], &mut rng, 1.0);
    let labels = [1u8, 2, 3, 4];
    assert!(model.steps().iter().any(fused_step), "nothing fused");
    let run = |model: &mut Sequential, fused: bool| {
        let mut params = model.params().clone();
        params.zero_grads();
        let mut t = Tape::new();
        let xv = t.input(x.clone());
        let mut drng = Rng::new(5);
        let logits = if fused {
            model.forward(&mut t, xv, Mode::Train, &mut drng)
        } else {
            let mut h = xv;
            for layer in &model.layers {
                h = layer.forward(&mut t, &mut params, h, Mode::Train, &mut drng);
            }
            h
        };
        let l = ops::softmax_cross_entropy(&mut t, logits, &labels, 0.0, Engine::Fast);
        if fused {
            model.zero_grads();
            model.backward(&mut t, l);
            params = model.params().clone();
        } else {
            t.backward(l, &mut params);
        }
        let grads: Vec<Vec<f32>> =
            params.iter().filter(|p| p.trainable).map(|p| p.grad.data().to_vec()).collect();
        (t.value(logits).data().to_vec(), grads)
    };
    let separate = run(&mut model, false);
    let fused = run(&mut model, true);
    assert_eq!(fused.0, separate.0, "logits");
    assert_eq!(fused.1, separate.1, "gradients");
}

/// Dense forward takes a matrix-vector path for a few rows and a GEMM for more; both compute
/// the same rows (to rounding).
#[test]
fn dense_small_batches_agree_with_large_ones() {
    let mut rng = Rng::new(60);
    let mut params = Params::new();
    let w = params.add("w", random(&[300, 37], &mut rng, 0.5));
    let b = params.add("b", random(&[37], &mut rng, 0.5));
    let x = random(&[40, 300], &mut rng, 1.0);
    let plan = Arc::new(DensePlan::new(Engine::Fast, 300, 37));
    plan.refresh(params.value(w).data());
    let mut t = Tape::new();
    let xv = t.input(x.clone());
    let big = ops::dense(&mut t, &params, xv, w, b, &plan);
    let small_x = Tensor::from_vec(&[3, 300], x.data()[..900].to_vec());
    let xs = t.input(small_x);
    let small = ops::dense(&mut t, &params, xs, w, b, &plan);
    for (i, (&a, &c)) in t.value(small).data().iter().zip(t.value(big).data()).enumerate() {
        assert!((a - c).abs() <= 1e-4 * (1.0 + c.abs()), "element {i}: {a} vs {c}");
    }
}

#[test]
fn average_pooling_and_global_average_pooling() {
    let mut rng = Rng::new(16);
    let x = random(&[2, 3, 6, 7], &mut rng, 1.0);
    for e in ENGINES {
        check(&format!("avg_pool 2/2 {e:?}"), &x, &mut Params::new(), Wrt::Input, &|t, _, x| {
            ops::avg_pool2d(t, x, 2, 2, e)
        });
        check(
            &format!("avg_pool 3/2 (overlapping) {e:?}"),
            &x,
            &mut Params::new(),
            Wrt::Input,
            &|t, _, x| ops::avg_pool2d(t, x, 3, 2, e),
        );
        check(&format!("global_avg_pool {e:?}"), &x, &mut Params::new(), Wrt::Input, &|t, _, x| {
            ops::global_avg_pool(t, x, e)
        });
    }
}

/// A network of residual blocks, one with a projection (a 1x1 stride-2 convolution and
/// batch-norm on the shortcut) and one identity block, ending in global average pooling: the
/// gradients of every parameter and of the input, through both branches of each add, on both
/// engines. The block's input feeds two branches, so its gradient is the sum of both.
#[test]
fn residual_blocks() {
    let block = |layers: Vec<LayerConfig>, projection| LayerConfig::Residual { layers, projection };
    let configs = [
        LayerConfig::conv(2, 3, Padding::Same),
        LayerConfig::Relu,
        block(
            vec![
                LayerConfig::Conv2d { filters: 3, kernel: [3, 3], stride: 2, padding: Padding::Same },
                LayerConfig::batch_norm(),
                LayerConfig::Relu,
                LayerConfig::conv(3, 3, Padding::Same),
            ],
            Some(fmnist::model::Projection { stride: 2, batch_norm: true }),
        ),
        block(vec![LayerConfig::conv(3, 3, Padding::Same), LayerConfig::Relu], None),
        LayerConfig::GlobalAvgPool,
        LayerConfig::Dense { units: 3 },
    ];
    for engine in ENGINES {
        let mut rng = Rng::new(70);
        let mut model = Sequential::new(&[1, 6, 6], &configs, fmnist::Init::GlorotUniform, &mut rng).unwrap();
        model.set_engine(engine);
        let x = random(&[3, 1, 6, 6], &mut rng, 1.0);
        let labels = [0u8, 2, 1];
        let layers = &model.layers;
        let mut params = model.params().clone();
        let f = |t: &mut Tape, p: &mut Params, x: Var| -> Var {
            let mut h = x;
            let mut drng = Rng::new(0);
            for layer in layers {
                layer.refresh(p);
                h = layer.forward(t, p, h, Mode::Train, &mut drng);
            }
            ops::softmax_cross_entropy(t, h, &labels, 0.0, engine)
        };
        let mut ids: Vec<ParamId> = layers.iter().flat_map(|l| l.param_ids()).collect();
        ids.retain(|&id| params.get(id).trainable);
        assert_eq!(
            ids.len(),
            2 * 6 + 2 * 2,
            "5 convolutions and a dense layer (weight, bias), 2 batch-norms (gamma, beta)"
        );
        for id in ids {
            let name = params.get(id).name.clone();
            check_eps(
                &format!("residual {engine:?}: {name}"),
                &x,
                &mut params,
                Wrt::Param(id),
                &f,
                MODEL_EPS,
            );
        }
        check_eps(&format!("residual {engine:?}: input"), &x, &mut params, Wrt::Input, &f, MODEL_EPS);
    }
}
