//! The `export` command: a saved model as a PyTorch module and state dict
//! ([`crate::export`]). It writes two files into the folder it is given and nothing else.

use super::load::load_model;
use super::{CliResult, ExportArgs};
use crate::export;
use crate::files::write_atomic;

pub(super) fn run_export(a: ExportArgs) -> CliResult<()> {
    let saved = load_model(&a.model_file)?;
    let (code, tensors) = export::pytorch(&saved);
    let state = export::state_dict_bytes(&tensors).map_err(|e| format!("{}: {e}", a.model_file.display()))?;
    let (py, st) = (a.pytorch.join("model.py"), a.pytorch.join("state_dict.safetensors"));
    for (path, bytes) in [(&py, code.as_bytes()), (&st, &state[..])] {
        write_atomic(path, bytes).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    println!("Wrote {} and {} ({} tensors)", py.display(), st.display(), tensors.len());
    Ok(())
}
