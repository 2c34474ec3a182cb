//! The plan as data: how each layer with weights runs on the fast engine, chosen by timing on
//! the machine that runs (`kernels::planner`), cached per machine, recorded in a run folder,
//! and replayed with `--plan FILE`.
//!
//! A plan lists the model's layers with weights in order ([`Sequential::planned_layers`]):
//! each entry's *key* is what the choice depends on (a convolution's input, kernel, stride,
//! padding, filters, the max-pool fused after it, whether it computes its input gradient; a
//! dense layer's inputs and units), its *choice* what runs (for a convolution the forward
//! and backward paths, the input gradient's way and the images per group; for a dense layer
//! whether one image's pass is split between threads). Beside them, the *machine* the choices
//! were measured on: the CPU (`/proc/cpuinfo`'s model name, family, model and stepping), the
//! SIMD width of the build, the thread count, and the crate version with a hash of the
//! kernels' source (so a rebuild with changed kernels measures again).
//!
//! Where the choices come from ([`prepare`]):
//! 1. `--plan FILE`: that plan, exactly; it must list this model's layers, key for key (a
//!    plan of another model, a malformed or an oversized file is a one-line error). The same
//!    plan gives the same bits, at any thread count.
//! 2. `FMNIST_PLAN=rule` in the environment: the rules of `kernels::conv_plan` and
//!    `kernels::dense_plan`, nothing measured or cached. The library's own default
//!    ([`Sequential::new`]) is the rule too; the tests use it, so they never depend on a
//!    measurement.
//! 3. Otherwise the cache (`$XDG_CACHE_HOME/fmnist/plans.json`, or `~/.cache/fmnist/`): one
//!    entry per machine and layer key, shared by every model with that layer. A layer not in
//!    it is measured (within [`PLAN_BUDGET`] for the whole model; past it, the rule) and
//!    added, and the cache is rewritten through a temporary file and a rename. A cache that
//!    cannot be read or parsed is ignored with a one-line warning and rebuilt.
//!
//! A measured plan may differ between thread counts (the fastest path at one thread is not
//! always the fastest at two), so unlike the rule's it may change the last bits of a result
//! when the thread count changes; replaying the run folder's `plan.json` gives its bits again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kernels::planner::{self, Budget, ConvLayer};
use kernels::{ConvChoice, ConvPath, DenseChoice, Engine, InputGradWay};
use serde::{Deserialize, Serialize};

use crate::files::write_atomic;
use crate::limits::{read_file, MAX_PLAN_CACHE_BYTES, MAX_PLAN_FILE_BYTES};
use crate::model::{Choice, Planned, Sequential};

/// The first field of a plan file.
pub const PLAN_FORMAT: &str = "fmnist-plan-1";
/// The first field of the cache.
pub const CACHE_FORMAT: &str = "fmnist-plan-cache-2";
/// The time after which no new measurement starts; layers (or phases of a convolution's
/// measurement) not started by then keep the rule. One phase may still run past it, so
/// planning a model takes at most about 2 s (measured: README, Performance).
pub const PLAN_BUDGET: Duration = Duration::from_millis(1600);
/// The environment variable that selects the rule (`FMNIST_PLAN=rule`).
pub const PLAN_ENV: &str = "FMNIST_PLAN";
/// The most entries the cache keeps (about 3 MiB of JSON).
const MAX_CACHE_ENTRIES: usize = 10_000;
/// The plan's file name in a run folder.
pub const RUN_PLAN_FILE: &str = "plan.json";

/// The machine a plan was measured on.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Machine {
    /// `/proc/cpuinfo`'s model name with its family, model and stepping ("AMD EPYC (family
    /// 25, model 1, stepping 1)"; [`cpu_of`]), or "unknown".
    pub cpu: String,
    /// The SIMD width compiled in (`kernels::simd::describe`).
    pub simd: String,
    /// rayon's threads.
    pub threads: usize,
    /// This crate's version and the kernels' source hash (`kernels::SOURCE_ID`): a plan
    /// measured with other kernels is not reused.
    pub version: String,
}

