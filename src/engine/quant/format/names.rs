//! Format names: parsing what a user writes (case- and underscore-insensitive) and the canonical
//! spelling every report and file uses.

use super::*;
use std::fmt;

impl QuantFormat {
    /// Parses a format name, case-insensitively: `f32`, `f16`, `q8_0`, `q4_k` (or `q4k`),
    /// `int4-g64`, `int8`, `int3-g128-sym`, `int4-g64+gptq`. Unknown names list the valid ones.
    pub fn parse(name: &str) -> Result<Self> {
        let lower = name.trim().to_ascii_lowercase();
        match lower.as_str() {
            "f32" => return Ok(Self::F32),
            "f16" => return Ok(Self::F16),
            "iq4_nl" | "iq4nl" => return Ok(Self::Iq4Nl),
            "iq4_nl+gptq" | "iq4nl+gptq" => return Ok(Self::Iq4NlGptq),
            _ => {}
        }
        let compact = lower.replace('_', "");
        if compact.contains("+awq") {
            let base = compact.replacen("+awq", "", 1);
            let inner = Self::parse(&base)?;
            return AwqBase::of(inner).map(Self::Awq).ok_or_else(|| {
                Error::Invalid(format!(
                    "{name}: AWQ scales the inputs of linear weights before they are quantized in one block or int \
                     format or a mix (q4_0+awq, q4_k+awq, int4-g64+awq, q4_k_m+awq, q4_0+awq+gptq), not {inner}"
                ))
            });
        }
        if let Some(m) = MIXES.iter().find(|m| m.name().replace('_', "") == compact) {
            return Ok(Self::Mix(*m));
        }
        if let Some(d) = GGML_FORMATS.iter().find(|d| ggml_name(**d).replace('_', "") == compact) {
            return Ok(Self::Ggml(*d));
        }
        if let Some(base) = compact.strip_suffix("+gptq") {
            if let Some(m) = MIXES.iter().find(|m| m.name().replace('_', "") == base) {
                return Ok(Self::MixGptq(*m));
            }
            if let Some(d) = GGML_FORMATS.iter().find(|d| ggml_name(**d).replace('_', "") == base) {
                return Ok(Self::GgmlGptq(*d));
            }
        }
        if lower.starts_with("budget") {
            return parse_budget(&lower).ok_or_else(|| {
                Error::Invalid(format!(
                    "`{name}` is not a budget: write budget-BITS with a bits/weight target between 1 and 32, e.g. budget-4.5"
                ))
            });
        }
        parse_int(&lower).ok_or_else(|| {
            Error::Invalid(format!(
                "unknown quantization format `{name}`; valid formats: {} (int formats: int{{8,4,3,2}}, \
                 optionally -g{{32,64,128}} for group-wise scales, -sym for symmetric and +gptq for GPTQ rounding \
                 from a calibration text; +awq scales a format's inputs by their measured activations first; \
                 budget-BITS chooses per-tensor formats for a bits/weight target)",
                valid_names().join(", ")
            ))
        })
    }

    /// Parses a comma-separated list such as `q8_0,q4_k,int4-g64`.
    pub fn parse_list(names: &str) -> Result<Vec<Self>> {
        names.split(',').filter(|s| !s.trim().is_empty()).map(Self::parse).collect()
    }

    /// Canonical name: `q8_0`, `q4_k`, `int4-g64`, `int8-sym`, `f32`.
    pub fn name(&self) -> String {
        match self {
            Self::F32 => "f32".into(),
            Self::F16 => "f16".into(),
            Self::Ggml(d) => ggml_name(*d).into(),
            Self::Iq4Nl => "iq4_nl".into(),
            Self::Iq4NlGptq => "iq4_nl+gptq".into(),
            Self::GgmlGptq(d) => format!("{}+gptq", ggml_name(*d)),
            Self::Mix(m) => m.name().into(),
            Self::MixGptq(m) => format!("{}+gptq", m.name()),
            Self::Budget(b) => format!("budget-{}{}", b.bits(), if b.gptq { "+gptq" } else { "" }),
            Self::Awq(b) => {
                let inner = b.format().name();
                match inner.strip_suffix("+gptq") {
                    Some(plain) => format!("{plain}+awq+gptq"),
                    None => format!("{inner}+awq"),
                }
            }
            Self::Int(f) => {
                let group = f.group.map(|g| format!("-g{g}")).unwrap_or_default();
                let method = if f.gptq { "+gptq" } else { "" };
                format!("int{}{group}{}{method}", f.bits, if f.symmetric { "-sym" } else { "" })
            }
        }
    }
}

impl fmt::Display for QuantFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// Every format name a user can give (the own formats in their canonical spellings).
pub fn valid_names() -> Vec<String> {
    let mut names = vec!["f32".to_string(), "f16".to_string()];
    names.extend(GGML_FORMATS.iter().map(|d| ggml_name(*d).to_string()));
    names.push("iq4_nl".into());
    names.extend(MIXES.iter().map(|m| m.name().to_string()));
    for &bits in INT_BITS {
        names.push(format!("int{bits}"));
        names.extend(INT_GROUPS.iter().map(|g| format!("int{bits}-g{g}")));
    }
    names
}

pub(super) fn ggml_name(d: GgmlDType) -> &'static str {
    crate::engine::gguf::ggml_dtype_name(d)
}

/// `budget-4.5`, `budget4.5`, `budget-5+gptq`: a target between 1 and 32 bits/weight.
fn parse_budget(name: &str) -> Option<QuantFormat> {
    let (name, gptq) = match name.strip_suffix("+gptq") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let bits: f64 = name.strip_prefix("budget")?.trim_start_matches(['-', ':', '=']).parse().ok()?;
    (1.0..=32.0).contains(&bits).then(|| QuantFormat::Budget(Budget { centibits: (bits * 100.0).round() as u32, gptq }))
}

/// `int{bits}[-g{group}][-sym|-asym][+gptq]`.
fn parse_int(name: &str) -> Option<QuantFormat> {
    let (name, gptq) = match name.strip_suffix("+gptq") {
        Some(base) => (base, true),
        None => (name, false),
    };
    let mut parts = name.split('-');
    let bits: u8 = parts.next()?.strip_prefix("int")?.parse().ok()?;
    if !INT_BITS.contains(&bits) {
        return None;
    }
    let mut f = IntFormat { bits, group: None, symmetric: false, gptq };
    for part in parts {
        match part {
            "sym" => f.symmetric = true,
            "asym" => f.symmetric = false,
            g => {
                let group: usize = g.strip_prefix('g')?.parse().ok()?;
                if !INT_GROUPS.contains(&group) || f.group.is_some() {
                    return None;
                }
                f.group = Some(group);
            }
        }
    }
    Some(QuantFormat::Int(f))
}
