//! `--target llama.cpp`: the llama.cpp commands that make and measure the chosen quantized point —
//! `convert_hf_to_gguf.py` (f32), `llama-quantize` to the point's type, `llama-perplexity` on the
//! run's held-out text — plus the same measurement of the GGUF distill-tui exported.

use super::points::{FinishedRun, Point};
use super::quant_file_name;
use crate::engine::events::Role;
use crate::engine::fsutil::write_atomic;
use crate::engine::quant::QuantFormat;
use crate::engine::recipe::LoadedRecipe;
use crate::engine::{Error, Result};
use std::path::{Path, PathBuf};

/// llama-quantize's type name for a format (`Q4_K` is its alias of `Q4_K_M`).
pub fn llama_type(format: QuantFormat) -> Option<String> {
    match format {
        QuantFormat::F32 | QuantFormat::F16 | QuantFormat::Ggml(_) | QuantFormat::Mix(_) | QuantFormat::Iq4Nl => {
            Some(format.name().to_ascii_uppercase())
        }
        QuantFormat::Int(_)
        | QuantFormat::Budget(_)
        | QuantFormat::GgmlGptq(_)
        | QuantFormat::MixGptq(_)
        | QuantFormat::Iq4NlGptq
        | QuantFormat::Awq(_) => None,
    }
}

/// The point must be quantized to a format llama.cpp has.
pub fn check(point: &Point, run: &FinishedRun) -> Result<()> {
    let valid: Vec<String> =
        run.points().into_iter().filter(|p| p.format.and_then(llama_type).is_some()).map(|p| p.name).collect();
    match point.format {
        Some(f) if llama_type(f).is_some() => Ok(()),
        _ => Err(Error::Invalid(format!(
            "--target llama.cpp needs a point quantized to a GGML format; `{}` is not one (valid: {})",
            point.name,
            if valid.is_empty() {
                "none — add a [quantize] section with q8_0, q4_k, … to the recipe".into()
            } else {
                valid.join(", ")
            }
        ))),
    }
}

/// Writes `dir/commands.sh`; paths in it are relative to `dir`, where it is meant to run.
pub fn write(lr: &LoadedRecipe, point: &Point, dir: &Path) -> Result<Vec<PathBuf>> {
    let format = point.format.ok_or_else(|| Error::Invalid("--target llama.cpp needs a quantized point".into()))?;
    let ty = llama_type(format).ok_or_else(|| Error::Invalid(format!("llama.cpp has no {} type", format.name())))?;
    let r = &lr.recipe;
    let model = match point.role {
        Role::Teacher => {
            let spec = r.teacher.as_ref().map(|t| t.model.clone()).unwrap_or_default();
            if Path::new(&spec).is_absolute() {
                format!("\"{spec}\"")
            } else if lr.model_spec(&spec) != spec {
                format!("\"../{spec}\"")
            } else {
                let (repo, _) = spec.split_once(':').unwrap_or((&spec, ""));
                let (id, rev) = repo.split_once('@').unwrap_or((repo, "main"));
                format!("\"$(huggingface-cli download {id} --revision {rev})\"")
            }
        }
        _ => "../model".into(),
    };
    let eval_files = lr.data_files(&r.data.eval, "data.eval")?;
    let eval: Vec<String> = eval_files
        .iter()
        .map(|p| {
            let rel = p.strip_prefix(&lr.base_dir).unwrap_or(p);
            if rel.is_absolute() {
                rel.display().to_string()
            } else {
                format!("../{}", rel.display())
            }
        })
        .map(|s| format!("\"{s}\""))
        .collect();
    // llama-perplexity scores the second half of each context window; distill-tui scores every
    // position of windows of seq_len. Both use the first eval_tokens tokens at most.
    let ctx = r.data.seq_len;
    let chunks = (r.data.eval_tokens / ctx).max(1);
    let ours = quant_file_name(point, format, true);
    let script = format!(
        "#!/usr/bin/env sh\n\
# The point `{name}` with llama.cpp: convert, quantize to {ty}, measure perplexity on the run's\n\
# held-out text. Run it from this folder with llama.cpp's tools on PATH and LLAMA_CPP set to a\n\
# llama.cpp checkout (for convert_hf_to_gguf.py).\n\
# distill-tui scores every position of windows of {ctx} tokens; llama-perplexity scores the second\n\
# half of each {ctx}-token chunk, so the numbers are comparable between the two GGUFs below, not\n\
# with distill-tui's perplexity. llama.cpp's {ty} may keep some tensors at higher precision than\n\
# distill-tui's policy (embeddings and head in the 8-bit type of the family).\n\
set -eu\n\
LLAMA_CPP=${{LLAMA_CPP:-llama.cpp}}\n\
cat {eval} > eval.txt\n\
python3 \"$LLAMA_CPP/convert_hf_to_gguf.py\" {model} --outtype f32 --outfile {role}-f32.gguf\n\
llama-quantize {role}-f32.gguf {name}-llama.gguf {ty}\n\
llama-perplexity -m {name}-llama.gguf -f eval.txt -c {ctx} --chunks {chunks}\n\
# The GGUF distill-tui wrote, measured the same way:\n\
llama-perplexity -m ../{ours} -f eval.txt -c {ctx} --chunks {chunks}\n",
        name = point.name,
        role = point.role.name(),
        eval = eval.join(" "),
    );
    let path = dir.join("commands.sh");
    write_atomic(&path, script.as_bytes())?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755));
    }
    Ok(vec![path])
}
