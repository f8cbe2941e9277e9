//! `distill-tui`: thin entry point. With a subcommand it runs the headless CLI; with none on a
//! terminal it opens the workbench; with none and no terminal (a pipe, CI) it prints the help.

use clap::{CommandFactory, Parser};
use distill_tui::cli::{run, Cli};
use std::io::IsTerminal;

/// Large tensors are allocated and freed at every op; mimalloc reuses that memory instead of
/// returning it to the kernel, which cut a SmolLM2 forward pass from 12 s to 7.7 s here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(command) => {
            let _ = color_eyre::install();
            std::process::exit(run(command))
        }
        None if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() => {
            // color-eyre's panic hook is left out here: the workbench installs its own, which
            // restores the terminal before the report is printed.
            if let Err(e) = distill_tui::tui::run() {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        None => {
            let _ = Cli::command().print_help();
        }
    }
}
