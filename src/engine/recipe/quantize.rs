//! The `[quantize]` section (the sweep a run ends with) and the format `distill.qad` trains in:
//! parsing and the checks that name the key and the valid values.

use super::Recipe;
use crate::engine::quant::format::{AwqBase, IntFormat, QuantFormat, INT_GROUPS};
use crate::engine::{Error, Result};
use serde::{Deserialize, Serialize};

/// `[quantize]`: the formats the finished run's models are quantized to, each measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantizeSection {
    pub formats: Vec<String>,
    #[serde(default = "d_targets")]
    pub targets: Vec<String>,
    /// Columns per scale for the own `intN` formats named without a `-gN` (32, 64 or 128);
    /// absent: those formats use one scale per row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_size: Option<usize>,
    /// Quantize the formats that support it (K-quants, int) with an importance matrix computed
    /// on the training text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imatrix: bool,
    /// Tokens of the training text the importance matrix reads (the first N; absent: the
    /// evaluation budget `data.eval_tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calib_tokens: Option<usize>,
}

fn d_targets() -> Vec<String> {
    vec!["teacher".into(), "student".into()]
}

impl QuantizeSection {
    /// The formats to sweep, `group_size` applied to the own formats named without a group; checks
    /// the targets too. Errors name the key and list the valid values.
    pub fn parsed_formats(&self) -> Result<Vec<QuantFormat>> {
        for t in &self.targets {
            if !matches!(t.as_str(), "teacher" | "student" | "baseline") {
                return Err(Error::Invalid(format!(
                    "quantize.targets: unknown target `{t}`; valid: teacher, student, baseline"
                )));
            }
        }
        if let Some(g) = self.group_size.filter(|g| !INT_GROUPS.contains(g)) {
            let valid: Vec<String> = INT_GROUPS.iter().map(|g| g.to_string()).collect();
            return Err(Error::Invalid(format!("quantize.group_size: {g} is not one of {}", valid.join(", "))));
        }
        let parsed = QuantFormat::parse_list(&self.formats.join(","))
            .map_err(|e| Error::Invalid(format!("quantize.formats: {e}")))?;
        if let Some(f) = parsed.iter().find(|f| f.calibration_need().is_some()).filter(|_| !self.imatrix) {
            return Err(Error::Invalid(format!(
                "quantize.formats: {f} {}: set quantize.imatrix = true (it calibrates on data.train)",
                f.calibration_need().unwrap_or_default()
            )));
        }
        Ok(parsed
            .into_iter()
            .map(|f| match (f, self.group_size) {
                (QuantFormat::Int(i @ IntFormat { group: None, .. }), Some(g)) => {
                    QuantFormat::Int(IntFormat { group: Some(g), ..i })
                }
                (QuantFormat::Awq(AwqBase::Int(i @ IntFormat { group: None, .. })), Some(g)) => {
                    QuantFormat::Awq(AwqBase::Int(IntFormat { group: Some(g), ..i }))
                }
                (f, _) => f,
            })
            .collect())
    }
}

impl Recipe {
    /// The format `distill.qad` trains the student in, checked: a quantized format that rounds
    /// without calibration data (the training steps have none), so that the sweep's point in it is
    /// exactly the model the steps computed with.
    pub fn qad_format(&self) -> Result<Option<QuantFormat>> {
        let Some(name) = &self.distill.qad else { return Ok(None) };
        let f = QuantFormat::parse(name).map_err(|e| Error::Invalid(format!("distill.qad: {e}")))?;
        if matches!(f, QuantFormat::F32 | QuantFormat::F16) {
            return Err(Error::Invalid(format!(
                "distill.qad = \"{name}\" is not a quantized format; name the format the student will be served in (e.g. int3-g32, int4-g64, q4_0)"
            )));
        }
        if let QuantFormat::Awq(b) = f {
            return Err(Error::Invalid(format!(
                "distill.qad = \"{name}\": AWQ scales the weights by calibration activations, which the training steps do not have; use {} (round to nearest)",
                b.format().rounded_to_nearest()
            )));
        }
        if f.is_gptq() {
            return Err(Error::Invalid(format!(
                "distill.qad = \"{name}\": GPTQ rounds with calibration activations, which the training steps do not have; use {} (round to nearest)",
                f.rounded_to_nearest()
            )));
        }
        if matches!(f, QuantFormat::Budget(_) | QuantFormat::Mix(_)) {
            return Err(Error::Invalid(format!(
                "distill.qad = \"{name}\" chooses formats per tensor; QAD trains in one format: name it (e.g. q4_k, int4-g64)"
            )));
        }
        if self.quantize.as_ref().is_some_and(|q| q.imatrix) && f.supports_imatrix() {
            return Err(Error::Invalid(format!(
                "distill.qad = \"{name}\" with quantize.imatrix = true: the sweep would round the student with an importance matrix, not as it was trained; drop quantize.imatrix for a QAD run"
            )));
        }
        if self.teacher.is_none() {
            return Err(Error::Invalid("distill.qad distils into a quantized student: it needs a [teacher]".into()));
        }
        Ok(Some(f))
    }
}