impl Machine {
    /// This machine, with rayon's current thread count.
    pub fn here() -> Machine {
        let cpu =
            std::fs::read_to_string("/proc/cpuinfo").map(|s| cpu_of(&s)).unwrap_or_else(|_| "unknown".into());
        Machine {
            cpu,
            simd: kernels::simd::describe().into(),
            threads: rayon::current_num_threads(),
            version: format!("{}+{}", env!("CARGO_PKG_VERSION"), kernels::SOURCE_ID),
        }
    }
}

/// The CPU that `/proc/cpuinfo`'s text names: the first core's model name, then its family,
/// model and stepping where the file has them (x86). Virtual machines often report a bare
/// "AMD EPYC" for every generation (Zen 3 without AVX-512 and Zen 4 with it alike), and the
/// fastest choice differs between them; "unknown" without a model name.
pub fn cpu_of(cpuinfo: &str) -> String {
    let field = |name: &str| {
        cpuinfo
            .lines()
            .take_while(|l| !l.trim().is_empty()) // the first core's block
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim() == name)
            .map(|(_, v)| v.trim().to_string())
    };
    let Some(name) = field("model name") else { return "unknown".into() };
    match (field("cpu family"), field("model"), field("stepping")) {
        (Some(f), Some(m), Some(st)) => format!("{name} (family {f}, model {m}, stepping {st})"),
        _ => name,
    }
}

/// What a layer's choice depends on (module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerKey {
    Conv2d {
        /// `[C, H, W]`.
        input: [usize; 3],
        filters: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        /// `[top, left, bottom, right]`.
        padding: [usize; 4],
        /// The fused max-pool's `[size, stride]`.
        pool: Option<[usize; 2]>,
        input_grad: bool,
    },
    Dense {
        inputs: usize,
        units: usize,
    },
}

impl std::fmt::Display for LayerKey {
    /// One line for an error message: `conv2d 32@3x3 s1 on [1, 28, 28], padding [1, 1, 1, 1],
    /// then ReLU and max-pool 2/2, input gradient`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayerKey::Conv2d { input, filters, kernel, stride, padding, pool, input_grad } => {
                write!(f, "conv2d {filters}@{}x{} s", kernel[0], kernel[1])?;
                if stride[0] == stride[1] {
                    write!(f, "{}", stride[0])?;
                } else {
                    write!(f, "{}x{}", stride[0], stride[1])?;
                }
                write!(f, " on {input:?}, padding {padding:?}")?;
                if let Some([size, stride]) = pool {
                    write!(f, ", then ReLU and max-pool {size}/{stride}")?;
                }
                if *input_grad {
                    write!(f, ", input gradient")?;
                }
                Ok(())
            }
            LayerKey::Dense { inputs, units } => write!(f, "dense {inputs} -> {units}"),
        }
    }
}

/// A convolution path, as files name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathName {
    Direct,
    Implicit,
    Im2col,
}

/// A way of the input gradient, as files name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WayName {
    Direct,
    Implicit,
    Scatter,
    Gemm,
}

/// A layer's choice, as files write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LayerChoice {
    Conv2d {
        forward: PathName,
        backward: PathName,
        input_grad: WayName,
        group: usize,
        /// The backward of a pooled gradient from the windows' argmaxes alone; absent (false)
        /// in plans written before it existed, which replay as they ran.
        #[serde(default, skip_serializing_if = "is_false")]
        sparse: bool,
    },
    Dense {
        split_one_image: bool,
    },
}

/// One layer of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The layer's label (`4`, or `3.1` in block 3).
    pub layer: String,
    pub key: LayerKey,
    pub choice: LayerChoice,
    /// How the choice was made: "measured", "cache" (measured earlier), "rule", or "replayed".
    pub source: String,
}

/// A model's plan: what `plan.json` and `--plan FILE` hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanFile {
    pub format: String,
    pub machine: Machine,
    pub layers: Vec<Entry>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn path_name(p: ConvPath) -> PathName {
    match p {
        ConvPath::Direct => PathName::Direct,
        ConvPath::Implicit => PathName::Implicit,
        ConvPath::Im2col => PathName::Im2col,
    }
}

