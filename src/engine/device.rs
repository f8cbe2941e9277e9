//! The compute device of training and evaluation: the CPU by default. Built with the `cuda` cargo
//! feature (`cargo build --release --features cuda`), `DISTILL_DEVICE=cuda` or `cuda:N` runs the
//! trainer on an NVIDIA GPU through candle's CUDA backend (documented in docs/export.md, "GPU").

use crate::engine::{Error, Result};
use candle_core::Device;

/// The environment variable that selects the device.
pub const ENV: &str = "DISTILL_DEVICE";

/// `cpu`, `cuda` (GPU 0) or `cuda:N`.
pub fn parse(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    if spec.is_empty() || spec == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match spec.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest.strip_prefix(':').and_then(|n| n.parse::<usize>().ok()).ok_or_else(|| bad(&spec))?,
        None => return Err(bad(&spec)),
    };
    cuda(ordinal)
}

fn bad(spec: &str) -> Error {
    Error::Invalid(format!("{ENV}=`{spec}`: expected `cpu`, `cuda` or `cuda:N`"))
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal).map_err(|e| Error::Invalid(format!("{ENV}=cuda:{ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(ordinal: usize) -> Result<Device> {
    Err(Error::Invalid(format!(
        "{ENV}=cuda:{ordinal}, but this distill-tui was built without CUDA; rebuild with `cargo build --release --features cuda`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_the_default_and_bad_names_are_refused() {
        assert!(parse("").unwrap().is_cpu());
        assert!(parse("CPU").unwrap().is_cpu());
        assert!(parse("gpu").unwrap_err().to_string().contains("expected `cpu`, `cuda` or `cuda:N`"));
        assert!(parse("cuda:x").is_err());
        #[cfg(not(feature = "cuda"))]
        assert!(parse("cuda:1").unwrap_err().to_string().contains("--features cuda"));
    }
}
