//! What calibration records of each linear layer's inputs: per-column sums of squares (the
//! importance matrix) and, for GPTQ, the Gram matrix `Σ x xᵀ`.

use crate::engine::quant::gptq::Hessian;
use crate::engine::Result;
use candle_core::{DType, Tensor};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Accumulates, per named linear layer, the sum of squares of each input column over every row it
/// sees: the importance matrix of activation-aware quantization (llama.cpp's `imatrix`). Made
/// [`InputRecorder::with_gram`], it also sums each layer's input Gram matrix `Σ x xᵀ` (GPTQ's
/// Hessian), once per input tensor: layers that read the same tensor (q, k and v; gate and up)
/// share one matrix.
#[derive(Default)]
pub struct InputRecorder {
    sums: Mutex<BTreeMap<String, (Vec<f64>, usize)>>,
    grams: Option<Mutex<Grams>>,
}

#[derive(Default)]
struct Grams {
    /// Layer name → its matrix in `mats`.
    slot: BTreeMap<String, usize>,
    /// `Σ x xᵀ` (`[n, n]` row-major), `n`, rows summed.
    mats: Vec<(Vec<f64>, usize, usize)>,
    /// The last input recorded and its matrix.
    last: Option<(candle_core::TensorId, usize)>,
}

impl InputRecorder {
    /// A recorder that also sums the input Gram matrices.
    pub fn with_gram() -> Self {
        Self { grams: Some(Mutex::new(Grams::default())), ..Default::default() }
    }

    /// Records `x` (`[rows, in]`), the flattened view of the layer's input `input`.
    pub(super) fn record(&self, name: &str, input: candle_core::TensorId, x: &Tensor) -> Result<()> {
        let rows = x.dim(0)?;
        let x = x.detach().to_dtype(DType::F32)?;
        let sq: Vec<f32> = x.sqr()?.sum(0)?.to_vec1()?;
        {
            let mut sums = self.sums.lock().expect("input recorder poisoned");
            let (acc, n) = sums.entry(name.to_string()).or_insert_with(|| (vec![0.0; sq.len()], 0));
            for (a, v) in acc.iter_mut().zip(&sq) {
                *a += *v as f64;
            }
            *n += rows;
        }
        let Some(grams) = &self.grams else { return Ok(()) };
        let slot = {
            let mut g = grams.lock().expect("input recorder poisoned");
            let slot = match (g.slot.get(name).copied(), g.last) {
                // This input is already in this layer's (shared) matrix.
                (Some(slot), Some((last, last_slot))) if last == input && last_slot == slot => return Ok(()),
                (Some(slot), _) => slot,
                // A new layer reading the input the previous one read: it shares that matrix.
                (None, Some((last, last_slot))) if last == input && g.mats[last_slot].1 == sq.len() => {
                    g.slot.insert(name.to_string(), last_slot);
                    return Ok(());
                }
                (None, _) => {
                    g.mats.push((vec![0.0; sq.len() * sq.len()], sq.len(), 0));
                    let slot = g.mats.len() - 1;
                    g.slot.insert(name.to_string(), slot);
                    slot
                }
            };
            g.last = Some((input, slot));
            slot
        };
        let gram: Vec<f32> = x.t()?.matmul(&x)?.flatten_all()?.to_vec1()?;
        let mut g = grams.lock().expect("input recorder poisoned");
        let (acc, _, n) = &mut g.mats[slot];
        for (a, v) in acc.iter_mut().zip(&gram) {
            *a += *v as f64;
        }
        *n += rows;
        Ok(())
    }

    /// Mean square of each input column, by weight name.
    pub fn means(&self) -> BTreeMap<String, Vec<f32>> {
        let sums = self.sums.lock().expect("input recorder poisoned");
        sums.iter()
            .map(|(name, (acc, n))| (name.clone(), acc.iter().map(|a| (a / (*n).max(1) as f64) as f32).collect()))
            .collect()
    }

    /// The summed input Gram matrices by weight name (empty unless made [`InputRecorder::with_gram`]);
    /// layers that share an input share the matrix.
    pub fn hessians(&self) -> BTreeMap<String, Arc<Hessian>> {
        let Some(grams) = &self.grams else { return BTreeMap::new() };
        let mut g = grams.lock().expect("input recorder poisoned");
        let shared: Vec<Arc<Hessian>> = std::mem::take(&mut g.mats)
            .into_iter()
            .map(|(data, n, tokens)| Arc::new(Hessian { n, data, tokens }))
            .collect();
        g.slot.iter().map(|(name, &slot)| (name.clone(), shared[slot].clone())).collect()
    }
}
