//! The headless command line. Human output by default, JSON with `--json`; errors on stderr with
//! exit code 2 for bad input, 1 for machine failures, 130 when cancelled. One file per area.

mod classify;
mod derive;
mod export;
mod library;
mod models;
mod quant;
mod run;

use crate::engine::context::Settings;
use crate::engine::recipe::Override;
use crate::engine::Error;
use crate::headless::progress::Output;
use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// The exit codes, as `--help` and the README state them.
pub const EXIT_CODES: &str = "Exit codes: 0 done, 1 failed, 2 bad input or usage, 130 interrupted (Ctrl-C; a run keeps its last checkpoint).
Without a command, on a terminal: the workbench. Progress goes to stderr (a bar on a terminal, a line at most every 10 s otherwise); NO_COLOR drops its colours.";

#[derive(Parser, Debug)]
#[command(
    name = "distill-tui",
    version,
    about = "A workbench for knowledge distillation and quantization, measured against the teacher.",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// No progress bars or progress lines on stderr (results and errors still print).
    #[arg(long, short, global = true)]
    pub quiet: bool,
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
        #[command(flatten)]
        protocol: ProtocolArgs,
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
    /// What temperature does to a prompt's next-token distribution (a classifier's classes): the
    /// teacher (and a student) at T1 and T2 on the same rows, entropy, mass, the KL between them and
    /// the rank-vs-probability curve of the whole vocabulary. The Temperature screen, headless.
    Temperature {
        model: String,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 1.0)]
        t1: f64,
        #[arg(long, default_value_t = 5.0)]
        t2: f64,
        /// A student read on the teacher's rows (the same vocabulary).
        #[arg(long)]
        student: Option<String>,
        /// Rows: the teacher's most probable outputs at T1.
        #[arg(long, default_value_t = 10)]
        top: usize,
        #[arg(long)]
        json: bool,
    },
    /// Continue a prompt with a causal LM (KV cache; greedy unless --temperature), timed: prefill
    /// and decode tokens/s, ms per token.
    Generate {
        model: String,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
        /// 0: greedy; else sample from softmax(logits / T).
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Sample among the K most probable tokens (0: all).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Sample among the most probable tokens holding this probability (1: all).
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
    /// Derive a smaller student of the teacher's family and save it as a Hugging Face folder.
    DeriveStudent {
        teacher: String,
        /// Student layers (copied evenly spaced; with --prune, the most important blocks; with
        /// --target-params, the depth the searched widths keep).
        #[arg(long, required_unless_present = "target_params")]
        layers: Option<usize>,
        /// Prune by importance measured on --calib (Minitron): blocks, attention groups, MLP channels.
        #[arg(long, requires = "calib")]
        prune: bool,
        /// With --prune: at most this many parameters; the shape is searched and measured.
        #[arg(long, requires = "prune")]
        target_params: Option<u64>,
        /// Calibration text for --prune.
        #[arg(long)]
        calib: Option<PathBuf>,
        /// Calibration tokens read (the first N).
        #[arg(long, default_value_t = 8192)]
        calib_tokens: usize,
        /// Calibration window length.
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
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
        /// How the teacher would compute (`distill.teacher_precision`): a GGUF teacher stays in
        /// its block formats unless this says f32, bf16, int8 or a format to requantize to.
        #[arg(long)]
        teacher_precision: Option<String>,
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
        #[command(flatten)]
        args: RecipeArgs,
        /// Rerun an exported recipe (into `verify-run/` beside it) and compare every metric with its
        /// `[expected]` values: exit 1 naming each metric beyond the tolerance.
        #[arg(long, conflicts_with = "resume")]
        verify: bool,
    },
    /// Fine-tune a classifier teacher (a `task = "classification"` recipe; `run` continues to the student).
    Finetune(RecipeArgs),
    /// Train a model from scratch on text (and a BPE tokenizer when the recipe asks).
    Pretrain(RecipeArgs),
    /// Export a point of a finished run: a reproducible recipe, the model and its quantized file.
    Export(export::ExportArgs),
    /// Quantize a model to one format and write it as GGUF or safetensors.
    Quantize(quant::QuantizeArgs),
    /// Quantize models to several formats, each point measured against the unquantized model.
    Sweep(quant::SweepArgs),
    /// List the runs of the library (every run and sweep started on this machine): task, status,
    /// settings, result, date.
    Runs {
        #[arg(long)]
        json: bool,
    },
    /// Print one run: its record, settings, models' metrics and points (a sweep: its members).
    Show {
        /// A run folder, or a run's name as `runs` lists it.
        run: String,
        #[arg(long)]
        json: bool,
    },
    /// The points of several runs (or a whole sweep) side by side, the Pareto front marked: the
    /// Compare screen's table as text, Markdown, CSV or JSON.
    Compare(library::CompareArgs),
    /// Which path meets a budget — quantize, distill, or distill then quantize — from the points
    /// of runs, with the point and the numbers that justify it.
    Advise(library::AdviseArgs),
    /// Print a completion script for a shell (e.g. `distill-tui completions bash > ~/.local/share/bash-completion/completions/distill-tui`).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff; e.g. `distill-tui manpage > distill-tui.1 && man -l distill-tui.1`).
    Manpage,
}

/// A recipe command's arguments: `run`, `finetune`, `pretrain`.
#[derive(clap::Args, Debug, Clone)]
pub struct RecipeArgs {
    pub recipe: PathBuf,
    #[command(flatten)]
    pub overrides: RecipeOverrides,
    /// Continue the run in the recipe's output directory from its last checkpoint (a sweep: its
    /// unfinished members). Without it, a folder holding a finished run gets a new numbered run
    /// beside it (`runs/demo-2`).
    #[arg(long)]
    pub resume: bool,
    /// JSON lines on stdout, one per event; the last is the summary (or the failure).
    #[arg(long)]
    pub json: bool,
}

