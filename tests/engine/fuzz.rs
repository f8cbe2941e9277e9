//! Mutation fuzzing of every reader of outside files: GGUF, safetensors (through the model loader),
//! tokenizer.json, recipes (both tasks) and model configs. Seeded mutations of real files; each
//! case must end in `Ok` or an error, never a panic (caught and reported with its seed and case).
//! The in-suite run is about 9,000 cases (a few seconds); `cargo test --release --test engine fuzz_long --
//! --ignored` runs a hundred times more.

use crate::common;
use distill_tui::engine::classify::recipe::ClassifyRecipe;
use distill_tui::engine::gguf::load_gguf;
use distill_tui::engine::loader::{load_model, LoadOptions};
use distill_tui::engine::models::ArchConfig;
use distill_tui::engine::recipe::Recipe;
use distill_tui::engine::source::resolve_folder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

const SEED: u64 = 0x5eed_f022;

/// `base` with 1 to 6 mutations, most of them in its first `hot` bytes (the header).
fn mutate(rng: &mut ChaCha8Rng, base: &[u8], hot: usize) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..rng.random_range(1..=6) {
        if b.is_empty() {
            break;
        }
        let span = if rng.random_bool(0.8) { hot.min(b.len()) } else { b.len() };
        let at = rng.random_range(0..span);
        match rng.random_range(0..7) {
            0 => b[at] ^= 1 << rng.random_range(0..8),
            1 => b[at] = [0x00, 0xff, 0x7f, 0x80][rng.random_range(0..4)],
            2 => {
                // A count or length made huge, tiny or random.
                let v: u64 = [u64::MAX, u64::MAX / 2, 1 << 40, 0, rng.random()][rng.random_range(0..5)];
                for (i, byte) in v.to_le_bytes().iter().enumerate() {
                    if at + i < b.len() {
                        b[at + i] = *byte;
                    }
                }
            }
            3 => b.truncate(at),
            4 => {
                let n = rng.random_range(1..16).min(b.len() - at);
                let chunk = b[at..at + n].to_vec();
                b.splice(at..at, chunk);
            }
            5 => b.insert(at, rng.random()),
            _ => {
                b.remove(at);
            }
        }
    }
    b
}

/// Runs `f` on each mutated case; a panic fails the test naming the reader and the case.
fn fuzz(name: &str, cases: usize, base: &[u8], hot: usize, f: impl Fn(&[u8])) {
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ name.len() as u64);
    for case in 0..cases {
        let bytes = mutate(&mut rng, base, hot);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&bytes)));
        assert!(outcome.is_ok(), "{name}: case {case} (seed {SEED:#x}) panicked");
    }
}

fn gguf_base(dir: &Path) -> Vec<u8> {
    use distill_tui::engine::context::Monitor;
    use distill_tui::engine::quant::{quantize_model, QuantFormat, QuantOptions};
    let m = common::load_fixture("tiny-llama", false);
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let q =
        quantize_model(&m, QuantFormat::parse("q8_0").unwrap(), &QuantOptions::default(), &Monitor::silent(&cancel))
            .unwrap();
    let path = dir.join("base.gguf");
    distill_tui::engine::quant::gguf_export::export_gguf(&m, &q, &path).unwrap();
    std::fs::read(path).unwrap()
}

