//! Helpers shared by the integration tests.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use distill_tui::engine::hub::HubSettings;
use distill_tui::engine::loader::{load_model, LoadOptions, LoadedModel};
use distill_tui::engine::source::resolve;
use std::path::PathBuf;

/// `../shared` next to the repository.
pub fn shared_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared")
}

/// The fixture model folders (`$DISTILL_GOLDEN_DIR` or `../shared/fixtures/models`).
pub fn golden_dir() -> PathBuf {
    std::env::var_os("DISTILL_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| shared_dir().join("fixtures/models"))
}

pub fn fixture(name: &str) -> PathBuf {
    shared_dir().join("fixtures/models").join(name)
}

/// Loads a model through the same resolver a hub id goes through.
pub fn load(spec: &str, trainable: bool) -> LoadedModel {
    let resolved = resolve(spec, &HubSettings::from_env(), &|_| {}).unwrap_or_else(|e| panic!("resolving {spec}: {e}"));
    load_model(&resolved, &LoadOptions { trainable, device: Device::Cpu }).unwrap_or_else(|e| panic!("loading {spec}: {e}"))
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
