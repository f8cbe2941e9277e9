//! Which positions of a text an evaluation scores: its windows, and the protocol that picks the
//! scored positions in each (all of them, or llama.cpp's second halves).

use super::EvalOptions;
use crate::engine::{Error, Result};
use serde::Serialize;

/// Which positions of each window count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// Every position after the first predicts the next token; the last, shorter window too.
    #[default]
    All,
    /// llama.cpp's `llama-perplexity`: whole windows only, and only the predictions from the
    /// middle of each window on (the first half is context), so that the figures sit beside it.
    LlamaPerplexity,
}

impl Protocol {
    pub const NAMES: &'static [&'static str] = &["all", "llama-perplexity"];

    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "all" => Ok(Self::All),
            "llama-perplexity" => Ok(Self::LlamaPerplexity),
            other => Err(Error::Invalid(format!("unknown protocol `{other}`; valid: {}", Self::NAMES.join(", ")))),
        }
    }

    /// The first scored prediction (position `i` predicts token `i + 1`) of a `t`-token window.
    pub fn first_scored(self, t: usize) -> usize {
        match self {
            Self::All => 0,
            Self::LlamaPerplexity => t / 2,
        }
    }
}

/// Token windows of the protocol.
pub fn windows(tokens: &[u32], seq_len: usize) -> Vec<&[u32]> {
    tokens.chunks(seq_len).filter(|w| w.len() >= 2).collect()
}

/// [`windows`] of the protocol (whole windows only for llama-perplexity), or an error when the
/// text yields nothing to predict.
pub(super) fn checked_windows<'a>(tokens: &'a [u32], opts: &EvalOptions) -> Result<Vec<&'a [u32]>> {
    let mut wins = windows(tokens, opts.seq_len);
    if opts.protocol == Protocol::LlamaPerplexity {
        wins.retain(|w| w.len() == opts.seq_len);
        if wins.is_empty() {
            return Err(Error::Invalid(format!(
                "the llama-perplexity protocol scores whole windows of {} tokens; the text gives {}",
                opts.seq_len,
                tokens.len()
            )));
        }
    }
    if wins.is_empty() {
        return Err(Error::Invalid(format!("the text gives {} token(s); evaluation needs at least 2", tokens.len())));
    }
    Ok(wins)
}
