//! Causal-LM distillation (and pretraining): the losses, the chunked LM step, the teacher-logit
//! cache, the run's setup and summary. The loop itself is [`crate::engine::train`].

pub mod checkpoint;
pub mod finish;
pub mod fused_loss;
pub mod fused_sparse;
pub mod head_grad;
pub mod losses;
pub mod on_policy;
pub mod post_quant;
pub mod setup;
pub mod sparse;
pub mod step;
pub mod targets;
pub mod teacher_cache;
mod teacher_ref;
pub mod trainer;
