//! Export of a classification run's point: the run's recipe with its paths rebased to the export
//! folder and an `[expected]` section (every deterministic metric of the run), which
//! `distill-tui run OUT/recipe.toml --verify` reproduces, plus the point's model folder (with its
//! card) or quantized file. The projects for other engines (`--target`) are language-model only.

use super::recipe::{ClassifyRecipe, LoadedClassify};
use crate::engine::context::JobContext;
use crate::engine::export::points::{FinishedRun, Point};
use crate::engine::export::rebase::rebase_path;
use crate::engine::export::{create_out, expected, recipe_dir, write_point, ExportRequest};
use crate::engine::hub::is_hf_uri;
use crate::engine::source::resolve;
use crate::engine::{Error, Result};
use serde_json::json;
use std::path::Path;

/// Exports `point` of the classification run `run`.
pub fn export(run: &FinishedRun, point: &Point, req: &ExportRequest, ctx: &JobContext) -> Result<serde_json::Value> {
    if !req.targets.is_empty() {
        return Err(Error::Invalid(
            "--target trl and --target llama.cpp export causal language models; a classification point exports \
             as its recipe and model alone"
                .into(),
        ));
    }
    let recipe_path = run.dir.join("recipe.toml");
    let recipe = ClassifyRecipe::parse(&run.recipe_text, &recipe_path.display().to_string())?;
    let lr = LoadedClassify { recipe, path: recipe_path, base_dir: recipe_dir(run) };
    let out = create_out(&req.out)?;
    let mut exported = rebased(&lr, &out);
    exported.expected = Some(expected(run, point));
    let text = exported.to_toml()?;
    let teacher = || {
        let spec = lr.recipe.teacher.model.as_deref().ok_or_else(|| {
            Error::Invalid("the run's teacher was built from a config and kept no folder to quantize".into())
        })?;
        resolve(&lr.model_spec(spec), ctx.hub(), &|_| {})
    };
    let files = write_point(run, point, &text, &out, teacher, ctx)?;
    Ok(json!({
        "point": point.name,
        "out": out.display().to_string(),
        "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        "warnings": Vec::<String>::new(),
    }))
}

/// The recipe `lr` as seen from the absolute folder `out`: data files, the teacher given as a path
/// and its tokenizer rebased (hub ids and `hf://` URIs stay as they are).
fn rebased(lr: &LoadedClassify, out: &Path) -> ClassifyRecipe {
    let from = &lr.base_dir;
    let path = |p: &str| if is_hf_uri(p) { p.to_string() } else { rebase_path(p, from, out) };
    let mut r = lr.recipe.clone();
    r.data.train = path(&r.data.train);
    r.data.eval = path(&r.data.eval);
    if let Some(m) = r.teacher.model.as_mut() {
        if lr.model_spec(m) != *m {
            *m = path(m);
        }
    }
    if let Some(t) = r.teacher.tokenizer.as_mut() {
        *t = path(t);
    }
    r.expected = None;
    r
}
