pub mod cli;
pub mod engine;
pub mod jobs;
pub mod tui;
