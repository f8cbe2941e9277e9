//! `distill.teacher_precision`: how the frozen teacher computes during training.

use crate::engine::kernels::autocast::Precision;
use crate::engine::quant::format::QuantFormat;
use candle_core::quantized::GgmlDType;
use serde::{Deserialize, Serialize};

/// The teacher's arithmetic in the training steps. Absent from a recipe: a GGUF teacher runs in
/// its file's block formats ([`Self::Gguf`]), any other teacher at `distill.precision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TeacherPrecision {
    /// f32 weights (a GGUF teacher dequantized) multiplied at this precision: `f32`, `bf16`, `int8`.
    Compute(Precision),
    /// A GGUF teacher's matrices kept in the block formats its file stores (`gguf`), multiplied
    /// without an f32 copy: the teacher's memory is what its file holds.
    Gguf,
    /// The teacher's linear layers quantized once at load to a GGML block format (`q8_0`,
    /// `q4_k`, …), its f32 weights then released.
    Ggml(GgmlDType),
}

impl TeacherPrecision {
    pub fn parse(name: &str) -> Result<Self, String> {
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "f32" => return Ok(Self::Compute(Precision::F32)),
            "bf16" => return Ok(Self::Compute(Precision::Bf16)),
            "int8" => return Ok(Self::Compute(Precision::Int8)),
            "gguf" => return Ok(Self::Gguf),
            _ => {}
        }
        match QuantFormat::parse(&lower) {
            Ok(QuantFormat::Ggml(d)) => Ok(Self::Ggml(d)),
            _ => Err(format!(
                "distill.teacher_precision = \"{name}\" is not one of: f32, bf16, int8 (matmul precision), \
                 gguf (a GGUF teacher in its own block formats), or a GGML block format such as q8_0, \
                 q6_k, q4_k, q4_0 (the teacher quantized once at load)"
            )),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Self::Compute(p) => p.name().to_string(),
            Self::Gguf => "gguf".into(),
            Self::Ggml(d) => QuantFormat::Ggml(*d).name(),
        }
    }

    /// The autocast precision of the teacher's forward (block formats multiply in f32).
    pub fn compute(&self, fallback: Precision) -> Precision {
        match self {
            Self::Compute(p) => *p,
            Self::Gguf | Self::Ggml(_) => fallback,
        }
    }
}

impl TeacherPrecision {
    /// What runs on this machine: `int8` on a CPU without a SIMD int8 kernel (`simd` false: neither
    /// AVX512_VNNI nor AVX2) becomes `f32`, with the reason — the portable kernel computes the same
    /// numbers several times slower than the f32 GEMM (0.15× PyTorch f32 measured on an AVX2 EPYC
    /// before the AVX2 kernel existed), so it would cost time and buy nothing.
    pub fn on_this_machine(self, cpu: bool, simd: bool) -> (Self, Option<String>) {
        match self {
            Self::Compute(Precision::Int8) if cpu && !simd => {
                use crate::engine::kernels::isa::{ceiling, Ceiling};
                let which = match ceiling() {
                    Ceiling::Native => "this CPU has neither AVX512_VNNI nor AVX2".to_string(),
                    capped => format!("the kernels are capped at `{}` (DISTILL_SIMD)", capped.name()),
                };
                let why = format!(
                    "distill.teacher_precision = \"int8\": {which}, so the int8 products would run in portable code \
                     several times slower than the f32 GEMM; the teacher computes in f32 instead"
                );
                (Self::Compute(Precision::F32), Some(why))
            }
            mode => (mode, None),
        }
    }
}

impl TryFrom<String> for TeacherPrecision {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<TeacherPrecision> for String {
    fn from(p: TeacherPrecision) -> String {
        p.name()
    }
}

impl From<Precision> for TeacherPrecision {
    fn from(p: Precision) -> Self {
        Self::Compute(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_falls_back_to_f32_only_on_a_cpu_without_an_int8_kernel() {
        let int8 = TeacherPrecision::Compute(Precision::Int8);
        let (mode, why) = int8.on_this_machine(true, false);
        assert_eq!(mode, TeacherPrecision::Compute(Precision::F32));
        assert!(why.unwrap().contains("neither AVX512_VNNI nor AVX2"));
        assert_eq!(int8.on_this_machine(true, true), (int8, None));
        // On a GPU the int8 layers multiply in f32 already (the emulation note says so).
        assert_eq!(int8.on_this_machine(false, false), (int8, None));
        let q8 = TeacherPrecision::Ggml(GgmlDType::Q8_0);
        assert_eq!(q8.on_this_machine(true, false), (q8, None));
    }

    #[test]
    fn names_round_trip_and_bad_names_list_the_choices() {
        for name in ["f32", "bf16", "int8", "gguf", "q8_0", "q4_k", "q6_k", "q4_0"] {
            assert_eq!(TeacherPrecision::parse(name).unwrap().name(), name);
        }
        assert_eq!(TeacherPrecision::parse("Q8_0").unwrap(), TeacherPrecision::Ggml(GgmlDType::Q8_0));
        for bad in ["int4-g64", "f16", "fp8", ""] {
            let e = TeacherPrecision::parse(bad).unwrap_err();
            assert!(e.contains("q8_0") && e.contains("gguf"), "{e}");
        }
    }
}
