//! Mixed precision for the linear layers, scoped to a thread like `torch.autocast`.
//!
//! Under [`Precision::Bf16`] every dense [`crate::engine::models::layers::Linear`] multiplies with
//! bf16-rounded inputs and f32 accumulation — forward, and both products of its backward pass —
//! while weights, optimizer state, norms, attention, softmax and losses stay f32. That is what
//! PyTorch's CPU autocast does to `nn.Linear`. On a CPU without AVX512_BF16 the same arithmetic is
//! emulated (inputs rounded to bf16, the f32 GEMM), so results agree up to summation order.
//! f32 scopes compute exactly what they did before.

use super::bf16_gemm::{self, View};
use super::cpu::{Bwd2, Fwd};
use crate::engine::{Error, Result};
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};
use serde::{Deserialize, Serialize};
use std::cell::Cell;

/// Arithmetic of the linear layers' matrix multiplies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 throughout (the default).
    #[default]
    F32,
    /// bf16 inputs, f32 accumulation (autocast).
    Bf16,
    /// int8 weights (one scale per output row) and int8 activations (one scale per row, computed
    /// as they arrive), exact i32 sums ([`super::int8_gemm`]). Without a gradient: for the frozen
    /// teacher's forward only; a layer whose input needs a gradient multiplies in f32.
    Int8,
}

impl Precision {
    pub fn is_f32(&self) -> bool {
        *self == Self::F32
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        }
    }
}

thread_local! {
    static CURRENT: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// The precision in effect on this thread.
pub fn current() -> Precision {
    CURRENT.with(|c| c.get())
}

/// Sets this thread's precision until the guard drops (scopes nest).
pub fn enter(precision: Precision) -> Guard {
    Guard { previous: CURRENT.with(|c| c.replace(precision)) }
}

/// Restores the previous precision on drop.
pub struct Guard {
    previous: Precision,
}

impl Drop for Guard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// True when nothing will differentiate through `x` (a frozen teacher's activations) on the CPU:
/// the layers may then use candle's fused inference kernels (softmax, rope on `[b, h, t, d]`),
/// which record no gradient but take one pass instead of several.
pub fn fast_inference(x: &Tensor) -> bool {
    super::enabled() && !x.track_op() && x.device().is_cpu()
}

/// What a run should know about `precision` on `device`: bf16 on a CPU without AVX512_BF16 is
/// emulated (inputs rounded to bf16, then the f32 GEMM), which gives the kernel's numbers up to
/// summation order at a little under f32 speed; int8 without a SIMD kernel is slow.
/// `key` names the recipe setting in the note.
pub fn emulation_note(key: &str, precision: Precision, device: &candle_core::Device) -> Option<String> {
    match precision {
        Precision::Bf16 if device.is_cpu() && !bf16_gemm::available() => Some(format!(
            "distill.{key} = \"bf16\": this CPU lacks AVX512_BF16, so bf16 matmuls are emulated \
             (inputs rounded to bf16, f32 GEMM): the bf16 kernel's numbers, at a little under \
             {key} = \"f32\" speed"
        )),
        Precision::Int8 if device.is_cpu() && !super::int8_gemm::available() => Some(format!(
            "distill.{key} = \"int8\": this CPU has neither AVX512_VNNI nor AVX2, so the int8 \
             products run in portable scalar code (the same numbers, but some 30x slower than the \
             f32 GEMM): use {key} = \"f32\" here"
        )),
        Precision::Int8 if !device.is_cpu() => {
            Some(format!("distill.{key} = \"int8\" runs on the CPU only; on this device the teacher multiplies in f32"))
        }
        _ => None,
    }
}

/// `a · b` for 2-D f32 tensors at this thread's precision, differentiable.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    match current() {
        // int8 layers never get here ([`crate::engine::models::layers::Linear`] takes them first)
        // unless their input needs a gradient or lies on a GPU: those multiply in f32.
        Precision::F32 | Precision::Int8 => Ok(a.matmul(b)?),
        Precision::Bf16 => bf16_matmul(a, b),
    }
}

