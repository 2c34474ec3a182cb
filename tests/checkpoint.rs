//! Crash-safe training, proven: checkpoints restore a run to the same bits wherever it stopped.
//!
//! - In the library: a run stopped after every unit of work (each step, each validation),
//!   saved to bytes, read back into a fresh trainer and finished gives the uninterrupted run's
//!   weights, history and best epoch bit for bit; every truncation and every flipped byte of a
//!   checkpoint is refused.
//! - Through the binary, on a small synthetic data set (tests/common): SIGKILL at a step, in
//!   the middle of a checkpoint write, before a validation, during a step and between the
//!   final files' write and their renames, each followed by `--resume`; Ctrl-C and SIGTERM
//!   (exit codes, messages, a second Ctrl-C); truncated and corrupt checkpoints; a resume that
//!   contradicts the recipe or the data; `--runs N`; a full disk; a folder that is not empty.
//!
//! Kills land at known places through the test-only hold of `src/cli/interrupt.rs`: the
//! program creates a marker file there and waits, and the test polls for the marker (with a
//! generous timeout, never a sleep-and-hope), so the tests hold on a loaded machine.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{bar_images, read_json, temp_dir, write_bar_idx};
use fmnist::checkpoint::{self, Contents, RunInfo};
use fmnist::data::Dataset;
use fmnist::model::LayerConfig;
use fmnist::train::{Advance, LrSchedule, Silent, TrainConfig, Trainer};
use fmnist::{Init, Rng, Sequential};

// ---------------------------------------------------------------------------------------------
// The library: stop anywhere, restore, same bits.

/// A small network with every kind of state: batch-norm statistics, dropout masks, weights.
fn small_model(seed: u64) -> Sequential {
    let layers = vec![
        LayerConfig::conv(4, 3, fmnist::Padding::Valid),
        LayerConfig::batch_norm(),
        LayerConfig::Relu,
        LayerConfig::MaxPool2d { size: 2, stride: 2 },
        LayerConfig::Dropout { rate: 0.25 },
        LayerConfig::Flatten,
        LayerConfig::Dense { units: 10 },
    ];
    Sequential::new(&[1, 28, 28], &layers, Init::GlorotUniform, &mut Rng::new(seed)).unwrap()
}

fn small_config() -> TrainConfig {
    let mut cfg = TrainConfig { epochs: 3, batch_size: 8, label_smoothing: 0.1, ..TrainConfig::default() };
    cfg.schedule = LrSchedule::cosine(1);
    cfg.augment.max_shift = 2;
    cfg.augment.flip_prob = 0.5;
    cfg.static_augment = fmnist::augment::StaticAugment::cmasch();
    cfg.static_augment.copies = 1;
    cfg
}

fn bar_dataset(n: usize, seed: u64) -> Dataset {
    let (images, labels) = bar_images(n, &mut Rng::new(seed));
    Dataset::new(images, labels, 28, 28)
}

fn info() -> RunInfo {
    RunInfo {
        program: "test".into(),
        group: "g".into(),
        run: 1,
        runs: 1,
        seed: 0,
        args: vec![],
        recipe: serde_json::Value::Null,
        data: serde_json::Value::Null,
        wall_seconds: 0.0,
        checkpoint_seconds: 0.0,
        checkpoint_writer_cpu_seconds: 0.0,
    }
}

fn bits(model: &Sequential) -> Vec<Vec<u32>> {
    model.params().iter().map(|p| p.value.data().iter().map(|v| v.to_bits()).collect()).collect()
}

/// The figures of a history that do not depend on the clock.
fn exact_history(h: &[fmnist::train::EpochStats]) -> Vec<[Option<u32>; 5]> {
    h.iter()
        .map(|s| {
            [
                Some(s.loss.to_bits()),
                Some(s.accuracy.to_bits()),
                s.val_loss.map(f32::to_bits),
                s.val_accuracy.map(f32::to_bits),
                Some(s.lr.to_bits()),
            ]
        })
        .collect()
}

/// [`small_config`] with every recipe feature that carries state or draws: AdamW, the
/// one-cycle schedule, random erasing and the weights' moving average (saved in the checkpoint).
fn featured_config() -> TrainConfig {
    let mut cfg = small_config();
    cfg.optimizer = fmnist::optim::OptimizerConfig::adamw(2e-3);
    cfg.schedule = LrSchedule { kind: fmnist::train::ScheduleKind::one_cycle(), warmup_epochs: 0 };
    cfg.augment.erasing = fmnist::augment::RandomErasing::with_prob(0.5);
    cfg.ema = Some(0.9);
    cfg
}

