//! The modern-recipe items, each against a case computed by hand (the arithmetic is in the
//! comments): SGD with Nesterov momentum, AdamW's decoupled decay beside Adam's coupled L2,
//! the one-cycle schedule, random crops with padding (against an explicit pad-then-crop),
//! random erasing (torchvision's rectangle, and a property test of what it erases), the
//! weights' moving average; then how the CLI and the `[recipe]` table reach them and refuse
//! bad values with one line, and that files from before them still read the same.

use fmnist::augment::{self, BatchAugment, RandomErasing};
use fmnist::cli::{plan_training, Cli, Command as CliCommand, TrainPlan};
use fmnist::optim::{Optimizer, OptimizerConfig};
use fmnist::train::{self, ema_decay_at, ema_update, LrSchedule, ScheduleKind, TrainConfig};
use fmnist::{Engine, Params, Rng, Tensor};
use proptest::prelude::*;

fn close(got: f32, want: f64, tol: f64) -> bool {
    (got as f64 - want).abs() <= tol * (1.0 + want.abs())
}

// ---------------------------------------------------------------------------------- optimizers

/// One trainable parameter of one value `p0`, with a constant gradient `g` each step.
fn one_weight(p0: f32) -> Params {
    let mut params = Params::new();
    params.add("w", Tensor::from_vec(&[1], vec![p0]));
    params
}

/// Three steps of `config` from `p = 1` with the gradient 0.5 each step, on `engine`.
fn three_steps(config: OptimizerConfig, engine: Engine) -> Vec<f32> {
    let mut params = one_weight(1.0);
    let mut opt = Optimizer::new(config, &params).on(engine);
    let mut out = Vec::new();
    for _ in 0..3 {
        params.zero_grads();
        params.iter_mut().next().unwrap().grad.data_mut()[0] = 0.5;
        opt.step(&mut params);
        out.push(params.iter().next().unwrap().value.data()[0]);
    }
    out
}

#[test]
fn sgd_nesterov_three_steps_by_hand() {
    // lr 0.1, momentum 0.9, weight decay 0.1, p0 = 1, g = 0.5 (PyTorch's SGD):
    //   g' = g + wd p, v = 0.9 v + g', Nesterov step g' + 0.9 v (plain: v), p -= 0.1 step.
    // Nesterov:
    //   1: g' = 0.6,       v = 0.6,       step = 0.6 + 0.54 = 1.14,          p = 0.886
    //   2: g' = 0.5886,    v = 1.1286,    step = 0.5886 + 1.01574 = 1.60434, p = 0.725566
    //   3: g' = 0.5725566, v = 1.5882966, step = 2.00202354,                 p = 0.525363646
    // Plain momentum:
    //   1: v = 0.6, p = 0.94;  2: g' = 0.594, v = 1.134, p = 0.8266;
    //   3: g' = 0.58266, v = 1.60326, p = 0.666274
    let sgd = |nesterov| OptimizerConfig::Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.1, nesterov };
    for engine in [Engine::Reference, Engine::Fast] {
        let nest = three_steps(sgd(true), engine);
        for (got, want) in nest.iter().zip([0.886, 0.725566, 0.525363646]) {
            assert!(close(*got, want, 1e-6), "{engine:?} nesterov: {nest:?}");
        }
        let plain = three_steps(sgd(false), engine);
        for (got, want) in plain.iter().zip([0.94, 0.8266, 0.666274]) {
            assert!(close(*got, want, 1e-6), "{engine:?} plain momentum: {plain:?}");
        }
    }
}

