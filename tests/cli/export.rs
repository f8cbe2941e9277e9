//! Export (issue 6): a finished run's point as a reproducible recipe and artifacts. An export
//! reruns to identical metrics with `run --verify`; the HF folder loads in transformers with the
//! same logits; the GGUF reads back through candle and our loader; the trl project's step-0 loss
//! equals ours; bad input (unknown point, missing run, changed file) is refused with exit code 2.

use crate::common;

use candle_core::Device;
use distill_tui::engine::gguf::load_gguf;
use distill_tui::engine::quant::{quantize_model, QuantFormat, QuantOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

/// A small distillation with a quantization sweep over the fixture teacher, run in `dir`.
/// Returns the run directory and the run's JSON events.
fn finished_run(dir: &Path) -> (PathBuf, Vec<Value>) {
    run_recipe(dir, "derive = { layers = 2 }", "temperature = 2.0\nalpha = 0.7\n")
}

/// [`finished_run`] with another `[student]` line and more `[distill]` keys.
fn run_recipe(dir: &Path, student: &str, distill: &str) -> (PathBuf, Vec<Value>) {
    run_recipe_quantizing(dir, student, distill, "formats = [\"q8_0\", \"q4_0\"]")
}

/// [`run_recipe`] with another `[quantize]` section (its targets are the student).
fn run_recipe_quantizing(dir: &Path, student: &str, distill: &str, quantize: &str) -> (PathBuf, Vec<Value>) {
    let austen = common::shared_dir().join("data/austen");
    let text = std::fs::read_to_string(austen.join("emma.txt")).unwrap();
    std::fs::write(dir.join("train.txt"), &text[..60_000]).unwrap();
    let eval = std::fs::read_to_string(austen.join("persuasion.txt")).unwrap();
    std::fs::write(dir.join("eval.txt"), &eval[..12_000]).unwrap();
    let run_dir = dir.join("runs/a");
    let recipe = format!(
        "[teacher]\nmodel = \"{}\"\n[student]\n{student}\n[data]\ntrain = \"train.txt\"\neval = \"eval.txt\"\n\
         seq_len = 32\neval_tokens = 512\n[distill]\nsteps = 4\nbatch_size = 4\nwarmup_steps = 1\neval_every = 2\n\
         checkpoint_every = 2\ncache_top_k = 0\n{distill}\n\
         [quantize]\n{quantize}\ntargets = [\"student\"]\n[output]\ndir = \"{}\"\n",
        common::fixture("tiny-llama").display(),
        run_dir.display()
    );
    std::fs::write(dir.join("r.toml"), recipe).unwrap();
    let (code, stdout, stderr) = cli(dir, &["run", dir.join("r.toml").to_str().unwrap(), "--json"]);
    assert_eq!(code, 0, "{stderr}");
    (run_dir, stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
}

fn cli(dir: &Path, args: &[&str]) -> (i32, String, String) {
    common::run_cli(args, &[("DISTILL_CACHE_DIR", dir.join("cache").to_str().unwrap())])
}

fn export(dir: &Path, run: &Path, point: &str, extra: &[&str]) -> (i32, String, String) {
    let out = dir.join("export");
    let mut args = vec!["export", run.to_str().unwrap(), "--point", point, "--out", out.to_str().unwrap()];
    args.extend(extra);
    cli(dir, &args)
}

#[test]
fn export_then_verify_reproduces_identical_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = finished_run(tmp.path());
    let (code, _, stderr) = export(tmp.path(), &run, "student-q4_0", &[]);
    assert_eq!(code, 0, "{stderr}");
    let out = tmp.path().join("export");
    let recipe = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
    for needle in ["[provenance]", "sha256 = ", "tool_version", "[expected]", "\"student-q4_0.kl\"", "seed = 0"] {
        assert!(recipe.contains(needle), "recipe.toml lacks `{needle}`:\n{recipe}");
    }
    for f in
        ["model/config.json", "model/model.safetensors", "model/tokenizer.json", "model/README.md", "student-q4_0.gguf"]
    {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let card = std::fs::read_to_string(out.join("model/README.md")).unwrap();
    assert!(card.contains("| student-q4_0 (this model) |") && card.contains("```toml"), "{card}");

    let (code, stdout, stderr) =
        cli(tmp.path(), &["run", out.join("recipe.toml").to_str().unwrap(), "--verify", "--json"]);
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<Value> =
        stdout.lines().map(|l| serde_json::from_str(l).expect("--json prints JSON lines")).collect();
    let verify = lines.last().unwrap();
    assert_eq!(verify["event"], "verify");
    let rows = verify["metrics"].as_array().unwrap();
    assert!(rows.len() >= 20, "{verify}");
    for r in rows {
        assert_eq!(r["abs_diff"].as_f64(), Some(0.0), "not identical on the same machine: {r}");
    }

    // A metric edited beyond the tolerance: exit 1, the metric named.
    let edited = recipe.replace("\"student.perplexity\" = ", "\"student.perplexity\" = 1");
    std::fs::write(out.join("recipe.toml"), edited).unwrap();
    let (code, _, stderr) = cli(tmp.path(), &["run", out.join("recipe.toml").to_str().unwrap(), "--verify"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("student.perplexity") && !stderr.contains("student.top1_accuracy"), "{stderr}");

    // An export that did not finish (killed before its last rename) is not verified.
    assert!(!out.join("export.incomplete").exists(), "a finished export keeps its marker");
    std::fs::write(out.join("export.incomplete"), "").unwrap();
    let (code, _, stderr) = cli(tmp.path(), &["run", out.join("recipe.toml").to_str().unwrap(), "--verify"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("did not finish"), "{stderr}");
}

#[test]
fn exported_hf_folder_loads_in_transformers_with_our_logits() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = finished_run(tmp.path());
    assert_eq!(export(tmp.path(), &run, "student", &[]).0, 0);
    let model_dir = tmp.path().join("export/model");
    if let Err(reason) = common::python_with(&["torch", "transformers"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let ids: Vec<u32> = vec![5, 17, 200, 3, 99, 42, 7, 311];
    let script = "import sys, json, torch, transformers as t\n\
        m, info = t.AutoModelForCausalLM.from_pretrained(sys.argv[1], output_loading_info=True)\n\
        bad = {k: v for k, v in info.items() if k in ('missing_keys', 'unexpected_keys', 'mismatched_keys') and v}\n\
        assert not bad, bad\n\
        ids = torch.tensor([json.loads(sys.argv[2])])\n\
        print(json.dumps(m.eval()(input_ids=ids).logits[0].tolist()))";
    let o = std::process::Command::new("python3")
        .args(["-c", script, model_dir.to_str().unwrap(), &serde_json::to_string(&ids).unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let theirs: Vec<Vec<f32>> = serde_json::from_slice(o.stdout.trim_ascii()).unwrap();
    let ours = common::load(model_dir.to_str().unwrap(), false);
    let input = candle_core::Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let logits = ours.network.forward(&input).unwrap().squeeze(0).unwrap();
    let theirs = candle_core::Tensor::new(theirs, &Device::Cpu).unwrap();
    let diff = common::max_abs_diff(&logits, &theirs);
    println!("exported student: transformers vs distill-tui logits, max |Δ| {diff:.2e}");
    assert!(diff < 1e-4, "logits differ by {diff}");
}

#[test]
fn exported_gguf_reads_back_through_candle_and_our_loader() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = finished_run(tmp.path());
    assert_eq!(export(tmp.path(), &run, "student-q8_0", &[]).0, 0);
    let path = tmp.path().join("export/student-q8_0.gguf");
    let mut reader = std::fs::File::open(&path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut reader).unwrap();
    let mut weights =
        candle_transformers::models::quantized_llama::ModelWeights::from_gguf(content, &mut reader, &Device::Cpu)
            .unwrap();
    let input = candle_core::Tensor::new(&[[5u32, 17, 200, 3]], &Device::Cpu).unwrap();
    let last = weights.forward(&input, 0).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert!(last.iter().all(|x| x.is_finite()) && last.len() == 512);
    // The GGUF holds exactly the point's quantization of the exported student.
    let student = common::load(tmp.path().join("export/model").to_str().unwrap(), false);
    let q = quantize_model(
        &student,
        QuantFormat::parse("q8_0").unwrap(),
        &QuantOptions::default(),
        &distill_tui::engine::context::Monitor::silent(&AtomicBool::new(false)),
    )
    .unwrap();
    let g = load_gguf(&path, &Device::Cpu).unwrap();
    for key in ["model_type", "hidden_size", "num_hidden_layers", "num_key_value_heads", "vocab_size"] {
        assert_eq!(g.config[key], student.config_json[key], "config `{key}`");
    }
    let ours = q.dequantized().unwrap();
    assert_eq!(g.tensors.len(), ours.len());
    for (name, t) in &ours {
        assert_eq!(common::max_abs_diff(&g.tensors[name], t), 0.0, "`{name}`");
    }
}

#[test]
fn trl_project_step_zero_loss_equals_ours() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, events) = finished_run(tmp.path());
    let (code, _, stderr) = export(tmp.path(), &run, "student", &["--target", "trl", "--target", "llama.cpp"]);
    // llama.cpp needs a GGML point: refused before anything is written.
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("student-q8_0") && !tmp.path().join("export").exists(), "{stderr}");
    let (code, _, stderr) = export(tmp.path(), &run, "student-q4_0", &["--target", "trl", "--target", "llama.cpp"]);
    assert_eq!(code, 0, "{stderr}");
    let commands = std::fs::read_to_string(tmp.path().join("export/llama.cpp/commands.sh")).unwrap();
    assert!(commands.contains("llama-quantize student-f32.gguf student-q4_0-llama.gguf Q4_0"), "{commands}");
    assert!(commands.contains("llama-perplexity -m ../student-q4_0.gguf -f eval.txt -c 32"), "{commands}");
    trl_losses_match(tmp.path(), &events);
}

#[test]
fn trl_project_matches_with_jsd_accumulation_and_a_given_student() {
    let tmp = tempfile::tempdir().unwrap();
    let student = format!("model = \"{}\"", common::fixture("tiny-llama-student").display());
    let distill = "loss = \"jsd\"\njsd_beta = 0.3\ntemperature = 3.0\nalpha = 0.5\ngrad_accum = 2\n";
    let (run, events) = run_recipe(tmp.path(), &student, distill);
    let (code, _, stderr) = export(tmp.path(), &run, "student", &["--target", "trl"]);
    assert_eq!(code, 0, "{stderr}");
    trl_losses_match(tmp.path(), &events);
}

/// Runs the exported trl project for two steps on the CPU; each step's loss (the mean over its
/// micro-batches) must equal distill-tui's within 1e-3. Skips when python3 lacks the packages.
fn trl_losses_match(dir: &Path, events: &[Value]) {
    if let Err(reason) = common::python_with(&["torch", "transformers", "accelerate", "trl"]) {
        eprintln!("skipped: {reason}");
        return;
    }
    let o = std::process::Command::new("python3")
        .arg(dir.join("export/trl/train.py"))
        .args(["--max-steps", "2", "--cpu", "--output-dir", dir.join("trl-out").to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&o.stderr));
    let micro: Vec<Value> =
        stdout.lines().filter(|l| l.starts_with("{\"kd_step\"")).map(|l| serde_json::from_str(l).unwrap()).collect();
    let ours: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "step" && e["role"] == "student")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    for step in 0..2u64 {
        let losses: Vec<f64> =
            micro.iter().filter(|m| m["kd_step"] == step).map(|m| m["loss"].as_f64().unwrap()).collect();
        assert!(!losses.is_empty(), "no loss printed for step {step}:\n{stdout}");
        let theirs = losses.iter().sum::<f64>() / losses.len() as f64;
        let k = step as usize;
        println!("step {k}: distill-tui loss {:.7}, transformers loss {theirs:.7}", ours[k]);
        assert!((theirs - ours[k]).abs() < 1e-3, "step {k}: {theirs} vs {}", ours[k]);
    }
    for f in ["model.safetensors", "config.json", "tokenizer.json"] {
        assert!(dir.join("trl-out/student").join(f).is_file(), "the trl run saved no {f}");
    }
}

#[test]
fn bad_input_unknown_point_missing_run_and_changed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let (run, _) = finished_run(tmp.path());
    let (code, _, stderr) = export(tmp.path(), &run, "student-q3_k", &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown point `student-q3_k`") && stderr.contains("student, baseline, student-q8_0"),
        "{stderr}"
    );
    let (code, _, stderr) = export(tmp.path(), &tmp.path().join("runs/none"), "student", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("runs/none") && stderr.contains("does not exist"), "{stderr}");
    let (code, _, stderr) = export(tmp.path(), &run, "student", &["--target", "vllm"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown export target `vllm`"), "{stderr}");
    // The run's own folder as the output: refused before anything is written over its recipe.
    let recipe_before = std::fs::read(run.join("recipe.toml")).unwrap();
    let (code, _, stderr) =
        cli(tmp.path(), &["export", run.to_str().unwrap(), "--point", "student", "--out", run.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is an input of this command"), "{stderr}");
    assert_eq!(std::fs::read(run.join("recipe.toml")).unwrap(), recipe_before);

    // An export, then the eval text changes: the rerun refuses, naming the file and both hashes.
    assert_eq!(export(tmp.path(), &run, "student", &[]).0, 0);
    let eval = tmp.path().join("eval.txt");
    let mut text = std::fs::read_to_string(&eval).unwrap();
    text.push_str(" One more sentence.");
    std::fs::write(&eval, text).unwrap();
    let recipe = tmp.path().join("export/recipe.toml");
    let (code, _, stderr) = cli(tmp.path(), &["run", recipe.to_str().unwrap(), "--verify"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("sha256 mismatch") && stderr.contains("../eval.txt has sha256"), "{stderr}");
    // The same change seen by export, against the run's provenance.json.
    let (code, _, stderr) = export(tmp.path(), &run, "student", &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("sha256 mismatch") && stderr.contains("eval.txt"), "{stderr}");
    // A run made before runs recorded provenance: exported with the hashes as they are now, and said so.
    std::fs::remove_file(run.join("provenance.json")).unwrap();
    let (code, stdout, stderr) = export(tmp.path(), &run, "student", &["--json"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("predates provenance recording"), "{stdout}");
}

/// A calibrated point (a budget, GPTQ) is exported as the sweep measured it: export calibrates the
/// student on the recipe's calibration text the same way, so the budget's GGUF file holds exactly
/// the bytes the sweep counted, in the plan's types, and the GPTQ file is not plain rounding.
#[test]
fn calibrated_points_export_as_the_sweep_measured_them() {
    let tmp = tempfile::tempdir().unwrap();
    let quantize = "formats = [\"budget-8\", \"q4_0+gptq\"]\nimatrix = true\ncalib_tokens = 1024";
    let (run, events) = run_recipe_quantizing(tmp.path(), "derive = { layers = 2 }", "", quantize);
    let point = |format: &str| {
        events.iter().find(|e| e["event"] == "point" && e["point"]["format"] == format).unwrap()["point"].clone()
    };
    for (name, format) in [("student-budget-8", "budget-8"), ("student-q4_0+gptq", "q4_0+gptq")] {
        let (code, _, stderr) = export(tmp.path(), &run, name, &[]);
        assert_eq!(code, 0, "{name}: {stderr}");
        let path = tmp.path().join(format!("export/{name}.gguf"));
        // Through our reader: IQ4_NL tensors (which candle's reader does not know) show as Q4_0,
        // the same bytes; their type names come from `tensor_type_names`.
        let (content, _, _) = distill_tui::engine::gguf::open_gguf(&path).unwrap();
        let bytes: usize = content
            .tensor_infos
            .values()
            .map(|t| t.shape.elem_count() / t.ggml_dtype.block_size() * t.ggml_dtype.type_size())
            .sum();
        assert_eq!(bytes as u64, point(format)["bytes"].as_u64().unwrap(), "{name}: the file holds the measured point");
        if format == "budget-8" {
            let types: std::collections::BTreeSet<_> =
                distill_tui::engine::gguf::tensor_type_names(&path).unwrap().into_values().collect();
            assert!(types.len() >= 3, "a plan of several types: {types:?}");
        } else {
            let g = load_gguf(&path, &Device::Cpu).unwrap();
            let student = common::load(tmp.path().join("export/model").to_str().unwrap(), false);
            let name = "model.layers.0.self_attn.q_proj.weight";
            let plain = candle_core::quantized::QTensor::quantize(
                &student.params[name],
                candle_core::quantized::GgmlDType::Q4_0,
            )
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
            assert!(common::max_abs_diff(&g.tensors[name], &plain) > 0.0, "GPTQ, not round-to-nearest");
        }
        std::fs::remove_dir_all(tmp.path().join("export")).unwrap();
    }
}
