//! `fmnist-speed`: how fast a preset trains and predicts on this machine, measured the way the
//! peer scripts (`../shared/peers/`, training scripts kept outside this repository) measure
//! PyTorch and Keras, so the figures can be put side by side (`scripts/compare.py` does).
//!
//! On the real Fashion-MNIST images (found as `fmnist train` finds them), for one preset:
//! - **training**: images/s of full training steps (forward + backward + optimizer step, batch
//!   assembly included, exactly as `fmnist::train::fit` takes them: `step.rs`) over `--steps`
//!   steps after `--warmup` untimed ones. The default is one epoch of the 80% training split,
//!   like one of the peers' epochs;
//! - **inference**: images/s of [`Mode::Eval`] forward passes at batch 1000 over the 10,000 test
//!   images, best and median of `--infer-passes` passes after one warm-up pass (the peers: best
//!   of 3). The inputs are scaled before timing, as the peers hold the test set as floats;
//! - **latency**: one image at a time (batch 1), median (p10, p90) of `--latency-runs` forward
//!   passes in microseconds, after 20 warm-up passes;
//! - **peak RSS**: `VmHWM` from `/proc/self/status`, the high-water mark of resident memory.
//!
//! Each phase also reports `foreign_frac`, the share of the machine's CPU time that *other*
//! processes used while it ran (as the peers' `cpuload.py` computes it); above ~0.05 the figure
//! was measured under contention.
//!
//! Output: one human-readable line, then one JSON line (the last line, starting with `{`);
//! the data source and model go to stderr. `--steps 0`, `--infer-passes 0` or
//! `--latency-runs 0` skip a phase.
//!
//! Run: `cargo run --release --bin fmnist-speed -- --model c1 --threads 2`; on a shared machine
//! through `python3 ../shared/peers/guard.py -- target/release/fmnist-speed ...` (the peers'
//! wrapper that waits for a quiet machine and reports the CPU time other processes took).

#[path = "speed/step.rs"]
mod step;

use std::hint::black_box;
use std::time::Instant;

use clap::Parser;
use fmnist::data::{self, DatasetKind, LoadOptions};
use fmnist::presets;
use fmnist::train::Normalization;
use fmnist::{Mode, Rng, Sequential, Tape, Tensor};
use serde_json::json;

use step::{split, Stepper};

/// Measures training and inference speed of a preset on Fashion-MNIST.
#[derive(Parser, Debug)]
#[command(name = "fmnist-speed", version)]
struct Args {
    /// Preset: c1, a, b, c2, c3, cmasch, ours
    #[arg(long, default_value = "c1")]
    model: String,
    /// An architecture file (as `fmnist train --arch`) instead of a preset: its layers, batch
    /// size and validation split
    #[arg(long, value_name = "FILE.toml", conflicts_with = "model")]
    arch: Option<std::path::PathBuf>,
    /// Worker threads (rayon's global pool); default: all cores
    #[arg(long)]
    threads: Option<usize>,
    /// Images per training batch; default: the preset's
    #[arg(long)]
    batch_size: Option<usize>,
    /// Timed training steps; default: one epoch of the training split
    #[arg(long)]
    steps: Option<usize>,
    /// Untimed training steps before the timed ones
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Timed inference passes over the 10,000 test images at batch 1000 (after one warm-up pass)
    #[arg(long, default_value_t = 3)]
    infer_passes: usize,
    /// Timed single-image forward passes (after 20 warm-up passes)
    #[arg(long, default_value_t = 1000)]
    latency_runs: usize,
    /// Seed of the split, initialisation, shuffling and dropout
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder with the Fashion-MNIST files; default: searched as `fmnist train` does
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Run on the reference engine (the plain nested-loop twins)
    #[arg(long)]
    reference: bool,
    /// Replay a plan file (a run folder's plan.json) instead of the plan measured or cached
    /// for this machine; FMNIST_PLAN=rule runs the rule-based plan
    #[arg(long, value_name = "FILE")]
    plan: Option<std::path::PathBuf>,
}

/// Inference batch size, as the peers use.
const INFER_BATCH: usize = 1000;
/// Untimed single-image passes before the latency runs, as the peers do.
const LATENCY_WARMUP: usize = 20;

/// CPU time counters: the whole machine's busy time and this process's own, to tell how much of
/// the machine other processes took during a phase (the method of `../shared/peers/cpuload.py`,
/// the peers' load meter: the machine's busy time less this process's own).
struct CpuClock {
    wall: Instant,
    busy: f64,
    own: f64,
}