fn conv_path(p: PathName) -> ConvPath {
    match p {
        PathName::Direct => ConvPath::Direct,
        PathName::Implicit => ConvPath::Implicit,
        PathName::Im2col => ConvPath::Im2col,
    }
}

fn way_name(w: InputGradWay) -> WayName {
    match w {
        InputGradWay::Direct => WayName::Direct,
        InputGradWay::Implicit => WayName::Implicit,
        InputGradWay::Scatter => WayName::Scatter,
        InputGradWay::Gemm => WayName::Gemm,
    }
}

fn input_grad_way(w: WayName) -> InputGradWay {
    match w {
        WayName::Direct => InputGradWay::Direct,
        WayName::Implicit => InputGradWay::Implicit,
        WayName::Scatter => InputGradWay::Scatter,
        WayName::Gemm => InputGradWay::Gemm,
    }
}

impl LayerChoice {
    fn of(c: Choice, threads: usize, key: &LayerKey) -> LayerChoice {
        match c {
            Choice::Conv(c) => LayerChoice::Conv2d {
                forward: path_name(c.forward),
                backward: path_name(c.backward),
                input_grad: way_name(c.input_grad),
                group: c.group,
                sparse: c.sparse,
            },
            Choice::Dense(d) => {
                let split = d.split_one_image.unwrap_or_else(|| match *key {
                    LayerKey::Dense { inputs, units } => DenseChoice::rule_splits(inputs, units, threads),
                    LayerKey::Conv2d { .. } => false,
                });
                LayerChoice::Dense { split_one_image: split }
            }
        }
    }

    fn to_choice(self) -> Choice {
        match self {
            LayerChoice::Conv2d { forward, backward, input_grad, group, sparse } => {
                Choice::Conv(ConvChoice {
                    forward: conv_path(forward),
                    backward: conv_path(backward),
                    input_grad: input_grad_way(input_grad),
                    group,
                    sparse,
                })
            }
            LayerChoice::Dense { split_one_image } => {
                Choice::Dense(DenseChoice { split_one_image: Some(split_one_image) })
            }
        }
    }
}

/// The key of one planned layer, and what the planner needs to time it.
fn key_of(p: &Planned) -> (String, LayerKey) {
    match p {
        Planned::Conv { label, plan, pool, input_grad } => {
            let g = plan.geom();
            let key = LayerKey::Conv2d {
                input: [g.c, g.h, g.w],
                filters: plan.filters(),
                kernel: [g.kh, g.kw],
                stride: [g.stride_h, g.stride_w],
                padding: [g.pad_top, g.pad_left, g.pad_bottom, g.pad_right],
                pool: pool.map(|p| [p.k, p.stride]),
                input_grad: *input_grad,
            };
            (label.clone(), key)
        }
        Planned::Dense { label, plan } => {
            let (inputs, units) = plan.dims();
            (label.clone(), LayerKey::Dense { inputs, units })
        }
    }
}

/// The plan `model` runs now, with every entry marked `source`.
pub fn current(model: &Sequential, source: &str) -> PlanFile {
    let machine = Machine::here();
    let layers = model
        .planned_layers()
        .iter()
        .map(|p| {
            let (layer, key) = key_of(p);
            let choice = match p {
                Planned::Conv { plan, .. } => {
                    Choice::Conv(plan.choice().unwrap_or_else(|| ConvChoice::rule(plan.geom())))
                }
                Planned::Dense { plan, .. } => Choice::Dense(plan.choice()),
            };
            let choice = LayerChoice::of(choice, machine.threads, &key);
            Entry { layer, key, choice, source: source.into() }
        })
        .collect();
    PlanFile { format: PLAN_FORMAT.into(), machine, layers }
}

