//! `distill-tui`: thin entry point. With a subcommand it runs the headless CLI; with none on a
//! terminal it opens the workbench; with none and no terminal (a pipe, CI) it prints the help.

use clap::{CommandFactory, Parser};
use distill_tui::cli::{run, Cli};
use distill_tui::engine::context::Settings;
use distill_tui::headless::progress::Output;
#[cfg(feature = "tui")]
use std::io::IsTerminal;

/// Large tensors are allocated and freed at every op; mimalloc reuses that memory instead of
/// returning it to the kernel, which cut a SmolLM2 forward pass from 12 s to 7.7 s here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in `mi_option_t`, the same in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc hands freed memory back to the kernel 10 ms later, so the next step's
/// temporaries of the same size fault in fresh pages that the kernel must zero: 30% of a SmolLM2
/// KD step's time. Never purging keeps those pages for reuse (sys time of a 3-step run: 24 s →
/// 9 s); the price is that the resident size stays at its peak. `MIMALLOC_PURGE_DELAY` overrides.
fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one process-wide allocator option, before any other thread exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
    }
}

fn main() {
    keep_freed_memory();
    let cli = Cli::parse();
    // The one place the environment is read: hub, device and cache settings go down as arguments.
    let settings = match Settings::from_env() {
        Ok(s) => std::sync::Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2)
        }
    };
    // Before any kernel detects what it may use (they cache it).
    distill_tui::engine::kernels::isa::set_ceiling(settings.simd);
    match cli.command {
        Some(command) => {
            let _ = color_eyre::install();
            // NO_COLOR (no-color.org): any non-empty value turns colour off.
            let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            std::process::exit(run(command, settings, Output { quiet: cli.quiet, color }))
        }
        #[cfg(feature = "tui")]
        None if std::io::stdout().is_terminal() && std::io::stdin().is_terminal() => {
            // color-eyre's panic hook is left out here: the workbench installs its own, which
            // restores the terminal before the report is printed.
            if let Err(e) = distill_tui::tui::run(settings) {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
        None => {
            let _ = Cli::command().print_help();
        }
    }
}