/// SGD with Nesterov momentum and the moving average, without best-weights selection (so the
/// final model is the average).
fn nesterov_ema_config() -> TrainConfig {
    let mut cfg = small_config();
    cfg.optimizer =
        fmnist::optim::OptimizerConfig::Sgd { lr: 0.05, momentum: 0.9, weight_decay: 5e-4, nesterov: true };
    cfg.keep_best = false;
    cfg.ema = Some(0.95);
    cfg
}

/// [`small_config`] with mixup and CutMix, which draw from the augmentation stream.
fn mixing_config() -> TrainConfig {
    let mut cfg = small_config();
    cfg.mix = fmnist::mix::BatchMix { mixup: 0.4, cutmix: 1.0 };
    cfg
}

#[test]
fn a_run_stopped_after_any_unit_resumes_to_the_same_bits() {
    stop_anywhere_resume_same_bits(&small_config());
}

#[test]
fn a_run_with_adamw_one_cycle_erasing_and_ema_resumes_to_the_same_bits() {
    stop_anywhere_resume_same_bits(&featured_config());
}

#[test]
fn a_run_with_mixup_and_cutmix_resumes_to_the_same_bits() {
    stop_anywhere_resume_same_bits(&mixing_config());
}

#[test]
fn a_run_with_nesterov_and_ema_resumes_to_the_same_bits() {
    stop_anywhere_resume_same_bits(&nesterov_ema_config());
}

fn stop_anywhere_resume_same_bits(cfg: &TrainConfig) {
    let (train, val) = (bar_dataset(48, 1), bar_dataset(16, 2));
    let cfg = cfg.clone();

    let mut whole = small_model(5);
    let mut t = Trainer::new(&whole, &cfg, &train, &val, &mut Rng::new(9));
    let mut units = 0;
    while !matches!(t.advance(&mut whole, &mut Silent), Advance::Done) {
        units += 1;
    }
    let whole_fit = t.finish(&mut whole);
    // 48 images and their 48 copies in batches of 8: 12 steps and a validation per epoch.
    assert_eq!(units, 3 * 13);

    for stop in 0..=units {
        let mut first = small_model(5);
        let mut t = Trainer::new(&first, &cfg, &train, &val, &mut Rng::new(9));
        for _ in 0..stop {
            t.advance(&mut first, &mut Silent);
        }
        let bytes = checkpoint::encode_training(&info(), &t.snapshot(&first));
        drop(t);

        // A new process: a model initialised from another seed, a trainer built afresh.
        let mut second = small_model(77);
        let mut t = Trainer::new(&second, &cfg, &train, &val, &mut Rng::new(9));
        let ck = checkpoint::decode(bytes).unwrap().into_checkpoint(second.params()).unwrap();
        let Contents::Training(state) = ck.contents else { panic!("a run in progress") };
        t.restore(&mut second, *state).unwrap();
        while !matches!(t.advance(&mut second, &mut Silent), Advance::Done) {}
        let fit = t.finish(&mut second);

        assert!(bits(&second) == bits(&whole), "weights differ after a stop at unit {stop}");
        assert_eq!(exact_history(&fit.history), exact_history(&whole_fit.history), "stop at unit {stop}");
        assert_eq!(fit.best_epoch, whole_fit.best_epoch, "stop at unit {stop}");
    }
}

#[test]
fn every_truncation_and_every_flipped_byte_is_refused() {
    let (train, val) = (bar_dataset(16, 1), bar_dataset(8, 2));
    let cfg = TrainConfig { epochs: 1, batch_size: 8, ..TrainConfig::default() };
    let mut model = Sequential::new(
        &[1, 28, 28],
        &[LayerConfig::Flatten, LayerConfig::Dense { units: 10 }],
        Init::GlorotUniform,
        &mut Rng::new(1),
    )
    .unwrap();
    let mut t = Trainer::new(&model, &cfg, &train, &val, &mut Rng::new(2));
    t.advance(&mut model, &mut Silent);
    let bytes = checkpoint::encode_training(&info(), &t.snapshot(&model));
    assert!(checkpoint::decode(bytes.clone()).is_ok());
    for n in 0..bytes.len() {
        let err = checkpoint::decode(bytes[..n].to_vec()).unwrap_err();
        assert!(err.contains("truncated") || err.contains("not an fmnist checkpoint"), "cut at {n}: {err}");
    }
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x10;
        assert!(checkpoint::decode(b).is_err(), "a flipped bit at byte {i} went unnoticed");
    }
}

