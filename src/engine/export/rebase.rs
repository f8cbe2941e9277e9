//! The exported recipe: the run's recipe with every relative path rebased from the run's recipe
//! folder to the export folder, hub models pinned to the revision the run used, and the
//! provenance (whose data paths are rebased the same way, so they match the recipe's files).

use super::provenance::Provenance;
use crate::engine::recipe::{LoadedRecipe, Recipe};
use std::path::{Component, Path, PathBuf};

/// The recipe `lr` (resolved against `lr.base_dir`) as seen from the absolute folder `out`.
pub fn recipe(lr: &LoadedRecipe, prov: &Provenance, out: &Path) -> Recipe {
    let from = &lr.base_dir;
    let path = |p: &str| rebase_path(p, from, out);
    let model = |role: &str, spec: &str| {
        if lr.model_spec(spec) != spec {
            return path(spec);
        }
        match prov.models.iter().find(|m| m.role == role).and_then(|m| m.revision.as_ref().zip(m.hub_id.as_ref())) {
            Some((rev, _)) if !Path::new(spec).is_absolute() && !spec.contains('@') => pin(spec, rev),
            _ => spec.to_string(),
        }
    };
    let mut r = lr.recipe.clone();
    if let Some(t) = r.teacher.as_mut() {
        t.model = model("teacher", &t.model);
    }
    if let Some(s) = r.student.model.as_mut() {
        *s = model("student", s);
    }
    r.data.train = path(&r.data.train);
    r.data.eval = path(&r.data.eval);
    if let Some(tok) = r.pretrain.as_mut().and_then(|p| p.tokenizer.as_mut()) {
        *tok = path(tok);
    }
    let mut prov = prov.clone();
    for m in prov.models.iter_mut() {
        m.spec = model(&m.role, &m.spec);
    }
    for d in prov.data.iter_mut() {
        d.path = path(&d.path);
    }
    r.provenance = Some(prov);
    r.expected = None;
    r
}

/// `org/name` → `org/name@REV`; `org/name:file.gguf` → `org/name@REV:file.gguf`.
fn pin(spec: &str, rev: &str) -> String {
    match spec.split_once(':') {
        Some((id, file)) => format!("{id}@{rev}:{file}"),
        None => format!("{spec}@{rev}"),
    }
}

/// A recipe path relative to `from` made relative to `to` (both absolute); absolute paths stay.
pub fn rebase_path(p: &str, from: &Path, to: &Path) -> String {
    if Path::new(p).is_absolute() {
        return p.to_string();
    }
    relative_to(&normalize(&from.join(p)), &normalize(to)).display().to_string()
}

/// Removes `.` and folds `..` lexically (glob characters pass through).
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// The relative path from folder `base` to `target` (both absolute and normalized).
pub fn relative_to(target: &Path, base: &Path) -> PathBuf {
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &t[common..] {
        out.push(c.as_os_str());
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_rebased_lexically_and_hub_ids_pinned() {
        let from = Path::new("/w/assets/recipes");
        assert_eq!(
            rebase_path("../corpus/train/*.txt", from, Path::new("/w/exports/demo")),
            "../../assets/corpus/train/*.txt"
        );
        assert_eq!(rebase_path("eval.txt", from, Path::new("/w/assets/recipes/out")), "../eval.txt");
        assert_eq!(rebase_path("/abs/eval.txt", from, Path::new("/elsewhere")), "/abs/eval.txt");
        assert_eq!(relative_to(Path::new("/a/b"), Path::new("/a/b")), PathBuf::from("."));
        assert_eq!(pin("org/name", "abc123"), "org/name@abc123");
        assert_eq!(pin("org/name:m.Q4_0.gguf", "abc123"), "org/name@abc123:m.Q4_0.gguf");
    }
}
