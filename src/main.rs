//! `distill-tui`: thin entry point. Parses the command line and dispatches.

use clap::{CommandFactory, Parser};
use distill_tui::cli::{run, Cli};

fn main() {
    let _ = color_eyre::install();
    let cli = Cli::parse();
    match cli.command {
        Some(command) => std::process::exit(run(command)),
        None => {
            // The interactive workbench lands with the TUI; until then, show what the CLI offers.
            let _ = Cli::command().print_help();
        }
    }
}
