//! A GGUF model kept in its file's block formats (`keep_quantized`, a GGUF teacher's default):
//! the same logits as the dequantized model, a fraction of the memory, and the per-tensor
//! fallback for a block type the kernels cannot multiply.

use crate::common;

use distill_tui::engine::context::Monitor;
use distill_tui::engine::loader::{load_model, LoadOptions, LoadedModel};
use distill_tui::engine::models::KvCache;
use distill_tui::engine::quant::{export, quantize_model, QuantFormat, QuantOptions};
use distill_tui::engine::source::resolve;
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The fixture quantized to `format` and exported to `dir/m.gguf`.
pub fn fixture_gguf(fixture: &str, format: &str, dir: &Path) -> std::path::PathBuf {
    let m = common::load_fixture(fixture, false);
    let silent = AtomicBool::new(false);
    let q =
        quantize_model(&m, QuantFormat::parse(format).unwrap(), &QuantOptions::default(), &Monitor::silent(&silent))
            .unwrap();
    let path = dir.join(format!("{fixture}-{format}.gguf"));
    export(&m, &q, &path).unwrap();
    path
}

fn load(path: &Path, keep_quantized: bool) -> LoadedModel {
    let resolved = resolve(path.to_str().unwrap(), &common::hub(), &|_| {}).unwrap();
    load_model(&resolved, &LoadOptions { keep_quantized, ..LoadOptions::default() }).unwrap()
}

/// Many-row products dequantize blocks into f32 GEMMs, so a prompt's logits equal the dequantized
/// model's up to summation order; one-token decoding multiplies blocks against 8-bit activations
/// (candle's and the project's one-row kernels), within the quantized-matmul tolerance.
#[test]
fn a_gguf_kept_in_its_block_formats_computes_the_dequantized_models_logits() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, format) in [("tiny-llama", "q8_0"), ("tiny-qwen2", "q4_0"), ("tiny-llama-student", "q5_1")] {
        let path = fixture_gguf(fixture, format, dir.path());
        let (native, dense) = (load(&path, true), load(&path, false));
        // Every block-quantized matrix stays in its blocks (the tied head is the token table);
        // norms, and matrices the file stores in f32 (rows too narrow for a block), are f32.
        assert_eq!(native.quantized.len() + native.params.len(), dense.params.len(), "{fixture}");
        assert!(native.quantized.keys().all(|n| dense.params[n].rank() == 2), "{fixture}");
        assert!(native.quantized.contains_key("model.embed_tokens.weight"), "{fixture}");
        assert_eq!(native.parameter_count(), dense.parameter_count(), "{fixture}");
        assert_eq!(native.info.parameters, dense.info.parameters, "{fixture}");
        let (nb, db) = (native.resident_weight_bytes(), dense.resident_weight_bytes());
        assert!((nb as f64) < 0.5 * db as f64, "{fixture} {format}: {nb} bytes kept vs {db} dequantized");

        let (ids, _) = common::golden(&common::fixture(fixture));
        let a = native.network.forward(&ids).unwrap();
        let b = dense.network.forward(&ids).unwrap();
        let r = native.dequantized_reference().unwrap().forward(&ids).unwrap();
        let (d_prompt, d_ref) = (common::max_abs_diff(&a, &b), common::max_abs_diff(&r, &b));
        assert!(d_prompt < 1e-4, "{fixture} {format}: prompt logits differ by {d_prompt}");
        assert!(d_ref < 1e-4, "{fixture} {format}: the dequantized reference differs by {d_ref}");

        // Decoding one token at a time from the cache.
        let row = ids.get(0).unwrap();
        let t = row.dim(0).unwrap();
        let mut cache = KvCache::new();
        let mut worst = 0f32;
        for i in 0..t {
            let step = row.narrow(0, i, 1).unwrap().unsqueeze(0).unwrap();
            let logits = native.network.forward_cached(&step, &mut cache).unwrap();
            let want = b.get(0).unwrap().get(i).unwrap().unsqueeze(0).unwrap();
            worst = worst.max(common::max_abs_diff(&logits, &want));
        }
        println!("{fixture} {format}: prompt Δ {d_prompt:.2e}, reference Δ {d_ref:.2e}, decode Δ {worst:.2e}, {nb} vs {db} bytes");
        assert!(worst < 3e-2, "{fixture} {format}: decoding differs by {worst}");
    }
}

/// A block type the kernels cannot multiply (here f16 matrices) is dequantized tensor by tensor,
/// with a note naming it, never a panic; the model still computes the same logits.
#[test]
fn a_block_type_the_kernels_cannot_multiply_falls_back_per_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture_gguf("tiny-llama", "f16", dir.path());
    let native = load(&path, true);
    assert!(native.quantized.is_empty());
    assert!(
        !native.notes.is_empty() && native.notes.iter().all(|n| n.contains("(f16) is dequantized")),
        "{:?}",
        native.notes
    );
    let dense = load(&path, false);
    let (ids, _) = common::golden(&common::fixture("tiny-llama"));
    let d = common::max_abs_diff(&native.network.forward(&ids).unwrap(), &dense.network.forward(&ids).unwrap());
    assert_eq!(d, 0.0);
}
