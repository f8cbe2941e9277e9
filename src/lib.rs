pub mod cli;
pub mod engine;
pub mod headless;
pub mod jobs;
#[cfg(feature = "tui")]
pub mod tui;
