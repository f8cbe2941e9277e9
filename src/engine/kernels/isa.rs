//! Which instruction sets the kernels may use: the CPU's own, detected at run time, capped by a
//! process-wide [`Ceiling`] that `main` sets once from `DISTILL_SIMD` before any kernel runs.
//!
//! The cap exists to run and measure the paths another CPU takes on the machine at hand — the
//! machines this project is built on change between AVX-512 with bf16, AVX-512 with VNNI and
//! AVX2 only: `DISTILL_SIMD=avx2` makes an AVX-512 machine take the AVX2 int8 kernel, the
//! emulated bf16 product and the AVX2 tier of the fused kernels; `portable` takes the scalar
//! kernels. candle's f32 GEMM (the `gemm` crate) detects on its own: its AVX-512 kernels are
//! compiled in by this crate's `avx512-gemm` feature (on by default), so a build without that
//! feature (`--no-default-features --features tui`) runs its AVX2 kernels everywhere.
//! `docs/benchmarks.md` says how a comparison run uses both.

use std::sync::OnceLock;

/// The highest instruction-set level the kernels may use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ceiling {
    /// No SIMD beyond the compiler's baseline: the portable kernels.
    Portable,
    /// AVX2 + FMA + F16C (x86-64-v3), none of AVX-512.
    Avx2,
    /// Whatever the CPU has.
    #[default]
    Native,
}

impl Ceiling {
    /// `native`, `avx2` or `portable` (case and surrounding spaces ignored).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "native" | "" => Some(Self::Native),
            "avx2" => Some(Self::Avx2),
            "portable" | "scalar" => Some(Self::Portable),
            _ => None,
        }
    }

    /// The name `parse` reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Native => "native",
            Self::Avx2 => "avx2",
            Self::Portable => "portable",
        }
    }

    /// True when a kernel may use `feature` (a name as `is_x86_feature_detected!` spells it)
    /// under this ceiling; whether the CPU has it is [`has`]'s other half.
    pub fn allows(self, feature: &str) -> bool {
        match self {
            Self::Native => true,
            Self::Portable => false,
            Self::Avx2 => matches!(
                feature,
                "sse"
                    | "sse2"
                    | "sse3"
                    | "ssse3"
                    | "sse4.1"
                    | "sse4.2"
                    | "avx"
                    | "avx2"
                    | "fma"
                    | "f16c"
                    | "bmi1"
                    | "bmi2"
            ),
        }
    }
}

static CEILING: OnceLock<Ceiling> = OnceLock::new();

/// Sets the process's ceiling; only the first call counts, and it must come before any kernel
/// asks [`has`] (kernels cache what they detect). Returns false when a ceiling was already set
/// (or read) and differs from `c`.
pub fn set_ceiling(c: Ceiling) -> bool {
    *CEILING.get_or_init(|| c) == c
}

/// The process's ceiling ([`Ceiling::Native`] unless `main` set another).
pub fn ceiling() -> Ceiling {
    *CEILING.get_or_init(Ceiling::default)
}

/// One line for a run's log: which kernel each kind of product takes on this CPU under the
/// ceiling, e.g. `CPU kernels: f32 GEMM AVX-512, int8 AVX512_VNNI, bf16 AVX512_BF16, fused AVX-512`.
pub fn describe() -> String {
    format!("CPU kernels: {}", kernels())
}

/// [`describe`] without its label (the pair check's `cpu_kernels`).
pub fn kernels() -> String {
    // candle's GEMM (the `gemm` crate) does its own detection, uncapped by the ceiling.
    let gemm = if cfg!(feature = "avx512-gemm") && detected("avx512f") {
        "AVX-512"
    } else if detected("fma") {
        "AVX2"
    } else if cfg!(target_arch = "aarch64") {
        "NEON"
    } else {
        "portable"
    };
    let int8 = super::int8_gemm::Int8Kernel::detected().name();
    let bf16 = if super::bf16_gemm::available() { "AVX512_BF16" } else { "emulated (f32 GEMM)" };
    let fused = if has!("avx512f") {
        "AVX-512"
    } else if has!("avx2") && has!("fma") {
        "AVX2"
    } else {
        "baseline"
    };
    let mut line = format!("f32 GEMM {gemm}, int8 {int8}, bf16 {bf16}, fused {fused}");
    if ceiling() != Ceiling::Native {
        line.push_str(&format!(" (capped at {} by DISTILL_SIMD", ceiling().name()));
        if gemm == "AVX-512" {
            line.push_str("; the f32 GEMM is not: build without the `avx512-gemm` feature to cap it too");
        }
        line.push(')');
    }
    line
}

/// The CPU's own answer, uncapped.
fn detected(_feature: &str) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        match _feature {
            "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
            "fma" => std::arch::is_x86_feature_detected!("fma"),
            _ => false,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// True when the CPU has `feature` and the ceiling allows it. A string literal, as
/// `is_x86_feature_detected!` takes; false off x86-64.
#[macro_export]
#[doc(hidden)]
macro_rules! __isa_has {
    ($feature:tt) => {{
        #[cfg(target_arch = "x86_64")]
        {
            $crate::engine::kernels::isa::ceiling().allows($feature) && std::arch::is_x86_feature_detected!($feature)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }};
}
pub use crate::__isa_has as has;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_avx2_ceiling_allows_x86_64_v3_and_nothing_of_avx512() {
        for f in ["avx2", "fma", "f16c", "avx"] {
            assert!(Ceiling::Avx2.allows(f), "{f}");
            assert!(Ceiling::Native.allows(f), "{f}");
            assert!(!Ceiling::Portable.allows(f), "{f}");
        }
        for f in ["avx512f", "avx512bw", "avx512vnni", "avx512bf16", "avx512vl"] {
            assert!(!Ceiling::Avx2.allows(f), "{f}");
            assert!(Ceiling::Native.allows(f), "{f}");
        }
    }

    #[test]
    fn ceilings_parse_their_names_and_refuse_others() {
        for c in [Ceiling::Native, Ceiling::Avx2, Ceiling::Portable] {
            assert_eq!(Ceiling::parse(c.name()), Some(c));
        }
        assert_eq!(Ceiling::parse(" AVX2 "), Some(Ceiling::Avx2));
        assert_eq!(Ceiling::parse("avx512"), None);
    }
}
