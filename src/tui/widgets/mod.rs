//! Drawing pieces shared by the screens.

pub mod dist_bars;
pub mod loss_chart;
pub mod pareto;
pub mod progress;
