//! The output layer's share of the backward pass, by hand, for a dense f32 head on the CPU.
//!
//! Through candle's autograd every chunk of logits costs, besides its two products, a
//! `[vocab, hidden]` weight gradient that is allocated, added (transposed) into a zero-filled
//! accumulator, and added once more into the step's sum: for SmolLM2 that is 113 MB written about
//! five times per chunk. Here the loss gradient with respect to the chunk's logits `g = ∂L/∂z`
//! comes from the loss op alone, and the head's two products are
//!
//! - `∂L/∂h = g · W`, the chunk's rows of the hidden states' gradient;
//! - `∂L/∂W += gᵀ · h`, accumulated in place by the GEMM into one buffer per micro-batch.
//!
//! The results equal the autograd path's up to f32 summation order
//! (`tests/cli/trainer.rs`, `chunked_loss_gradients_equal_a_single_backward_pass`).

use crate::engine::kernels::autocast::{self, Precision};
use crate::engine::kernels::{cpu::gemm_threads, linear};
use crate::engine::models::Network;
use crate::engine::{Error, Result};
use candle_core::{CpuStorage, DType, Storage, Tensor, Var};

/// The head weight `W` `[vocab, hidden]` of a student and its gradient, accumulated over chunks.
pub struct HeadGrad {
    /// Index of `W` in the step's variables.
    index: usize,
    /// `W` without its graph.
    weight: Tensor,
    vocab: usize,
    hidden: usize,
    /// `Σ gᵀ · h` over the chunks so far, row-major `[vocab, hidden]`.
    sum: Vec<f32>,
    started: bool,
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
fn with_data<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(data)), Some((start, end))) = (&*storage, layout.contiguous_offsets()) else {
        return Err(Error::Invalid("head gradient: a contiguous f32 CPU tensor expected".into()));
    };
    Ok(f(&data[start..end]))
}

impl HeadGrad {
    /// `Some` when the student's head is a dense f32 CPU weight among `vars`, without a bias, and
    /// this thread computes in f32 (under bf16 the head's products are bf16 ones: autograd path).
    pub fn new(student: &Network, vars: &[&Var]) -> Result<Option<Self>> {
        let Some(w) = student.lm_head_weight() else { return Ok(None) };
        if !crate::engine::kernels::enabled()
            || autocast::current() != Precision::F32
            || !w.device().is_cpu()
            || w.dtype() != DType::F32
        {
            return Ok(None);
        }
        let Some(index) = vars.iter().position(|v| v.as_tensor().id() == w.id()) else { return Ok(None) };
        let (vocab, hidden) = w.dims2()?;
        Ok(Some(Self {
            index,
            weight: w.detach().contiguous()?,
            vocab,
            hidden,
            sum: vec![0f32; vocab * hidden],
            started: false,
        }))
    }

    /// The logits `h · Wᵀ` of a chunk of hidden states `[rows, hidden]`, as a leaf to differentiate.
    pub fn logits(&self, h: &Tensor) -> Result<Var> {
        let (h, wt) = (h.detach(), self.weight.t()?);
        let z = match linear::matmul(&h, &wt)? {
            Some(z) => z,
            None => h.matmul(&wt)?,
        };
        Ok(Var::from_tensor(&z)?)
    }

    /// From `g = ∂L/∂z` `[rows, vocab]` and the chunk's `h` `[rows, hidden]`: returns `∂L/∂h` and
    /// adds `gᵀ · h` to the head's gradient.
    pub fn backward(&mut self, g: &Tensor, h: &Tensor) -> Result<Tensor> {
        let (g, h) = (g.contiguous()?, h.detach().contiguous()?);
        let rows = g.dim(0)?;
        if g.dims() != [rows, self.vocab] || h.dims() != [rows, self.hidden] {
            return Err(Error::Invalid(format!(
                "head gradient: g {:?} and h {:?} for a [{}, {}] head",
                g.dims(),
                h.dims(),
                self.vocab,
                self.hidden
            )));
        }
        let grad_h = match linear::matmul(&g, &self.weight)? {
            Some(x) => x,
            None => g.matmul(&self.weight)?,
        };
        let (vocab, hidden, read_dst) = (self.vocab, self.hidden, self.started);
        let dst = self.sum.as_mut_ptr();
        with_data(&g, |gd| {
            with_data(&h, |hd| {
                // SAFETY: `dst` holds vocab × hidden floats (row-major, strides hidden and 1); the
                // left operand is gᵀ read through g's row-major strides ([vocab, rows]: column
                // stride vocab, row stride 1), the right one h ([rows, hidden], strides hidden, 1);
                // both slices hold exactly rows × vocab and rows × hidden floats (checked above).
                unsafe {
                    gemm_threads(
                        (vocab, hidden, rows),
                        dst,
                        hidden,
                        read_dst,
                        gd.as_ptr(),
                        (1, vocab),
                        hd.as_ptr(),
                        (hidden, 1),
                    )
                }
            })
        })??;
        self.started = true;
        Ok(grad_h)
    }

    /// The accumulated gradient of the head weight and its index among the variables
    /// (`None` before any chunk).
    pub fn finish(self) -> Result<Option<(usize, Tensor)>> {
        if !self.started {
            return Ok(None);
        }
        let device = self.weight.device().clone();
        Ok(Some((self.index, Tensor::from_vec(self.sum, (self.vocab, self.hidden), &device)?)))
    }
}