#[test]
fn adamw_decays_the_weights_and_adam_couples_the_decay_by_hand() {
    // lr 0.1, betas 0.9 / 0.999, eps 1e-8, p0 = 1, g = 0.5.
    // A constant gradient makes Adam's bias-corrected ratio m^ / sqrt(v^) = g / |g| = 1, so
    // each Adam step moves p by lr = 0.1 (less eps's 2e-8 relative).
    // AdamW, wd 0.5: p *= 1 - 0.1 * 0.5 = 0.95, then p -= 0.1:
    //   1: 0.95 - 0.1 = 0.85;  2: 0.8075 - 0.1 = 0.7075;  3: 0.672125 - 0.1 = 0.572125
    let adamw = OptimizerConfig::AdamW { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.5 };
    // Adam, wd 0.5 (coupled L2, PyTorch's Adam): step 1 has g' = 0.5 + 0.5 = 1, and the
    // normalised step is again 0.1: p = 0.9, as with no decay at all (Loshchilov & Hutter's
    // point: the L2 term is divided away). Step 2: g' = 0.5 + 0.45 = 0.95,
    //   m = 0.09 + 0.095 = 0.185, m^ = 0.185 / 0.19 = 0.973684,
    //   v = 0.000999 + 0.0009025 = 0.0019015, v^ = 0.0019015 / 0.001999 = 0.951225,
    //   p = 0.9 - 0.1 * 0.973684 / 0.975308 = 0.800166.
    let adam =
        |weight_decay| OptimizerConfig::Adam { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay };
    for engine in [Engine::Reference, Engine::Fast] {
        let w = three_steps(adamw, engine);
        for (got, want) in w.iter().zip([0.85, 0.7075, 0.572125]) {
            assert!(close(*got, want, 1e-6), "{engine:?} adamw: {w:?}");
        }
        let coupled = three_steps(adam(0.5), engine);
        let plain = three_steps(adam(0.0), engine);
        assert!(
            close(coupled[0], 0.9, 1e-6) && close(plain[0], 0.9, 1e-6),
            "{engine:?}: {coupled:?} {plain:?}"
        );
        assert!(close(coupled[1], 0.800166, 1e-5), "{engine:?} adam: {coupled:?}");
        assert!(close(plain[1], 0.8, 1e-6), "{engine:?} adam without decay: {plain:?}");
    }
    // PyTorch's defaults when AdamW is chosen.
    assert_eq!(
        OptimizerConfig::adamw(1e-3),
        OptimizerConfig::AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    );
}

/// How the "Training ..." line names each optimizer (written out by hand).
#[test]
fn optimizers_read_as_a_person_writes_them() {
    let sgd = OptimizerConfig::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 5e-4, nesterov: true };
    assert_eq!(sgd.to_string(), "SGD lr 0.05, momentum 0.9, Nesterov, weight decay 0.0005");
    assert_eq!(OptimizerConfig::sgd(0.01, 0.0).to_string(), "SGD lr 0.01, momentum 0");
    let adam = OptimizerConfig::Adam { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-7, weight_decay: 0.0 };
    assert_eq!(adam.to_string(), "Adam lr 0.001 (betas 0.9, 0.999, eps 1e-7)");
    let adamw = OptimizerConfig::AdamW { lr: 2e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 };
    assert_eq!(adamw.to_string(), "AdamW lr 0.002, weight decay 0.05 (betas 0.9, 0.999, eps 1e-8)");
}

#[test]
fn nesterov_without_momentum_is_refused() {
    let cfg = TrainConfig {
        optimizer: OptimizerConfig::Sgd { lr: 0.1, momentum: 0.0, weight_decay: 0.0, nesterov: true },
        ..TrainConfig::default()
    };
    let e = cfg.validate().unwrap_err();
    assert!(e.contains("Nesterov") && e.contains("momentum"), "{e}");
}

// -------------------------------------------------------------------------- one-cycle schedule

