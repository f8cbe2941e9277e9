//! The key/value cache of cached decoding, and the attention step both causal families run
//! against it.
//!
//! f32 on the CPU (with the kernels on): each layer's keys and values live in a
//! [`HostKv`] appended in place; the prefill runs the
//! fused causal attention on its own keys, each decoded token reads the cache directly. Any other
//! dtype or device (or the reference kernels) keeps candle tensors, concatenated each step.

use super::layers::{attention, causal_mask};
use crate::engine::kernels::{self, attention as fused, kv_cache::HostKv};
use crate::engine::{Error, Result};
use candle_core::{DType, Tensor};

/// What one layer holds.
#[derive(Clone, Debug, Default)]
pub(crate) enum KvSlot {
    #[default]
    Empty,
    Host(HostKv),
    /// `[b, kv_heads, t, d]` keys and values.
    Tensors(Tensor, Tensor),
}

/// The keys and values a causal LM computed for the positions it has seen, per layer, so each
/// new token costs one position's work.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    pub(crate) layers: Vec<KvSlot>,
    /// Positions held.
    pub len: usize,
}

impl KvCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The first position of a step of `t` tokens through `layers` layers: several tokens only
    /// into an empty cache (the prefill), then one at a time.
    pub(crate) fn start(&mut self, t: usize, layers: usize) -> Result<usize> {
        if t == 0 || (t > 1 && self.len > 0) {
            return Err(Error::Invalid(format!(
                "a cached step takes the whole prompt into an empty cache, then one token at a time (got {t} tokens after {})",
                self.len
            )));
        }
        if self.layers.len() != layers {
            self.layers = vec![KvSlot::Empty; layers];
        }
        Ok(self.len)
    }

    /// Bytes the cached keys and values take (the host buffers' capacity, or the tensors').
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|slot| match slot {
                KvSlot::Empty => 0,
                KvSlot::Host(h) => h.bytes(),
                KvSlot::Tensors(k, v) => (k.elem_count() + v.elem_count()) * k.dtype().size_in_bytes(),
            })
            .sum()
    }
}

/// Causal attention of `t` new positions that joins their keys and values to `slot`: `q`
/// `[b, t, heads, d]` (after rope), `k` and `v` `[b, t, kv_heads, d]`. Returns `[b, t, heads, d]`.
pub(crate) fn attend_cached(slot: &mut KvSlot, q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Result<Tensor> {
    let (b, t, heads, d) = q.dims4()?;
    let kv = k.dim(2)?;
    let host = kernels::enabled()
        && [q, k, v].iter().all(|x| x.device().is_cpu() && x.dtype() == DType::F32)
        && match slot {
            KvSlot::Empty => true,
            KvSlot::Host(h) => h.dims() == (b, kv, d),
            KvSlot::Tensors(..) => false,
        };
    if host {
        if matches!(slot, KvSlot::Empty) {
            *slot = KvSlot::Host(HostKv::new(b, kv, d));
        }
        let KvSlot::Host(cache) = slot else { unreachable!("set above") };
        let data = |x: &Tensor| -> Result<Vec<f32>> { Ok(x.flatten_all()?.to_vec1::<f32>()?) };
        let first = cache.is_empty();
        cache.append(&data(k)?, &data(v)?, t);
        if first && t > 1 && fused::applies(q) {
            return fused::causal_attention(q, k, v, scale);
        }
        let y = cache.attend(&data(q)?, t, heads, scale as f32);
        return Ok(Tensor::from_vec(y, (b, t, heads, d), q.device())?);
    }
    let bhtd = |y: &Tensor| -> Result<Tensor> { Ok(y.transpose(1, 2)?.contiguous()?) };
    let (k, v) = match std::mem::take(slot) {
        KvSlot::Tensors(pk, pv) => (Tensor::cat(&[&pk, &bhtd(k)?], 2)?, Tensor::cat(&[&pv, &bhtd(v)?], 2)?),
        _ => (bhtd(k)?, bhtd(v)?),
    };
    *slot = KvSlot::Tensors(k.clone(), v.clone());
    let mask = if t > 1 { Some(causal_mask(t, q.device())?) } else { None };
    Ok(attention(&bhtd(q)?, &k, &v, mask.as_ref(), scale)?.transpose(1, 2)?)
}
