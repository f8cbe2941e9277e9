//! `export RUN_DIR --point NAME --out DIR [--target trl] [--target llama.cpp]`: a point of a
//! finished run as a reproducible recipe and its artifacts, as a background job.

use crate::engine::context::Settings;
use crate::engine::export::{export_run, ExportRequest, Target};
use crate::headless::progress::Output;
use crate::headless::{follow, Mode};
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// The output directory of a finished `distill-tui run`.
    pub run_dir: PathBuf,
    /// `student`, `baseline`, `teacher`, or a quantized point such as `student-q4_0` (an unknown name lists them).
    #[arg(long)]
    pub point: String,
    /// The folder to write (created when missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Also write a project for another engine: `trl` (transformers on many GPUs) or `llama.cpp`.
    #[arg(long = "target")]
    pub targets: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub(super) fn export(args: ExportArgs, settings: Arc<Settings>, output: Output) -> i32 {
    let targets = match args.targets.iter().map(|t| Target::parse(t)).collect::<Result<Vec<_>, _>>() {
        Ok(t) => t,
        Err(e) => return crate::headless::fail(&e, args.json),
    };
    let req = ExportRequest { run_dir: args.run_dir, point: args.point, out: args.out, targets };
    let description = format!("export {} of {}", req.point, req.run_dir.display());
    let handle = crate::jobs::spawn("export", description, settings, move |ctx| export_run(&req, ctx));
    follow(handle, if args.json { Mode::Json } else { Mode::Human }, output)
}