#[test]
fn one_cycle_matches_pytorchs_formula_by_hand() {
    // PyTorch's OneCycleLR(max_lr = 1, total_steps = T, pct_start 0.3, div_factor 25,
    // final_div_factor 1e4, anneal_strategy 'cos'): initial = 1/25 = 0.04, min = 0.04/1e4 =
    // 4e-6; phase 1 ends at step a = 0.3 T - 1, phase 2 at T - 1; cos annealing
    // end + (start - end) (1 + cos(pi pct)) / 2.
    // T = 10 (2 epochs of 5 steps): a = 2.
    //   t = 0: pct 0 -> 0.04;  t = 1: pct 1/2 -> 1 + (0.04 - 1) / 2 = 0.52;  t = 2: 1.
    //   t = 3: pct 1/7 -> 4e-6 + (1 - 4e-6)(1 + cos(pi/7))/2 = 4e-6 + 0.999996 * 0.950484434 = 0.950484632
    //   t = 9: pct 1 -> 4e-6.
    let s = LrSchedule { kind: ScheduleKind::one_cycle(), warmup_epochs: 0 };
    let expect = [(0, 0.04), (1, 0.52), (2, 1.0), (3, 0.950_484_632), (9, 4e-6)];
    for (t, want) in expect {
        let got = s.lr_at(1.0, t, 5, 2);
        assert!(close(got, want, 1e-6), "T 10, t {t}: {got} vs {want}");
    }
    // T = 12 (3 epochs of 4): a = 2.6, a real number as in PyTorch.
    //   t = 1: pct 1/2.6 -> 1 + (0.04 - 1)(1 + cos(pi/2.6))/2 = 1 - 0.96 * 0.677302444 = 0.349789654
    //   t = 3: pct 0.4/8.4 -> 4e-6 + 0.999996 (1 + cos(pi/21))/2 = 0.994415435
    let expect = [(1, 0.349_789_654), (3, 0.994_415_435), (11, 4e-6)];
    for (t, want) in expect {
        let got = s.lr_at(1.0, t, 4, 3);
        assert!(close(got, want, 1e-6), "T 12, t {t}: {got} vs {want}");
    }
    // max_lr is the optimizer's rate: the schedule scales with it.
    assert!(close(s.lr_at(0.01, 1, 5, 2), 0.0052, 1e-6));
    // Its own warm-up: warm-up epochs on top are refused; so are bad knobs.
    let with_warmup = LrSchedule { kind: ScheduleKind::one_cycle(), warmup_epochs: 1 };
    assert!(with_warmup.validate().unwrap_err().contains("warm-up"));
    let bad = ScheduleKind::OneCycle { pct_start: 1.0, div_factor: 25.0, final_div_factor: 1e4 };
    assert!(LrSchedule { kind: bad, warmup_epochs: 0 }.validate().unwrap_err().contains("pct_start"));
}

#[test]
fn one_cycle_of_one_step_gives_a_finite_rate() {
    // T = 1: a = -0.7, so step 0 is in phase 2 with pct (0 + 0.7) / (0 + 0.7) = 1: the minimum.
    let s = LrSchedule { kind: ScheduleKind::one_cycle(), warmup_epochs: 0 };
    assert!(close(s.lr_at(1.0, 0, 1, 1), 4e-6, 1e-6));
    // T = 2 with pct_start 0.5: a = 0, phase 1 has zero length; step 0 is its end (pct 1, the
    // peak, where PyTorch divides 0 by 0); step 1 ends phase 2 at the minimum.
    let short = ScheduleKind::OneCycle { pct_start: 0.5, div_factor: 25.0, final_div_factor: 1e4 };
    let s = LrSchedule { kind: short, warmup_epochs: 0 };
    assert!(close(s.lr_at(1.0, 0, 2, 1), 1.0, 1e-6));
    assert!(close(s.lr_at(1.0, 1, 2, 1), 4e-6, 1e-6));
}

// ----------------------------------------------------------------- random crops with padding

/// torchvision's `RandomCrop(28, padding=P)` written out: pad with P zeros on every side, then
/// take the 28x28 window whose top-left corner is (i, j) in the padded image.
fn pad_then_crop(src: &[u8], rows: usize, cols: usize, pad: usize, i: usize, j: usize) -> Vec<u8> {
    let (ph, pw) = (rows + 2 * pad, cols + 2 * pad);
    let mut padded = vec![0u8; ph * pw];
    for y in 0..rows {
        for x in 0..cols {
            padded[(y + pad) * pw + x + pad] = src[y * cols + x];
        }
    }
    let mut out = vec![0u8; rows * cols];
    for y in 0..rows {
        for x in 0..cols {
            out[y * cols + x] = padded[(y + i) * pw + x + j];
        }
    }
    out
}

