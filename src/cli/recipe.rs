//! `train`'s flags resolved against the preset's recipe into a [`TrainPlan`] (the layers and
//! the [`TrainConfig`]), before any data is read; and the recipe's extras as the "Training
//! ..." line shows them. No I/O: reading the data and running the plan are `train.rs`'s.

use std::fmt::Write as _;

use super::{CliResult, OptimizerKind, ScheduleArg, TrainArgs};
use crate::limits::{
    self, MAX_BATCH_ACTIVATIONS, MAX_BATCH_SIZE, MAX_CUTOUT, MAX_EPOCHS, MAX_LIMIT, MAX_RUNS, MAX_SHIFT,
    MAX_STATIC_COPIES,
};
use crate::model::LayerConfig;
use crate::optim::OptimizerConfig;
use crate::presets::{self, Preset, INPUT_SHAPE};
use crate::train::{self, ScheduleKind, TrainConfig};

/// What `train` will do, resolved from the flags and the preset before any data is read.
#[derive(Clone, Debug)]
pub struct TrainPlan {
    pub preset: Preset,
    /// The preset's layers, less the batch-norm layers with `--no-batch-norm` and the dropout
    /// layers with `--no-dropout`.
    pub layers: Vec<LayerConfig>,
    pub cfg: TrainConfig,
    pub val_split: f32,
}

