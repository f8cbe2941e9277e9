//! Checkpoints: each model's weights and optimizer moments, and a small JSON state, written
//! atomically; `checkpoint.json` is written last and names the step, so a run killed at any moment
//! resumes from the last complete checkpoint.

use super::optim::AdamW;
use crate::engine::derive::save_safetensors;
use crate::engine::fsutil::write_atomic;
use crate::engine::{Error, Result};
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The pointer file: the last complete checkpoint.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CheckpointState {
    pub step: usize,
    /// Roles saved (`student`, `baseline`, `pretrain`).
    pub roles: Vec<String>,
    /// Whatever the trainer needs to continue (histories, timing).
    pub trainer: serde_json::Value,
}

pub fn dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// Saves one model's parameters and optimizer under `checkpoint/<role>-<step>.*`.
pub fn save_role(out: &Path, role: &str, step: usize, vars: &BTreeMap<String, Var>, opt: &AdamW) -> Result<()> {
    let d = dir(out);
    save_safetensors(&d.join(format!("{role}-{step}.model.safetensors")), &crate::engine::loader::var_values(vars))?;
    save_safetensors(&d.join(format!("{role}-{step}.optim.safetensors")), &opt.state())
}

/// Writes the pointer (after every role's files) and removes files of older checkpoints.
pub fn commit(out: &Path, state: &CheckpointState) -> Result<()> {
    let d = dir(out);
    let text = serde_json::to_string_pretty(state).map_err(|e| Error::Invalid(e.to_string()))?;
    write_atomic(&d.join("checkpoint.json"), text.as_bytes())?;
    let keep: Vec<String> = state.roles.iter().map(|r| format!("{r}-{}.", state.step)).collect();
    if let Ok(entries) = std::fs::read_dir(&d) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".safetensors") && !keep.iter().any(|k| name.starts_with(k)) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

/// The last complete checkpoint of a run directory, if any.
pub fn load_state(out: &Path) -> Result<Option<CheckpointState>> {
    let p = dir(out).join("checkpoint.json");
    if !p.exists() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&p).map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Invalid(format!("checkpoint {} is unreadable: {e}; delete it to start over", p.display())))
}

/// Restores one model's parameters and optimizer from a checkpoint.
pub fn restore_role(out: &Path, role: &str, step: usize, vars: &BTreeMap<String, Var>, opt: &mut AdamW) -> Result<()> {
    let d = dir(out);
    let load = |kind: &str| -> Result<BTreeMap<String, Tensor>> {
        let p = d.join(format!("{role}-{step}.{kind}.safetensors"));
        let map = candle_core::safetensors::load(&p, &Device::Cpu)
            .map_err(|e| Error::CorruptWeights { path: p.clone(), detail: e.to_string() })?;
        Ok(map.into_iter().collect())
    };
    let weights = load("model")?;
    for (name, var) in vars {
        let t = weights.get(name).ok_or_else(|| Error::MissingTensor {
            name: name.clone(),
            context: format!("{role} checkpoint at step {step}"),
        })?;
        var.set(&t.to_device(var.device())?)?;
    }
    opt.load_state(&load("optim")?, step)
}
