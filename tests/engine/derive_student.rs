//! Student derivation: DistilBERT-style layer copies, seeded random init, HF folders that load.

use crate::common;

use candle_core::Device;
use distill_tui::engine::derive::{derive_and_save, derive_student, layer_map, StudentShape};
use std::collections::BTreeSet;

fn shape(layers: usize) -> StudentShape {
    StudentShape { layers, ..StudentShape::default() }
}

#[test]
fn layer_map_takes_every_other_layer_like_distilbert() {
    assert_eq!(layer_map(12, 6), vec![0, 2, 4, 6, 8, 10]);
    assert_eq!(layer_map(30, 8), vec![0, 3, 7, 11, 15, 18, 22, 26]);
    assert_eq!(layer_map(4, 4), vec![0, 1, 2, 3]);
}

#[test]
fn derived_llama_copies_evenly_spaced_layers_and_saves_a_loadable_hf_folder() {
    let teacher = common::load_fixture("tiny-llama", false);
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("student");
    let report = derive_and_save(&teacher, &shape(2), 0, &dir).unwrap();
    assert_eq!(report.copied_layers, vec![0, 2]);
    assert!(report.embeddings_copied);
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(dir.join(f).is_file(), "{f} written");
    }
    assert_eq!(
        std::fs::read(dir.join("tokenizer.json")).unwrap(),
        std::fs::read(common::fixture("tiny-llama").join("tokenizer.json")).unwrap()
    );
    let student = common::load(dir.to_str().unwrap(), false);
    assert_eq!(student.config.layers(), 2);
    assert_eq!(student.info.parameters, report.parameters);
    // Exactly the teacher's key set restricted to two layers: nothing missing, nothing unexpected.
    let expected: BTreeSet<String> = teacher
        .params
        .keys()
        .filter(|k| {
            !k.starts_with("model.layers.") || k.starts_with("model.layers.0.") || k.starts_with("model.layers.1.")
        })
        .cloned()
        .collect();
    let stored: BTreeSet<String> =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap().into_keys().collect();
    assert_eq!(stored, expected);
    for (s, t) in [
        ("model.layers.1.mlp.up_proj.weight", "model.layers.2.mlp.up_proj.weight"),
        ("model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("model.embed_tokens.weight", "model.embed_tokens.weight"),
    ] {
        assert_eq!(common::max_abs_diff(&student.params[s], &teacher.params[t]), 0.0, "{s} copies teacher {t}");
    }
}

#[test]
fn qwen2_student_keeps_per_layer_lists_consistent() {
    let teacher = common::load_fixture("tiny-qwen2", false);
    let s = derive_student(&teacher, &shape(1), 0).unwrap();
    assert_eq!(s.config_json["num_hidden_layers"], 1);
    assert_eq!(s.config_json["layer_types"].as_array().unwrap().len(), 1);
    assert!(s.tensors.contains_key("lm_head.weight"), "untied head is kept");
    assert!(s.tensors.contains_key("model.layers.0.self_attn.q_proj.bias"));
}

#[test]
fn narrower_student_is_random_but_seeded() {
    let teacher = common::load_fixture("tiny-llama", false);
    let narrow = StudentShape { layers: 2, hidden: Some(32), heads: Some(2), kv_heads: Some(1), intermediate: None };
    let a = derive_student(&teacher, &narrow, 1).unwrap();
    let b = derive_student(&teacher, &narrow, 1).unwrap();
    let c = derive_student(&teacher, &narrow, 2).unwrap();
    assert!(a.copied_layers.is_empty() && !a.embeddings_copied);
    assert_eq!(a.config.hidden(), 32);
    assert_eq!(a.config.intermediate(), 88, "intermediate scales with hidden, rounded to 8");
    let w = "model.layers.0.mlp.gate_proj.weight";
    assert_eq!(common::max_abs_diff(&a.tensors[w], &b.tensors[w]), 0.0, "same seed, same weights");
    assert!(common::max_abs_diff(&a.tensors[w], &c.tensors[w]) > 0.0, "another seed, other weights");
    let e = derive_student(
        &teacher,
        &StudentShape { layers: 2, heads: Some(3), kv_heads: Some(2), ..StudentShape::default() },
        0,
    );
    assert!(e.err().unwrap().to_string().contains("multiple of kv heads"));
    assert!(derive_student(&teacher, &shape(0), 0).err().unwrap().to_string().contains("at least one layer"));
}