/// Reads and checks a plan file (at most [`MAX_PLAN_FILE_BYTES`]).
pub fn read(path: &Path) -> Result<PlanFile, String> {
    let shown = path.display();
    let bytes = read_file(path, MAX_PLAN_FILE_BYTES).map_err(|e| format!("--plan {shown}: {e}"))?;
    let plan: PlanFile = serde_json::from_slice(&bytes)
        .map_err(|e| format!("--plan {shown}: not a plan file written by fmnist ({e})"))?;
    if plan.format != PLAN_FORMAT {
        return Err(format!("--plan {shown}: format `{}`, expected `{PLAN_FORMAT}`", plan.format));
    }
    Ok(plan)
}

/// Runs `model` as `plan` says. An error, with the model unchanged, when the plan lists other
/// layers than the model's (another model's plan) or a choice that does not take its layer.
pub fn apply(model: &mut Sequential, plan: &PlanFile) -> Result<(), String> {
    let keys: Vec<(String, LayerKey)> = model.planned_layers().iter().map(key_of).collect();
    if keys.len() != plan.layers.len() {
        return Err(format!(
            "the plan lists {} layers with weights, the model has {}: it was made for another model",
            plan.layers.len(),
            keys.len()
        ));
    }
    for ((label, key), e) in keys.iter().zip(&plan.layers) {
        if *key != e.key {
            return Err(format!(
                "layer {label} is {key} here, but the plan's entry {} is {}: it was made for another model",
                e.layer, e.key
            ));
        }
    }
    let choices: Vec<Choice> = plan.layers.iter().map(|e| e.choice.to_choice()).collect();
    model.set_choices(&choices)
}

/// The per-machine cache: each machine's choices by layer key.
#[derive(Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cache {
    format: String,
    entries: Vec<CacheEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheEntry {
    machine: Machine,
    key: LayerKey,
    choice: LayerChoice,
}

/// Where the cache lives: `$XDG_CACHE_HOME/fmnist/plans.json`, else `$HOME/.cache/fmnist/
/// plans.json`; `None` without either.
pub fn cache_path() -> Option<PathBuf> {
    let base =
        std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("fmnist").join("plans.json"))
}

/// The cache at `path`: empty if there is none, with a warning if it cannot be used.
fn load_cache(path: &Path) -> (Cache, Option<String>) {
    let empty = Cache { format: CACHE_FORMAT.into(), entries: Vec::new() };
    if !path.exists() {
        return (empty, None);
    }
    let warn = |why: String| {
        Some(format!("warning: ignoring the plan cache {} ({why}); it is rebuilt", path.display()))
    };
    let bytes = match read_file(path, MAX_PLAN_CACHE_BYTES) {
        Ok(b) => b,
        Err(e) => return (empty, warn(e.to_string())),
    };
    match serde_json::from_slice::<Cache>(&bytes) {
        Ok(c) if c.format == CACHE_FORMAT => (c, None),
        Ok(c) => (empty, warn(format!("format `{}`", c.format))),
        Err(e) => (empty, warn(format!("not a plan cache: {e}"))),
    }
}

/// How [`prepare`] chose.
pub struct Prepared {
    /// The plan the model now runs.
    pub plan: PlanFile,
    /// One line for the console; none for the rule chosen by `FMNIST_PLAN=rule` (the tests'
    /// setting, whose outputs stay as they were).
    pub message: Option<String>,
}

