//! The distillation trainer: chunked gradients equal the plain ones, the loss goes down, runs are
//! deterministic, a cached run equals an uncached one, kill -9 + `--resume` equals an uninterrupted
//! run with every output file complete, and bad recipes fail with messages naming the problem.

use crate::common;

use candle_core::{Device, Var};
use distill_tui::engine::distill::losses::SoftLoss;
use distill_tui::engine::distill::step::{accumulate_grads, LossConfig, Targets};
use distill_tui::engine::kernels::autocast::Precision;
use std::path::{Path, PathBuf};

const METRICS: [&str; 4] = ["perplexity", "top1_accuracy", "kl_to_teacher", "agreement"];

#[test]
fn chunked_loss_gradients_equal_a_single_backward_pass() {
    let teacher = common::load_fixture("tiny-llama", false);
    let student = common::load_fixture("tiny-llama-student", true);
    let (ids, _) = common::golden(&common::fixture("tiny-llama"));
    let t = ids.dim(1).unwrap();
    let vars: Vec<&Var> = student.vars.values().collect();
    let cfg = LossConfig {
        kind: SoftLoss::ForwardKl,
        temperature: 2.0,
        alpha: 0.7,
        beta: 0.5,
        chunk_rows: Some(7),
        activation_checkpointing: false,
    };
    let input = ids.narrow(1, 0, t - 1).unwrap();
    let hidden = teacher.network.hidden_states(&input).unwrap();
    let n = hidden.dim(0).unwrap() * hidden.dim(1).unwrap();
    let targets = Targets::Dense {
        teacher: &teacher.network,
        hidden: hidden.reshape((n, 64)).unwrap(),
        precision: Precision::F32,
    };
    let mut chunked = vec![None; vars.len()];
    let parts = accumulate_grads(&student.network, &vars, &mut chunked, &ids, &targets, &cfg, 1.0).unwrap();
    // Reference: the whole loss at once.
    let s = student.network.forward(&input).unwrap().reshape((n, 512)).unwrap();
    let te = teacher.network.forward(&input).unwrap().reshape((n, 512)).unwrap();
    let labels = ids.narrow(1, 1, t - 1).unwrap().flatten_all().unwrap();
    let soft = SoftLoss::ForwardKl.sum(&s, &te, 2.0, 0.5).unwrap();
    let hard = distill_tui::engine::distill::losses::hard_ce_sum(&s, &labels).unwrap();
    let loss = ((soft * 0.7).unwrap() + (hard * 0.3).unwrap()).unwrap().affine(1.0 / n as f64, 0.0).unwrap();
    let total: f64 = loss.to_scalar::<f32>().unwrap() as f64;
    assert!((parts.total - total).abs() < 1e-5 * total, "loss {} vs {total}", parts.total);
    assert_grads_match("tiny-llama-student", &student.vars, &chunked, &loss.backward().unwrap());
}

/// Each chunked gradient equals autograd's over the whole loss within 1e-4 of its largest entry.
fn assert_grads_match(
    what: &str,
    vars: &std::collections::BTreeMap<String, Var>,
    chunked: &[Option<candle_core::Tensor>],
    grads: &candle_core::backprop::GradStore,
) {
    for ((name, var), got) in vars.iter().zip(chunked) {
        let want = grads.get(var.as_tensor()).unwrap();
        let got = got.as_ref().unwrap_or_else(|| panic!("{what} {name}: no chunked gradient"));
        let scale = common::max_abs_diff(want, &want.zeros_like().unwrap()).max(1e-12);
        let diff = common::max_abs_diff(want, got);
        assert!(diff <= 1e-4 * scale, "{what} {name}: gradient differs by {diff} (scale {scale})");
    }
}

