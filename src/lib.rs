pub mod cli;
pub mod engine;
pub mod headless;
pub mod jobs;
pub mod tui;
