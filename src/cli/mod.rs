//! The headless command line. Human output by default, JSON with `--json`; errors on stderr with
//! exit code 2 for bad input, 1 for machine failures, 130 when cancelled. One file per area.

mod classify;
mod export;
mod models;
mod quant;
mod run;

use crate::engine::context::Settings;
use crate::engine::Error;
use clap::{Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "distill-tui",
    version,
    about = "A workbench for knowledge distillation and quantization, measured against the teacher."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Architecture, parameters, shape, dtype, bytes and source of a model.
    Inspect {
        /// Hub id (`org/name[@rev]`, `org/name:file.gguf`), HF folder, or .gguf file.
        model: String,
        #[arg(long)]
        json: bool,
    },
    /// Perplexity and top-1 next-token accuracy of a causal LM over a text file.
    Eval {
        model: String,
        #[arg(long)]
        data: PathBuf,
        #[arg(long, default_value_t = 512)]
        seq_len: usize,
        #[arg(long)]
        max_tokens: Option<usize>,
        /// Windows per forward pass (default: about 2048 tokens).
        #[arg(long)]
        batch_size: Option<usize>,
        /// Also measure MODEL against this teacher: KL(teacher ‖ model) and top-1 agreement, and the
        /// teacher's own numbers (the workbench's float points).
        #[arg(long)]
        teacher: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A model's next-token distribution after a prompt (a classifier's class probabilities),
    /// softened at each temperature: the Temperature screen, headless.
    Logits {
        model: String,
        #[arg(long)]
        prompt: String,
        /// Temperatures, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [1.0, 5.0])]
        temperatures: Vec<f64>,
        /// Entries shown per temperature.
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// Derive a smaller student of the teacher's family and save it as a Hugging Face folder.
    DeriveStudent {
        teacher: String,
        #[arg(long)]
        layers: usize,
        #[arg(long)]
        hidden: Option<usize>,
        #[arg(long)]
        heads: Option<usize>,
        #[arg(long)]
        kv_heads: Option<usize>,
        #[arg(long)]
        intermediate: Option<usize>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check a teacher/student pair: tokenizer, architectures, training memory.
    Check {
        teacher: String,
        /// The student (a model); or `--derive-layers N` for a student derived in memory.
        #[arg(required_unless_present = "derive_layers")]
        student: Option<String>,
        /// Check a student derived from the teacher with this many layers (as the workbench does).
        #[arg(long, conflicts_with = "student")]
        derive_layers: Option<usize>,
        #[arg(long, default_value_t = 8)]
        batch_size: usize,
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        #[arg(long)]
        json: bool,
    },
    /// Search the hub for models.
    Search {
        query: String,
        #[arg(long, default_value_t = 20)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// List the models in the local hub cache.
    Cache {
        #[arg(long)]
        json: bool,
    },
    /// Run a distillation recipe headless: progress lines, or JSON lines with --json.
    Run {
        recipe: PathBuf,
        /// Continue the run in the recipe's output directory from its last checkpoint.
        #[arg(long)]
        resume: bool,
        /// Rerun an exported recipe (into `verify-run/` beside it) and compare every metric with its
        /// `[expected]` values: exit 1 naming each metric beyond the tolerance.
        #[arg(long, conflicts_with = "resume")]
        verify: bool,
        #[arg(long)]
        json: bool,
    },
    /// Fine-tune a classifier teacher (a `task = "classification"` recipe; `run` continues to the student).
    Finetune {
        recipe: PathBuf,
        /// Continue the fine-tuning in the recipe's output directory from its last checkpoint.
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        json: bool,
    },
    /// Train a model from scratch on text (and a BPE tokenizer when the recipe asks).
    Pretrain {
        recipe: PathBuf,
        #[arg(long)]
        resume: bool,
        #[arg(long)]
        json: bool,
    },
    /// Export a point of a finished run: a reproducible recipe, the model and its quantized file.
    Export(export::ExportArgs),
    /// Quantize a model to one format and write it as GGUF or safetensors.
    Quantize(quant::QuantizeArgs),
    /// Quantize models to several formats, each point measured against the unquantized model.
    Sweep(quant::SweepArgs),
}

/// Runs a subcommand with the engine settings `main` read; returns the process exit code.
pub fn run(command: Command, settings: Arc<Settings>) -> i32 {
    match &command {
        Command::Run { recipe, resume, json, verify } => {
            return run::run(recipe, run::Kind::Distill, *resume, *json, *verify, settings)
        }
        Command::Pretrain { recipe, resume, json } => {
            return run::run(recipe, run::Kind::Pretrain, *resume, *json, false, settings)
        }
        Command::Finetune { recipe, resume, json } => {
            return classify::run(recipe, classify::Stage::Finetune, *resume, *json, settings)
        }
        _ => {}
    }
    let command = match command {
        Command::Export(args) => return export::export(args, settings),
        other => other,
    };
    let json = matches!(
        &command,
        Command::Inspect { json: true, .. }
            | Command::Eval { json: true, .. }
            | Command::DeriveStudent { json: true, .. }
            | Command::Check { json: true, .. }
            | Command::Logits { json: true, .. }
            | Command::Search { json: true, .. }
            | Command::Cache { json: true }
            | Command::Quantize(quant::QuantizeArgs { json: true, .. })
            | Command::Sweep(quant::SweepArgs { json: true, .. })
    );
    let outcome = match command {
        Command::Quantize(args) => quant::quantize(args, &settings),
        Command::Sweep(args) => quant::sweep(args, settings),
        other => models::dispatch(other, &settings),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => crate::headless::fail(&e, json),
    }
}

pub(crate) fn print_json<T: Serialize>(value: &T) -> crate::engine::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Error::Invalid(e.to_string()))?;
    println!("{text}");
    Ok(())
}