/// The baseline's step (hard labels only) through the hand-written head backward equals autograd
/// over the whole loss, and so does a student with an untied head (tiny-qwen2).
#[test]
fn chunked_hard_label_gradients_equal_a_single_backward_pass() {
    for fixture in ["tiny-llama-student", "tiny-qwen2"] {
        let student = common::load_fixture(fixture, true);
        let (ids, _) = common::golden(&common::fixture(fixture));
        let t = ids.dim(1).unwrap();
        let vars: Vec<&Var> = student.vars.values().collect();
        let cfg = LossConfig {
            kind: SoftLoss::Jsd,
            temperature: 2.0,
            alpha: 0.7,
            beta: 0.5,
            chunk_rows: Some(5),
            activation_checkpointing: false,
        };
        let mut chunked = vec![None; vars.len()];
        accumulate_grads(&student.network, &vars, &mut chunked, &ids, &Targets::None, &cfg, 0.5).unwrap();
        let input = ids.narrow(1, 0, t - 1).unwrap();
        let s = student.network.forward(&input).unwrap();
        let n = s.dim(0).unwrap() * s.dim(1).unwrap();
        let s = s.reshape((n, ())).unwrap();
        let labels = ids.narrow(1, 1, t - 1).unwrap().flatten_all().unwrap();
        let hard = distill_tui::engine::distill::losses::hard_ce_sum(&s, &labels).unwrap();
        let grads = hard.affine(0.5 / n as f64, 0.0).unwrap().backward().unwrap();
        assert_grads_match(fixture, &student.vars, &chunked, &grads);
    }
}

/// Activation checkpointing per block keeps each block's input and recomputes the block in the
/// backward pass: the losses are the same numbers and every parameter's gradient equals the full
/// backward's within summation order — a tied llama head, an untied qwen2 one, and GPT-2.
#[test]
fn checkpointed_gradients_equal_the_full_backward() {
    for fixture in ["tiny-llama-student", "tiny-qwen2", "tiny-gpt2"] {
        let student = common::load_fixture(fixture, true);
        let (ids, _) = common::golden(&common::fixture(fixture));
        let vars: Vec<&Var> = student.vars.values().collect();
        let step = |checkpointing: bool| {
            let cfg = LossConfig {
                kind: SoftLoss::ForwardKl,
                temperature: 2.0,
                alpha: 0.7,
                beta: 0.5,
                chunk_rows: Some(6),
                activation_checkpointing: checkpointing,
            };
            let mut acc = vec![None; vars.len()];
            let parts = accumulate_grads(&student.network, &vars, &mut acc, &ids, &Targets::None, &cfg, 1.0).unwrap();
            (parts, acc)
        };
        let (full, full_grads) = step(false);
        let (ckpt, ckpt_grads) = step(true);
        assert_eq!(full.total, ckpt.total, "{fixture}: the forward computes the same numbers");
        for ((name, want), got) in student.vars.keys().zip(&full_grads).zip(&ckpt_grads) {
            let (want, got) =
                (want.as_ref().unwrap(), got.as_ref().unwrap_or_else(|| panic!("{fixture} {name}: no gradient")));
            let scale = common::max_abs_diff(want, &want.zeros_like().unwrap()).max(1e-12);
            let diff = common::max_abs_diff(want, got);
            assert!(diff <= 1e-5 * scale, "{fixture} {name}: checkpointed gradient differs by {diff} (scale {scale})");
        }
    }
}

