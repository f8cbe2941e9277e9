//! Knowledge distillation: losses, the optimizer, the teacher-logit cache and the training loop.

pub mod checkpoint;
pub mod fused_loss;
pub mod head_grad;
pub mod losses;
pub mod optim;
pub mod post_quant;
pub mod setup;
pub mod sparse;
pub mod step;
pub mod summary;
pub mod teacher_cache;
pub mod trainer;