#[test]
fn gpt2_and_bert_students_copy_their_own_layer_names() {
    for (name, key) in [
        ("tiny-gpt2", "transformer.h.1.mlp.c_fc.weight"),
        ("tiny-bert-cls", "bert.encoder.layer.1.output.dense.weight"),
    ] {
        let teacher = common::load_fixture(name, false);
        let s = derive_student(&teacher, &shape(2), 0).unwrap();
        assert!(!s.copied_layers.is_empty(), "{name}: layers copied");
        let src = key.replace(".1.", &format!(".{}.", s.copied_layers[1]));
        assert_eq!(common::max_abs_diff(&s.tensors[key], &teacher.params[&src]), 0.0, "{name}: {key} from {src}");
    }
}

#[test]
fn transformers_loads_the_derived_student_without_missing_or_unexpected_keys() {
    if let Err(reason) = common::python_with(&["torch", "transformers"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let out = tempfile::tempdir().unwrap();
    for name in ["tiny-llama", "tiny-qwen2", "tiny-gpt2", "tiny-bert-cls"] {
        let teacher = common::load_fixture(name, false);
        let dir = out.path().join(name);
        derive_and_save(&teacher, &shape(2), 0, &dir).unwrap();
        let script = "import sys, transformers as t\n\
            cls = getattr(t, t.AutoConfig.from_pretrained(sys.argv[1]).architectures[0])\n\
            m, info = cls.from_pretrained(sys.argv[1], output_loading_info=True)\n\
            bad = {k: v for k, v in info.items() if k in ('missing_keys', 'unexpected_keys', 'mismatched_keys') and v}\n\
            assert not bad, bad\n\
            print('ok', sum(p.numel() for p in m.parameters()))";
        let o = std::process::Command::new("python3").args(["-c", script, dir.to_str().unwrap()]).output().unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

fn calib_text() -> String {
    let text = std::fs::read_to_string(common::shared_dir().join("data/austen/emma.txt")).unwrap();
    text[..60_000].to_string()
}

/// Importance-based pruning (Minitron): a plan that keeps everything is the teacher itself, logit
/// for logit; the parameter count of a shape is what pruning produces; the kept blocks are the most
/// important ones; a parameter target is met by a measured search.
#[test]
fn pruning_keeps_the_most_important_parts_and_keeping_everything_is_the_teacher() {
    use distill_tui::engine::context::Monitor;
    use distill_tui::engine::prune::{importance, parameters, plan, prune, pruned_model, search};
    use std::sync::atomic::AtomicBool;
    let cancel = AtomicBool::new(false);
    let monitor = Monitor::silent(&cancel);
    for name in ["tiny-llama", "tiny-qwen2"] {
        let teacher = common::load_fixture(name, false);
        let c = &teacher.config;
        let imp = importance(&teacher, &calib_text(), 64, 2048, &monitor).unwrap();
        assert_eq!(imp.blocks.len(), c.layers());
        assert!(imp.blocks.iter().all(|b| b.is_finite() && *b >= -1e-6 && *b <= 2.0), "{:?}", imp.blocks);
        let all = plan(&imp, c.layers(), c.kv_heads(), c.intermediate());
        let (config, tensors) = prune(&teacher, &imp, &all).unwrap();
        let same = pruned_model(&teacher, &config, &tensors).unwrap();
        let (ids, _) = common::golden(&common::fixture(name));
        let diff = common::max_abs_diff(&same.network.forward(&ids).unwrap(), &teacher.network.forward(&ids).unwrap());
        assert_eq!(diff, 0.0, "{name}: keeping everything reproduces the teacher");
        // A smaller shape: its parameter count, its blocks.
        let small = plan(&imp, c.layers() - 1, 1, c.intermediate() / 2);
        let mut dropped: Vec<usize> = (0..c.layers()).filter(|l| !small.layers.contains(l)).collect();
        assert_eq!(dropped.len(), 1);
        let weakest = (0..c.layers()).min_by(|&a, &b| imp.blocks[a].total_cmp(&imp.blocks[b])).unwrap();
        assert_eq!(dropped.pop(), Some(weakest), "{name}: the least important block goes");
        let (config, tensors) = prune(&teacher, &imp, &small).unwrap();
        let counted: u64 = tensors.values().map(|t| t.elem_count() as u64).sum();
        assert_eq!(parameters(&teacher, c.layers() - 1, 1, c.intermediate() / 2).unwrap(), counted);
        let m = pruned_model(&teacher, &config, &tensors).unwrap();
        assert_eq!(
            (m.config.layers(), m.config.kv_heads(), m.config.intermediate()),
            (c.layers() - 1, 1, c.intermediate() / 2)
        );
        assert_eq!(m.config.head_dim(), c.head_dim(), "{name}: head_dim kept");
        assert!(m
            .network
            .forward(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .all(|x| x.is_finite()));
        // A target: every candidate fits it, best (lowest calibration perplexity) first.
        let target = counted + 1000;
        let tokens: Vec<u32> = ids.flatten_all().unwrap().to_vec1().unwrap();
        let found = search(&teacher, &imp, target, None, &tokens, tokens.len(), &monitor).unwrap();
        assert!(!found.is_empty() && found.iter().all(|f| f.parameters <= target), "{name}");
        assert!(found.windows(2).all(|w| w[0].perplexity <= w[1].perplexity));
        // A fixed depth (a latency target): only widths are searched.
        let shallow = search(&teacher, &imp, target, Some(1), &tokens, tokens.len(), &monitor).unwrap();
        assert!(shallow.iter().all(|f| f.plan.layers.len() == 1 && f.parameters <= target));
        assert!(shallow.iter().any(|f| f.plan.intermediate == c.intermediate() && f.plan.kv_groups == c.kv_heads()));
        let err = search(&teacher, &imp, 10, None, &tokens, tokens.len(), &monitor).unwrap_err().to_string();
        assert!(err.contains("smallest pruned student"), "{err}");
    }
    let gpt2 = common::load_fixture("tiny-gpt2", false);
    let err = importance(&gpt2, &calib_text(), 64, 512, &monitor).unwrap_err().to_string();
    assert!(err.contains("Llama family"), "{err}");
}

/// `derive-student --prune --target-params`: a folder transformers loads with no missing or
/// unexpected keys and whose logits equal ours.
#[test]
fn a_pruned_student_from_the_command_line_loads_in_transformers_with_equal_logits() {
    let dir = tempfile::tempdir().unwrap();
    let calib = dir.path().join("calib.txt");
    std::fs::write(&calib, calib_text()).unwrap();
    let teacher = common::fixture("tiny-qwen2");
    let full = common::load_fixture("tiny-qwen2", false).info.parameters;
    let out = dir.path().join("pruned");
    let target = (full * 3 / 4).to_string();
    let args = [
        "derive-student",
        teacher.to_str().unwrap(),
        "--prune",
        "--target-params",
        &target,
        "--calib",
        calib.to_str().unwrap(),
        "--calib-tokens",
        "2048",
        "--seq-len",
        "64",
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    let (code, stdout, stderr) = common::run_cli(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(r["parameters"].as_u64().unwrap() <= full * 3 / 4, "{r}");
    assert!(r["perplexity_before_training"].as_f64().unwrap().is_finite());
    assert!(!r["candidates"].as_array().unwrap().is_empty());
    let student = common::load(out.to_str().unwrap(), false);
    assert_eq!(student.info.parameters, r["parameters"].as_u64().unwrap());
    assert_eq!(student.config.layers(), r["plan"]["layers"].as_array().unwrap().len());
    // Bad input: no calibration text, a target below any shape.
    let (code, _, stderr) = common::run_cli(
        &["derive-student", teacher.to_str().unwrap(), "--prune", "--target-params", "5", "--out", "x"],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--calib"), "{stderr}");
    if let Err(reason) = common::python_with(&["torch", "transformers"]) {
        eprintln!("skipped the transformers check: {reason}");
        return;
    }
    let (ids, _) = common::golden(&teacher);
    let ours: Vec<f32> = student.network.forward(&ids).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let id_list: Vec<Vec<u32>> = ids.to_vec2().unwrap();
    let script = "import sys, json, torch, transformers as t\n\
        cls = getattr(t, t.AutoConfig.from_pretrained(sys.argv[1]).architectures[0])\n\
        m, info = cls.from_pretrained(sys.argv[1], output_loading_info=True)\n\
        bad = {k: v for k, v in info.items() if k in ('missing_keys', 'unexpected_keys', 'mismatched_keys') and v}\n\
        assert not bad, bad\n\
        ids = torch.tensor(json.loads(sys.argv[2]))\n\
        print(json.dumps(m(ids).logits.flatten().tolist()))";
    let o = std::process::Command::new("python3")
        .args(["-c", script, out.to_str().unwrap(), &serde_json::to_string(&id_list).unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: Vec<f32> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(theirs.len(), ours.len());
    let diff = theirs.iter().zip(&ours).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(diff < 1e-3, "transformers vs ours: {diff}");
}