/// A recipe over the fixture models and a slice of Austen, written into `dir`.
pub(crate) fn recipe(dir: &Path, name: &str, extra: &str) -> PathBuf {
    let austen = common::shared_dir().join("data/austen");
    let train = dir.join("train.txt");
    if !train.exists() {
        let text = std::fs::read_to_string(austen.join("emma.txt")).unwrap();
        std::fs::write(&train, &text[..120_000]).unwrap();
        let eval = std::fs::read_to_string(austen.join("persuasion.txt")).unwrap();
        std::fs::write(dir.join("eval.txt"), &eval[..20_000]).unwrap();
    }
    let teacher = common::fixture("tiny-llama");
    let text = format!(
        "[teacher]\nmodel = \"{}\"\n[student]\nderive = {{ layers = 2 }}\n[data]\ntrain = \"train.txt\"\neval = \"eval.txt\"\nseq_len = 32\neval_tokens = 1024\n\
         [distill]\nsteps = 24\nbatch_size = 4\nwarmup_steps = 2\neval_every = 8\ncheckpoint_every = 4\ncache_top_k = 16\n{extra}\n[output]\ndir = \"{}\"\n",
        teacher.display(),
        dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn run(recipe: &Path, cache: &Path, resume: bool) -> (i32, Vec<serde_json::Value>, String) {
    let mut args = vec!["run", recipe.to_str().unwrap(), "--json"];
    if resume {
        args.push("--resume");
    }
    let (code, stdout, stderr) = common::run_cli(&args, &[("DISTILL_CACHE_DIR", cache.to_str().unwrap())]);
    let events = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    (code, events, stderr)
}

/// The student's loss at each step.
pub(crate) fn student_losses(events: &[serde_json::Value]) -> Vec<f64> {
    events
        .iter()
        .filter(|e| e["event"] == "step" && e["role"] == "student")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect()
}

pub(crate) fn summary(events: &[serde_json::Value]) -> serde_json::Value {
    let last = events.last().expect("events");
    assert_eq!(last["event"], "summary", "last event: {last}");
    last["summary"].clone()
}

fn assert_same_metrics(a: &serde_json::Value, b: &serde_json::Value) {
    for role in ["student", "baseline"] {
        for m in METRICS {
            assert_eq!(a[role][m], b[role][m], "{role}.{m} differs");
        }
    }
}

#[test]
fn a_run_is_deterministic_its_loss_falls_and_the_cache_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (code, events, err) = run(&recipe(dir.path(), "a", ""), &cache, false);
    assert_eq!(code, 0, "{err}");
    let a = summary(&events);
    let losses = student_losses(&events);
    assert_eq!(losses.len(), 24);
    let (first, last) = (losses[..4].iter().sum::<f64>(), losses[20..].iter().sum::<f64>());
    assert!(last < first, "student loss did not fall: {losses:?}");
    assert_eq!(a["teacher_cache"]["misses"], 96, "24 steps × 4 windows computed once");
    // Same recipe again: every window from the cache, identical metrics.
    let (code, events, err) = run(&recipe(dir.path(), "b", ""), &cache, false);
    assert_eq!(code, 0, "{err}");
    let b = summary(&events);
    assert_eq!(b["teacher_cache"]["hits"], 96);
    assert_same_metrics(&a, &b);
    assert!(b["student"]["kl_to_teacher"].as_f64().unwrap() > 0.0);
    // Another temperature reads the same cache: it keeps raw logits and rescales them.
    let (code, events, err) = run(&recipe(dir.path(), "t4", "temperature = 4.0"), &cache, false);
    assert_eq!(code, 0, "{err}");
    let c = summary(&events);
    assert_eq!((c["teacher_cache"]["hits"].as_u64(), c["teacher_cache"]["misses"].as_u64()), (Some(96), Some(0)));
    // The trained models are Hugging Face folders that load again.
    let student = common::load(a["student"]["path"].as_str().unwrap(), false);
    assert_eq!(student.config.layers(), 2);
    // Rerunning into a directory that holds a finished run starts a numbered run beside it.
    let (code, events, err) = run(&recipe(dir.path(), "a", ""), &cache, false);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&events)["output_dir"], dir.path().join("a-2").display().to_string());
}

/// At alpha = 0 the student's loss is the hard-label cross-entropy alone: it trains exactly as the
/// baseline beside it (same windows, same initial weights), and the teacher is never asked for a
/// distribution (no cache opened) — a hard-label baseline can run as a recipe of its own.
#[test]
fn alpha_zero_trains_the_student_as_the_baseline_without_the_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let path = recipe(dir.path(), "hard", "alpha = 0.0");
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("steps = 24", "steps = 8")).unwrap();
    let (code, events, err) = run(&path, &cache, false);
    assert_eq!(code, 0, "{err}");
    let baseline: Vec<f64> = events
        .iter()
        .filter(|e| e["event"] == "step" && e["role"] == "baseline")
        .map(|e| e["loss"].as_f64().unwrap())
        .collect();
    let student = student_losses(&events);
    assert_eq!(student.len(), 8);
    assert_eq!(student, baseline, "alpha = 0 is the hard-label baseline");
    let s = summary(&events);
    assert!(s["teacher_cache"].is_null(), "no teacher cache at alpha = 0: {}", s["teacher_cache"]);
    assert!(!cache.join("teacher-cache").exists(), "nothing of the teacher cached");
    // The teacher still judges: KL to it on held-out text.
    assert!(s["student"]["kl_to_teacher"].as_f64().unwrap() > 0.0);
}

