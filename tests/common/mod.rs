//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod animals;
pub mod fake_hub;

use candle_core::{DType, Device, Tensor};
use distill_tui::engine::context::Settings;
use distill_tui::engine::hub::HubSettings;
use distill_tui::engine::loader::{load_model, LoadOptions, LoadedModel};
use distill_tui::engine::source::resolve;
use std::path::{Path, PathBuf};

/// `../shared` next to the repository.
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The fixture model folders (`$DISTILL_GOLDEN_DIR` or `../shared/fixtures/models`).
pub fn golden_dir() -> PathBuf {
    std::env::var_os("DISTILL_GOLDEN_DIR").map(PathBuf::from).unwrap_or_else(|| shared_dir().join("fixtures/models"))
}

pub fn fixture(name: &str) -> PathBuf {
    shared_dir().join("fixtures/models").join(name)
}

/// The engine settings of the tests: this machine's environment (read, never set), with the hub
/// offline so that a model missing from the cache fails at once instead of trying the network.
pub fn settings() -> Settings {
    let mut s = Settings::from_env().expect("the environment's settings");
    s.hub.offline = true;
    s
}

/// The hub settings of [`settings`].
pub fn hub() -> HubSettings {
    settings().hub
}

/// Loads a model through the same resolver a hub id goes through.
pub fn load(spec: &str, trainable: bool) -> LoadedModel {
    let resolved = resolve(spec, &hub(), &|_| {}).unwrap_or_else(|e| panic!("resolving {spec}: {e}"));
    load_model(&resolved, &LoadOptions { trainable, device: Device::Cpu, keep_quantized: false })
        .unwrap_or_else(|e| panic!("loading {spec}: {e}"))
}

pub fn load_fixture(name: &str, trainable: bool) -> LoadedModel {
    load(fixture(name).to_str().unwrap(), trainable)
}

/// `golden.safetensors` of a fixture: (input ids as u32, expected logits).
pub fn golden(dir: &std::path::Path) -> (Tensor, Tensor) {
    let t = candle_core::safetensors::load(dir.join("golden.safetensors"), &Device::Cpu).unwrap();
    let ids = t["input_ids"].to_dtype(DType::U32).unwrap();
    (ids, t["logits"].clone())
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// A writable copy of a fixture folder.
pub fn copy_fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let p = entry.unwrap().path();
        let to = dir.join(p.file_name().unwrap());
        std::fs::copy(&p, &to).unwrap();
        let mut perms = std::fs::metadata(&to).unwrap().permissions();
        #[allow(clippy::permissions_set_readonly_false)]
        perms.set_readonly(false);
        std::fs::set_permissions(&to, perms).unwrap();
    }
    (tmp, dir)
}

/// Runs the `distill-tui` binary with extra environment; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_distill-tui"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running distill-tui");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `distill-tui run RECIPE --json` (with `env`), waits until the checkpoint under `root`
/// (`root/checkpoint/checkpoint.json`) reaches `step`, then kills the process with SIGKILL.
pub fn kill_9_at_checkpoint(recipe: &Path, env: &[(&str, &str)], root: &Path, step: u64) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_distill-tui"));
    cmd.args(["run", recipe.to_str().unwrap(), "--json"]);
    cmd.envs(env.iter().copied()).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let pointer = root.join("checkpoint/checkpoint.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let at = std::fs::read_to_string(&pointer)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["step"].as_u64());
        if at.is_some_and(|s| s >= step) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no checkpoint appeared in {}", pointer.display());
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// python3 with the given modules importable, or the reason it is not available.
pub fn python_with(modules: &[&str]) -> Result<(), String> {
    let code = modules.iter().map(|m| format!("import {m}")).collect::<Vec<_>>().join("; ");
    match std::process::Command::new("python3").args(["-c", &code]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "python3 lacks {modules:?}: {}",
            String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("")
        )),
        Err(e) => Err(format!("python3 not runnable: {e}")),
    }
}

/// Deterministic xorshift values in [-1, 1), every seventh `spike` times larger (a spread of
/// magnitudes, as in real activations).
pub fn spread_values(n: usize, seed: u64, spike: f64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            let u = (s >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
            (u * if i % 7 == 0 { spike } else { 1.0 }) as f32
        })
        .collect()
}

/// The importance matrix (and, with `hessians`, GPTQ's Gram matrices) of `model` on the first
/// `max_tokens` tokens of *Emma*, in windows of `seq_len`.
pub fn calibrated_on_emma(
    model: &LoadedModel,
    seq_len: usize,
    max_tokens: usize,
    hessians: bool,
) -> distill_tui::engine::quant::Imatrix {
    use distill_tui::engine::context::Monitor;
    use distill_tui::engine::eval::EvalOptions;
    static NO_CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let text = std::fs::read_to_string(shared_dir().join("data/austen/emma.txt")).unwrap();
    let opts = EvalOptions { seq_len, max_tokens: Some(max_tokens), ..Default::default() };
    distill_tui::engine::quant::calibrate(model, &text, &opts, hessians, &Monitor::silent(&NO_CANCEL)).unwrap()
}

/// `model`'s parameter `name` as (rows, cols, row-major values) when its rows are a multiple of
/// `block` wide; `None` otherwise.
pub fn matrix_in_blocks_of(model: &LoadedModel, name: &str, block: usize) -> Option<(usize, usize, Vec<f32>)> {
    let w = &model.params[name];
    let (rows, cols) = w.dims2().ok()?;
    cols.is_multiple_of(block).then(|| (rows, cols, w.flatten_all().unwrap().to_vec1().unwrap()))
}

/// `model` quantized in `format` with the calibration `imatrix` (importance and Hessians).
pub fn quantize_calibrated(
    model: &LoadedModel,
    format: distill_tui::engine::quant::QuantFormat,
    imatrix: &distill_tui::engine::quant::Imatrix,
) -> distill_tui::engine::quant::QuantizedModel {
    use distill_tui::engine::context::Monitor;
    use distill_tui::engine::quant::{quantize_model, QuantOptions};
    static NO_CANCEL: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    quantize_model(
        model,
        format,
        &QuantOptions { imatrix: Some(imatrix), ..Default::default() },
        &Monitor::silent(&NO_CANCEL),
    )
    .unwrap_or_else(|e| panic!("quantizing in {format}: {e}"))
}