#[test]
fn random_crop_with_padding_is_the_shift() {
    let (rows, cols, pad) = (28, 28, 3);
    let mut rng = Rng::new(1);
    let src: Vec<u8> = (0..rows * cols).map(|_| 1 + rng.below(255) as u8).collect();
    // Every crop corner (i, j) in 0..=2P is the shift by (P - i, P - j).
    for i in 0..=2 * pad {
        for j in 0..=2 * pad {
            let mut shifted = vec![0u8; rows * cols];
            augment::shift(
                &src,
                rows,
                cols,
                pad as isize - i as isize,
                pad as isize - j as isize,
                &mut shifted,
            );
            assert_eq!(shifted, pad_then_crop(&src, rows, cols, pad, i, j), "corner ({i}, {j})");
        }
    }
    // On a batch, with the draws the trainer makes: dy = below(2P+1) - P, dx likewise, then the
    // flip draw; the crop corner is (P - dy, P - dx) = (2P - below(2P+1), ...), uniform in
    // 0..=2P as torchvision's.
    let batch: Vec<u8> = (0..5).flat_map(|_| src.iter().copied()).collect();
    let cfg = BatchAugment { max_shift: pad, ..BatchAugment::default() };
    let mut out = vec![0u8; batch.len()];
    augment::augment_batch(&batch, rows, cols, &cfg, &mut Rng::new(7), &mut out);
    let mut draws = Rng::new(7);
    for (k, img) in out.chunks(rows * cols).enumerate() {
        let i = 2 * pad - draws.below(2 * pad as u64 + 1) as usize;
        let j = 2 * pad - draws.below(2 * pad as u64 + 1) as usize;
        let _flip = draws.next_f32();
        assert_eq!(img, &pad_then_crop(&src, rows, cols, pad, i, j)[..], "image {k}");
    }
}

// ----------------------------------------------------------------------------- random erasing

#[test]
fn random_erasing_sizes_by_hand() {
    // torchvision: A = frac * 28 * 28, h = round(sqrt(A r)), w = round(sqrt(A / r)).
    // frac 0.25, r 1: A = 196, h = w = 14.
    assert_eq!(augment::erase_size(28, 28, 0.25, 1.0), (14, 14));
    // frac 0.1, r 2: A = 78.4, h = round(sqrt(156.8) = 12.52) = 13, w = round(sqrt(39.2) = 6.26) = 6.
    assert_eq!(augment::erase_size(28, 28, 0.1, 2.0), (13, 6));
    // frac 0.25, r 4: h = round(sqrt(784)) = 28, not < 28: that attempt is rejected.
    assert_eq!(augment::erase_size(28, 28, 0.25, 4.0).0, 28);
    // Python's round is half to even: A = 6.25, r = 1 gives sqrt = 2.5 -> 2, not 3.
    assert_eq!(augment::erase_size(5, 5, 0.25, 1.0), (2, 2));
}