fn all_files_complete(out: &Path) {
    for dir in [out.to_path_buf(), out.join("checkpoint")] {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") {
                candle_core::safetensors::load(&p, &Device::Cpu)
                    .unwrap_or_else(|e| panic!("{name} is incomplete: {e}"));
            } else if name.ends_with(".json") {
                serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&p).unwrap())
                    .unwrap_or_else(|e| panic!("{name} is incomplete: {e}"));
            }
        }
    }
}

#[test]
fn kill_9_then_resume_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_then_resume(|name| recipe(dir.path(), name, ""));
}

/// The int8 teacher is calibrated on the same training windows when a run resumes, so the resumed
/// steps see the same teacher (no cache: the teacher runs in every step).
#[test]
fn kill_9_then_resume_equals_an_uninterrupted_run_with_an_int8_teacher() {
    let dir = tempfile::tempdir().unwrap();
    kill_9_then_resume(|name| {
        let path = recipe(dir.path(), name, "teacher_precision = \"int8\"");
        let text = std::fs::read_to_string(&path).unwrap().replace("cache_top_k = 16", "cache_top_k = 0");
        std::fs::write(&path, text).unwrap();
        path
    });
}

/// Runs `recipe("whole")` to the end, then `recipe("killed")` until its checkpoint reaches step 8,
/// kills it with SIGKILL and resumes it: same metrics, every file complete.
pub(crate) fn kill_9_then_resume(recipe: impl Fn(&str) -> PathBuf) {
    let whole_path = recipe("whole");
    let cache = whole_path.parent().unwrap().join("cache");
    let (code, events, err) = run(&whole_path, &cache, false);
    assert_eq!(code, 0, "{err}");
    let whole = summary(&events);
    let path = recipe("killed");
    let out = path.parent().unwrap().join("killed");
    common::kill_9_at_checkpoint(&path, &[("DISTILL_CACHE_DIR", cache.to_str().unwrap())], &out, 8);
    all_files_complete(&out);
    let (code, events, err) = run(&path, &cache, true);
    assert_eq!(code, 0, "{err}");
    assert!(events.iter().any(|e| e["event"] == "log" && e["message"].as_str().unwrap_or("").contains("resuming")));
    assert_same_metrics(&whole, &summary(&events));
    all_files_complete(&out);
}

fn bad_recipe(extra_toml: &str, replace: (&str, &str)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = recipe(dir.path(), "bad", extra_toml);
    let text = std::fs::read_to_string(&path).unwrap().replace(replace.0, replace.1);
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run(&path, &dir.path().join("cache"), false);
    assert_eq!(code, 2, "exit code for bad input; stderr: {err}");
    err
}

#[test]
fn bad_recipes_fail_with_messages_naming_the_problem() {
    let e = bad_recipe("colour = 3", ("", ""));
    assert!(e.contains("unknown field `colour`") && e.contains("line 17"), "{e}");
    let e = bad_recipe("", ("train = \"train.txt\"", "train = \"missing/*.txt\""));
    assert!(e.contains("data.train") && e.contains("matches no file"), "{e}");
    let e = bad_recipe("", ("seq_len = 32", "seq_len = 4096"));
    assert!(e.contains("seq_len = 4096") && e.contains("256"), "{e}");
    let e = bad_recipe("", ("eval = \"eval.txt\"", "eval = \"empty.txt\""));
    assert!(e.contains("data.eval") && e.contains("matches no file"), "{e}");
    let e = bad_recipe("alpha = 1.5", ("", ""));
    assert!(e.contains("distill.alpha"), "{e}");
    let e = bad_recipe("loss = \"kl\"", ("", ""));
    assert!(e.contains("forward_kl, reverse_kl, jsd, mse_logits"), "{e}");
}

