//! A model's raw outputs for a prompt: the next-token logits of every position (causal LM) or the
//! class logits (classifier). The Temperature screen keeps them to soften at any T without running
//! the model again; `distill-tui logits` prints them headless.

use crate::engine::loader::LoadedModel;
use crate::engine::tokenizer::{encode_plain, token_text};
use crate::engine::{Error, Result};
use candle_core::{DType, Device, Tensor};

/// The logits of one prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptLogits {
    /// The prompt's tokens, decoded one by one.
    pub tokens: Vec<String>,
    /// Per position, the next-token logits (causal LM); one row of class logits (classifier).
    pub rows: Vec<Vec<f32>>,
    /// Class names for a classifier; empty for a causal LM.
    pub labels: Vec<String>,
}

impl PromptLogits {
    /// The name of output `i`: a class, or the decoded token.
    pub fn output_name(&self, model: &LoadedModel, i: usize) -> String {
        match self.labels.get(i) {
            Some(l) => l.clone(),
            None => model.tokenizer().map(|t| token_text(t, i as u32)).unwrap_or_else(|_| i.to_string()),
        }
    }
}

/// Runs `model` once on `prompt`: a causal LM reads its last `context_length` tokens, a classifier
/// the whole sentence with its special tokens (`[CLS] … [SEP]`).
pub fn prompt_logits(model: &LoadedModel, prompt: &str) -> Result<PromptLogits> {
    let tok = model.tokenizer()?;
    let ctx_len = model.config.context_length();
    let causal = model.config.is_causal_lm();
    let ids = if causal {
        let ids = encode_plain(tok, prompt)?;
        ids[ids.len().saturating_sub(ctx_len)..].to_vec()
    } else {
        let enc = tok.encode(prompt, true).map_err(|e| Error::Invalid(format!("tokenizer: {e}")))?;
        enc.get_ids().iter().copied().take(ctx_len).collect()
    };
    crate::engine::tokenizer::check_ids(&ids, model.config.vocab_size(), &model.info.name)?;
    if ids.is_empty() || (!causal && prompt.trim().is_empty()) {
        return Err(Error::Invalid("the prompt gives no tokens; type some text".into()));
    }
    let tokens: Vec<String> = ids.iter().map(|&i| token_text(tok, i)).collect();
    let input = Tensor::from_slice(&ids, (1, ids.len()), &Device::Cpu)?;
    let logits = model.network.forward(&input)?.to_dtype(DType::F32)?;
    let rows: Vec<Vec<f32>> = if causal { logits.squeeze(0)?.to_vec2()? } else { logits.to_vec2()? };
    Ok(PromptLogits { tokens, rows, labels: model.config.labels().to_vec() })
}
