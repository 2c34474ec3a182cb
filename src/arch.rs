//! Architecture files: one experiment in a TOML file, the way a darknet `.cfg` file holds one.
//!
//! A file holds a `name`, a `description`, the `layers` (each a [`LayerConfig`]: `type` and
//! its options), and optionally a `[recipe]` table: how to train it. Every preset is such a
//! file (`models/*.toml`, built into the binary), read by the same code as a user's own file.
//!
//! ```toml
//! name = "tiny"
//! description = "one convolution"
//! layers = [
//!   { type = "conv2d", filters = 8, kernel = 3, padding = "same" },
//!   { type = "relu" },
//!   { type = "global_avg_pool" },
//!   { type = "dense", units = 10 },
//! ]
//!
//! [recipe]
//! epochs = 5
//! optimizer = "sgd"
//! lr = 0.05
//! ```
//!
//! Layer types and options (defaults in parentheses, after `=`):
//! - `conv2d`: `filters`, `kernel` (`3` or `[3, 3]`), `stride` (= 1), `padding` (= `"valid"`):
//!   `"valid"`, `"same"` (TensorFlow's: a 4x4 kernel pads 1 before, 2 after) or
//!   `{ explicit = { top = 1, left = 1, bottom = 2, right = 2 } }`;
//! - `max_pool`, `avg_pool`: `size`, `stride`; `global_avg_pool` (the mean of each channel,
//!   `[C, H, W]` -> `[C]`);
//! - `batch_norm`: `momentum` (= 0.99, Keras's convention), `eps` (= 1e-3); `relu`;
//!   `dropout`: `rate`; `flatten`; `dense`: `units`;
//! - `residual`: `layers` (the body, a list of layers like this one), whose output is added
//!   to the block's input; `projection` (= none) = `{ stride = 2, batch_norm = true }` puts a
//!   1x1 convolution (and a batch-norm) on the shortcut when the body changes the shape.
//!
//! Recipe keys (all optional; a flag given to `train` wins over the file, the file over the
//! defaults): `epochs` (= 10), `batch_size` (= 32), `optimizer` (= `"adam"`), `"sgd"` or
//! `"adamw"`, `lr` (= 1e-3 for Adam and AdamW, 0.01 for SGD), `momentum` (= 0.9, SGD),
//! `nesterov` (= false, SGD), `weight_decay` (= 0; AdamW's decoupled decay = 0.01),
//! `steps_per_epoch` (= a full pass), `val_split` (= 0.2), `schedule` (= `"constant"`),
//! `"cosine"`, `"step"` or `"one_cycle"`, `warmup_epochs` (= 0), `step_epochs` (= a third of
//! the epochs), `step_gamma` (= 0.1), `label_smoothing` (= 0), `shift` (= 0) or its PyTorch
//! name `crop_padding` (the same random crops; not both), `flip` (= 0), `cutout` (= 0),
//! `random_erasing` (= 0, the probability), `random_erasing_scale` (= `[0.02, 0.33]`),
//! `random_erasing_ratio` (= `[0.3, 3.3]`), `ema` (= none, the decay of the weights' moving
//! average), `mixup` and `cutmix` (= 0, their alpha; [`crate::mix`]), `static_copies`
//! (= 0), `static_rotation` (= 10), `static_flip` (= 0.5), `static_before_split` (= false;
//! true: the copies are made before the validation split, the write-up's notebook order).
//!
//! Unknown keys are refused, and every error names the file and, for a layer, its place:
//! `models/x.toml: layer 4 (dense): its input is [N, 64, 7, 7]; put a flatten (or
//! global_avg_pool) before it`. Shapes are checked by building the model before any data is
//! read ([`check`]).

use std::path::Path;

use kernels::Rng;
use serde::Deserialize;

use crate::augment::{BatchAugment, RandomErasing, StaticAugment};
use crate::mix::BatchMix;
use crate::model::{Init, LayerConfig, Sequential};
use crate::optim::OptimizerConfig;
use crate::presets::{Preset, Recipe, INPUT_SHAPE};
use crate::train::{LrSchedule, ScheduleKind};