/// `/proc/stat` and `/proc/self/stat` count in USER_HZ ticks, 100 a second on Linux.
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuClock {
    fn now() -> CpuClock {
        CpuClock { wall: Instant::now(), busy: machine_busy_seconds(), own: own_cpu_seconds() }
    }

    /// Foreign CPU seconds since `self` over the machine's capacity (wall x CPUs); 0 when
    /// `/proc` cannot be read.
    fn foreign_frac(&self) -> f64 {
        let wall = self.wall.elapsed().as_secs_f64();
        let foreign = (machine_busy_seconds() - self.busy) - (own_cpu_seconds() - self.own);
        let frac = foreign.max(0.0) / (wall * cpu_count() as f64);
        (frac * 1000.0).round() / 1000.0
    }
}

/// Busy seconds of all CPUs (everything but idle and iowait) from the first line of `/proc/stat`.
fn machine_busy_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let v: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|s| s.parse().ok())
        .collect();
    if v.len() < 5 {
        return 0.0;
    }
    (v.iter().sum::<f64>() - v[3] - v[4]) / TICKS_PER_SECOND
}

/// This process's user + system CPU seconds (fields 14 and 15 of `/proc/self/stat`).
fn own_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // The command name (field 2) may hold spaces; the fields after it start past the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = rest.split_whitespace().filter_map(|s| s.parse().ok()).collect();
    // `rest` starts at field 3 (the state, a letter, which does not parse), so field 14 is f[10].
    match (f.get(10), f.get(11)) {
        (Some(u), Some(s)) => (u + s) / TICKS_PER_SECOND,
        _ => 0.0,
    }
}

/// CPUs the machine has (the `cpuN` lines of `/proc/stat`), as the peers' `os.cpu_count()`.
fn cpu_count() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|s| s.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count())
        .unwrap_or(0)
        .max(1)
}

/// The `VmHWM` line of `/proc/self/status` (peak resident memory) in MiB, if readable.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Runs the model on `x` (pixels already scaled, `[n, 1, 28, 28]`) in evaluation mode, reusing
/// `tape`'s buffers; returns the logits' first value so the work cannot be optimised away.
fn predict(model: &mut Sequential, tape: &mut Tape, x: &[f32], n: usize, rng: &mut Rng) -> f32 {
    tape.reset();
    let mut input = tape.scratch(&[n, 1, 28, 28]);
    input.data_mut().copy_from_slice(x);
    let xv = tape.input(input);
    let logits = model.forward(tape, xv, Mode::Eval, rng);
    tape.value(logits).data()[0]
}

