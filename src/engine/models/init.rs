//! Seeded initialisation for models built without a checkpoint (derived students, pretraining).
//!
//! candle's CPU RNG cannot be seeded, so every tensor is drawn from its own ChaCha stream keyed by
//! (seed, tensor name): the result does not depend on construction order. As in transformers'
//! `_init_weights`: matrices ~ N(0, std²), biases 0, norm weights 1. An `overlay` supplies tensors
//! copied from a teacher (DistilBERT-style initialisation); those win when their shape matches.

use crate::engine::Result;
use candle_core::{Device, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use std::collections::HashMap;

#[derive(Clone, Debug)]
pub struct InitSource {
    pub seed: u64,
    /// Standard deviation of weight matrices (transformers' `initializer_range`, usually 0.02).
    pub std: f64,
    /// Tensors copied from elsewhere, by name.
    pub overlay: HashMap<String, Tensor>,
}

impl InitSource {
    pub fn new(seed: u64, std: f64) -> Self {
        Self { seed, std, overlay: HashMap::new() }
    }

    /// The tensor `name` of `shape`: from the overlay when it fits, else freshly drawn.
    pub fn tensor(&self, name: &str, shape: &[usize], device: &Device) -> Result<Tensor> {
        if let Some(t) = self.overlay.get(name).filter(|t| t.dims() == shape) {
            return Ok(t.to_device(device)?);
        }
        let n: usize = shape.iter().product();
        let data: Vec<f32> = if name.ends_with(".bias") {
            vec![0.0; n]
        } else if shape.len() == 1 {
            vec![1.0; n]
        } else {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ fnv1a(name));
            let normal = Normal::new(0.0f32, self.std as f32).expect("finite std");
            (0..n).map(|_| normal.sample(&mut rng)).collect()
        };
        Ok(Tensor::from_vec(data, shape, device)?)
    }
}

/// FNV-1a, a stable 64-bit hash of a tensor name.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}
