//! Activation checkpointing per block: the student's body runs forward keeping only each stage's
//! input (one `[tokens, hidden]` matrix per block), and the backward pass recomputes one stage at a
//! time from its saved input, takes that stage's gradients, and hands the gradient of its input
//! down to the stage before (Chen et al. 2016, "Training deep nets with sublinear memory cost";
//! `torch.utils.checkpoint` per layer). The body's activations drop from every block's to one
//! block's plus the saved inputs, for one more forward of the body (about a third more student
//! compute). Gradients equal the full backward's up to summation order.

use crate::engine::models::{BodyContext, Network};
use crate::engine::train::add_grads;
use crate::engine::{Error, Result};
use candle_core::{Tensor, Var};

/// A forward through the body that kept only the stages' inputs.
pub struct Checkpointed {
    ctx: BodyContext,
    /// The input of stages 1.. (the embedding's output, then each block's), as variables so that
    /// the recomputation differentiates with respect to them.
    inputs: Vec<Var>,
    /// The final hidden states `[b, t, hidden]`, without a graph.
    pub hidden: Tensor,
}

/// Runs the body of `student` on `ids` `[b, t]`, keeping each stage's input and no graph.
pub fn forward(student: &Network, ids: &Tensor) -> Result<Checkpointed> {
    let ctx = student.body_context(ids)?;
    let stages = student.stages()?;
    let mut x = student.stage(0, None, &ctx)?.detach();
    let mut inputs = Vec::with_capacity(stages - 1);
    for i in 1..stages {
        // A variable, as in the recomputation: the stage takes its training path (the frozen
        // fast paths are for inputs without a gradient), so both compute the same numbers.
        let input = Var::from_tensor(&x)?;
        x = student.stage(i, Some(input.as_tensor()), &ctx)?.detach();
        inputs.push(input);
    }
    Ok(Checkpointed { ctx, inputs, hidden: x })
}

impl Checkpointed {
    /// The backward pass from `grad`, the loss's gradient with respect to [`Self::hidden`]: each
    /// stage recomputed from its saved input (last first), its parameters' gradients added to
    /// `acc` (aligned with `vars`).
    pub fn backward(self, student: &Network, grad: &Tensor, vars: &[&Var], acc: &mut [Option<Tensor>]) -> Result<()> {
        let mut grad = grad.reshape(self.hidden.shape())?;
        for (i, input) in self.inputs.iter().enumerate().rev() {
            let y = student.stage(i + 1, Some(input.as_tensor()), &self.ctx)?;
            let store = (y * grad.detach())?.sum_all()?.backward()?;
            add_grads(acc, vars, &store)?;
            grad = store.get(input.as_tensor()).cloned().ok_or_else(|| {
                Error::Invalid(format!("stage {} of the body passed no gradient to its input", i + 1))
            })?;
        }
        let embedded = student.stage(0, None, &self.ctx)?;
        add_grads(acc, vars, &(embedded * grad.detach())?.sum_all()?.backward()?)
    }
}