// ---------------------------------------------------------------------------------------------
// The binary.

const BIN: &str = env!("CARGO_BIN_EXE_fmnist");
/// How long a test waits for the program to reach a point: generous, for a loaded machine.
const PATIENCE: Duration = Duration::from_secs(180);

/// The recipe of the kill tests: `ours` (batch-norm, dropout, AdamW, one-cycle schedule,
/// label smoothing) with shifts, flips and one static copy of each image; 144 training images and
/// their copies in batches of 16: 18 steps an epoch, 54 in all; a checkpoint every 5 steps and
/// at each epoch's end.
const OURS: &[&str] = &[
    "--model",
    "ours",
    "--epochs",
    "3",
    "--batch-size",
    "16",
    "--limit",
    "160",
    "--shift",
    "2",
    "--flip",
    "0.5",
    "--static-copies",
    "1",
    "--checkpoint-every",
    "5",
];

struct Bench {
    root: PathBuf,
    data: PathBuf,
}

impl Bench {
    fn new(name: &str) -> Bench {
        let root = temp_dir(name);
        let data = root.join("data");
        std::fs::create_dir_all(&data).unwrap();
        write_bar_idx(&data, 200, 100, 7);
        Bench { root, data }
    }

    /// `train` with the data flags, the given flags, and a hold (point, marker) if any; its
    /// output goes to `<log>.out` and `<log>.err`.
    fn command(&self, flags: &[&str], hold: Option<(&str, &Path)>, log: &str) -> Command {
        self.limited(flags, hold, log, None)
    }

    /// [`Bench::command`], under a file-size limit of `bytes` when given: `sh` sets
    /// RLIMIT_FSIZE (which binds root too) and ignores SIGXFSZ, so a write past the limit fails
    /// with EFBIG, as on a full disk.
    fn limited(&self, flags: &[&str], hold: Option<(&str, &Path)>, log: &str, bytes: Option<u64>) -> Command {
        let mut c = match bytes {
            None => Command::new(BIN),
            Some(bytes) => {
                let mut c = Command::new("sh");
                let blocks = bytes / self.ulimit_unit();
                c.args(["-c", &format!("trap '' XFSZ; ulimit -f {blocks}; exec \"$@\""), "sh", BIN]);
                c
            }
        };
        c.args(["train", "--dataset", "mnist", "--no-download"]).env("FMNIST_PLAN", "rule");
        if !flags.contains(&"--data-dir") {
            c.args(["--data-dir", self.data.to_str().unwrap()]);
        }
        c.args(flags);
        if let Some((point, marker)) = hold {
            let _ = std::fs::remove_file(marker);
            c.env("FMNIST_TEST_HOLD", point).env("FMNIST_TEST_HOLD_FILE", marker);
        }
        let out = File::create(self.root.join(format!("{log}.out"))).unwrap();
        let err = File::create(self.root.join(format!("{log}.err"))).unwrap();
        c.stdin(Stdio::null()).stdout(out).stderr(err);
        c
    }

    /// The unit of `sh`'s `ulimit -f` (512 or 1024 bytes, depending on the shell), measured.
    fn ulimit_unit(&self) -> u64 {
        let probe = self.root.join("probe");
        let script =
            format!("trap '' XFSZ; ulimit -f 1; head -c 4096 /dev/zero > '{}' 2>/dev/null", probe.display());
        Command::new("sh").args(["-c", &script]).status().unwrap();
        let unit = std::fs::metadata(&probe).unwrap().len();
        assert!(unit == 512 || unit == 1024, "ulimit -f 1 let {unit} bytes through");
        unit
    }

    fn log(&self, log: &str) -> (String, String) {
        let read =
            |ext: &str| std::fs::read_to_string(self.root.join(format!("{log}.{ext}"))).unwrap_or_default();
        (read("out"), read("err"))
    }

    /// Runs `train` to its end; returns its status, stdout and stderr.
    fn run(&self, flags: &[&str], log: &str) -> (ExitStatus, String, String) {
        let status = self.command(flags, None, log).status().unwrap();
        let (o, e) = self.log(log);
        (status, o, e)
    }

    /// Runs `train` to its end and insists it succeeded.
    fn run_ok(&self, flags: &[&str], log: &str) -> String {
        let (status, o, e) = self.run(flags, log);
        assert!(status.success(), "train {flags:?} failed ({status}):\n{o}\n{e}");
        o
    }

    /// Starts `train` with a hold and waits until it is there.
    fn start_held(&self, flags: &[&str], point: &str, log: &str) -> Child {
        self.start_held_limited(flags, point, log, None)
    }