/// Resolves the flags against the preset's recipe: a flag given wins, the recipe fills the
/// rest. Checks every knob; the error names the flag or the knob.
pub fn plan_training(a: &TrainArgs) -> CliResult<TrainPlan> {
    let preset = match &a.arch {
        Some(path) => crate::arch::load(path)?,
        None => presets::preset(&a.model).ok_or_else(|| format!("unknown model `{}`", a.model))?,
    };
    let recipe = &preset.recipe;
    // The preset's optimizer unless another kind is asked for; then that kind's Keras defaults
    // (Adam 1e-3; SGD 0.01), SGD with momentum 0.9; AdamW with PyTorch's (1e-3, decay 0.01).
    let mut optimizer = match (a.optimizer, recipe.optimizer) {
        (None, o)
        | (Some(OptimizerKind::Adam), o @ OptimizerConfig::Adam { .. })
        | (Some(OptimizerKind::Adamw), o @ OptimizerConfig::AdamW { .. })
        | (Some(OptimizerKind::Sgd), o @ OptimizerConfig::Sgd { .. }) => o,
        (Some(OptimizerKind::Adam), _) => OptimizerConfig::adam(1e-3),
        (Some(OptimizerKind::Adamw), _) => OptimizerConfig::adamw(1e-3),
        (Some(OptimizerKind::Sgd), _) => OptimizerConfig::sgd(0.01, 0.9),
    };
    if let Some(lr) = a.lr {
        optimizer = optimizer.with_lr(lr);
    }
    if let Some(wd) = a.weight_decay {
        optimizer = train::with_weight_decay(optimizer, wd);
    }
    if a.nesterov {
        match &mut optimizer {
            OptimizerConfig::Sgd { nesterov, .. } => *nesterov = true,
            _ => return Err("--nesterov applies only to SGD; add --optimizer sgd".into()),
        }
    }
    let mut cfg = recipe.train_config();
    cfg.optimizer = optimizer;
    cfg.epochs = a.epochs.unwrap_or(recipe.epochs);
    cfg.batch_size = a.batch_size.unwrap_or(recipe.batch_size);
    cfg.label_smoothing = a.label_smoothing.unwrap_or(recipe.label_smoothing);

    let kind = match (a.schedule, recipe.schedule.kind) {
        (None, k) | (Some(ScheduleArg::Step), k @ ScheduleKind::Step { .. }) => k,
        (Some(ScheduleArg::Constant), _) => ScheduleKind::Constant,
        (Some(ScheduleArg::Cosine), _) => ScheduleKind::Cosine,
        (Some(ScheduleArg::OneCycle), k @ ScheduleKind::OneCycle { .. }) => k,
        (Some(ScheduleArg::OneCycle), _) => ScheduleKind::one_cycle(),
        (Some(ScheduleArg::Step), _) => {
            ScheduleKind::Step { every_epochs: cfg.epochs.div_ceil(3), gamma: 0.1 }
        }
    };
    cfg.schedule.kind = match kind {
        ScheduleKind::Step { every_epochs, gamma } => ScheduleKind::Step {
            every_epochs: a.step_epochs.unwrap_or(every_epochs),
            gamma: a.step_gamma.unwrap_or(gamma),
        },
        other => {
            if a.step_epochs.is_some() || a.step_gamma.is_some() {
                return Err("--step-epochs and --step-gamma apply only to --schedule step".into());
            }
            other
        }
    };
    cfg.schedule.warmup_epochs = a.warmup_epochs.unwrap_or(recipe.schedule.warmup_epochs);

    if a.no_augment {
        cfg.augment = Default::default();
        cfg.static_augment = Default::default();
        cfg.mix = Default::default();
    }
    // --crop-padding is --shift under PyTorch's name (clap refuses both at once).
    if let Some(m) = a.shift.or(a.crop_padding) {
        cfg.augment.max_shift = m;
    }
    if let Some(p) = a.flip {
        cfg.augment.flip_prob = p;
    }
    if let Some(c) = a.cutout {
        cfg.augment.cutout = c;
    }
    if let Some(p) = a.random_erasing {
        cfg.augment.erasing.prob = p;
    }
    if let Some(alpha) = a.mixup {
        cfg.mix.mixup = alpha;
    }
    if let Some(alpha) = a.cutmix {
        cfg.mix.cutmix = alpha;
    }
    if a.ema.is_some() {
        cfg.ema = a.ema;
    }
    if let Some(c) = a.static_copies {
        cfg.static_augment.copies = c;
        if c > 0 && recipe.static_augment.copies == 0 {
            // Switched on for a preset without copies: write-up E's transform.
            let e = crate::augment::StaticAugment::cmasch();
            cfg.static_augment.max_degrees = e.max_degrees;
            cfg.static_augment.flip_prob = e.flip_prob;
        }
    }
    if let Some(d) = a.static_rotation {
        cfg.static_augment.max_degrees = d;
    }
    if a.copies_before_split {
        if !cfg.static_augment.is_active() {
            return Err("--copies-before-split needs static copies; add --static-copies N".into());
        }
        cfg.static_augment.before_split = true;
    }
    cfg.validate()?;
    check_bounds(a, &cfg)?;

    let val_split = a.val_split.unwrap_or(recipe.val_split);
    if !(0.0..1.0).contains(&val_split) {
        return Err(format!("--val-split {val_split} is not in [0, 1)"));
    }
    if a.limit == Some(0) {
        return Err("--limit must be at least 1".into());
    }
    if a.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let mut layers = preset.layers.clone();
    layers.retain(|l| match l {
        LayerConfig::BatchNorm { .. } => !a.no_batch_norm,
        LayerConfig::Dropout { .. } => !a.no_dropout,
        _ => true,
    });
    // The batch's activations must fit: the model's size per image from a dry run.
    let arch = limits::check_architecture(&INPUT_SHAPE, &layers)
        .map_err(|e| format!("model {}: {e}", preset.name))?;
    if cfg.batch_size > arch.max_batch() {
        return Err(format!(
            "--batch-size {} is over the limit of {} for `{}`: at most {MAX_BATCH_ACTIVATIONS} activation \
             values (2^28) per batch, at {} per image",
            cfg.batch_size,
            arch.max_batch(),
            preset.name,
            arch.activation_values
        ));
    }
    Ok(TrainPlan { preset, layers, cfg, val_split })
}