/// `a · b` with bf16 inputs and f32 accumulation, differentiable in both arguments.
pub fn bf16_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.rank() != 2 || b.rank() != 2 || a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return Err(Error::Invalid(format!(
            "bf16 matmul takes two 2-D f32 tensors, got {:?} {:?} and {:?} {:?}",
            a.dims(),
            a.dtype(),
            b.dims(),
            b.dtype()
        )));
    }
    if a.device().is_cpu() {
        Ok(a.apply_op2(b, Bf16Matmul)?)
    } else {
        emulated_bf16_matmul(a, b)
    }
}

/// [`bf16_matmul`] composed of candle ops: the same products (bf16 × bf16 is exact in f32), summed
/// by candle's f32 GEMM. What a GPU tensor takes (a CPU without AVX512_BF16 runs
/// [`bf16_gemm::emulated`] inside the same op as the kernel, which is faster). On the CPU its
/// backward also rounds the output gradient to bf16 before both products, as the kernel's does, so
/// the two agree in gradients too, up to summation order; on a GPU the output gradient stays f32
/// (straight-through rounding only).
pub fn emulated_bf16_matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let y = round_bf16(a)?.matmul(&round_bf16(b)?)?;
    if y.device().is_cpu() {
        Ok(y.apply_op1(RoundGradient)?)
    } else {
        Ok(y)
    }
}

/// The identity, whose backward rounds the incoming gradient to bf16 (CPU).
struct RoundGradient;

impl CustomOp1 for RoundGradient {
    fn name(&self) -> &'static str {
        "round-gradient-bf16"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Fwd {
        let (CpuStorage::F32(data), Some((start, end))) = (s, l.contiguous_offsets()) else {
            candle_core::bail!("bf16 gradient rounding: contiguous f32 expected")
        };
        Ok((CpuStorage::F32(data[start..end].to_vec()), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.to_dtype(DType::BF16)?.to_dtype(DType::F32)?))
    }
}

/// `x` rounded to the nearest bf16, as f32; the gradient passes straight through.
fn round_bf16(x: &Tensor) -> Result<Tensor> {
    let rounded = x.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
    Ok((x + (rounded - x)?.detach())?)
}

/// The candle op over [`bf16_gemm::matmul`]; its backward is two more of itself.
struct Bf16Matmul;

fn view<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<View<'a>> {
    let data = match s {
        CpuStorage::F32(d) => d.as_slice(),
        _ => candle_core::bail!("bf16 matmul: f32 storage expected"),
    };
    let (&[rows, cols], &[rs, cs]) = (l.dims(), l.stride()) else {
        candle_core::bail!("bf16 matmul: 2-D layout expected, got {:?}", l.dims())
    };
    Ok(View { data, offset: l.start_offset(), rows, cols, rs, cs })
}

impl CustomOp2 for Bf16Matmul {
    fn name(&self) -> &'static str {
        "bf16-matmul"
    }

    fn cpu_fwd(&self, s1: &CpuStorage, l1: &Layout, s2: &CpuStorage, l2: &Layout) -> Fwd {
        let (a, b) = (view(s1, l1)?, view(s2, l2)?);
        if a.cols != b.rows {
            candle_core::bail!("bf16 matmul: shapes [{}, {}] and [{}, {}] do not chain", a.rows, a.cols, b.rows, b.cols)
        }
        let c = if bf16_gemm::available() { bf16_gemm::matmul(&a, &b) } else { bf16_gemm::emulated(&a, &b) };
        Ok((CpuStorage::F32(c), Shape::from((a.rows, b.cols))))
    }

    fn bwd(&self, a: &Tensor, b: &Tensor, _res: &Tensor, grad: &Tensor) -> Bwd2 {
        // C = A·B: dA = dC·Bᵀ, dB = Aᵀ·dC (both through the same kernel, as autocast does).
        let grad_a = grad.apply_op2_no_bwd(&b.t()?, &Bf16Matmul)?;
        let grad_b = a.t()?.apply_op2_no_bwd(grad, &Bf16Matmul)?;
        Ok((Some(grad_a), Some(grad_b)))
    }
}
