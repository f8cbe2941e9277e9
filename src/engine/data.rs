//! Training data: text files → token windows, and a deterministic batch order.
//!
//! The training text is tokenised without special tokens and cut into non-overlapping windows of
//! `seq_len` tokens (each predicts its positions 1..seq_len-1, as in evaluation). Batches visit the
//! windows in a seeded permutation per epoch that depends only on (seed, epoch): the window of any
//! step is known without replaying earlier steps, which makes resumed runs identical and lets the
//! teacher-logit cache be keyed by window index.

use crate::engine::tokenizer::encode_plain;
use crate::engine::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::path::PathBuf;
use tokenizers::Tokenizer;

/// Token windows of a corpus.
#[derive(Clone, Debug)]
pub struct TokenWindows {
    pub tokens: Vec<u32>,
    pub seq_len: usize,
    /// The files the tokens came from, in order.
    pub files: Vec<PathBuf>,
}

impl TokenWindows {
    /// Reads and tokenises `files` (joined by a blank line) into windows of `seq_len`.
    pub fn from_files(files: &[PathBuf], tokenizer: &Tokenizer, seq_len: usize, what: &str) -> Result<Self> {
        let mut text = String::new();
        for f in files {
            let t = std::fs::read_to_string(f)
                .map_err(|e| Error::Invalid(format!("cannot read {what} file {}: {e}", f.display())))?;
            if !text.is_empty() {
                text.push_str("\n\n");
            }
            text.push_str(&t);
        }
        let tokens = encode_plain(tokenizer, &text)?;
        let w = Self { tokens, seq_len, files: files.to_vec() };
        if w.len() == 0 {
            return Err(Error::Invalid(format!(
                "{what} data ({}) gives {} tokens, fewer than one window of seq_len {seq_len}; add text or lower seq_len",
                files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
                w.tokens.len()
            )));
        }
        Ok(w)
    }

    /// Number of full windows.
    pub fn len(&self) -> usize {
        self.tokens.len() / self.seq_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn window(&self, i: usize) -> &[u32] {
        &self.tokens[i * self.seq_len..(i + 1) * self.seq_len]
    }
}

/// The window indices of every sample of an optimizer step: `batch * accum` windows, micro-batch
/// by micro-batch, continuing through seeded per-epoch permutations.
pub fn step_windows(n_windows: usize, seed: u64, step: usize, samples_per_step: usize) -> Vec<usize> {
    let first = step * samples_per_step;
    let mut out = Vec::with_capacity(samples_per_step);
    let mut cached: Option<(usize, Vec<usize>)> = None;
    for s in first..first + samples_per_step {
        let (epoch, pos) = (s / n_windows, s % n_windows);
        if cached.as_ref().map(|c| c.0) != Some(epoch) {
            cached = Some((epoch, epoch_order(n_windows, seed, epoch)));
        }
        out.push(cached.as_ref().expect("just set").1[pos]);
    }
    out
}

fn epoch_order(n: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ epoch as u64);
    order.shuffle(&mut rng);
    order
}