    fn start_held_limited(&self, flags: &[&str], point: &str, log: &str, bytes: Option<u64>) -> Child {
        let marker = self.root.join(format!("{log}.marker"));
        let mut child = self.limited(flags, Some((point, &marker)), log, bytes).spawn().unwrap();
        let t0 = Instant::now();
        while !marker.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                let (o, e) = self.log(log);
                panic!("train ended ({status}) before reaching {point}:\n{o}\n{e}");
            }
            assert!(t0.elapsed() < PATIENCE, "train did not reach {point} in {PATIENCE:?}");
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    /// Starts `train` with a hold, and SIGKILLs it there.
    fn kill_at(&self, flags: &[&str], point: &str, log: &str) {
        let mut child = self.start_held(flags, point, log);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn flags<'a>(recipe: &[&'a str], out: &'a Path) -> Vec<&'a str> {
    let mut v = recipe.to_vec();
    v.extend(["--out", out.to_str().unwrap()]);
    v
}

fn resume_flags(out: &Path) -> Vec<&str> {
    vec!["--resume", out.to_str().unwrap()]
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(ok.success(), "kill -{name} failed");
}

/// Waits (up to [`PATIENCE`]) for `child` to exit.
fn wait_exit(child: &mut Child) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(t0.elapsed() < PATIENCE, "train did not stop");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `needle` in a log's stdout.
fn wait_for_text(bench: &Bench, log: &str, needle: &str) {
    let t0 = Instant::now();
    while !bench.log(log).0.contains(needle) {
        assert!(t0.elapsed() < PATIENCE, "`{needle}` never appeared:\n{}", bench.log(log).0);
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A run folder's outcome that does not depend on the clock: every weight's bits, the
/// model file's metadata, the history's figures and the metrics.
#[derive(Debug, PartialEq)]
struct Outcome {
    weights: Vec<(String, Vec<u32>)>,
    preset: String,
    history: Vec<Vec<serde_json::Value>>,
    metrics: Vec<serde_json::Value>,
    config: serde_json::Value,
}

fn outcome(dir: &Path) -> Outcome {
    let saved = fmnist::modelfile::load(&dir.join("model.safetensors")).unwrap();
    let weights = saved
        .model
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value.data().iter().map(|v| v.to_bits()).collect()))
        .collect();
    let history = read_json(&dir.join("history.json"))
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            ["epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr"]
                .iter()
                .map(|k| e[k].clone())
                .collect()
        })
        .collect();
    let m = read_json(&dir.join("metrics.json"));
    let metrics =
        ["test_accuracy", "test_loss", "epochs", "best_epoch", "seed"].iter().map(|k| m[k].clone()).collect();
    let mut config = read_json(&dir.join("config.json"));
    config["threads"] = serde_json::Value::Null;
    Outcome { weights, preset: saved.preset, history, metrics, config }
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

#[test]
fn sigkill_anywhere_then_resume_gives_the_uninterrupted_bits() {
    let b = Bench::new("ckpt-kill");
    let (whole, cut) = (b.root.join("whole"), b.root.join("cut"));
    b.run_ok(&flags(OURS, &whole), "whole");
    let expected = outcome(&whole);

    // 1. Mid-epoch 1, after the checkpoint at step 5.
    b.kill_at(&flags(OURS, &cut), "step:7", "k1");
    assert!(cut.join(checkpoint::LATEST).is_file(), "a checkpoint after 5 steps");
    assert!(!cut.join("model.safetensors").exists() && !cut.join("config.json").exists());

    // 2. Halfway through writing the checkpoint of step 10: the file being written is a
    //    temporary one; the latest checkpoint stays the sound one of step 5.
    let resume = resume_flags(&cut);
    b.kill_at(&resume, "checkpoint:10", "k2");
    let (o, _) = b.log("k2");
    assert!(o.contains("Resuming from") && o.contains("epoch 1, batch 5 of 18"), "{o}");
    assert!(cut.join(".checkpoint.ckpt.tmp").is_file(), "the write was cut halfway");
    let loaded = checkpoint::read(&cut).unwrap().unwrap();
    assert!(loaded.warnings.is_empty() && loaded.decoded.position(18) == "epoch 1, batch 5 of 18");

    // 3. Before the validation of epoch 2.
    b.kill_at(&resume, "validation:2", "k3");
    assert!(b.log("k3").0.contains("Resuming from"), "{:?}", b.log("k3"));

    // 4. During a step: the kill follows the marker without a hold.
    b.kill_at(&resume, "mark-step:40", "k4");

    // 5. After training, with the final files written under temporary names, before the
    //    renames: none of them is in place yet.
    b.kill_at(&resume, "results", "k5");
    assert!(cut.join(".model.safetensors.tmp").is_file(), "{:?}", temp_files(&cut));
    assert!(!cut.join("model.safetensors").exists() && !cut.join("metrics.json").exists());

    // 6. To the end.
    let text = b.run_ok(&resume, "k6");
    assert!(text.contains("Resuming from"), "{text}");
    assert_eq!(outcome(&cut), expected, "the resumed run differs from the uninterrupted one");
    assert!(temp_files(&cut).is_empty(), "{:?}", temp_files(&cut));

    // A finished run has nothing to resume, and its files stay as they are.
    let before = std::fs::read(cut.join("metrics.json")).unwrap();
    let text = b.run_ok(&resume, "k7");
    assert!(text.contains("Nothing to resume"), "{text}");
    assert_eq!(std::fs::read(cut.join("metrics.json")).unwrap(), before);
}

