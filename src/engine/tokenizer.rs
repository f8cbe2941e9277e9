//! Tokenizers: `tokenizer.json` through the tokenizers crate, with any padding or truncation the
//! file carries turned off (windows are cut by the engine, never silently by the tokenizer).

use crate::engine::{Error, Result};
use std::path::Path;
use tokenizers::Tokenizer;

/// Loads a `tokenizer.json`.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bad = |detail: String| Error::Tokenizer { path: path.display().to_string(), detail };
    // The tokenizers crate asserts on some malformed files instead of returning an error.
    let mut tok = crate::engine::error::quiet_panics(|| Tokenizer::from_file(path))
        .map_err(|panic| bad(format!("malformed ({panic})")))?
        .map_err(|e| bad(e.to_string()))?;
    tok.with_padding(None);
    tok.with_truncation(None)
        .map_err(|e| Error::Tokenizer { path: path.display().to_string(), detail: e.to_string() })?;
    Ok(tok)
}

/// Token ids of `text` without special tokens (the evaluation protocol's tokenisation).
pub fn encode_plain(tok: &Tokenizer, text: &str) -> Result<Vec<u32>> {
    let enc = tok
        .encode_fast(text, false)
        .map_err(|e| Error::Tokenizer { path: "(in memory)".into(), detail: e.to_string() })?;
    Ok(enc.get_ids().to_vec())
}

/// Refuses token ids beyond `model`'s embedding (`vocab` rows): a tokenizer that is not the
/// model's own would otherwise fail deep in the forward pass with a bare index error.
pub fn check_ids(ids: &[u32], vocab: usize, model: &str) -> Result<()> {
    match ids.iter().copied().max() {
        Some(top) if top as usize >= vocab => Err(Error::Invalid(format!(
            "the tokenizer gives token id {top} but {model}'s embedding has {vocab} rows: the tokenizer is not \
             this model's (use the tokenizer.json that came with it)"
        ))),
        _ => Ok(()),
    }
}

/// Decodes one token id for display (special tokens kept).
pub fn token_text(tok: &Tokenizer, id: u32) -> String {
    tok.decode(&[id], false).unwrap_or_else(|_| format!("<{id}>"))
}