fn run(a: &Args) -> Result<(), String> {
    let preset = match &a.arch {
        Some(path) => fmnist::arch::load(path)?,
        None => presets::preset(&a.model)
            .ok_or_else(|| format!("unknown --model {}; one of {}", a.model, presets::NAMES.join(", ")))?,
    };
    let threads = fmnist::cli::set_threads(a.threads)?;
    // This machine's FMA peak on these threads (`kernels::peak`), the best of two calibrations,
    // so a rate can be read as a share of this CPU's peak.
    let fma_peak = (0..2)
        .map(|_| kernels::peak::measure_fma_peak(std::time::Duration::from_millis(200)))
        .fold(0.0, f64::max);
    eprintln!("FMA peak (measured, {threads} threads): {:.0} GFLOP/s", fma_peak / 1e9);
    let batch = a.batch_size.unwrap_or(preset.recipe.batch_size);
    if batch == 0 {
        return Err("--batch-size must be at least 1".into());
    }

    let opts =
        LoadOptions { kind: DatasetKind::Fashion, data_dir: a.data_dir.as_deref(), allow_download: false };
    let (full_train, test, source) = data::load(&opts).map_err(|e| e.to_string())?;
    eprintln!("Data: {source}");
    let (train, mut rng) = split(&full_train, preset.recipe.val_split, a.seed);
    drop(full_train);
    let engine = if a.reference { fmnist::Engine::Reference } else { fmnist::Engine::Fast };
    let mut stepper = Stepper::new(&preset, batch, train.len(), &mut rng, engine);
    let steps = a.steps.unwrap_or(train.len().div_ceil(batch));
    // How each layer runs: `--plan FILE`, the rule (FMNIST_PLAN=rule), or measured/cached.
    let plan = fmnist::planfile::prepare(&mut stepper.model, a.plan.as_deref())?;
    let plan_message = plan.and_then(|p| p.message);
    if let Some(m) = &plan_message {
        eprintln!("{m}");
    }
    eprintln!(
        "Model {} ({}), batch {batch}, {threads} threads, {} engine, SIMD {}; {} training images",
        preset.name,
        preset.description,
        engine.name(),
        kernels::simd::describe(),
        train.len()
    );

    // Training.
    let mut train_json = json!(null);
    let mut train_ips = None;
    if steps > 0 {
        for _ in 0..a.warmup {
            stepper.step(&train);
        }
        stepper.reset_stats();
        let mut step_secs = Vec::with_capacity(steps);
        let clock = CpuClock::now();
        let mut images = 0;
        for _ in 0..steps {
            let t = Instant::now();
            images += stepper.step(&train);
            step_secs.push(t.elapsed().as_secs_f64());
        }
        let secs = clock.wall.elapsed().as_secs_f64();
        let ff = clock.foreign_frac();
        let (loss, acc) = stepper.stats();
        let per_step = sorted(step_secs);
        let ips = images as f64 / secs;
        train_ips = Some(ips);
        train_json = json!({
            "steps": steps,
            "warmup_steps": a.warmup,
            "images": images,
            "seconds": secs,
            "images_per_second": ips,
            "images_per_second_median_step": batch as f64 / percentile(&per_step, 0.5),
            "step_ms_median": 1e3 * percentile(&per_step, 0.5),
            "step_ms_p10": 1e3 * percentile(&per_step, 0.1),
            "step_ms_p90": 1e3 * percentile(&per_step, 0.9),
            "mean_loss": loss,
            "mean_accuracy": acc,
            "foreign_frac": ff,
        });
    }
    let rss_after_train = peak_rss_mib();

    // Inference at batch 1000 and one image at a time, on the test images scaled beforehand.
    let norm = Normalization::default();
    let all: Vec<usize> = (0..test.len()).collect();
    let scaled: Tensor = norm.batch(&test, &all); // [10000, 1, 28, 28]
    let pixels = test.pixels();
    let mut model = stepper.model;
    let mut tape = Tape::no_grad();
    let mut eval_rng = Rng::new(0); // unused in Mode::Eval
    let mut sink = 0.0f32;

    let mut infer_json = json!(null);
    let mut infer_ips = None;
    if a.infer_passes > 0 && !test.is_empty() {
        let mut pass = |model: &mut Sequential, tape: &mut Tape| {
            let t = Instant::now();
            for chunk in scaled.data().chunks(INFER_BATCH * pixels) {
                sink += predict(model, tape, chunk, chunk.len() / pixels, &mut eval_rng);
            }
            t.elapsed()
        };
        pass(&mut model, &mut tape); // warm-up
        let clock = CpuClock::now();
        let times: Vec<f64> =
            (0..a.infer_passes).map(|_| pass(&mut model, &mut tape).as_secs_f64()).collect();
        let ff = clock.foreign_frac();
        let times = sorted(times);
        let n = test.len() as f64;
        infer_ips = Some(n / times[0]);
        infer_json = json!({
            "batch": INFER_BATCH,
            "passes": a.infer_passes,
            "images_per_second": n / times[0],
            "images_per_second_median": n / percentile(&times, 0.5),
            "foreign_frac": ff,
        });
    }

    let mut latency_json = json!(null);
    let mut latency_us = None;
    if a.latency_runs > 0 && !test.is_empty() {
        let image = |k: usize| &scaled.data()[(k % test.len()) * pixels..][..pixels];
        for k in 0..LATENCY_WARMUP {
            sink += predict(&mut model, &mut tape, image(k), 1, &mut eval_rng);
        }
        let clock = CpuClock::now();
        let mut lat = Vec::with_capacity(a.latency_runs);
        for k in 0..a.latency_runs {
            let t = Instant::now();
            sink += predict(&mut model, &mut tape, image(k), 1, &mut eval_rng);
            lat.push(t.elapsed().as_secs_f64() * 1e6);
        }
        let ff = clock.foreign_frac();
        let lat = sorted(lat);
        latency_us = Some(percentile(&lat, 0.5));
        latency_json = json!({
            "runs": a.latency_runs,
            "median_us": percentile(&lat, 0.5),
            "p10_us": percentile(&lat, 0.1),
            "p90_us": percentile(&lat, 0.9),
            "foreign_frac": ff,
        });
    }
    black_box(sink);
    let peak = peak_rss_mib();

    let fmt = |v: Option<f64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v:.0} {unit}"));
    println!(
        "fmnist-speed {} batch {batch} threads {threads}: train {}, inference@{INFER_BATCH} {}, one image {}, peak RSS {}",
        preset.name,
        fmt(train_ips, "img/s"),
        fmt(infer_ips, "img/s"),
        fmt(latency_us, "us"),
        fmt(peak, "MiB"),
    );
    let report = json!({
        "engine": "fmnist",
        "model": preset.name,
        "threads": threads,
        "batch_size": batch,
        "simd": kernels::simd::describe(),
        "fma_peak_gflops": fma_peak / 1e9,
        "engine": engine.name(),
        "train": train_json,
        "inference": infer_json,
        "latency": latency_json,
        "peak_rss_mib": peak,
        "peak_rss_mib_after_train": rss_after_train,
        "plan": plan_message,
    });
    println!("{report}");
    Ok(())
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