#[test]
fn ctrl_c_and_sigterm_stop_with_a_checkpoint_and_resume_to_the_same_bits() {
    let b = Bench::new("ckpt-sigint");
    let (whole, cut) = (b.root.join("whole"), b.root.join("cut"));
    b.run_ok(&flags(OURS, &whole), "whole");
    let expected = outcome(&whole);

    // Ctrl-C while step 8 is about to run: the step finishes, a checkpoint is written.
    let mut child = b.start_held(&flags(OURS, &cut), "step:7", "int");
    signal(&child, "INT");
    let status = wait_exit(&mut child);
    let (o, e) = b.log("int");
    assert_eq!(status.code(), Some(130), "{o}\n{e}");
    assert!(o.contains("Interrupted by SIGINT (Ctrl-C): stopped at epoch 1, batch 8 of 18"), "{o}");
    assert!(o.contains(&format!("Resume with: {BIN} train --resume {}", cut.display())), "{o}");
    assert!(e.is_empty(), "{e}");
    let loaded = checkpoint::read(&cut).unwrap().unwrap();
    assert_eq!(loaded.decoded.position(18), "epoch 1, batch 8 of 18");

    // SIGTERM: the same, with 143.
    let resume = resume_flags(&cut);
    let mut child = b.start_held(&resume, "step:30", "term");
    signal(&child, "TERM");
    let status = wait_exit(&mut child);
    let (o, e) = b.log("term");
    assert_eq!(status.code(), Some(143), "{o}\n{e}");
    assert!(o.contains("Interrupted by SIGTERM: stopped at epoch 2, batch 13 of 18"), "{o}");

    // A second Ctrl-C quits at once, here while the first one's checkpoint cannot complete
    // (its write is held halfway), and leaves the last complete checkpoint.
    let mut child = b.start_held(&resume, "checkpoint:41", "twice");
    signal(&child, "INT");
    wait_for_text(&b, "twice", "press Ctrl-C again to quit at once");
    signal(&child, "INT");
    let status = wait_exit(&mut child);
    assert_eq!(status.code(), Some(130), "{:?}", b.log("twice"));
    assert!(!b.log("twice").0.contains("Resume with"), "it quit at once: {:?}", b.log("twice"));
    let loaded = checkpoint::read(&cut).unwrap().unwrap();
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.decoded.position(18), "the end of epoch 2", "the checkpoint after epoch 2");

    b.run_ok(&resume, "end");
    assert_eq!(outcome(&cut), expected);
}

