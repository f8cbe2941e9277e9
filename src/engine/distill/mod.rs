//! Knowledge distillation: losses, the optimizer, the teacher-logit cache and the training loop.

pub mod losses;
pub mod optim;
pub mod sparse;