/// The largest architecture file read (1 MiB: a network of thousands of layers).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// An architecture file as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchFile {
    name: Option<String>,
    #[serde(default)]
    description: String,
    layers: Vec<LayerConfig>,
    #[serde(default)]
    recipe: RecipeFile,
}

/// The `[recipe]` table: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecipeFile {
    epochs: Option<usize>,
    batch_size: Option<usize>,
    optimizer: Option<OptimizerName>,
    lr: Option<f32>,
    momentum: Option<f32>,
    nesterov: Option<bool>,
    weight_decay: Option<f32>,
    steps_per_epoch: Option<usize>,
    val_split: Option<f32>,
    schedule: Option<ScheduleName>,
    warmup_epochs: Option<usize>,
    step_epochs: Option<usize>,
    step_gamma: Option<f32>,
    label_smoothing: Option<f32>,
    shift: Option<usize>,
    crop_padding: Option<usize>,
    flip: Option<f32>,
    cutout: Option<usize>,
    random_erasing: Option<f32>,
    random_erasing_scale: Option<[f32; 2]>,
    random_erasing_ratio: Option<[f32; 2]>,
    ema: Option<f32>,
    mixup: Option<f32>,
    cutmix: Option<f32>,
    static_copies: Option<usize>,
    static_rotation: Option<f32>,
    static_flip: Option<f32>,
    static_before_split: Option<bool>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum OptimizerName {
    Adam,
    Sgd,
    #[serde(rename = "adamw")]
    AdamW,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ScheduleName {
    Constant,
    Cosine,
    Step,
    OneCycle,
}

impl RecipeFile {
    /// The recipe: the file's keys over the defaults (the write-ups': Adam 1e-3, batch 32,
    /// 10 epochs, 20% validation, nothing else). Keys that contradict each other are refused,
    /// the message naming them and the fix.
    fn recipe(&self) -> Result<Recipe, String> {
        let epochs = self.epochs.unwrap_or(10);
        let mut optimizer = match self.optimizer.unwrap_or(OptimizerName::Adam) {
            OptimizerName::Adam => OptimizerConfig::adam(1e-3),
            OptimizerName::AdamW => OptimizerConfig::adamw(1e-3),
            OptimizerName::Sgd => OptimizerConfig::Sgd {
                lr: 0.01,
                momentum: self.momentum.unwrap_or(0.9),
                weight_decay: 0.0,
                nesterov: self.nesterov.unwrap_or(false),
            },
        };
        if self.nesterov.is_some() && !matches!(optimizer, OptimizerConfig::Sgd { .. }) {
            return Err(
                "`nesterov` applies only to optimizer = \"sgd\"; remove it or set the optimizer".into()
            );
        }
        if self.shift.is_some() && self.crop_padding.is_some() {
            return Err("`shift` and `crop_padding` are the same random crops; give only one of them".into());
        }
        if let Some(lr) = self.lr {
            optimizer = optimizer.with_lr(lr);
        }
        if let Some(wd) = self.weight_decay {
            optimizer = crate::train::with_weight_decay(optimizer, wd);
        }
        let kind = match self.schedule.unwrap_or(ScheduleName::Constant) {
            ScheduleName::Constant => ScheduleKind::Constant,
            ScheduleName::Cosine => ScheduleKind::Cosine,
            ScheduleName::Step => ScheduleKind::Step {
                every_epochs: self.step_epochs.unwrap_or(epochs.div_ceil(3)),
                gamma: self.step_gamma.unwrap_or(0.1),
            },
            ScheduleName::OneCycle => ScheduleKind::one_cycle(),
        };
        let defaults = RandomErasing::default();
        let erasing = RandomErasing {
            prob: self.random_erasing.unwrap_or(0.0),
            scale: self.random_erasing_scale.unwrap_or(defaults.scale),
            ratio: self.random_erasing_ratio.unwrap_or(defaults.ratio),
        };
        if erasing.is_off() && (self.random_erasing_scale.is_some() || self.random_erasing_ratio.is_some()) {
            return Err("`random_erasing_scale` and `random_erasing_ratio` need `random_erasing` (its probability) above 0".into());
        }
        if self.static_before_split == Some(true) && self.static_copies.unwrap_or(0) == 0 {
            return Err("`static_before_split` needs `static_copies` above 0".into());
        }
        let e = StaticAugment::cmasch();
        Ok(Recipe {
            epochs,
            batch_size: self.batch_size.unwrap_or(32),
            optimizer,
            steps_per_epoch: self.steps_per_epoch,
            val_split: self.val_split.unwrap_or(0.2),
            schedule: LrSchedule { kind, warmup_epochs: self.warmup_epochs.unwrap_or(0) },
            label_smoothing: self.label_smoothing.unwrap_or(0.0),
            augment: BatchAugment {
                max_shift: self.shift.or(self.crop_padding).unwrap_or(0),
                flip_prob: self.flip.unwrap_or(0.0),
                cutout: self.cutout.unwrap_or(0),
                erasing,
            },
            static_augment: StaticAugment {
                copies: self.static_copies.unwrap_or(0),
                max_degrees: self.static_rotation.unwrap_or(e.max_degrees),
                flip_prob: self.static_flip.unwrap_or(e.flip_prob),
                before_split: self.static_before_split.unwrap_or(false),
            },
            ema: self.ema,
            mix: BatchMix { mixup: self.mixup.unwrap_or(0.0), cutmix: self.cutmix.unwrap_or(0.0) },
        })
    }
}

/// Parses an architecture file's text; `origin` names it in errors. `default_name` names a
/// file without a `name` key (its file stem).
pub fn parse(text: &str, origin: &str, default_name: &str) -> Result<Preset, String> {
    let file: ArchFile = toml::from_str(text).map_err(|e| {
        // toml's message spans several lines (the offending line, a caret); keep one line.
        let msg = e.message().trim().to_string();
        match e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1)) {
            Some(line) => format!("{origin}: line {line}: {msg}"),
            None => format!("{origin}: {msg}"),
        }
    })?;
    if file.layers.is_empty() {
        return Err(format!("{origin}: `layers` is empty; list the network's layers"));
    }
    let recipe = file.recipe.recipe().map_err(|e| format!("{origin}: [recipe]: {e}"))?;
    Ok(Preset {
        name: file.name.unwrap_or_else(|| default_name.to_string()),
        description: file.description,
        layers: file.layers,
        recipe,
    })
}