#[test]
fn bad_checkpoints_are_passed_over_or_refused_and_the_recipe_is_enforced() {
    let b = Bench::new("ckpt-bad");
    let (whole, cut) = (b.root.join("whole"), b.root.join("cut"));
    b.run_ok(&flags(OURS, &whole), "whole");
    let expected = outcome(&whole);
    // A run killed after 25 steps: its latest checkpoint is the one of step 23, the previous
    // the one at the end of epoch 1.
    b.kill_at(&flags(OURS, &cut), "step:25", "kill");
    let copy = |name: &str| {
        let dir = b.root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(&cut).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        dir
    };

    // A flag that contradicts the recipe is refused with the flag named; nothing changes.
    let before = std::fs::read(cut.join(checkpoint::LATEST)).unwrap();
    for (flag, value, key) in [
        ("--epochs", "4", "train.epochs is 3 in the checkpoint, 4 here"),
        ("--seed", "1", "seed is 0 in the checkpoint, 1 here"),
        ("--model", "c1", "preset is \"ours\" in the checkpoint, \"c1\" here"),
        ("--no-augment", "", "train.augment"),
    ] {
        let mut f = resume_flags(&cut);
        f.push(flag);
        if !value.is_empty() {
            f.push(value);
        }
        let (status, o, e) = b.run(&f, "mismatch");
        assert_eq!(status.code(), Some(1), "{flag}: {o}\n{e}");
        assert_eq!(e.lines().count(), 1, "one line: {e}");
        assert!(e.starts_with(&format!("error: {flag} (")) && e.contains(key), "{flag}: {e}");
        assert!(e.contains("contradicts the recipe"), "{e}");
    }
    // Other data is refused too.
    let other = b.root.join("other-data");
    std::fs::create_dir_all(&other).unwrap();
    write_bar_idx(&other, 200, 100, 8);
    let mut f = resume_flags(&cut);
    f.extend(["--data-dir", other.to_str().unwrap()]);
    let (status, _, e) = b.run(&f, "other-data");
    assert_eq!(status.code(), Some(1));
    assert!(e.contains("is not the data this run was trained on"), "{e}");
    assert_eq!(std::fs::read(cut.join(checkpoint::LATEST)).unwrap(), before);

    // A truncated latest checkpoint: the previous one is used, with a warning, to the same bits
    // (with another thread count and the recipe's own --epochs repeated: both allowed).
    let truncated = copy("truncated");
    let latest = truncated.join(checkpoint::LATEST);
    let len = std::fs::metadata(&latest).unwrap().len();
    File::options().write(true).open(&latest).unwrap().set_len(len / 2).unwrap();
    let mut f = resume_flags(&truncated);
    f.extend(["--threads", "1", "--epochs", "3"]);
    let (status, o, e) = b.run(&f, "truncated");
    assert!(status.success(), "{o}\n{e}");
    assert!(e.contains("truncated") && e.contains("using the previous checkpoint"), "{e}");
    assert!(
        o.contains("Resuming from") && o.contains(checkpoint::PREVIOUS) && o.contains("the end of epoch 1"),
        "{o}"
    );
    assert_eq!(outcome(&truncated), expected);

    // A corrupt one (a flipped byte in its data): the same.
    let corrupt = copy("corrupt");
    let latest = corrupt.join(checkpoint::LATEST);
    let mut bytes = std::fs::read(&latest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&latest, &bytes).unwrap();
    let (status, o, e) = b.run(&resume_flags(&corrupt), "corrupt");
    assert!(status.success(), "{o}\n{e}");
    assert!(e.contains("fails its checksum") && e.contains("using the previous checkpoint"), "{e}");
    assert!(corrupt.join(format!("{}.bad", checkpoint::LATEST)).is_file(), "the bad one is set aside");
    assert_eq!(outcome(&corrupt), expected);

    // Both unsound: refused, one line, no panic.
    let both = copy("both");
    std::fs::write(both.join(checkpoint::LATEST), b"FMNCKPT\nnonsense").unwrap();
    std::fs::write(both.join(checkpoint::PREVIOUS), b"not a checkpoint").unwrap();
    let (status, o, e) = b.run(&resume_flags(&both), "both");
    assert_eq!(status.code(), Some(1), "{o}\n{e}");
    assert_eq!(e.lines().count(), 1, "{e}");
    assert!(e.contains("no sound checkpoint") && e.contains("not an fmnist checkpoint"), "{e}");
    assert!(!e.contains("panicked"), "{e}");

    // Nothing to resume.
    let empty = b.root.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let (status, _, e) = b.run(&resume_flags(&empty), "empty");
    assert_eq!(status.code(), Some(1));
    assert!(e.contains("no checkpoint"), "{e}");
    let (status, _, e) = b.run(&resume_flags(&b.root.join("missing")), "missing");
    assert_eq!(status.code(), Some(1));
    assert!(e.contains("no such run folder"), "{e}");
}

/// c1 in batches of 16 over 128 training images: 8 steps an epoch.
const C1: &[&str] = &["--model", "c1", "--epochs", "2", "--batch-size", "16", "--limit", "160"];