#[test]
fn an_empty_corpus_and_a_vocabulary_mismatch_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = recipe(dir.path(), "empty", "");
    std::fs::write(dir.path().join("train.txt"), "Too short.").unwrap();
    let (code, _, err) = run(&path, &dir.path().join("cache"), false);
    assert_eq!(code, 2);
    assert!(err.contains("fewer than one window"), "{err}");
    // A student whose tokenizer differs from the teacher's.
    let (_tmp, student) = common::copy_fixture("tiny-llama-student");
    let tok_path = student.join("tokenizer.json");
    let mut tok: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&tok_path).unwrap()).unwrap();
    tok["model"]["vocab"].as_object_mut().unwrap().insert("zz-new".into(), 600.into());
    std::fs::write(&tok_path, tok.to_string()).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let path = recipe(dir2.path(), "mismatch", "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("derive = { layers = 2 }", &format!("model = \"{}\"", student.display()));
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = run(&path, &dir2.path().join("cache"), false);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("vocabularies differ"), "{err}");
}

#[test]
fn a_loss_that_turns_nan_stops_with_the_step_and_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = recipe(dir.path(), "nan", "lr = 1e30\ngrad_clip = 0.0");
    let (code, events, err) = run(&path, &dir.path().join("cache"), false);
    assert_ne!(code, 0);
    let failed = events.last().unwrap();
    assert_eq!(failed["event"], "failed", "{failed}");
    let msg = failed["error"].as_str().unwrap();
    assert!(msg.contains("not finite") && msg.contains("at step") && msg.contains("checkpoint"), "{msg}\n{err}");
}

#[test]
fn a_quantize_section_sweeps_the_trained_models_and_bad_formats_fail_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let path = recipe(dir.path(), "q", "");
    let text = std::fs::read_to_string(&path).unwrap().replace("steps = 24", "steps = 4").replace(
        "[output]",
        "[quantize]\nformats = [\"q8_0\", \"int4-g32\"]\ntargets = [\"teacher\", \"student\"]\n[output]",
    );
    std::fs::write(&path, text).unwrap();
    let (code, events, err) = run(&path, &dir.path().join("cache"), false);
    assert_eq!(code, 0, "{err}");
    let points: Vec<&serde_json::Value> = events.iter().filter(|e| e["event"] == "point").collect();
    assert_eq!(points.len(), 4, "2 targets × 2 formats");
    let s = summary(&events);
    let q = s["quantize"].as_array().unwrap();
    assert_eq!(q.len(), 4);
    assert!(q.iter().all(|p| p["kl"].as_f64().unwrap() >= 0.0 && p["bytes"].as_u64().unwrap() > 0));
    // Every point is also measured against the teacher: the teacher's own points against itself,
    // the student's against the teacher (far more than its quantization error alone).
    for p in q {
        let (kl, to_teacher) = (p["kl"].as_f64().unwrap(), p["kl_to_teacher"].as_f64().unwrap());
        if p["model"].as_str().unwrap().contains("student") {
            assert!(to_teacher > 10.0 * kl && to_teacher > 1e-3, "{p}");
        } else {
            assert_eq!(to_teacher, kl, "{p}");
        }
    }
    // An unknown format is refused before anything trains.
    let bad = recipe(dir.path(), "qbad", "");
    let text = std::fs::read_to_string(&bad).unwrap().replace("[output]", "[quantize]\nformats = [\"q9_9\"]\n[output]");
    std::fs::write(&bad, text).unwrap();
    let (code, events, err) = run(&bad, &dir.path().join("cache"), false);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("q9_9") && err.contains("q8_0"), "{err}");
    assert!(!events.iter().any(|e| e["event"] == "step"), "nothing trained");
}

