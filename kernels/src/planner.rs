//! Choosing each layer's [`ConvChoice`] and [`DenseChoice`] by timing the candidates on the
//! machine that runs, as FFTW's planner and cuDNN's benchmark mode do.
//!
//! The rules in [`crate::conv_plan`] and [`crate::dense_plan`] were tuned on one CPU; an
//! AMD EPYC, an Intel Xeon and an AVX2 laptop differ in caches, SIMD width and how long an
//! idle thread takes to wake. Here each candidate runs on the real layer shape, with random
//! weights and inputs (the time of these kernels does not depend on the values), on rayon's
//! current pool, called from the calling thread as the model calls it:
//!
//! - **convolution**, at [`plan_batch`] images (16 per thread): first the forward pass (the fused
//!   conv -> ReLU -> max-pool when the model fuses it) on each path the layer supports
//!   (direct, implicit GEMM, im2col), the GEMM paths also with half and twice the rule's
//!   images per group; then, with the winning forward, the backward pass (weight, bias and,
//!   when the layer needs it, input gradient) on each path; then the other ways of the input
//!   gradient; behind a fused pool, last, that backward against the sparse one
//!   (`conv_sparse`) on a pooled gradient. One image is one group, so its forward pass
//!   never uses a second thread: there is nothing to choose there;
//! - **dense**, at one image: whether its columns are split between the threads or computed
//!   on the calling thread alone (at one thread there is no choice). Each timed call follows
//!   `IDLE_GAP` (100 us) of work on the calling thread alone, so the pool's threads have gone idle as
//!   they have between two images of a `predict`, and waking them is part of the cost.
//!
//! Every candidate is timed in rounds that alternate between the candidates (so a burst of
//! load from another process hits them all), `ROUNDS` (3) of them; the median decides, and the
//! rule's candidate wins ties within `TIE` (3%). A [`Budget`] bounds the time: a layer (or a
//! phase of one) started after it ran out keeps the rule. What the choices are for (which layer, which machine) and
//! how they are stored is the main crate's business; this module only times.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::conv_plan::{rule_group, ConvChoice, ConvGrad, ConvPath, ConvPlan, InputGradWay};
use crate::dense_plan::{DenseChoice, DensePlan};
use crate::engine::{Engine, IMAGES_PER_CHUNK};
use crate::im2col::ConvGeom;
use crate::pool::PoolGeom;
use crate::simd::LANES;
use crate::Rng;

/// Images per timed convolution pass: one chunk of [`IMAGES_PER_CHUNK`] per thread of the
/// pool, so that each thread gets one in backward (as in a training batch, whose chunks the
/// threads share), and a pass of the largest preset layer takes a few milliseconds.
pub fn plan_batch() -> usize {
    IMAGES_PER_CHUNK * rayon::current_num_threads()
}

/// Alternating rounds per candidate; the median of these decides.
const ROUNDS: usize = 3;

/// How many times slower than the fastest a candidate's warm-up call may be and still be
/// timed: warm-up calls also allocate, so the factor is generous.
const DROP_AFTER_WARMUP: f64 = 4.0;

/// A sample repeats its call until this much time has passed, so that a pass of a few
/// microseconds is not timed against the clock's resolution alone.
const MIN_SAMPLE: Duration = Duration::from_micros(300);

/// Work on the calling thread alone before each timed one-image call (see the module docs).
pub const IDLE_GAP: Duration = Duration::from_micros(100);

/// Timed one-image calls per dense candidate.
const ONE_IMAGE_CALLS: usize = 31;

/// A candidate must be this much faster than the rule's to replace it (relative), so that
/// noise does not swap paths that are equally fast.
const TIE: f64 = 0.03;

/// How long planning may take. It is checked before each layer and between a convolution's
/// three phases (forward, backward, input gradient): a layer whose forward starts after it ran
/// out keeps the rule, a later phase that would start after it keeps the rule's part, so the
/// whole may overrun by one phase (a few tenths of a second for the presets' layers).
pub struct Budget {
    start: Instant,
    limit: Duration,
}

