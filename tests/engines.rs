//! The reference engine (the plain nested-loop twins) and the fast engine (SIMD kernels,
//! fusion, prepared weights) train the same network to the same weights, within a bound
//! derived from their summation orders.
//!
//! # The bound
//! Both engines compute the same sums in different orders (and the reference accumulates the
//! convolutions in f64). A sum of `K` products computed in f32 in any order is within
//! `gamma_K * sum |terms|` of the exact one, `gamma_K = K u / (1 - K u)` with the unit
//! roundoff `u = 2^-24` (Higham, *Accuracy and Stability of Numerical Algorithms*, 3.1).
//! - Forward, the longest sum is the first dense layer's, `K = 8*5*5 = 200`: `gamma_200 =
//!   1.2e-5`. About ten ops chain, so the loss of the same weights agrees to `10 * gamma_200
//!   = 1.2e-4` relative; we allow `1e-3`, since from the second step on the weights differ
//!   too (by the bound below, whose effect on a loss near ln(10) is of the same order).
//! - Backward, the longest sum is a weight gradient's over the batch, 32 images of up to 10x10
//!   positions, `K = 3,200`: `gamma_3200 = 1.9e-4` relative to the sum of magnitudes. About
//!   twenty ops chain forward and back, so each step's update differs by at most `20 *
//!   gamma_3200 = 4e-3` of its size. Over the run these add up to at most 4e-3 of the sum of
//!   the updates' sizes; with momentum the updates of this short run point mostly one way,
//!   so that sum is within a factor 2 of the total change `moved` (the largest change of any
//!   value of the tensor), and a difference already in the weights grows through a later
//!   step by `lr * curvature`, small at `lr = 0.05` (under 2x over 20 steps for this net).
//!   Hence `|w_reference - w_fast| <= 2 * 2 * 4e-3 * moved < 2e-2 * moved`, plus 16 ulps of
//!   the weights' size (`1e-6`) for values that barely moved.
//!
//! The bound is far above what the engines differ by in practice (about 1e-6 of `moved`: the
//! worst case assumes every rounding error points the same way), and far below what a wrong
//! kernel gives: one image's gradient dropped from a batch of 32 moves a tensor by 3% of its
//! change.
//!
//! Dropout draws the same masks on both engines (each position is drawn on its own from the
//! same key), and the batch is random, so no ReLU input or pooling window sits at a tie by
//! construction; a tie broken differently would show as a jump far above the bound.

use fmnist::model::Padding;
use fmnist::optim::{Optimizer, OptimizerConfig};
use fmnist::{Engine, Init, LayerConfig, Mode, Rng, Sequential, Tape, Tensor};

/// Every layer kind: conv + ReLU + pool (fused on the fast engine), a several-channel conv
/// (the implicit GEMM path), batch-norm, dropout, flatten (skipped on the fast engine), dense.
fn layers() -> Vec<LayerConfig> {
    vec![
        LayerConfig::conv(4, 3, Padding::Same),
        LayerConfig::Relu,
        LayerConfig::MaxPool2d { size: 2, stride: 2 },
        LayerConfig::conv(8, 3, Padding::Valid),
        LayerConfig::batch_norm(),
        LayerConfig::Relu,
        LayerConfig::Dropout { rate: 0.25 },
        LayerConfig::Flatten,
        LayerConfig::Dense { units: 16 },
        LayerConfig::Relu,
        LayerConfig::Dense { units: 10 },
    ]
}

struct Run {
    losses: Vec<f32>,
    weights: Vec<Vec<f32>>,
    initial: Vec<Vec<f32>>,
}

/// Trains the net for `steps` SGD steps on one engine from seed 1.
fn train(engine: Engine, steps: usize) -> Run {
    let mut model = Sequential::new(&[1, 14, 14], &layers(), Init::GlorotUniform, &mut Rng::new(1)).unwrap();
    model.set_engine(engine);
    let initial: Vec<Vec<f32>> = model.params().iter().map(|p| p.value.data().to_vec()).collect();
    let mut opt = Optimizer::new(OptimizerConfig::sgd(0.05, 0.9), model.params()).on(engine);
    let mut data = Rng::new(2);
    let mut dropout = Rng::new(3);
    let mut tape = Tape::new();
    let mut losses = Vec::new();
    for _ in 0..steps {
        let x = Tensor::from_vec(&[32, 1, 14, 14], (0..32 * 196).map(|_| data.next_f32()).collect());
        let y: Vec<u8> = (0..32).map(|_| data.below(10) as u8).collect();
        tape.reset();
        let xv = tape.input(x);
        let logits = model.forward(&mut tape, xv, Mode::Train, &mut dropout);
        let loss = model.loss(&mut tape, logits, &y, 0.0);
        model.zero_grads();
        model.backward(&mut tape, loss);
        opt.step(model.params_mut());
        losses.push(tape.value(loss).data()[0]);
    }
    let weights = model.params().iter().map(|p| p.value.data().to_vec()).collect();
    Run { losses, weights, initial }
}

#[test]
fn reference_and_fast_engines_train_alike_for_20_steps() {
    let (r, f) = (train(Engine::Reference, 20), train(Engine::Fast, 20));
    for (t, (a, b)) in r.losses.iter().zip(&f.losses).enumerate() {
        assert!((a - b).abs() <= 1e-3 * a.abs(), "step {t}: loss {a} (reference) vs {b} (fast)");
    }
    let mut largest = 0.0f32;
    for (i, ((wr, wf), w0)) in r.weights.iter().zip(&f.weights).zip(&r.initial).enumerate() {
        // The run's total change of this tensor, as the scale of the allowed difference.
        let moved: f32 = wr.iter().zip(w0).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        for (j, (a, b)) in wr.iter().zip(wf).enumerate() {
            let diff = (a - b).abs();
            if moved > 1e-3 {
                largest = largest.max(diff / moved);
            }
            assert!(diff <= 2e-2 * moved + 1e-6, "tensor {i} value {j}: {a} vs {b} (moved {moved})");
        }
    }
    // The engines really differ in how they sum (the comparison is not vacuous) and the
    // weights really moved.
    assert!(r.weights != f.weights, "bit-identical weights: the engines did not both run");
    assert!(r.weights != r.initial, "training changed nothing");
    eprintln!("largest weight difference: {largest:.2e} of the tensor's total change");
}

#[test]
fn the_reference_engine_gives_the_same_bits_with_one_and_two_threads() {
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| train(Engine::Reference, 3))
    };
    let (a, b) = (run(1), run(2));
    let bits = |w: &Vec<Vec<f32>>| w.iter().flatten().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&a.weights), bits(&b.weights));
    assert_eq!(a.losses, b.losses);
}

#[test]
fn the_summary_shows_what_runs_fused() {
    let mut model = Sequential::new(&[1, 14, 14], &layers(), Init::GlorotUniform, &mut Rng::new(1)).unwrap();
    let fast = model.summary();
    assert!(fast.contains("fused conv+relu+pool"), "{fast}");
    assert!(fast.contains("in 0's fused op"), "{fast}");
    assert!(fast.contains("read in place by 8"), "{fast}");
    assert!(fast.contains("implicit GEMM path"), "{fast}");
    model.set_engine(Engine::Reference);
    let reference = model.summary();
    assert!(!reference.contains("fused"), "{reference}");
    assert!(reference.contains("reference path"), "{reference}");
}
