//! Nothing lost, nothing mixed up: one process per run folder, `--resume` only with the recipe the
//! run was trained with, and no command writing over what it reads.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A small distillation recipe on the demo teacher (no baseline, no quantization).
fn recipe(dir: &Path, steps: usize, out: &Path) -> PathBuf {
    let r = root();
    let text = format!(
        "[teacher]\nmodel = \"{teacher}\"\n[student]\nderive = {{ layers = 1 }}\n\
         [data]\ntrain = \"{train}\"\neval = \"{eval}\"\nseq_len = 32\neval_tokens = 256\n\
         [distill]\nsteps = {steps}\nbatch_size = 2\nwarmup_steps = 1\neval_every = 1000\ncheckpoint_every = 1\nbaseline = false\ncache_top_k = 0\n\
         [output]\ndir = \"{out}\"\n",
        teacher = r.join("assets/models/demo-teacher").display(),
        train = r.join("assets/corpus/train/*.txt").display(),
        eval = r.join("assets/corpus/eval.txt").display(),
        out = out.display(),
    );
    let path = dir.join(format!("recipe-{steps}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_second_run_into_a_folder_in_use_is_refused_naming_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let long = recipe(tmp.path(), 1_000_000, &out);
    let mut first = Command::new(env!("CARGO_BIN_EXE_distill-tui"))
        .args(["--quiet", "run", long.to_str().unwrap(), "--json"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The barrier: the first run has taken the folder once its lock names it.
    let lock = out.join(".distill-tui.lock");
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = format!("\"pid\":{}", first.id());
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains(&pid)) {
        assert!(Instant::now() < deadline, "the first run never locked {}", out.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, _, stderr) = common::run_cli(&["run", long.to_str().unwrap()], &[]);
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(&format!("is in use by process {}", first.id())), "{stderr}");

    // The holder is gone (killed): its lock went with it, and the run resumes from its checkpoint.
    let (code, _, stderr) =
        common::run_cli(&["--quiet", "run", long.to_str().unwrap(), "--resume", "--set", "distill.steps=2"], &[]);
    assert!(code == 0 || stderr.contains("already at step"), "{code}: {stderr}");
}

#[test]
fn resume_refuses_a_recipe_that_changes_what_was_trained() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = recipe(tmp.path(), 2, &out);
    let r = r.to_str().unwrap();
    let (code, _, stderr) = common::run_cli(&["--quiet", "run", r], &[]);
    assert_eq!(code, 0, "{stderr}");
    let before = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
    let (code, _, stderr) = common::run_cli(&["--quiet", "run", r, "--resume", "--set", "data.seq_len=16"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("data.seq_len: 32 → 16"), "{stderr}");
    let (code, _, stderr) =
        common::run_cli(&["--quiet", "run", r, "--resume", "--set", "distill.lr=0.01", "--set", "distill.seed=3"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("distill.lr") && stderr.contains("distill.seed"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("recipe.toml")).unwrap(),
        before,
        "a refused resume rewrote the recipe"
    );
    // More steps and another evaluation interval do not change what was trained so far.
    let (code, _, stderr) = common::run_cli(
        &["--quiet", "run", r, "--resume", "--set", "distill.steps=3", "--set", "distill.eval_every=3"],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
}

#[test]
fn no_command_writes_over_what_it_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("teacher");
    std::fs::create_dir_all(&model).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(common::fixture("tiny-llama").join(f), model.join(f)).unwrap();
    }
    let weights = std::fs::read(model.join("model.safetensors")).unwrap();
    let m = model.to_str().unwrap();
    let (code, _, stderr) = common::run_cli(&["derive-student", m, "--layers", "1", "--out", m], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is an input of this command"), "{stderr}");
    let inside = model.join("model.safetensors");
    let (code, _, stderr) =
        common::run_cli(&["quantize", m, "--format", "int4", "--out", inside.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("is an input of this command"), "{stderr}");
    // The same file through another spelling of the path.
    let dotted = format!("{}/../teacher/model.safetensors", m);
    let (code, _, stderr) = common::run_cli(&["quantize", m, "--format", "int4", "--out", &dotted], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert_eq!(std::fs::read(model.join("model.safetensors")).unwrap(), weights, "the model was overwritten");

    // An output folder left empty would write into the working directory.
    let out = tmp.path().join("x");
    let r = recipe(tmp.path(), 2, &out);
    let text = std::fs::read_to_string(&r).unwrap().replace(&format!("dir = \"{}\"", out.display()), "dir = \"\"");
    std::fs::write(&r, text).unwrap();
    let (code, _, stderr) = common::run_cli(&["run", r.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("output.dir is empty"), "{stderr}");
}

#[test]
fn a_batch_that_cannot_fit_is_refused_before_anything_is_allocated() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = recipe(tmp.path(), 2, &out);
    let (code, _, stderr) =
        common::run_cli(&["--quiet", "run", r.to_str().unwrap(), "--set", "distill.batch_size=1000000000"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("training needs about") && stderr.contains("GiB of memory is available"), "{stderr}");
    assert!(stderr.contains("fits (raise grad_accum"), "the message proposes a batch that fits: {stderr}");
    assert!(!out.join("checkpoint").exists());
    // Refused from the configs and tensor headers: no model was loaded.
    let (code, stdout, _) =
        common::run_cli(&["run", r.to_str().unwrap(), "--json", "--set", "distill.batch_size=1000000000"], &[]);
    assert_eq!(code, 2);
    assert!(!stdout.contains("loading teacher") && !stdout.contains("loading student"), "{stdout}");
    // The pair check says the same with its exit code, in both output styles.
    let t = root().join("assets/models/demo-teacher");
    let t = t.to_str().unwrap();
    let args = ["check", t, "--derive-layers", "1", "--batch-size", "1000000000", "--seq-len", "32"];
    let (code, stdout, stderr) = common::run_cli(&args, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stdout.contains("does NOT fit") && stderr.contains("the pair does not fit"), "{stdout}{stderr}");
    let (code, stdout, _) =
        common::run_cli(&["check", t, "--derive-layers", "1", "--batch-size", "2", "--seq-len", "32"], &[]);
    assert_eq!(code, 0);
    // It also names the kernels a run takes on this CPU, under the DISTILL_SIMD cap when there is one.
    assert!(stdout.lines().any(|l| l.starts_with("cpu       f32 GEMM ") && l.contains(", int8 ")), "{stdout}");
    let (code, stdout, _) = common::run_cli(
        &["check", t, "--derive-layers", "1", "--batch-size", "2", "--seq-len", "32", "--json"],
        &[("DISTILL_SIMD", "portable")],
    );
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    let kernels = report["cpu_kernels"].as_str().unwrap();
    assert!(kernels.contains("int8 portable") && kernels.contains("capped at portable"), "{kernels}");
}

#[test]
fn a_cache_wider_than_the_vocabulary_is_named_as_such() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe(tmp.path(), 2, &tmp.path().join("out"));
    let (code, _, stderr) =
        common::run_cli(&["--quiet", "run", r.to_str().unwrap(), "--set", "distill.cache_top_k=100000"], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("distill.cache_top_k = 100000 keeps at least the teacher's whole vocabulary"), "{stderr}");
}

#[test]
fn a_killed_writers_temporary_is_removed_by_the_next_write_there() {
    let tmp = tempfile::tempdir().unwrap();
    // A process that has ended: its pid names a writer that will never finish.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let stale = tmp.path().join(format!(".other-q8_0.gguf.tmp-{pid}"));
    std::fs::write(&stale, vec![0u8; 4096]).unwrap();
    let live = tmp.path().join(format!(".busy.gguf.tmp-{}", std::process::id()));
    std::fs::write(&live, b"a live writer's").unwrap();
    let m = common::fixture("tiny-llama");
    let out = tmp.path().join("tiny-q8_0.gguf");
    let (code, _, stderr) = common::run_cli(
        &["--quiet", "quantize", m.to_str().unwrap(), "--format", "q8_0", "--out", out.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(out.is_file() && !stale.exists(), "the dead writer's temporary is still there");
    assert!(live.exists(), "a live writer's temporary was removed");
}

#[test]
fn an_error_quoting_a_binary_file_is_cut_and_escaped() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("binary");
    std::fs::create_dir_all(&model).unwrap();
    let noise: Vec<u8> = (0..100_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(model.join("config.json"), &noise).unwrap();
    std::fs::copy(common::fixture("tiny-llama").join("model.safetensors"), model.join("model.safetensors")).unwrap();
    let (code, _, stderr) = common::run_cli(&["inspect", model.to_str().unwrap()], &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.len() < 2_500, "{} bytes of error", stderr.len());
    assert!(!stderr.chars().any(|c| c.is_control() && c != '\n'), "{stderr:?}");
}