/// bf16 autocast: the run trains (its loss falls), is deterministic, lands within 5% of the f32
/// run's perplexity without equalling it, and keys its teacher cache apart from f32 runs.
#[test]
fn a_bf16_autocast_run_trains_deterministically_and_caches_apart() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let (code, events, err) = run(&recipe(dir.path(), "bf16-a", "precision = \"bf16\""), &cache, false);
    assert_eq!(code, 0, "{err}");
    let a = summary(&events);
    let losses = student_losses(&events);
    let (first, last) = (losses[..4].iter().sum::<f64>(), losses[20..].iter().sum::<f64>());
    assert!(last < first, "bf16 student loss did not fall: {losses:?}");
    assert_eq!(a["teacher_cache"]["misses"], 96, "an f32 cache is not reused for bf16");
    // A CPU without the kernel is told that bf16 is emulated there (and slower than f32).
    let emulated =
        events.iter().any(|e| e["event"] == "log" && e["message"].as_str().unwrap().contains("lacks AVX512_BF16"));
    assert_eq!(emulated, !distill_tui::engine::kernels::bf16_gemm::available(), "{events:?}");
    let (code, events, err) = run(&recipe(dir.path(), "bf16-b", "precision = \"bf16\""), &cache, false);
    assert_eq!(code, 0, "{err}");
    let b = summary(&events);
    assert_eq!(b["teacher_cache"]["hits"], 96);
    assert_same_metrics(&a, &b);
    // An f32 run next to it: its own cache entries, and close but not equal metrics.
    let (code, events, err) = run(&recipe(dir.path(), "f32", ""), &cache, false);
    assert_eq!(code, 0, "{err}");
    let c = summary(&events);
    assert_eq!(c["teacher_cache"]["misses"], 96);
    let (pa, pc) = (a["student"]["perplexity"].as_f64().unwrap(), c["student"]["perplexity"].as_f64().unwrap());
    assert!(pa != pc && (pa / pc - 1.0).abs() < 0.05, "bf16 perplexity {pa} vs f32 {pc}");
}

/// The single-pass AdamW equals the candle-op form bit for bit, with and without a gradient scale
/// (a non-contiguous gradient takes the candle path).
#[test]
fn fused_adamw_is_bit_identical_to_the_composed_update() {
    use candle_core::Tensor;
    use distill_tui::engine::train::optim::AdamW;
    use std::collections::BTreeMap;
    let dev = Device::Cpu;
    let init = |seed: f64| Tensor::arange(0f32, 48.0, &dev).unwrap().affine(0.37, seed).unwrap().sin().unwrap();
    let make = || {
        let mut vars = BTreeMap::new();
        vars.insert("w".to_string(), Var::from_tensor(&init(0.1).reshape((6, 8)).unwrap()).unwrap());
        vars.insert("norm".to_string(), Var::from_tensor(&init(0.5).narrow(0, 0, 8).unwrap()).unwrap());
        vars
    };
    let (va, vb) = (make(), make());
    let (mut a, mut b) = (AdamW::new(&va, 0.01).unwrap(), AdamW::new(&vb, 0.01).unwrap());
    for step in 0..5 {
        let g_w = init(step as f64).reshape((6, 8)).unwrap().affine(3.0, -0.2).unwrap();
        let g_n = init(1.0 + step as f64).narrow(0, 0, 8).unwrap();
        // Same values; the second as a transposed view, which is not contiguous.
        let g_w_strided = g_w.t().unwrap().contiguous().unwrap().t().unwrap();
        assert!(!g_w_strided.is_contiguous());
        // Names sort as ["norm", "w"]. Odd steps scale the gradients (clipping) inside the update.
        let scale = if step % 2 == 1 { 0.37 } else { 1.0 };
        a.step_scaled(&[g_n.clone(), g_w], 1e-2, scale).unwrap();
        b.step_scaled(&[g_n, g_w_strided], 1e-2, scale).unwrap();
    }
    for name in ["w", "norm"] {
        let x: Vec<f32> = va[name].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = vb[name].as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&x), bits(&y), "{name}");
        assert_ne!(x, init(0.1).flatten_all().unwrap().to_vec1::<f32>().unwrap()[..x.len()].to_vec());
    }
    let (sa, sb) = (a.state(), b.state());
    for (k, t) in &sa {
        let x: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let y: Vec<f32> = sb[k].flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(x, y, "{k}");
    }
}

