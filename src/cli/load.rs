//! What the commands read besides their flags: the dataset (found or downloaded by
//! [`crate::data::load`]) and saved model files, with the dataset a model was trained on; and
//! the checks that a model fits the data it is about to run on. Errors become the one-line
//! messages the user sees; nothing is written here.

use std::path::Path;

use super::{CliResult, DataArgs};
use crate::data::{self, Dataset, DatasetKind, LoadOptions, NUM_CLASSES};
use crate::limits::{self, MAX_BATCH_SIZE};
use crate::modelfile::{self, SavedModel};

pub(super) fn load_data(
    kind: DatasetKind,
    args: &DataArgs,
) -> CliResult<(Dataset, Dataset, data::DataSource)> {
    let opts = LoadOptions { kind, data_dir: args.data_dir.as_deref(), allow_download: !args.no_download };
    data::load(&opts).map_err(|e| e.to_string())
}

pub(super) fn dataset_kind_of(saved: &SavedModel) -> CliResult<DatasetKind> {
    DatasetKind::from_folder(&saved.dataset)
        .ok_or_else(|| format!("the model was trained on an unknown dataset `{}`", saved.dataset))
}

pub(super) fn load_model(path: &Path) -> CliResult<SavedModel> {
    modelfile::load(path).map_err(|e| e.to_string())
}

/// Checks that the model at `path` takes the images of `ds` and gives one output per class,
/// so that nothing downstream (ops, kernels, reports) meets a shape it cannot handle.
pub(super) fn check_fits(path: &Path, saved: &SavedModel, ds: &Dataset) -> CliResult<()> {
    let shown = path.display();
    let want = [1, ds.rows, ds.cols];
    if saved.model.input_shape != want {
        return Err(format!(
            "{shown}: the model takes inputs of shape {:?}, but the images it would run on are {:?} \
             (channels, height, width)",
            saved.model.input_shape, want
        ));
    }
    let outputs = saved.model.output_shape();
    if outputs != [NUM_CLASSES] || saved.classes.len() != NUM_CLASSES {
        return Err(format!(
            "{shown}: the model gives outputs of shape {outputs:?} for {} class names, but the data has \
             {NUM_CLASSES} classes",
            saved.classes.len()
        ));
    }
    Ok(())
}

/// The batch size to evaluate the model at `path` with: `requested` (or `default`), at least
/// 1, at most [`MAX_BATCH_SIZE`] and at most what keeps a batch's activations within
/// [`limits::MAX_BATCH_ACTIVATIONS`]. A default is lowered to fit; a requested size that does
/// not fit is an error.
pub(super) fn batch_size_for(
    path: &Path,
    saved: &SavedModel,
    requested: Option<usize>,
    default: usize,
) -> CliResult<usize> {
    let arch = limits::check_architecture(&saved.model.input_shape, &saved.model.configs)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let cap = arch.max_batch().min(MAX_BATCH_SIZE);
    match requested {
        None => Ok(default.min(cap)),
        Some(0) => Err("--batch-size must be at least 1".into()),
        Some(n) if n > cap => Err(format!(
            "--batch-size {n} is over the limit of {cap} for this model (at most {MAX_BATCH_SIZE}, and at \
             most {} activation values per batch at {} per image)",
            limits::MAX_BATCH_ACTIVATIONS,
            arch.activation_values
        )),
        Some(n) => Ok(n),
    }
}

/// Refuses outputs that are not finite: weights that are finite one by one can still
/// overflow f32 together, and NaN probabilities would print as a plausible 10% accuracy.
pub(super) fn check_outputs(path: &Path, probabilities: &[f32], loss: f32) -> CliResult<()> {
    let k = NUM_CLASSES;
    let bad = probabilities.iter().position(|p| !p.is_finite());
    if bad.is_some() || !loss.is_finite() {
        let at = bad.map(|i| format!(" (image {})", i / k)).unwrap_or_default();
        return Err(format!(
            "{}: the model's outputs are not finite numbers{at}: its weights overflow f32 on this data",
            path.display()
        ));
    }
    Ok(())
}
