//! What the commands read besides their flags: the dataset (found or downloaded by
//! [`crate::data::load`]) and saved model files, with the dataset a model was trained on.
//! Errors become the one-line messages the user sees; nothing is written here.

use std::path::Path;

use super::{CliResult, DataArgs};
use crate::data::{self, Dataset, DatasetKind, LoadOptions};
use crate::modelfile::{self, SavedModel};

pub(super) fn load_data(
    kind: DatasetKind,
    args: &DataArgs,
) -> CliResult<(Dataset, Dataset, data::DataSource)> {
    let opts = LoadOptions { kind, data_dir: args.data_dir.as_deref(), allow_download: !args.no_download };
    data::load(&opts).map_err(|e| e.to_string())
}

pub(super) fn dataset_kind_of(saved: &SavedModel) -> CliResult<DatasetKind> {
    match saved.dataset.as_str() {
        "fashion-mnist" => Ok(DatasetKind::Fashion),
        "mnist" => Ok(DatasetKind::Digits),
        other => Err(format!("the model was trained on an unknown dataset `{other}`")),
    }
}

pub(super) fn load_model(path: &Path) -> CliResult<SavedModel> {
    modelfile::load(path).map_err(|e| e.to_string())
}
