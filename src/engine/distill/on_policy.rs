//! On-policy and mixed-policy distillation (GKD: Agarwal et al. 2024; TRL's `GKDTrainer`): some of
//! the KD student's micro-batches are not the training text as it stands but the text's first
//! `prompt_len` tokens continued by a model — by the student itself with probability `lmbda`
//! (on-policy: the student learns the teacher's distribution on the sequences it actually
//! produces), else by the teacher when `seq_kd` is set (sequence-level KD, Kim & Rush 2016), else
//! the text. The teacher then scores the whole sequence and the recipe's divergence is taken at
//! every position; the hard-label term skips the tokens the student wrote (its own samples are no
//! target) and keeps the text's and the teacher's.
//!
//! Continuations are sampled with the KV cache, the micro-batch's windows in one batch. Who writes
//! a micro-batch and every sampled token are drawn from RNGs seeded by (seed, step, window) alone:
//! nothing to checkpoint, so a resumed run samples exactly what an uninterrupted one did, and a
//! recipe without `[distill.on_policy]` (or with `lmbda = 0` and no `seq_kd`) is today's
//! off-policy run.

use super::losses::IGNORE;
use crate::engine::generate::{continue_batch, Sampling};
use crate::engine::models::Network;
use crate::engine::recipe::OnPolicySection;
use crate::engine::Result;
use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Who writes a micro-batch's continuations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Writer {
    /// The training text as it stands (off-policy).
    Text,
    /// The student samples them (on-policy).
    Student,
    /// The teacher samples them (sequence-level KD).
    Teacher,
}

/// What the run's on-policy micro-batches cost, for the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OnPolicySummary {
    pub lmbda: f64,
    pub seq_kd: bool,
    pub prompt_len: usize,
    /// Prompts taken from the prompts file (absent: the training windows' beginnings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompts: Option<usize>,
    /// KD micro-batches by writer.
    pub text_batches: usize,
    pub student_batches: usize,
    pub teacher_batches: usize,
    /// Tokens sampled, and the seconds sampling took.
    pub generated_tokens: u64,
    pub sampling_seconds: f64,
    /// Sampling's share of the KD student's step time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_of_step_time: Option<f64>,
}

/// The recipe's `[distill.on_policy]` for windows of `seq_len` tokens.
pub struct OnPolicy {
    section: OnPolicySection,
    seq_len: usize,
    prompt_len: usize,
    seed: u64,
    /// The prompts file's prompts, `prompt_len` tokens each (empty: the windows' beginnings).
    prompts: Vec<Vec<u32>>,
    pub stats: OnPolicySummary,
}

/// A 64-bit mix of the seeds (splitmix64 steps), so nearby steps and windows draw unrelated streams.
fn mix(parts: &[u64]) -> u64 {
    parts.iter().fold(0x9e37_79b9_7f4a_7c15u64, |h, &p| {
        let mut z = h ^ p.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

impl OnPolicy {
    pub fn new(section: &OnPolicySection, seq_len: usize, seed: u64) -> Self {
        let prompt_len = section.prompt_len(seq_len);
        let stats = OnPolicySummary { lmbda: section.lmbda, seq_kd: section.seq_kd, prompt_len, ..Default::default() };
        Self { section: section.clone(), seq_len, prompt_len, seed, prompts: Vec::new(), stats }
    }

    /// Takes the written rows' prompts from `lines` (a prompts file's, tokenized): the last
    /// `prompt_len` tokens of each prompt at least that long; refuses a file with none.
    pub fn with_prompts(mut self, lines: Vec<Vec<u32>>, file: &str) -> crate::engine::Result<Self> {
        let p = self.prompt_len;
        let total = lines.len();
        self.prompts = lines.into_iter().filter(|l| l.len() >= p).map(|l| l[l.len() - p..].to_vec()).collect();
        if self.prompts.is_empty() {
            return Err(crate::engine::Error::Invalid(format!(
                "distill.on_policy.prompts = \"{file}\": none of its {total} prompts has {p} tokens (prompt_len); \
                 set a smaller distill.on_policy.prompt_len or give longer prompts"
            )));
        }
        self.stats.prompts = Some(self.prompts.len());
        Ok(self)
    }

    /// Who writes the micro-batch of `step` whose first window is `first_window`.
    pub fn writer(&self, step: usize, first_window: usize) -> Writer {
        let mut rng = ChaCha8Rng::seed_from_u64(mix(&[self.seed, 0x6b64, step as u64, first_window as u64]));
        if rng.random::<f64>() < self.section.lmbda {
            Writer::Student
        } else if self.section.seq_kd {
            Writer::Teacher
        } else {
            Writer::Text
        }
    }

    /// Counts a micro-batch the text wrote.
    pub fn count_text(&mut self) {
        self.stats.text_batches += 1;
    }

    /// The `windows` (their ids, and their tokens, `seq_len` each) with everything after the
    /// prompt (the window's beginning, or a prompt of the prompts file) written by `net`, flat
    /// `[b · seq_len]`, and the hard labels of the `b · (seq_len − 1)` predicted positions
    /// ([`IGNORE`] where the student wrote the token).
    pub fn continue_windows(
        &mut self,
        net: &Network,
        writer: Writer,
        step: usize,
        windows: &[usize],
        tokens: &[&[u32]],
        device: &Device,
    ) -> Result<(Vec<u32>, Vec<u32>)> {
        let clock = std::time::Instant::now();
        let (b, t, p) = (windows.len(), self.seq_len, self.prompt_len);
        let sampling = Sampling {
            temperature: self.section.temperature,
            top_k: self.section.top_k,
            top_p: self.section.top_p,
            seed: 0,
        };
        let mut rngs: Vec<ChaCha8Rng> = windows
            .iter()
            .map(|&w| ChaCha8Rng::seed_from_u64(mix(&[self.seed, 0x5a4d, step as u64, w as u64])))
            .collect();
        // The prompts file's prompt for each window (drawn by (seed, step, window)), or the
        // window's beginning.
        let prompts: Vec<Vec<u32>> = match self.prompts.len() {
            0 => tokens.iter().map(|w| w[..p].to_vec()).collect(),
            n => windows
                .iter()
                .map(|&w| self.prompts[(mix(&[self.seed, 0x7072, step as u64, w as u64]) % n as u64) as usize].clone())
                .collect(),
        };
        let written = continue_batch(net, &prompts, t - p, &sampling, &mut rngs, device)?;
        let seqs: Vec<Vec<u32>> = prompts
            .into_iter()
            .zip(written)
            .map(|(mut s, w)| {
                s.extend(w);
                s
            })
            .collect();
        let flat: Vec<u32> = seqs.iter().flatten().copied().collect();
        // Position j predicts token j + 1; the written tokens are p..t.
        let labels: Vec<u32> = seqs
            .iter()
            .flat_map(|s| (1..t).map(move |j| if j >= p && writer == Writer::Student { IGNORE } else { s[j] }))
            .collect();
        self.stats.generated_tokens += (b * (t - p)) as u64;
        self.stats.sampling_seconds += clock.elapsed().as_secs_f64();
        match writer {
            Writer::Student => self.stats.student_batches += 1,
            Writer::Teacher => self.stats.teacher_batches += 1,
            Writer::Text => self.stats.text_batches += 1,
        }
        Ok((flat, labels))
    }
}
