//! Acceptance: every fixture model under `$DISTILL_GOLDEN_DIR` (default `../shared/fixtures/models`)
//! that holds a `golden.safetensors` matches Hugging Face transformers' logits within 1e-4.

use crate::common;

#[test]
fn golden_logits() {
    let root = common::golden_dir();
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("golden.safetensors").is_file())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no fixture with golden.safetensors under {}", root.display());
    let mut failures = Vec::new();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let model = match std::panic::catch_unwind(|| common::load(dir.to_str().unwrap(), false)) {
            Ok(m) => m,
            Err(e) => {
                let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
                failures.push(format!("{name}: cannot run: {msg}"));
                continue;
            }
        };
        let (ids, expected) = common::golden(dir);
        let logits = model.network.forward(&ids).unwrap_or_else(|e| panic!("{name}: forward: {e}"));
        assert_eq!(logits.dims(), expected.dims(), "{name}: logits shape");
        let diff = common::max_abs_diff(&logits, &expected);
        println!("{name:<22} {:<8} max |Δlogits| = {diff:.2e}", model.info.model_type);
        if !(diff <= 1e-4) {
            failures.push(format!("{name}: max |Δlogits| = {diff:e} > 1e-4"));
        }
    }
    assert!(failures.is_empty(), "golden logits failed:\n{}", failures.join("\n"));
}
