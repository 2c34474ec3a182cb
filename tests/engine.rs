//! Whole-engine properties: parameter counts of the reference models, overfitting a fixed
//! batch, and bit-identical results for the same seed with 1 and 2 threads.

use fmnist::optim::{Optimizer, OptimizerConfig};
use fmnist::presets::{self, INPUT_SHAPE};
use fmnist::{ops, Init, Mode, Rng, Sequential, Tape, Tensor};
use kernels::{DensePlan, Engine};
use std::sync::Arc;

fn build(name: &str, seed: u64) -> Sequential {
    let p = presets::preset(name).expect("preset exists");
    Sequential::new(&INPUT_SHAPE, &p.layers, Init::GlorotUniform, &mut Rng::new(seed)).unwrap()
}

#[test]
fn reference_models_have_the_published_parameter_counts() {
    // Write-up C1: 320 + 692,352 + 1,290.
    assert_eq!(build("c1", 0).params().trainable_count(), 693_962);
    // Write-up E (cmasch), as Keras's summary reports it; plus 130 non-trainable (running stats).
    let e = build("cmasch", 0);
    assert_eq!(e.params().trainable_count(), 493_772);
    assert_eq!(e.params().buffer_count(), 2 + 128);
    assert_eq!(
        e.layers.iter().find(|l| l.config == fmnist::LayerConfig::Flatten).unwrap().out_shape,
        vec![1600]
    );
    // Every preset builds and ends in 10 logits.
    for name in presets::NAMES {
        assert_eq!(build(name, 0).output_shape(), &[10], "{name}");
    }
}

#[test]
fn summary_lists_layers_and_totals() {
    let s = build("c1", 0).summary();
    assert!(s.contains("(None, 32, 26, 26)"), "{s}");
    assert!(s.contains("(None, 5408)"), "{s}");
    assert!(s.contains("Trainable params: 693962"), "{s}");
}

/// A synthetic batch: `n` random images in [0, 1) with random labels.
fn batch(n: usize, seed: u64) -> (Tensor, Vec<u8>) {
    let mut rng = Rng::new(seed);
    let x = Tensor::from_vec(&[n, 1, 28, 28], (0..n * 784).map(|_| rng.next_f32()).collect());
    let y = (0..n).map(|_| rng.below(10) as u8).collect();
    (x, y)
}

/// One training step on a fresh tape; returns the loss.
fn step(model: &mut Sequential, opt: &mut Optimizer, x: &Tensor, y: &[u8], rng: &mut Rng) -> f32 {
    step_on(&mut Tape::new(), model, opt, x, y, rng)
}

/// One training step on `tape` (reset first, so a reused tape recycles last step's buffers).
fn step_on(
    tape: &mut Tape,
    model: &mut Sequential,
    opt: &mut Optimizer,
    x: &Tensor,
    y: &[u8],
    rng: &mut Rng,
) -> f32 {
    tape.reset();
    let input = tape.input(x.clone());
    let logits = model.forward(tape, input, Mode::Train, rng);
    let loss = model.loss(tape, logits, y, 0.0);
    model.zero_grads();
    model.backward(tape, loss);
    opt.step(model.params_mut());
    tape.value(loss).data()[0]
}

#[test]
fn a_model_memorises_a_fixed_batch_of_64() {
    // Random pixels with random labels: nothing to generalise, so only a working forward,
    // backward and optimizer together can drive the loss to zero.
    let (x, y) = batch(64, 1);
    let mut model = build("c1", 2);
    let mut opt = Optimizer::new(OptimizerConfig::adam(1e-3), model.params());
    let mut rng = Rng::new(3);
    let first = step(&mut model, &mut opt, &x, &y, &mut rng);
    let mut last = first;
    for _ in 0..300 {
        last = step(&mut model, &mut opt, &x, &y, &mut rng);
        if last < 0.01 {
            break;
        }
    }
    assert!(first > 2.0, "initial loss {first} should be near ln(10) = 2.3");
    assert!(last < 0.01, "loss after up to 300 steps: {last}");
}

#[test]
fn cmasch_with_dropout_and_batch_norm_also_memorises() {
    let (x, y) = batch(64, 4);
    let mut model = build("cmasch", 5);
    let mut opt = Optimizer::new(OptimizerConfig::adam(1e-3), model.params());
    let mut rng = Rng::new(6);
    let mut last = f32::INFINITY;
    for _ in 0..400 {
        last = step(&mut model, &mut opt, &x, &y, &mut rng);
        if last < 0.05 {
            break;
        }
    }
    assert!(last < 0.05, "loss after up to 400 steps: {last}");
}