/// The parts of the "Training ..." line beyond epochs, batch and optimizer; empty for the
/// write-ups' plain recipes, so their line reads as it always has.
pub(super) fn recipe_extras(cfg: &TrainConfig) -> String {
    let mut s = String::new();
    match cfg.schedule.kind {
        ScheduleKind::Constant => {}
        ScheduleKind::Cosine => s.push_str(", cosine schedule"),
        ScheduleKind::Step { every_epochs, gamma } => {
            let _ = write!(s, ", step schedule (x{gamma} every {every_epochs} epochs)");
        }
        ScheduleKind::OneCycle { pct_start, div_factor, final_div_factor } => {
            let _ = write!(
                s,
                ", one-cycle schedule (up over {}% of the steps from lr/{div_factor}, down to lr/{})",
                // As a person writes it: 30, not the f32's 30.000002.
                (pct_start as f64 * 100.0 * 1e4).round() / 1e4,
                div_factor * final_div_factor
            );
        }
    }
    if cfg.schedule.warmup_epochs > 0 {
        let _ = write!(s, ", {} warm-up epochs", cfg.schedule.warmup_epochs);
    }
    if cfg.label_smoothing > 0.0 {
        let _ = write!(s, ", label smoothing {}", cfg.label_smoothing);
    }
    if cfg.augment.max_shift > 0 {
        let _ = write!(s, ", shifts +-{} px", cfg.augment.max_shift);
    }
    if cfg.augment.flip_prob > 0.0 {
        let _ = write!(s, ", flips p={}", cfg.augment.flip_prob);
    }
    if cfg.augment.cutout > 0 {
        let _ = write!(s, ", cutout {}x{}", cfg.augment.cutout, cfg.augment.cutout);
    }
    let e = &cfg.augment.erasing;
    if !e.is_off() {
        let _ = write!(
            s,
            ", random erasing p={} (area {}-{}, ratio {}-{})",
            e.prob, e.scale[0], e.scale[1], e.ratio[0], e.ratio[1]
        );
    }
    if cfg.mix.mixup > 0.0 {
        let _ = write!(s, ", mixup alpha {}", cfg.mix.mixup);
    }
    if cfg.mix.cutmix > 0.0 {
        let _ = write!(s, ", CutMix alpha {}", cfg.mix.cutmix);
    }
    if let Some(d) = cfg.ema {
        let _ = write!(s, ", EMA of the weights (decay {d})");
    }
    s
}

/// Refuses flags over the bounds of [`crate::limits`]: each one sizes memory, threads or
/// time (and past some values overflows a step count), so a typo must not become an abort or
/// a run that never ends. The presets stay within the bounds.
fn check_bounds(a: &TrainArgs, cfg: &TrainConfig) -> CliResult<()> {
    let check = |flag: &str, value: usize, max: usize| {
        if value > max {
            Err(format!("{flag} {value} is over the limit of {max}"))
        } else {
            Ok(())
        }
    };
    check("--epochs", cfg.epochs, MAX_EPOCHS)?;
    check("--warmup-epochs", cfg.schedule.warmup_epochs, MAX_EPOCHS)?;
    if let ScheduleKind::Step { every_epochs, .. } = cfg.schedule.kind {
        check("--step-epochs", every_epochs, MAX_EPOCHS)?;
    }
    check("--batch-size", cfg.batch_size, MAX_BATCH_SIZE)?;
    check("--runs", a.runs, MAX_RUNS)?;
    check("--limit", a.limit.unwrap_or(0), MAX_LIMIT)?;
    check("--static-copies", cfg.static_augment.copies, MAX_STATIC_COPIES)?;
    let shift_flag = if a.crop_padding.is_some() { "--crop-padding" } else { "--shift" };
    check(shift_flag, cfg.augment.max_shift, MAX_SHIFT)?;
    check("--cutout", cfg.augment.cutout, MAX_CUTOUT)
}
