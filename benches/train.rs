//! One full training step per preset, on the real Fashion-MNIST images, in images/s.
//!
//! A step is the one `fmnist::train::fit` takes (batch assembly, forward, loss, backward, Adam):
//! the code is `src/bin/speed/step.rs`, shared with `fmnist-speed` so that both time the same
//! work. Every preset (`fmnist::presets::NAMES`) trains at its own batch size, with its recipe's
//! per-batch augmentation and label smoothing (`a` is the network of `b` at batch 32).
//!
//! Units: `Throughput::Elements(batch)`, so the "elem/s" criterion prints is **images/s**. The
//! model keeps training across iterations (its weights change as in a real run; the work per
//! step does not depend on them).
//!
//! Threads: rayon's global pool, all cores unless `RAYON_NUM_THREADS` says otherwise
//! (`RAYON_NUM_THREADS=1 cargo bench --bench train` for one thread). The data is found as
//! `fmnist train` finds it (`FASHION_MNIST_DIR`, `./data/fashion-mnist`, the Debian package);
//! nothing is downloaded.
//!
//! Run: `cargo bench --bench train` (about half a minute), `-- c1` for one preset, `-- --quick`.

#[path = "../src/bin/speed/step.rs"]
#[allow(dead_code)] // the bench uses only the step itself
mod step;

use std::time::Duration;

use criterion::{Criterion, Throughput};
use fmnist::data::{self, DatasetKind, LoadOptions};
use fmnist::presets;

fn train_steps(c: &mut Criterion) {
    let opts = LoadOptions { kind: DatasetKind::Fashion, data_dir: None, allow_download: false };
    let (full, _test, source) =
        data::load(&opts).unwrap_or_else(|e| panic!("benches/train.rs needs Fashion-MNIST: {e}"));
    println!("data: {source}");
    let mut g = c.benchmark_group("train_step");
    for name in presets::NAMES {
        let preset = presets::preset(name).expect("a preset name");
        let batch = preset.recipe.batch_size;
        let (train, mut rng) = step::split(&full, preset.recipe.val_split, 0);
        let mut stepper = step::Stepper::new(&preset, batch, train.len(), &mut rng, fmnist::Engine::Fast);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(format!("{name}_batch{batch}"), |b| b.iter(|| stepper.step(&train)));
    }
    g.finish();
}

fn main() {
    // The pool as the CLI sets it up: the main thread is one of its workers.
    fmnist::cli::set_threads(None).expect("the thread pool");
    println!(
        "fmnist training-step benchmarks: elem/s = images/s; SIMD {}; {} threads",
        kernels::simd::describe(),
        rayon::current_num_threads()
    );
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    train_steps(&mut c);
    c.final_summary();
}