/// The new recipe items through the binary: SGD with Nesterov momentum, the one-cycle
/// schedule, random crops, random erasing and the weights' moving average, killed mid-epoch
/// and resumed: the same bits as the uninterrupted run; the flags are shown in the "Training"
/// line; a resume that drops `--ema` is refused, naming it.
#[test]
fn a_run_with_the_new_recipe_flags_resumes_to_the_same_bits() {
    let b = Bench::new("ckpt-recipe");
    let (whole, cut) = (b.root.join("whole"), b.root.join("cut"));
    let mut recipe = C1.to_vec();
    recipe.extend(["--optimizer", "sgd", "--nesterov", "--schedule", "one-cycle", "--crop-padding", "2"]);
    recipe.extend(["--random-erasing", "0.5", "--ema", "0.9", "--checkpoint-every", "3"]);
    let text = b.run_ok(&flags(&recipe, &whole), "whole");
    assert!(text.contains(", Nesterov") && text.contains("one-cycle schedule"), "{text}");
    assert!(text.contains("shifts +-2 px") && text.contains("random erasing p=0.5"), "{text}");
    assert!(text.contains("EMA of the weights (decay 0.9)"), "{text}");

    b.kill_at(&flags(&recipe, &cut), "step:5", "kill");
    let mut other = resume_flags(&cut);
    other.extend(["--ema", "0.5"]);
    let (status, _, e) = b.run(&other, "other-ema");
    assert_eq!(status.code(), Some(1));
    assert!(e.contains("--ema") && e.contains("contradicts"), "{e}");
    let text = b.run_ok(&resume_flags(&cut), "resume");
    assert!(text.contains("Resuming from"), "{text}");
    assert_eq!(outcome(&cut), outcome(&whole), "the resumed run differs from the uninterrupted one");
}

#[test]
fn runs_resume_in_the_interrupted_run_and_keep_the_finished_ones() {
    let b = Bench::new("ckpt-runs");
    let (whole, cut) = (b.root.join("whole"), b.root.join("cut"));
    let mut recipe = C1.to_vec();
    recipe.extend(["--runs", "3", "--seed", "4", "--checkpoint-every", "2"]);
    b.run_ok(&flags(&recipe, &whole), "whole");

    b.kill_at(&flags(&recipe, &cut), "run2/step:4", "kill");
    assert!(cut.join("run-1/model.safetensors").is_file() && !cut.join("run-2/model.safetensors").exists());
    let run1 = std::fs::read(cut.join("run-1/metrics.json")).unwrap();
    // One run's folder is not resumed alone.
    let (status, _, e) = b.run(&resume_flags(&cut.join("run-2")), "one-of-three");
    assert_eq!(status.code(), Some(1));
    assert!(
        e.contains("is run 2 of the 3 runs") && e.contains(&format!("--resume {}", cut.display())),
        "{e}"
    );

    let text = b.run_ok(&resume_flags(&cut), "resume");
    let run1_at = text.find("Run 1 of 3").unwrap();
    let run2_at = text.find("Run 2 of 3").unwrap();
    assert!(text[run1_at..run2_at].contains("Finished before"), "{text}");
    assert!(!text[run1_at..run2_at].contains("Epoch"), "run 1 is not trained again:\n{text}");
    assert!(
        text[run2_at..].contains("Resuming from") && text[run2_at..].contains("epoch 1, batch 4 of 8"),
        "{text}"
    );
    assert_eq!(std::fs::read(cut.join("run-1/metrics.json")).unwrap(), run1, "run 1's files are left alone");
    for k in 1..=3 {
        let run = format!("run-{k}");
        assert_eq!(outcome(&cut.join(&run)), outcome(&whole.join(&run)), "{run}");
        // A finished run keeps its final checkpoint, not the training one before it.
        for dir in [&cut, &whole] {
            assert!(dir.join(&run).join(checkpoint::LATEST).is_file(), "{run}: no final checkpoint");
            assert!(
                !dir.join(&run).join(checkpoint::PREVIOUS).exists(),
                "{run}: the previous checkpoint is left"
            );
        }
    }
    let (s1, s2) = (read_json(&whole.join("summary.json")), read_json(&cut.join("summary.json")));
    for key in [
        "test_accuracy_mean",
        "test_accuracy_std",
        "ensemble_test_accuracy",
        "ensemble_test_loss",
        "base_seed",
    ] {
        assert_eq!(s1[key], s2[key], "{key}");
    }
}