#[test]
fn random_erasing_follows_its_draws_on_a_scripted_stream() {
    // With p = 1 the probability draw passes; then, per attempt, the area fraction and the log
    // ratio, and the top-left corner once a rectangle fits. Replay the draws by hand.
    let cfg = RandomErasing::with_prob(1.0);
    for seed in 0..50 {
        let mut rng = Rng::new(seed);
        let got = augment::erase_rect(28, 28, &cfg, &mut rng);
        let mut r = Rng::new(seed);
        assert!(r.next_f32() < 1.0);
        let mut want = None;
        for _ in 0..10 {
            let frac = r.uniform(0.02, 0.33) as f64;
            let aspect = (r.uniform(0.3f64.ln() as f32, 3.3f64.ln() as f32) as f64).exp();
            let h = (frac * 784.0 * aspect).sqrt().round_ties_even() as usize;
            let w = (frac * 784.0 / aspect).sqrt().round_ties_even() as usize;
            if h < 28 && w < 28 {
                want = Some((r.below(29 - h as u64) as usize, r.below(29 - w as u64) as usize, h, w));
                break;
            }
        }
        assert_eq!(got, want, "seed {seed}");
        assert_eq!(rng.state(), r.state(), "seed {seed}: the same number of draws");
    }
    // p = 0 draws nothing at all in the batch (old runs keep their streams): tested below.
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// On an image with no zero pixel, what random erasing (p = 1, after no shift or flip)
    /// sets to 0 is one axis-aligned rectangle whose sides come from an area in 2-33% of the
    /// image and an aspect ratio in 0.3-3.3 (allowing for the rounding of each side by at most
    /// 1/2), smaller than the image in both sides; every other pixel is untouched.
    #[test]
    fn random_erasing_erases_one_allowed_rectangle(seed in any::<u64>()) {
        let (rows, cols) = (28usize, 28usize);
        let mut rng = Rng::new(seed ^ 0x5eed);
        let src: Vec<u8> = (0..rows * cols).map(|_| 1 + rng.below(255) as u8).collect();
        let cfg = BatchAugment { erasing: RandomErasing::with_prob(1.0), ..BatchAugment::default() };
        let mut out = vec![0u8; src.len()];
        augment::augment_batch(&src, rows, cols, &cfg, &mut Rng::new(seed), &mut out);
        let zeros: Vec<(usize, usize)> =
            (0..rows * cols).filter(|&k| out[k] == 0).map(|k| (k / cols, k % cols)).collect();
        for k in 0..rows * cols {
            prop_assert!(out[k] == 0 || out[k] == src[k], "pixel {} changed to a non-zero value", k);
        }
        if zeros.is_empty() {
            return Ok(()); // ten attempts that did not fit (rare), or a rectangle of no pixel
        }
        let (y0, y1) = (zeros.iter().map(|z| z.0).min().unwrap(), zeros.iter().map(|z| z.0).max().unwrap());
        let (x0, x1) = (zeros.iter().map(|z| z.1).min().unwrap(), zeros.iter().map(|z| z.1).max().unwrap());
        let (h, w) = ((y1 - y0 + 1) as f64, (x1 - x0 + 1) as f64);
        prop_assert_eq!(zeros.len() as f64, h * w, "the erased pixels fill their bounding box");
        prop_assert!(h < rows as f64 && w < cols as f64);
        // h = round(sqrt(A r)), w = round(sqrt(A / r)): A in [(h-1/2)(w-1/2), (h+1/2)(w+1/2)],
        // r in [(h-1/2)/(w+1/2), (h+1/2)/(w-1/2)], and those ranges meet the allowed ones.
        let area = (rows * cols) as f64;
        let (a_lo, a_hi) = ((h - 0.5) * (w - 0.5), (h + 0.5) * (w + 0.5));
        prop_assert!(a_hi >= 0.02 * area && a_lo <= 0.33 * area, "area {}x{}", h, w);
        let (r_lo, r_hi) = ((h - 0.5) / (w + 0.5), (h + 0.5) / (w - 0.5));
        prop_assert!(r_hi >= 0.3 && r_lo <= 3.3, "ratio {}x{}", h, w);
    }
}

#[test]
fn random_erasing_off_draws_nothing_and_changes_nothing() {
    // A batch with shifts, flips and a cutout gives the same bits and leaves the stream in
    // the same state whether `erasing` is the default (off) or absent from the config.
    let src: Vec<u8> = (0..3 * 784).map(|k| (k % 251) as u8).collect();
    let on = BatchAugment { max_shift: 2, flip_prob: 0.5, cutout: 4, ..BatchAugment::default() };
    let (mut a, mut b) = (vec![0u8; src.len()], vec![0u8; src.len()]);
    let (mut ra, mut rb) = (Rng::new(3), Rng::new(3));
    augment::augment_batch(&src, 28, 28, &on, &mut ra, &mut a);
    // The old order by hand: dy, dx, flip, cutout centre; nothing after.
    for img in 0..3 {
        let dy = rb.below(5) as isize - 2;
        let dx = rb.below(5) as isize - 2;
        let flip = rb.next_f32() < 0.5;
        let s = &src[img * 784..(img + 1) * 784];
        let mut f = vec![0u8; 784];
        if flip {
            augment::flip_horizontal(s, 28, 28, &mut f);
        } else {
            f.copy_from_slice(s);
        }
        let d = &mut b[img * 784..(img + 1) * 784];
        augment::shift(&f, 28, 28, dy, dx, d);
        let (cy, cx) = (rb.below(28) as usize, rb.below(28) as usize);
        augment::cut_out(d, 28, 28, cy, cx, 4);
    }
    assert_eq!(a, b);
    assert_eq!(ra.state(), rb.state());
}

