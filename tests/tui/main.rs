//! The workbench: key-driven state tests and insta snapshots of every screen, with real jobs behind them.

#[path = "../common/mod.rs"]
mod common;
#[path = "../tui_support/mod.rs"]
mod tui_support;

mod classifier;
mod classify_run;
mod keys;
mod runs;
mod screens;