/// The global gradient norm (one parallel pass per f32 gradient) equals candle's, and the clipping
/// factor brings it to the limit only when it is above it.
#[test]
fn grad_norm_matches_candle_and_clips_only_above_the_limit() {
    use candle_core::Tensor;
    use distill_tui::engine::train::optim::grad_norm;
    let dev = Device::Cpu;
    let a = Tensor::arange(0f32, 70_000.0, &dev).unwrap().affine(1e-4, -3.0).unwrap().sin().unwrap();
    let b = Tensor::arange(0f32, 12.0, &dev).unwrap().reshape((3, 4)).unwrap().t().unwrap();
    let expected = [&a, &b]
        .iter()
        .map(|g| {
            g.sqr().unwrap().sum_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_scalar::<f64>().unwrap()
        })
        .sum::<f64>()
        .sqrt();
    let grads = [a, b];
    let (norm, scale) = grad_norm(&grads, 1.0).unwrap();
    assert!((norm / expected - 1.0).abs() < 1e-6, "{norm} vs {expected}");
    assert!((scale - 1.0 / (norm + 1e-6)).abs() < 1e-12);
    assert_eq!(grad_norm(&grads, norm * 2.0).unwrap().1, 1.0);
    assert_eq!(grad_norm(&grads, 0.0).unwrap().1, 1.0, "0 turns clipping off");
}

/// `teacher_precision = "int8"`: the teacher's forward in int8 (calibrated on fixed training
/// windows) trains the student deterministically, the summary says how far that teacher is from
/// itself in f32, and `precision = "int8"` (a student without gradients) is refused.
#[test]
fn an_int8_teacher_run_trains_deterministically_and_reports_its_fidelity() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let dense = |name: &str, extra: &str| {
        let path = recipe(dir.path(), name, extra);
        let text = std::fs::read_to_string(&path).unwrap().replace("cache_top_k = 16", "cache_top_k = 0");
        std::fs::write(&path, text).unwrap();
        path
    };
    let (code, events, err) = run(&dense("i8-a", "teacher_precision = \"int8\""), &cache, false);
    assert_eq!(code, 0, "{err}");
    let a = summary(&events);
    let losses = student_losses(&events);
    assert!(losses[20..].iter().sum::<f64>() < losses[..4].iter().sum::<f64>(), "loss did not fall: {losses:?}");
    let logs: Vec<&str> = events.iter().filter(|e| e["event"] == "log").filter_map(|e| e["message"].as_str()).collect();
    assert!(logs.iter().any(|l| l.contains("first 4 training windows")), "{logs:?}");
    let at = &a["teacher"]["at_training_precision"];
    assert_eq!(at["precision"], "int8", "{a}");
    let (kl, agree) = (at["kl_to_f32"].as_f64().unwrap(), at["agreement_with_f32"].as_f64().unwrap());
    assert!(kl > 0.0 && kl < 0.05 && agree > 0.8 && agree <= 1.0, "int8 teacher vs f32: KL {kl}, agreement {agree}");
    let (code, events, err) = run(&dense("i8-b", "teacher_precision = \"int8\""), &cache, false);
    assert_eq!(code, 0, "{err}");
    assert_same_metrics(&a, &summary(&events));
    // An f32 run has no such entry; its student differs from the int8-taught one, but not by much.
    let (code, events, err) = run(&dense("f32", ""), &cache, false);
    assert_eq!(code, 0, "{err}");
    let c = summary(&events);
    assert!(c["teacher"].get("at_training_precision").is_none(), "{c}");
    let (pa, pc) = (a["student"]["perplexity"].as_f64().unwrap(), c["student"]["perplexity"].as_f64().unwrap());
    assert!(pa != pc && (pa / pc - 1.0).abs() < 0.05, "int8-teacher perplexity {pa} vs f32 {pc}");
    let (code, events, err) = run(&dense("i8-student", "precision = \"int8\""), &cache, false);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("teacher_precision") && err.contains("f32, bf16"), "{err}");
    assert!(!events.iter().any(|e| e["event"] == "step"), "nothing trained");
}