impl RecipeArgs {
    fn how(&self, verify: bool, output: Output) -> run::How {
        run::How { resume: self.resume, json: self.json, verify, output }
    }
}

/// Changes to a recipe on the command line, applied before anything runs or is written.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RecipeOverrides {
    /// Set a recipe value: `--set distill.temperature=5 --set distill.loss=reverse_kl` (repeatable;
    /// typed and checked as in the file; the run records the recipe with them applied).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The run's output folder (the recipe's `output.dir`), relative to the working directory.
    #[arg(long, value_name = "DIR")]
    pub output: Option<PathBuf>,
}

impl RecipeOverrides {
    /// The overrides in order, `--output` last.
    pub fn parsed(&self) -> crate::engine::Result<Vec<Override>> {
        let mut all: Vec<Override> = self.set.iter().map(|s| Override::parse(s)).collect::<Result<_, _>>()?;
        if let Some(dir) = &self.output {
            let dir = dir.display().to_string();
            all.push(Override {
                key: vec!["output".into(), "dir".into()],
                value: toml::Value::String(dir.clone()),
                text: format!("--output {dir}"),
            });
        }
        Ok(all)
    }
}

/// Runs a subcommand with the engine settings `main` read; returns the process exit code.
pub fn run(command: Command, settings: Arc<Settings>, output: Output) -> i32 {
    match &command {
        Command::Run { args, verify } => {
            return run::run(&args.recipe, &args.overrides, run::Kind::Distill, args.how(*verify, output), settings)
        }
        Command::Pretrain(args) => {
            return run::run(&args.recipe, &args.overrides, run::Kind::Pretrain, args.how(false, output), settings)
        }
        Command::Finetune(args) => {
            let how = args.how(false, output);
            return classify::run(&args.recipe, &args.overrides, classify::Stage::Finetune, how, settings);
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "distill-tui", &mut std::io::stdout());
            return 0;
        }
        Command::Manpage => {
            return match clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => crate::headless::fail(&Error::io("manpage", e), false),
            };
        }
        _ => {}
    }
    let command = match command {
        Command::Export(args) => return export::export(args, settings, output),
        other => other,
    };
    let json = matches!(
        &command,
        Command::Inspect { json: true, .. }
            | Command::Eval { json: true, .. }
            | Command::DeriveStudent { json: true, .. }
            | Command::Check { json: true, .. }
            | Command::Logits { json: true, .. }
            | Command::Temperature { json: true, .. }
            | Command::Generate { json: true, .. }
            | Command::Search { json: true, .. }
            | Command::Cache { json: true }
            | Command::Runs { json: true }
            | Command::Show { json: true, .. }
            | Command::Compare(library::CompareArgs { json: true, .. })
            | Command::Advise(library::AdviseArgs { json: true, .. })
            | Command::Quantize(quant::QuantizeArgs { json: true, .. })
            | Command::Sweep(quant::SweepArgs { json: true, .. })
    );
    let outcome = match command {
        Command::Quantize(args) => quant::quantize(args, &settings, output),
        Command::Sweep(args) => quant::sweep(args, settings, output),
        Command::Runs { json } => library::runs(&settings, json),
        Command::Show { run, json } => library::show(&settings, &run, json),
        Command::Compare(args) => library::compare(&settings, &args),
        Command::Advise(args) => library::advise(&settings, &args),
        other => models::dispatch(other, &settings, output),
    };
    match outcome {
        Ok(()) => 0,
        Err(e) => crate::headless::fail(&e, json),
    }
}

/// `--json` output: one JSON object on one line (the job commands print one per event).
pub(crate) fn print_json<T: Serialize>(value: &T) -> crate::engine::Result<()> {
    let text = serde_json::to_string(value).map_err(|e| Error::Invalid(e.to_string()))?;
    println!("{text}");
    Ok(())
}

/// Which positions are scored: every one, or llama.cpp's `llama-perplexity` protocol.
#[derive(clap::Args, Debug, Clone)]
pub struct ProtocolArgs {
    /// `all` (every position of every window) or `llama-perplexity` (whole windows, the second
    /// half of each scored, as llama.cpp's perplexity tool does: figures comparable with it).
    #[arg(long, default_value = "all")]
    pub protocol: String,
    /// Score this many whole windows (the first N × seq_len tokens); with the llama-perplexity
    /// protocol, its `--chunks`.
    #[arg(long, value_name = "N")]
    pub windows: Option<usize>,
}

impl ProtocolArgs {
    /// The protocol and the token limit: `--windows` sets it to N × seq_len (refused beside
    /// `--max-tokens`).
    pub fn apply(
        &self,
        seq_len: usize,
        max_tokens: Option<usize>,
    ) -> crate::engine::Result<(crate::engine::eval::Protocol, Option<usize>)> {
        let protocol = crate::engine::eval::Protocol::parse(&self.protocol)?;
        let max = match (self.windows, max_tokens) {
            (Some(_), Some(_)) => {
                return Err(crate::engine::Error::Invalid(
                    "give --windows or --max-tokens, not both (--windows N scores N × --seq-len tokens)".into(),
                ))
            }
            (Some(0), _) => return Err(crate::engine::Error::Invalid("--windows must be at least 1".into())),
            (Some(n), None) => Some(n * seq_len),
            (None, m) => m,
        };
        Ok((protocol, max))
    }
}