// ---------------------------------------------------------------------- moving average (EMA)

#[test]
fn ema_three_updates_by_hand() {
    // Decay 0.99 with TF's warm-up d_t = min(0.99, (1 + t) / (10 + t)):
    //   t = 0: d = 1/10; t = 1: d = 2/11; t = 2: d = 3/12 = 0.25.
    // The average starts at the initial weight 0; the raw weight is 1, 2, 3 after updates 0, 1, 2:
    //   e = 0.1 * 0 + 0.9 * 1 = 0.9
    //   e = (2/11) 0.9 + (9/11) 2 = (1.8 + 18) / 11 = 1.8
    //   e = 0.25 * 1.8 + 0.75 * 3 = 0.45 + 2.25 = 2.7
    // The batch-norm statistic (a buffer) is copied: 5, 6, 7.
    let mk = |w: f32, stat: f32| {
        let mut p = Params::new();
        p.add("w", Tensor::from_vec(&[1], vec![w]));
        p.add_buffer("running_mean", Tensor::from_vec(&[1], vec![stat]));
        p
    };
    let mut ema = mk(0.0, 0.0);
    for (t, (w, want)) in [(1.0, 0.9), (2.0, 1.8), (3.0, 2.7)].into_iter().enumerate() {
        ema_update(&mut ema, &mk(w, 5.0 + t as f32), 0.99, t);
        let v: Vec<f32> = ema.iter().map(|p| p.value.data()[0]).collect();
        assert!(close(v[0], want, 1e-6), "t {t}: {v:?}");
        assert_eq!(v[1], 5.0 + t as f32, "t {t}: the buffer is copied");
    }
    // The warm-up's values, and the decay once it is reached.
    for (t, want) in [(0, 0.1), (8, 0.5), (80, 0.9), (890, 0.99), (5000, 0.99)] {
        assert!(close(ema_decay_at(0.99, t), want, 1e-7), "t {t}: {}", ema_decay_at(0.99, t));
    }
    assert_eq!(ema_decay_at(0.5, 100), 0.5);
}

/// A tiny data set and model for the training-level checks.
fn tiny() -> (fmnist::Sequential, fmnist::data::Dataset) {
    let layers = vec![fmnist::LayerConfig::Flatten, fmnist::LayerConfig::Dense { units: 10 }];
    let model = fmnist::Sequential::new(&[1, 28, 28], &layers, fmnist::Init::GlorotUniform, &mut Rng::new(1))
        .unwrap();
    let mut rng = Rng::new(2);
    let images: Vec<u8> = (0..40 * 784).map(|_| rng.below(256) as u8).collect();
    let labels: Vec<u8> = (0..40).map(|k| (k % 10) as u8).collect();
    (model, fmnist::data::Dataset::new(images, labels, 28, 28))
}

