//! `[distill.on_policy]`: the recipe keys of on-policy and mixed-policy distillation
//! (`crate::engine::distill::on_policy` runs them).

use serde::{Deserialize, Serialize};

/// `[distill.on_policy]`: which of the KD student's micro-batches a model continues, and how it
/// samples. Each window's first `prompt_len` tokens are kept; the rest is written by the student
/// (a fraction `lmbda` of the micro-batches, GKD's λ) or, with `seq_kd`, by the teacher (the
/// others: sequence-level KD), or left as the text. The soft loss covers every position; the hard
/// label loss skips the tokens the student wrote itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnPolicySection {
    pub lmbda: f64,
    pub seq_kd: bool,
    /// Tokens of each window kept as the prompt (absent: half the window).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_len: Option<usize>,
    /// A prompts file (one prompt per line, relative to the recipe) instead of the training
    /// windows' beginnings: each written row takes the last `prompt_len` tokens of a prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompts: Option<String>,
    /// Sampling of the continuations: softmax(logits / temperature) (0: greedy), top-k, top-p.
    pub temperature: f64,
    pub top_k: usize,
    pub top_p: f64,
}

impl Default for OnPolicySection {
    fn default() -> Self {
        Self { lmbda: 0.5, seq_kd: false, prompt_len: None, prompts: None, temperature: 1.0, top_k: 0, top_p: 1.0 }
    }
}

impl OnPolicySection {
    /// The prompt length for windows of `seq_len` tokens.
    pub fn prompt_len(&self, seq_len: usize) -> usize {
        self.prompt_len.unwrap_or(seq_len / 2)
    }

    pub(super) fn validate(&self, seq_len: usize) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.lmbda) {
            return Err(format!("distill.on_policy.lmbda = {} must be in [0, 1]", self.lmbda));
        }
        let p = self.prompt_len(seq_len);
        if p == 0 || p + 1 >= seq_len {
            return Err(format!(
                "distill.on_policy.prompt_len = {p}: keep at least 1 token of the {seq_len}-token window and leave at least 2 to write"
            ));
        }
        if !(self.temperature >= 0.0 && self.temperature.is_finite()) {
            return Err("distill.on_policy.temperature must be >= 0 (0: greedy)".into());
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err("distill.on_policy.top_p must be in (0, 1]".into());
        }
        Ok(())
    }
}