#[test]
fn a_full_disk_warns_keeps_the_last_good_checkpoint_and_never_half_replaces_a_run() {
    let b = Bench::new("ckpt-full");
    let (whole, cut, kept) = (b.root.join("whole"), b.root.join("cut"), b.root.join("kept"));
    let mut recipe = C1.to_vec();
    recipe.extend(["--checkpoint-every", "3"]);
    b.run_ok(&flags(&recipe, &whole), "whole");
    let expected = outcome(&whole);
    let model = std::fs::metadata(whole.join("model.safetensors")).unwrap().len();

    // Room for the model file (and the small checkpoint of the start), not for a checkpoint
    // with the weights and Adam's two moments: every one of those fails, with a warning.
    let room = Some(model * 2);
    let mut child = b.start_held_limited(&flags(&recipe, &cut), "step:12", "limited", room);
    child.kill().unwrap();
    child.wait().unwrap();
    let warnings = |log: &str| -> Vec<String> {
        let e = b.log(log).1;
        assert!(e.lines().all(|l| l.starts_with("warning: cannot write the checkpoint at ")), "{e}");
        e.lines().map(str::to_string).collect()
    };
    let w = warnings("limited");
    assert_eq!(w.len(), 4, "the checkpoints of steps 3, 6, 8 and 11: {w:?}");
    assert!(w[0].contains("at epoch 1, batch 3 of 8 to ") && w[0].contains("File too large"), "{w:?}");
    assert!(
        w.iter()
            .all(|l| l.ends_with("training goes on, the last good checkpoint is at the start of training")),
        "{w:?}"
    );
    // The last good checkpoint is intact: the start's.
    let loaded = checkpoint::read(&cut).unwrap().unwrap();
    assert!(loaded.warnings.is_empty());
    assert_eq!(loaded.decoded.position(8), "the start of training");
    assert!(temp_files(&cut).is_empty(), "{:?}", temp_files(&cut));

    // Resumed, still without room: training goes on to the end, and the files are right.
    let mut child = b.limited(&resume_flags(&cut), None, "limited-end", room).spawn().unwrap();
    assert!(wait_exit(&mut child).success(), "{:?}", b.log("limited-end"));
    assert_eq!(warnings("limited-end").len(), 6, "steps 3, 6, 8, 11, 14 and 16");
    assert_eq!(outcome(&cut), expected, "failed writes do not touch the training");
    assert!(temp_files(&cut).is_empty(), "{:?}", temp_files(&cut));

    // Too little room for the model file: the run fails at its end with one error line, and a
    // folder that held a run keeps it whole.
    std::fs::create_dir_all(&kept).unwrap();
    for f in ["config.json", "model.safetensors", "history.json", "history.csv", "metrics.json"] {
        std::fs::copy(whole.join(f), kept.join(f)).unwrap();
    }
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.file_name().to_string_lossy().into_owned(), std::fs::read(e.path()).unwrap()))
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&kept);
    let mut f = flags(&recipe, &kept);
    f.extend(["--overwrite", "--seed", "9"]);
    let mut child = b.limited(&f, None, "nospace", Some(model / 2)).spawn().unwrap();
    let status = wait_exit(&mut child);
    let (o, e) = b.log("nospace");
    assert_eq!(status.code(), Some(1), "{o}\n{e}");
    let errors: Vec<&str> = e.lines().filter(|l| !l.starts_with("warning: ")).collect();
    assert_eq!(errors.len(), 1, "{e}");
    assert!(errors[0].starts_with("error: cannot write ") && errors[0].contains("nothing in"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    let mut after = snapshot(&kept);
    // The start's checkpoint is the one file the run could write.
    after.retain(|(name, _)| name != checkpoint::LATEST);
    assert_eq!(after, before, "the earlier run's files are intact");
}

#[test]
fn a_new_run_refuses_a_folder_that_is_not_empty() {
    let b = Bench::new("ckpt-out");
    let out = b.root.join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("notes.txt"), "mine").unwrap();
    let (status, _, e) = b.run(&flags(C1, &out), "refused");
    assert_eq!(status.code(), Some(1));
    assert!(e.contains("is not empty") && e.contains("notes.txt") && e.contains("--overwrite"), "{e}");
    assert_eq!(std::fs::read_to_string(out.join("notes.txt")).unwrap(), "mine");

    // A folder with an interrupted run points to --resume.
    let cut = b.root.join("cut");
    b.kill_at(&flags(C1, &cut), "step:4", "kill");
    let (status, _, e) = b.run(&flags(C1, &cut), "interrupted");
    assert_eq!(status.code(), Some(1));
    assert!(e.contains(&format!("train --resume {}", cut.display())), "{e}");

    // --overwrite replaces a run (and drops its checkpoints, which belong to the old run).
    let mut f = flags(C1, &cut);
    f.extend(["--overwrite", "--seed", "2"]);
    b.run_ok(&f, "overwrite");
    assert_eq!(read_json(&cut.join("metrics.json"))["seed"], 2);
}