#[test]
fn training_with_ema_ends_with_the_average_and_the_raw_run_is_unchanged() {
    let (model0, train_set) = tiny();
    let empty = fmnist::data::Dataset::new(vec![], vec![], 28, 28);
    let base = TrainConfig { epochs: 2, batch_size: 8, keep_best: false, ..TrainConfig::default() };
    let with_ema = TrainConfig { ema: Some(0.9), ..base.clone() };

    // The same steps by hand: a Stepper (with fit's stream forks) and ema_update after each.
    let mut raw = model0.clone();
    let mut rng = Rng::new(5);
    let mut stepper = train::Stepper::new(&base, &raw, train_set.len(), &mut rng);
    let mut avg = raw.params().clone();
    for t in 0..2 * stepper.batches_per_epoch() {
        stepper.step(&mut raw, &train_set);
        ema_update(&mut avg, raw.params(), 0.9, t);
    }

    let mut m = model0.clone();
    train::fit(&mut m, &with_ema, &train_set, &empty, &mut Rng::new(5), &mut train::Silent);
    let bits =
        |p: &Params| p.iter().flat_map(|q| q.value.data().iter().map(|v| v.to_bits())).collect::<Vec<_>>();
    assert_eq!(bits(m.params()), bits(&avg), "the final model is the average");

    // Without EMA, fit leaves the raw weights: the stepper's, bit for bit.
    let mut plain = model0.clone();
    train::fit(&mut plain, &base, &train_set, &empty, &mut Rng::new(5), &mut train::Silent);
    assert_eq!(bits(plain.params()), bits(raw.params()));
    assert_ne!(bits(plain.params()), bits(&avg));
}

// ------------------------------------------------------------------------------ CLI and files

fn plan(args: &[&str]) -> Result<TrainPlan, String> {
    let cli = Cli::try_parse_from(["fmnist", "train"].iter().chain(args)).map_err(|e| e.to_string())?;
    let CliCommand::Train(a) = cli.command else { unreachable!() };
    plan_training(&a)
}

use clap::Parser;

#[test]
fn the_flags_reach_the_config() {
    let p = plan(&["--optimizer", "sgd", "--nesterov"]).unwrap();
    assert_eq!(
        p.cfg.optimizer,
        OptimizerConfig::Sgd { lr: 0.01, momentum: 0.9, weight_decay: 0.0, nesterov: true }
    );
    let p = plan(&["--optimizer", "adamw"]).unwrap();
    assert_eq!(p.cfg.optimizer, OptimizerConfig::adamw(1e-3));
    let p = plan(&["--optimizer", "adamw", "--weight-decay", "0.05", "--lr", "0.002"]).unwrap();
    assert_eq!(
        p.cfg.optimizer,
        OptimizerConfig::AdamW { lr: 0.002, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05 }
    );
    let p = plan(&["--schedule", "one-cycle"]).unwrap();
    assert_eq!(p.cfg.schedule, LrSchedule { kind: ScheduleKind::one_cycle(), warmup_epochs: 0 });
    // --crop-padding is --shift: the same config, so the same draws and bits.
    assert_eq!(plan(&["--crop-padding", "4"]).unwrap().cfg, plan(&["--shift", "4"]).unwrap().cfg);
    let p = plan(&["--random-erasing", "0.5", "--ema", "0.999"]).unwrap();
    assert_eq!(p.cfg.augment.erasing, RandomErasing::with_prob(0.5));
    assert_eq!(p.cfg.ema, Some(0.999));
    // Off by default, for every preset.
    for name in fmnist::presets::NAMES {
        let p = plan(&["--model", name]).unwrap();
        assert!(p.cfg.ema.is_none() && p.cfg.augment.erasing.is_off(), "{name}");
    }
}

#[test]
fn bad_values_are_refused_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (&["--nesterov"], "--nesterov applies only to SGD"),
        (&["--optimizer", "adamw", "--nesterov"], "--nesterov applies only to SGD"),
        (&["--crop-padding", "2", "--shift", "2"], "cannot be used with"),
        (&["--crop-padding", "30"], "--crop-padding 30 is over the limit"),
        (&["--random-erasing", "1.5"], "random erasing probability 1.5 is not in [0, 1]"),
        (&["--random-erasing=-0.1"], "not in [0, 1]"),
        (&["--ema", "1"], "EMA decay 1 is not in (0, 1)"),
        (&["--ema", "0"], "EMA decay 0 is not in (0, 1)"),
        (&["--ema", "NaN"], "EMA decay NaN"),
        (&["--schedule", "one-cycle", "--warmup-epochs", "1"], "own warm-up"),
        (&["--no-augment", "--random-erasing", "0.5"], "cannot be used with"),
    ];
    for (args, want) in cases {
        let e = plan(args).err().unwrap_or_else(|| panic!("{args:?} accepted"));
        assert!(e.contains(want), "{args:?}: {e}");
        assert!(!e.contains("panicked"), "{args:?}: {e}");
    }
}