/// `DISTILL_SIMD` caps the kernels at AVX2 or at the portable code, so one machine runs the paths
/// other CPUs take (the int8 teacher's AVX2 kernel, the AVX2 and baseline builds of the fused
/// kernels, the emulated bf16 product). The run says which kernels it took; under the AVX2 cap the
/// int8-taught student comes out the same as with the CPU's own kernels (they compute the same
/// numbers), and under the portable cap, where an int8 teacher would be slower than f32, the run
/// says so and trains exactly what an f32-teacher run trains.
#[test]
fn every_simd_ceiling_trains_the_same_student_and_names_its_kernels() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run_capped = |simd: &str, teacher: &str| {
        let path = recipe(dir.path(), &format!("simd-{simd}-{teacher}"), &format!("teacher_precision = \"{teacher}\""));
        let text = std::fs::read_to_string(&path).unwrap().replace("cache_top_k = 16", "cache_top_k = 0");
        std::fs::write(&path, text).unwrap();
        let args = ["run", path.to_str().unwrap(), "--json"];
        let (code, stdout, stderr) =
            common::run_cli(&args, &[("DISTILL_CACHE_DIR", cache.to_str().unwrap()), ("DISTILL_SIMD", simd)]);
        assert_eq!(code, 0, "DISTILL_SIMD={simd}: {stderr}");
        let events: Vec<serde_json::Value> = stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let logs: Vec<String> = events
            .iter()
            .filter(|e| e["event"] == "log")
            .filter_map(|e| e["message"].as_str().map(String::from))
            .collect();
        let kernels = logs
            .iter()
            .find(|m| m.starts_with("CPU kernels:"))
            .unwrap_or_else(|| panic!("no `CPU kernels:` line under DISTILL_SIMD={simd}: {logs:?}"))
            .clone();
        (summary(&events), kernels, logs)
    };
    let (native, native_line, _) = run_capped("native", "int8");
    let (avx2, avx2_line, _) = run_capped("avx2", "int8");
    let (portable, portable_line, portable_logs) = run_capped("portable", "int8");
    let (f32_teacher, ..) = run_capped("native", "f32");
    assert!(!native_line.contains("capped"), "{native_line}");
    assert!(
        portable_line.contains("int8 portable")
            && portable_line.contains("bf16 emulated")
            && portable_line.contains("fused baseline")
            && portable_line.contains("(capped at portable by DISTILL_SIMD"),
        "{portable_line}"
    );
    assert!(!avx2_line.contains("AVX512") && avx2_line.contains("(capped at avx2"), "{avx2_line}");
    if native_line.contains("int8 portable") {
        return; // no SIMD int8 kernel on this CPU: nothing more to compare
    }
    assert!(avx2_line.contains("int8 AVX2") && avx2_line.contains("fused AVX2"), "{avx2_line}");
    assert_same_metrics(&native, &avx2);
    assert_eq!(native["teacher"]["at_training_precision"], avx2["teacher"]["at_training_precision"]);
    assert!(
        portable_logs
            .iter()
            .any(|l| l.contains("capped at `portable` (DISTILL_SIMD)") && l.contains("computes in f32")),
        "{portable_logs:?}"
    );
    assert!(portable["teacher"].get("at_training_precision").is_none(), "{portable}");
    assert_same_metrics(&f32_teacher, &portable);
}

#[test]
fn an_unknown_simd_ceiling_is_refused_before_anything_runs() {
    let (code, _, err) = common::run_cli(&["cache"], &[("DISTILL_SIMD", "avx512")]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("DISTILL_SIMD=`avx512`") && err.contains("`native` (the default), `avx2` or `portable`"),
        "{err}"
    );
}