fn run_all(scale: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fixture = common::fixture("tiny-llama");

    // GGUF: the header walk, candle's read, the tensors' extents and the loader behind them.
    let gguf = gguf_base(dir);
    let path = dir.join("case.gguf");
    fuzz("gguf", 300 * scale, &gguf, 4096, |b| {
        std::fs::write(&path, b).unwrap();
        let _ = load_gguf(&path, &candle_core::Device::Cpu);
    });

    // safetensors through the model loader (config and tokenizer beside it stay valid).
    let model = dir.join("model");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(fixture.join(f), model.join(f)).unwrap();
    }
    let weights = std::fs::read(fixture.join("model.safetensors")).unwrap();
    fuzz("safetensors", 300 * scale, &weights, 2048, |b| {
        std::fs::write(model.join("model.safetensors"), b).unwrap();
        if let Ok(r) = resolve_folder("fuzz", &model, Default::default()) {
            let _ = load_model(&r, &LoadOptions::default());
        }
    });

    // tokenizer.json.
    let tok = std::fs::read(fixture.join("tokenizer.json")).unwrap();
    let tok_path = dir.join("tokenizer.json");
    fuzz("tokenizer", 300 * scale, &tok, tok.len(), |b| {
        std::fs::write(&tok_path, b).unwrap();
        if let Ok(t) = distill_tui::engine::tokenizer::load_tokenizer(&tok_path) {
            let _ = t.encode("It is a truth universally acknowledged", false);
        }
    });

    // Recipes of both tasks.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, file) in
        [("recipe", "assets/recipes/demo.toml"), ("classify recipe", "assets/recipes/classify-novels.toml")]
    {
        let text = std::fs::read(root.join(file)).unwrap();
        fuzz(name, 400 * scale, &text, text.len(), |b| {
            let t = String::from_utf8_lossy(b);
            let _ = Recipe::parse(&t, "fuzz");
            let _ = ClassifyRecipe::parse(&t, "fuzz");
        });
    }

    // Model configs, as bytes and as values: every key set to an odd value in turn.
    for fixture in ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-bert-cls"] {
        let text = std::fs::read(common::fixture(fixture).join("config.json")).unwrap();
        let at = common::fixture(fixture).join("config.json");
        fuzz(fixture, 150 * scale, &text, text.len(), |b| {
            if let Ok(json) = serde_json::from_slice::<serde_json::Value>(b) {
                let _ = ArchConfig::from_json(&json, &at);
            }
        });
        let json: serde_json::Value = serde_json::from_slice(&text).unwrap();
        let odd = [
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!(1e300),
            serde_json::json!(u64::MAX),
            serde_json::json!("x"),
            serde_json::Value::Null,
            serde_json::json!([]),
            serde_json::json!({}),
        ];
        for key in json.as_object().unwrap().keys() {
            for v in &odd {
                let mut j = json.clone();
                j[key] = v.clone();
                let outcome = std::panic::catch_unwind(|| ArchConfig::from_json(&j, &at));
                assert!(outcome.is_ok(), "{fixture}: config with {key} = {v} panicked");
            }
        }
    }
}

#[test]
fn readers_never_panic_on_mutated_files() {
    run_all(4);
}

#[test]
#[ignore = "long: a hundred times the in-suite cases (cargo test --release --test engine fuzz_long -- --ignored)"]
fn fuzz_long() {
    run_all(100);
}

#[test]
fn gguf_tensors_must_be_aligned_inside_the_file_and_apart() {
    let tmp = tempfile::tempdir().unwrap();
    let base = gguf_base(tmp.path());
    let fields = distill_tui::engine::gguf::scan::scan(std::io::Cursor::new(&base), base.len() as u64).unwrap();
    let offset_at = |b: &[u8], i: usize| {
        u64::from_le_bytes(b[fields[i].offset_pos as usize..fields[i].offset_pos as usize + 8].try_into().unwrap())
    };
    let patched = |i: usize, v: u64| {
        let mut b = base.clone();
        b[fields[i].offset_pos as usize..fields[i].offset_pos as usize + 8].copy_from_slice(&v.to_le_bytes());
        let path = tmp.path().join(format!("patched-{i}-{v}.gguf"));
        std::fs::write(&path, b).unwrap();
        load_gguf(&path, &candle_core::Device::Cpu).unwrap_err().to_string()
    };
    let (first, second) = (offset_at(&base, 0), offset_at(&base, 1));
    let e = patched(1, first);
    assert!(e.contains("overlap"), "{e}");
    let e = patched(1, second + 1);
    assert!(e.contains("not a multiple of the alignment"), "{e}");
    let e = patched(1, 1 << 40);
    assert!(e.contains("past the end of the"), "{e}");
}
