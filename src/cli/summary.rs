//! The `summary` command: the architecture table of a preset or of a saved model. It builds
//! or loads the model only to print it; no data is read and no training runs. (The summary of
//! several training runs is `multi_run.rs`'s.)

use kernels::Rng;

use super::load::load_model;
use super::{set_threads, CliResult, SummaryArgs};
use crate::presets::{self, INPUT_SHAPE};
use crate::{Init, Sequential};

pub(super) fn run_summary(a: SummaryArgs) -> CliResult<()> {
    set_threads(None)?;
    let mut model = match (a.of.model, a.of.model_file, a.of.arch) {
        (_, _, Some(path)) => {
            let p = crate::arch::load(&path)?;
            println!("Model: {} - {}", p.name, p.description);
            crate::arch::check(&p.layers).map_err(|e| format!("{}: {e}", path.display()))?
        }
        (Some(name), _, None) => {
            let p = presets::preset(&name).ok_or_else(|| format!("unknown model `{name}`"))?;
            println!("Model: {} - {}", p.name, p.description);
            Sequential::new(&INPUT_SHAPE, &p.layers, Init::GlorotUniform, &mut Rng::new(0))
                .map_err(|e| e.to_string())?
        }
        (None, Some(path), None) => {
            let saved = load_model(&path)?;
            println!("Model file: {} ({}, {})", path.display(), saved.preset, saved.dataset);
            saved.model
        }
        (None, None, None) => return Err("give --model, --model-file or --arch".into()),
    };
    // The "Runs as" column: the plan file's choices, or the rule's (no measuring here).
    let source = match &a.plan {
        Some(path) => {
            crate::planfile::prepare(&mut model, Some(path))?;
            format!("the plan {}", path.display())
        }
        None => "the rule; `train` measures each layer on this machine (`--plan` shows a run's)".into(),
    };
    print!("{}", model.summary());
    println!("Runs as: {source}");
    Ok(())
}