/// Trains `preset` for a few steps in a pool of `threads` threads; returns every parameter.
fn train_with_threads(preset: &str, threads: usize, opt: OptimizerConfig) -> Vec<Vec<f32>> {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
    pool.install(|| {
        let (x, y) = batch(40, 7);
        let mut model = build(preset, 8);
        let mut o = Optimizer::new(opt, model.params());
        let mut rng = Rng::new(9);
        for _ in 0..3 {
            step(&mut model, &mut o, &x, &y, &mut rng);
        }
        model.params().iter().map(|p| p.value.data().to_vec()).collect()
    })
}

#[test]
fn same_seed_same_weights_with_one_and_two_threads() {
    for preset in ["c1", "cmasch", "c2"] {
        let a = train_with_threads(preset, 1, OptimizerConfig::adam(1e-3));
        let b = train_with_threads(preset, 2, OptimizerConfig::adam(1e-3));
        let c = train_with_threads(preset, 2, OptimizerConfig::adam(1e-3));
        // Bit-identical, compared as bit patterns so that even -0.0 vs 0.0 would show.
        let bits = |v: &Vec<Vec<f32>>| v.iter().flatten().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&a), bits(&b), "{preset}: 1 vs 2 threads");
        assert_eq!(bits(&b), bits(&c), "{preset}: two runs with 2 threads");
    }
    // And a different seed really gives different weights (the test can fail).
    let d = train_with_threads("c1", 2, OptimizerConfig::sgd(0.1, 0.9));
    let e = train_with_threads("c1", 2, OptimizerConfig::adam(1e-3));
    assert_ne!(d, e);
}

#[test]
fn a_reused_tape_holds_the_same_buffers_from_step_to_step() {
    // The input batch is made outside the tape's pool and recycled into it at every reset;
    // the pool must stay bounded (it once grew by one buffer a step: 130 MB an epoch).
    let (x, y) = batch(8, 9);
    let mut model = build("ours", 10);
    let mut opt = Optimizer::new(OptimizerConfig::adam(1e-3), model.params());
    let mut rng = Rng::new(11);
    let mut tape = Tape::new();
    let mut held = Vec::new();
    for _ in 0..6 {
        step_on(&mut tape, &mut model, &mut opt, &x, &y, &mut rng);
        tape.reset();
        held.push(tape.pooled_buffers());
    }
    assert!(held[2] > 0, "the pool keeps buffers: {held:?}");
    assert!(held[2..].iter().all(|&h| h == held[2]), "pool sizes per step: {held:?}");
}

/// One image through a dense layer large enough to be split by columns between the threads
/// (`ops::dense`, over 2 MiB of weights, like C1's first): the same bits with 1 and 2 threads,
/// and within the f32 rounding bound of an f64 sum. A quarter of the inputs are zero, as after
/// ReLU, so the skipped rows count too.
#[test]
fn one_image_dense_split_between_threads_equals_one_thread() {
    // 565k weights (split: `ops::dense`'s unit test pins it); 276 columns split unevenly,
    // each part with a partial vector, at 8 and 16 lanes alike.
    let (fin, fout) = (2048, 276);
    let mut rng = Rng::new(12);
    let x: Vec<f32> =
        (0..fin).map(|_| if rng.below(4) == 0 { 0.0 } else { rng.uniform(-1.0, 1.0) }).collect();
    let w: Vec<f32> = (0..fin * fout).map(|_| rng.uniform(-0.1, 0.1)).collect();
    let b: Vec<f32> = (0..fout).map(|_| rng.uniform(-0.1, 0.1)).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut params = fmnist::Params::new();
            let wi = params.add("w", Tensor::from_vec(&[fin, fout], w.clone()));
            let bi = params.add("b", Tensor::from_vec(&[fout], b.clone()));
            let mut t = Tape::no_grad();
            let xv = t.input(Tensor::from_vec(&[1, fin], x.clone()));
            let plan = Arc::new(DensePlan::new(Engine::Fast, fin, fout));
            plan.refresh(params.value(wi).data());
            let y = ops::dense(&mut t, &params, xv, wi, bi, &plan);
            t.value(y).data().to_vec()
        })
    };
    let (one, two) = (run(1), run(2));
    assert_eq!(one, two, "1 and 2 threads");
    for (j, &got) in two.iter().enumerate() {
        let exact: f64 = b[j] as f64 + (0..fin).map(|i| x[i] as f64 * w[i * fout + j] as f64).sum::<f64>();
        let scale: f64 = (0..fin).map(|i| (x[i] as f64 * w[i * fout + j] as f64).abs()).sum::<f64>();
        let bound = fin as f64 * f32::EPSILON as f64 * scale + 1e-6;
        assert!((got as f64 - exact).abs() <= bound, "output {j}: {got} vs {exact}");
    }
}