/// Reads and parses an architecture file, then [`check`]s that its layers fit the data.
pub fn load(path: &Path) -> Result<Preset, String> {
    use std::io::Read;
    let origin = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| format!("{origin}: cannot open: {e}"))?;
    let mut text = String::new();
    // Bounded: a device or a huge file is refused without being read to the end.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("{origin}: cannot read as UTF-8 text: {e}"))?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{origin}: larger than {MAX_FILE_BYTES} bytes; an architecture file is a short text"
        ));
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    parse_checked(&text, &origin, &stem)
}

/// [`parse`], then [`check`]: a file whose layers do not fit the data is an error naming it.
pub fn parse_checked(text: &str, origin: &str, default_name: &str) -> Result<Preset, String> {
    let preset = parse(text, origin, default_name)?;
    check(&preset.layers).map_err(|e| format!("{origin}: {e}"))?;
    Ok(preset)
}

/// Builds the layers for Fashion-MNIST's input, so that a layer that does not fit, or sizes
/// beyond the model's limits, are reported before any data is read or any training starts.
pub fn check(layers: &[LayerConfig]) -> Result<Sequential, String> {
    let model = Sequential::new(&INPUT_SHAPE, layers, Init::GlorotUniform, &mut Rng::new(0))
        .map_err(|e| e.to_string())?;
    match model.output_shape() {
        [10] => Ok(model),
        other => Err(format!("the network ends in {other:?}; it must end in 10 values (a `dense` layer of 10 units), one per class")),
    }
}