impl Budget {
    pub fn new(limit: Duration) -> Budget {
        Budget { start: Instant::now(), limit }
    }

    /// Time spent since the budget was made.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub fn spent(&self) -> bool {
        self.elapsed() >= self.limit
    }
}

/// A convolution layer as the model runs it: what a choice is measured for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvLayer {
    pub g: ConvGeom,
    pub oc: usize,
    /// The max-pool fused after it (with a ReLU), if the model fuses one.
    pub pool: Option<PoolGeom>,
    /// Whether its backward pass computes the input gradient (not for the first layer).
    pub input_grad: bool,
}

/// The median of `ROUNDS` alternating samples of each candidate, seconds per call; a
/// candidate whose warm-up call took more than `DROP_AFTER_WARMUP` (4) times the fastest
/// warm-up's is not timed further (infinite), so a slow path (the direct kernel's scalar
/// loops on a stride-2 layer) costs one call.
fn race(calls: &mut [Box<dyn FnMut() + '_>]) -> Vec<f64> {
    let warm: Vec<f64> = calls
        .iter_mut()
        .map(|call| {
            let start = Instant::now();
            call(); // warm-up: scratch buffers grow, weights are prepared
            start.elapsed().as_secs_f64()
        })
        .collect();
    let cut = DROP_AFTER_WARMUP * warm.iter().copied().fold(f64::INFINITY, f64::min);
    let mut samples = vec![Vec::with_capacity(ROUNDS); calls.len()];
    for _ in 0..ROUNDS {
        for ((call, s), &w) in calls.iter_mut().zip(&mut samples).zip(&warm) {
            if w > cut {
                s.push(f64::INFINITY);
                continue;
            }
            let start = Instant::now();
            let mut n = 0u32;
            while n == 0 || start.elapsed() < MIN_SAMPLE {
                call();
                n += 1;
            }
            s.push(start.elapsed().as_secs_f64() / f64::from(n));
        }
    }
    samples.into_iter().map(median).collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The index of the fastest of `times`, where index 0 is the rule's candidate, which keeps
/// its place unless another is faster by more than [`TIE`].
fn fastest(times: &[f64]) -> usize {
    let (mut best, mut best_t) = (0, times[0] * (1.0 - TIE));
    for (i, &t) in times.iter().enumerate().skip(1) {
        if t < best_t {
            (best, best_t) = (i, t);
        }
    }
    best
}

fn random(rng: &mut Rng, len: usize, scale: f32) -> Vec<f32> {
    (0..len).map(|_| rng.uniform(-scale, scale)).collect()
}

/// Candidates with the rule's first, then the others in a fixed order, without repeats.
fn candidates(rule: ConvChoice, others: impl IntoIterator<Item = ConvChoice>) -> Vec<ConvChoice> {
    let mut out = vec![rule];
    for c in others {
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out
}

/// The input gradient's way under the rule for a backward path, where it takes the layer.
fn input_grad_for(g: &ConvGeom, oc: usize, path: ConvPath) -> InputGradWay {
    let rule = ConvChoice::rule(g);
    if rule.backward == path {
        return rule.input_grad;
    }
    match path {
        ConvPath::Direct if g.c > 1 => InputGradWay::Direct,
        ConvPath::Implicit if InputGradWay::Implicit.supports(g, oc) => InputGradWay::Implicit,
        _ => InputGradWay::Gemm,
    }
}

/// The fastest [`ConvChoice`] for `layer` on this machine and rayon's current pool, with
/// the number of candidates timed and whether every phase was measured (the budget may run
/// out between phases); `None` when the budget ran out before it started.
pub fn measure_conv(layer: &ConvLayer, budget: &Budget) -> Option<(ConvChoice, usize, bool)> {
    if budget.spent() {
        return None;
    }
    let ConvLayer { g, oc, pool, input_grad } = *layer;
    let n = plan_batch();
    let mut rng = Rng::new(17);
    let xs = random(&mut rng, n * g.in_len(), 1.0);
    let w = random(&mut rng, oc * g.col_rows(), 0.1);
    let b = random(&mut rng, oc, 0.1);
    let dy = random(&mut rng, n * oc * g.out_plane(), 1.0);
    let pooled_len = pool.map_or(0, |p| n * oc * p.oh * p.ow);
    let rule = ConvChoice::rule(&g);
    let plan_of = |c: ConvChoice| {
        let plan = ConvPlan::with_choice(Engine::Fast, g, oc, c);
        plan.refresh(&w);
        plan
    };

    // Forward: each path, the GEMM paths with three group sizes.
    let mut forward = Vec::new();
    for path in [ConvPath::Direct, ConvPath::Implicit, ConvPath::Im2col] {
        if !path.supports(&g) {
            continue;
        }
        let g0 = rule_group(&g, path);
        let groups = match path {
            ConvPath::Direct => vec![g0],
            _ => vec![g0, (g0 / 2).max(1), (g0 * 2).min(IMAGES_PER_CHUNK)],
        };
        for group in groups {
            forward.push(ConvChoice { forward: path, group, ..rule });
        }
    }
    let forward = candidates(rule, forward);
    let plans: Vec<ConvPlan> = forward.iter().map(|&c| plan_of(c)).collect();
    let mut calls: Vec<Box<dyn FnMut()>> = plans
        .iter()
        .map(|plan| -> Box<dyn FnMut()> {
            let (mut ys, mut args) = (vec![0.0; n * oc * g.out_plane()], vec![0u32; pooled_len]);
            let (xs, w, b) = (&xs, &w, &b);
            match pool {
                Some(p) => Box::new(move || {
                    plan.forward_relu_pool(&p, xs, w, b, &mut ys[..pooled_len], Some(&mut args));
                    black_box(&ys);
                }),
                None => Box::new(move || {
                    plan.forward(xs, w, b, &mut ys);
                    black_box(&ys);
                }),
            }
        })
        .collect();
    let best = forward[fastest(&race(&mut calls))];
    drop(calls);
    let mut timed = forward.len();

    // Backward: each path with the forward's group, then each way of the input gradient.
    let backward_of = |cands: &[ConvChoice], src: &ConvGrad| {
        let plans: Vec<ConvPlan> = cands.iter().map(|&c| plan_of(c)).collect();
        let mut calls: Vec<Box<dyn FnMut()>> = plans
            .iter()
            .map(|plan| -> Box<dyn FnMut()> {
                let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; oc]);
                let mut dx = vec![0.0; if input_grad { xs.len() } else { 0 }];
                let (xs, w) = (&xs, &w);
                Box::new(move || {
                    let dx = input_grad.then_some(&mut dx[..]);
                    plan.backward(src, xs, w, &mut dw, &mut db, dx);
                    black_box(&dw);
                })
            })
            .collect();
        cands[fastest(&race(&mut calls))]
    };
    let same = ConvChoice { backward: rule.backward, input_grad: rule.input_grad, ..best };
    if budget.spent() {
        return Some((same, timed, false));
    }
    let paths =
        [ConvPath::Direct, ConvPath::Implicit, ConvPath::Im2col].into_iter().filter(|p| p.supports(&g));
    let backward = candidates(
        same,
        paths.map(|p| ConvChoice { backward: p, input_grad: input_grad_for(&g, oc, p), ..best }),
    );
    timed += backward.len();
    let mut best = backward_of(&backward, &ConvGrad::Direct(&dy));
    let complete = !(input_grad && budget.spent());
    if input_grad && complete {
        let ways = [InputGradWay::Direct, InputGradWay::Implicit, InputGradWay::Scatter, InputGradWay::Gemm];
        let ways = candidates(
            best,
            ways.into_iter().filter(|w| w.supports(&g, oc)).map(|w| ConvChoice { input_grad: w, ..best }),
        );
        if ways.len() > 1 {
            timed += ways.len();
            best = backward_of(&ways, &ConvGrad::Direct(&dy));
        }
    }
    // Behind a fused pool: the dense backward against the sparse one, on a pooled gradient
    // of this forward's argmaxes.
    let (Some(p), true) = (pool, complete) else { return Some((best, timed, complete)) };
    if budget.spent() {
        return Some((best, timed, false));
    }
    let (mut y, mut args) = (vec![0.0; pooled_len], vec![0u32; pooled_len]);
    plan_of(best).forward_relu_pool(&p, &xs, &w, &b, &mut y, Some(&mut args));
    let dy_pooled = random(&mut rng, pooled_len, 1.0);
    let src = ConvGrad::Pooled { dy: &dy_pooled, y: &y, argmax: &args, pool: p };
    let best = backward_of(&[best, ConvChoice { sparse: true, ..best }], &src);
    Some((best, timed + 2, true))
}

/// Whether one image's pass of a dense layer of `fin x fout` weights should split its
/// columns between the threads of rayon's current pool, by timing both (module docs); `None`
/// when the budget ran out. At one thread, or with outputs too few to split, the answer is
/// "no" without timing.
pub fn measure_dense(fin: usize, fout: usize, budget: &Budget) -> Option<(DenseChoice, usize)> {
    if budget.spent() {
        return None;
    }
    let no = DenseChoice { split_one_image: Some(false) };
    if rayon::current_num_threads() == 1 || fout < 2 * LANES || fin == 0 {
        return Some((no, 0));
    }
    let mut rng = Rng::new(18);
    let x = random(&mut rng, fin, 1.0);
    let w = random(&mut rng, fin * fout, 0.1);
    let b = random(&mut rng, fout, 0.1);
    let rule = DenseChoice::rule_splits(fin, fout, rayon::current_num_threads());
    // The rule's answer first, so that it wins ties.
    let cands = [rule, !rule].map(|split| DenseChoice { split_one_image: Some(split) });
    let plans = cands.map(|c| DensePlan::with_choice(Engine::Fast, fin, fout, c));
    let mut y = vec![0.0; fout];
    let mut samples = [Vec::new(), Vec::new()];
    for round in 0..=ONE_IMAGE_CALLS {
        for (plan, s) in plans.iter().zip(&mut samples) {
            let idle = Instant::now();
            while idle.elapsed() < IDLE_GAP {
                std::hint::spin_loop();
            }
            let start = Instant::now();
            plan.forward(&x, &w, &b, &mut y);
            black_box(&y);
            if round > 0 {
                s.push(start.elapsed().as_secs_f64()); // round 0 warms up
            }
        }
    }
    let times = samples.map(median);
    Some((cands[fastest(&times)], 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule's candidate (index 0) keeps its place within the tie margin, loses beyond
    /// it, and a dropped candidate (infinite) never wins.
    #[test]
    fn the_rule_wins_ties() {
        assert_eq!(fastest(&[1.0, 0.98]), 0);
        assert_eq!(fastest(&[1.0, 0.9, 0.95]), 1);
        assert_eq!(fastest(&[1.0, f64::INFINITY]), 0);
        assert_eq!(fastest(&[f64::INFINITY, 2.0]), 1);
    }

    /// A spent budget measures nothing; otherwise the answer is a choice that takes the
    /// layer (which one depends on the machine's timing, so only that is checked).
    #[test]
    fn measuring_gives_a_valid_choice_within_the_budget() {
        let g = ConvGeom::new(3, 9, 9, 3, 3, (1, 1), (1, 1, 1, 1));
        let layer = ConvLayer { g, oc: 8, pool: Some(PoolGeom::new(9, 9, 2, 2)), input_grad: true };
        assert!(measure_conv(&layer, &Budget::new(Duration::ZERO)).is_none());
        assert!(measure_dense(64, 48, &Budget::new(Duration::ZERO)).is_none());
        let (c, timed, complete) = measure_conv(&layer, &Budget::new(Duration::from_secs(5))).unwrap();
        assert!(c.check(&g, 8).is_ok(), "{c:?}");
        assert!(timed >= 4 && complete, "{timed} candidates");
        let (d, _) = measure_dense(64, 48, &Budget::new(Duration::from_secs(5))).unwrap();
        assert!(d.split_one_image.is_some());
    }
}