/// Chooses how `model` runs (module docs: `--plan FILE`, `FMNIST_PLAN=rule`, or the cache
/// and measurements), applies it and returns it; `None` on the reference engine, which needs
/// no plan. Warnings (an unusable cache) go to stderr.
pub fn prepare(model: &mut Sequential, plan_file: Option<&Path>) -> Result<Option<Prepared>, String> {
    if let Some(path) = plan_file {
        let plan = read(path)?;
        if model.engine() == Engine::Reference {
            return Ok(None);
        }
        apply(model, &plan).map_err(|e| format!("--plan {}: {e}", path.display()))?;
        let mut replayed = plan;
        replayed.layers.iter_mut().for_each(|e| e.source = "replayed".into());
        let message = format!("plan: replayed {} ({} layer choices)", path.display(), replayed.layers.len());
        return Ok(Some(Prepared { plan: replayed, message: Some(message) }));
    }
    if model.engine() == Engine::Reference {
        return Ok(None);
    }
    let rule_env = std::env::var(PLAN_ENV).is_ok_and(|v| v == "rule");
    let rule = current(model, "rule");
    if rule_env {
        return Ok(Some(Prepared { plan: rule, message: None }));
    }
    let start = Instant::now();
    let cache_file = cache_path();
    let (mut cache, warning) = match &cache_file {
        Some(p) => load_cache(p),
        None => (Cache { format: CACHE_FORMAT.into(), entries: Vec::new() }, None),
    };
    if let Some(w) = warning {
        eprintln!("{w}");
    }
    let machine = rule.machine.clone();
    let known: HashMap<(&Machine, &LayerKey), LayerChoice> =
        cache.entries.iter().map(|e| ((&e.machine, &e.key), e.choice)).collect();
    let planned = model.planned_layers();
    let budget = Budget::new(PLAN_BUDGET);
    let (mut measured, mut timed, mut from_cache) = (0, 0, 0);
    let mut entries = Vec::with_capacity(planned.len());
    let mut new_entries = Vec::new();
    for (p, rule_entry) in planned.iter().zip(&rule.layers) {
        let (layer, key) = key_of(p);
        if let Some(&choice) = known.get(&(&machine, &key)) {
            // A stored choice that no longer takes the layer (another build) is measured again.
            if p.takes(&choice.to_choice()).is_ok() {
                from_cache += 1;
                entries.push(Entry { layer, key, choice, source: "cache".into() });
                continue;
            }
        }
        let result = match p {
            Planned::Conv { plan, pool, input_grad, .. } => {
                let layer =
                    ConvLayer { g: *plan.geom(), oc: plan.filters(), pool: *pool, input_grad: *input_grad };
                planner::measure_conv(&layer, &budget).map(|(c, n, all)| (Choice::Conv(c), n, all))
            }
            Planned::Dense { plan, .. } => {
                let (fin, fout) = plan.dims();
                planner::measure_dense(fin, fout, &budget).map(|(c, n)| (Choice::Dense(c), n, true))
            }
        };
        match result {
            Some((choice, n, complete)) => {
                measured += 1;
                timed += n;
                let choice = LayerChoice::of(choice, machine.threads, &key);
                // A choice measured in part (the budget ran out) is used, not cached.
                if complete {
                    new_entries.push(CacheEntry { machine: machine.clone(), key: key.clone(), choice });
                }
                let source = if complete { "measured" } else { "measured in part, the rest by the rule" };
                entries.push(Entry { layer, key, choice, source: source.into() });
            }
            None => entries.push(rule_entry.clone()),
        }
    }
    drop(known);
    drop(planned);
    let plan = PlanFile { format: PLAN_FORMAT.into(), machine, layers: entries };
    apply(model, &plan)?;
    let ruled = plan.layers.len() - measured - from_cache;
    let where_ = cache_file.as_ref().map_or("nowhere (no cache folder)".into(), |p| p.display().to_string());
    let mut message = String::from("plan: ");
    if measured > 0 {
        let stored = match (&cache_file, new_entries.is_empty()) {
            (_, true) => "not cached (measured in part)".to_string(),
            (None, false) => "not cached (neither XDG_CACHE_HOME nor HOME is set)".to_string(),
            (Some(p), false) => {
                cache.entries.extend(new_entries);
                // The oldest entries go first when the cache is full.
                let over = cache.entries.len().saturating_sub(MAX_CACHE_ENTRIES);
                cache.entries.drain(..over);
                let text = serde_json::to_string_pretty(&cache).expect("plain data") + "\n";
                match write_atomic(p, text.as_bytes()) {
                    Ok(()) => format!("cached in {where_}"),
                    Err(e) => format!("not cached ({where_}: {e})"),
                }
            }
        };
        message += &format!(
            "measured {measured} layer choices ({timed} candidates timed) in {:.2} s, {stored}",
            start.elapsed().as_secs_f64()
        );
    } else {
        message += &format!(
            "{from_cache} layer choices from the cache {where_} ({:.1} ms)",
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    if measured > 0 && from_cache > 0 {
        message += &format!("; {from_cache} from the cache");
    }
    if ruled > 0 {
        message += &format!("; {ruled} by the rule (the {:.1} s budget ran out)", PLAN_BUDGET.as_secs_f64());
    }
    Ok(Some(Prepared { plan, message: Some(message) }))
}

/// `plan` as the JSON text of a plan file.
pub fn to_json(plan: &PlanFile) -> String {
    serde_json::to_string_pretty(plan).expect("plain data") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error names a layer in words, written out here by hand.
    #[test]
    fn a_layer_key_reads_as_one_line() {
        let conv = LayerKey::Conv2d {
            input: [32, 28, 28],
            filters: 32,
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1, 1, 1],
            pool: Some([2, 2]),
            input_grad: true,
        };
        assert_eq!(
            conv.to_string(),
            "conv2d 32@3x3 s1 on [32, 28, 28], padding [1, 1, 1, 1], then ReLU and max-pool 2/2, input gradient"
        );
        let first = LayerKey::Conv2d {
            input: [1, 28, 28],
            filters: 8,
            kernel: [5, 3],
            stride: [2, 1],
            padding: [0, 0, 0, 0],
            pool: None,
            input_grad: false,
        };
        assert_eq!(first.to_string(), "conv2d 8@5x3 s2x1 on [1, 28, 28], padding [0, 0, 0, 0]");
        assert_eq!(LayerKey::Dense { inputs: 3136, units: 256 }.to_string(), "dense 3136 -> 256");
    }

    /// The model name alone when the family is missing (ARM's cpuinfo has none), with the
    /// family, model and stepping when they are there; only the first core's block counts.
    #[test]
    fn the_cpu_is_named_with_its_family_model_and_stepping() {
        let epyc = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n\
                    model name\t: AMD EPYC\nstepping\t: 1\n\nprocessor\t: 1\nmodel name\t: Other\n";
        assert_eq!(cpu_of(epyc), "AMD EPYC (family 25, model 1, stepping 1)");
        assert_eq!(cpu_of("processor\t: 0\nmodel name\t: Some ARM core\n"), "Some ARM core");
        assert_eq!(cpu_of("processor\t: 0\nBogoMIPS\t: 50.00\n"), "unknown");
        assert_eq!(cpu_of(""), "unknown");
    }

    /// A cache that is not one (garbage, another format, too large, a folder) is ignored with
    /// one warning line naming it, never a panic; no cache at all is simply empty.
    #[test]
    fn an_unusable_cache_is_ignored_with_a_warning() {
        let dir = std::env::temp_dir().join(format!("fmnist-plan-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plans.json");
        let (c, w) = load_cache(&path);
        assert!(c.entries.is_empty() && w.is_none(), "no file: {w:?}");
        let too_large = vec![b' '; MAX_PLAN_CACHE_BYTES as usize + 1];
        for bytes in [&b"{\"format\": 3"[..], b"{\"format\": \"other\", \"entries\": []}", b"", &too_large] {
            std::fs::write(&path, bytes).unwrap();
            let (c, w) = load_cache(&path);
            let w = w.expect("a warning");
            assert!(c.entries.is_empty(), "{w}");
            assert!(w.starts_with("warning: ignoring the plan cache") && w.contains("plans.json"), "{w}");
            assert_eq!(w.lines().count(), 1, "{w}");
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir_all(&path).unwrap();
        assert!(load_cache(&path).1.expect("a warning").contains("folder"));
        // A good cache loads.
        std::fs::remove_dir(&path).unwrap();
        let entry = CacheEntry {
            machine: Machine::here(),
            key: LayerKey::Dense { inputs: 3, units: 4 },
            choice: LayerChoice::Dense { split_one_image: false },
        };
        let cache = Cache { format: CACHE_FORMAT.into(), entries: vec![entry] };
        std::fs::write(&path, serde_json::to_string(&cache).unwrap()).unwrap();
        let (c, w) = load_cache(&path);
        assert!(w.is_none() && c.entries.len() == 1, "{w:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
