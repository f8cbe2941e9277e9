//! Knowledge distillation: losses (and, as it grows, the trainer and the teacher-logit cache).

pub mod losses;