#[test]
fn the_recipe_table_reaches_the_features_and_names_its_mistakes() {
    let file = |recipe: &str| {
        format!(
            "layers = [{{ type = \"flatten\" }}, {{ type = \"dense\", units = 10 }}]\n[recipe]\n{recipe}\n"
        )
    };
    let parse = |recipe: &str| fmnist::arch::parse(&file(recipe), "x.toml", "x");
    let p = parse(
        "optimizer = \"sgd\"\nnesterov = true\nschedule = \"one_cycle\"\ncrop_padding = 2\n\
         random_erasing = 0.25\nrandom_erasing_scale = [0.1, 0.2]\nrandom_erasing_ratio = [0.5, 2.0]\nema = 0.99",
    )
    .unwrap();
    let r = &p.recipe;
    assert_eq!(
        r.optimizer,
        OptimizerConfig::Sgd { lr: 0.01, momentum: 0.9, weight_decay: 0.0, nesterov: true }
    );
    assert_eq!(r.schedule.kind, ScheduleKind::one_cycle());
    assert_eq!(r.augment.max_shift, 2);
    assert_eq!(r.augment.erasing, RandomErasing { prob: 0.25, scale: [0.1, 0.2], ratio: [0.5, 2.0] });
    assert_eq!(r.ema, Some(0.99));
    let p = parse("mixup = 0.2\ncutmix = 1.0").unwrap();
    assert_eq!(p.recipe.mix, fmnist::mix::BatchMix { mixup: 0.2, cutmix: 1.0 });
    let p = parse("static_copies = 2\nstatic_before_split = true").unwrap();
    assert!(p.recipe.static_augment.before_split && p.recipe.static_augment.copies == 2);
    let p = parse("optimizer = \"adamw\"").unwrap();
    assert_eq!(p.recipe.optimizer, OptimizerConfig::adamw(1e-3));

    let errors = [
        ("optimizer = \"adam\"\nnesterov = true", "`nesterov` applies only to optimizer = \"sgd\""),
        ("shift = 1\ncrop_padding = 1", "give only one of them"),
        ("random_erasing_scale = [0.1, 0.2]", "need `random_erasing`"),
        ("emma = 0.9", "unknown field `emma`"),
        ("static_before_split = true", "needs `static_copies` above 0"),
    ];
    for (recipe, want) in errors {
        let e = parse(recipe).unwrap_err();
        assert!(e.contains("x.toml") && e.contains(want), "{recipe}: {e}");
        assert!(!e.contains('\n'), "one line: {e}");
    }
}

#[test]
fn configs_from_before_the_features_read_back_the_same() {
    // A TrainConfig as saved before these features (no `nesterov`, `erasing` or `ema`) reads
    // back with them off, and a config with them off saves exactly those keys again (so a
    // checkpoint's recipe compares equal on resume).
    let old = r#"{"epochs":3,"batch_size":8,"optimizer":{"type":"sgd","lr":0.01,"momentum":0.9,"weight_decay":0.0},
        "steps_per_epoch":null,"label_smoothing":0.0,"keep_best":true,
        "normalization":{"scale":0.003921569,"mean":0.0,"std":1.0},
        "schedule":{"kind":{"type":"constant"},"warmup_epochs":0},
        "augment":{"max_shift":2,"flip_prob":0.5,"cutout":0},
        "static_augment":{"copies":0,"max_degrees":10.0,"flip_prob":0.5}}"#;
    let cfg: TrainConfig = match serde_json::from_str(old) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        cfg.optimizer,
        OptimizerConfig::Sgd { lr: 0.01, momentum: 0.9, weight_decay: 0.0, nesterov: false }
    );
    assert!(cfg.ema.is_none() && cfg.augment.erasing.is_off());
    // Compared as JSON text parsed back (f32s print as their shortest decimal).
    let again: serde_json::Value = serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
    let old_value: serde_json::Value = serde_json::from_str(old).unwrap();
    assert_eq!(again, old_value);
}
