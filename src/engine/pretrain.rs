//! `pretrain`: a model trained from scratch on text with hard labels (the same loop as
//! distillation), and, when the recipe asks for it, a byte-level BPE tokenizer trained first on the
//! same text with the tokenizers crate. The demo teacher in `assets/` is made this way.

use crate::engine::context::JobContext;
use crate::engine::distill::trainer::run_with_tokenizer;
use crate::engine::fsutil::write_atomic;
use crate::engine::recipe::LoadedRecipe;
use crate::engine::train::RunOptions;
use crate::engine::{Error, Result};
use std::path::PathBuf;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::{ModelWrapper, TrainerWrapper};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PostProcessorWrapper, PreTokenizerWrapper};
use tokenizers::{Tokenizer, TokenizerImpl};

/// The special token a trained tokenizer reserves (id 0), GPT-2 style.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Trains a byte-level BPE tokenizer with `vocab_size` entries on `files`.
pub fn train_bpe(files: &[PathBuf], vocab_size: usize) -> Result<Tokenizer> {
    if vocab_size < 300 {
        return Err(Error::Invalid(format!(
            "pretrain.train_tokenizer_vocab = {vocab_size} is too small: byte-level BPE needs 256 byte tokens plus merges"
        )));
    }
    let mut tk: TokenizerImpl<
        ModelWrapper,
        NormalizerWrapper,
        PreTokenizerWrapper,
        PostProcessorWrapper,
        DecoderWrapper,
    > = TokenizerImpl::new(ModelWrapper::BPE(BPE::default()));
    tk.with_pre_tokenizer(Some(PreTokenizerWrapper::ByteLevel(ByteLevel::default().add_prefix_space(false))));
    tk.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    let mut trainer = TrainerWrapper::BpeTrainer(
        BpeTrainerBuilder::new()
            .vocab_size(vocab_size)
            .min_frequency(2)
            .show_progress(false)
            .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build(),
    );
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    tk.train_from_files(&mut trainer, names).map_err(|e| Error::Invalid(format!("training the tokenizer: {e}")))?;
    Ok(Tokenizer::from(tk))
}

/// Runs a pretraining recipe: tokenizer (trained or given), then the model from `[student] config`.
pub fn run_pretrain(lr: &LoadedRecipe, opts: &RunOptions, ctx: &JobContext) -> Result<serde_json::Value> {
    let r = &lr.recipe;
    if r.teacher.is_some() || r.pretrain.is_none() {
        return Err(Error::Invalid(format!(
            "{} is not a pretrain recipe: it needs a [pretrain] section and no [teacher] (use `distill-tui run` for distillation)",
            lr.path.display()
        )));
    }
    let dir = crate::engine::library::fresh_dir(&lr.output_dir(), opts.resume)?;
    let lr = crate::engine::library::redirect(lr, &dir, ctx);
    let _lock = crate::engine::fsutil::FolderLock::acquire(&dir, "distill-tui pretrain")?;
    let record = crate::engine::library::RunRecord::new("pretrain", &lr.path, &lr.recipe.to_toml()?);
    crate::engine::library::recorded(ctx, &dir, record, |ctx| pretrain(lr, opts, ctx))
}

fn pretrain(mut lr: LoadedRecipe, opts: &RunOptions, ctx: &JobContext) -> Result<serde_json::Value> {
    let r = lr.recipe.clone();
    let r = &r;
    let tokenizer = match r.pretrain.as_ref().and_then(|p| p.train_tokenizer_vocab) {
        Some(vocab) => {
            let files = lr.data_files(&r.data.train, "data.train")?;
            ctx.log(format!("training a {vocab}-token BPE tokenizer on {} file(s)", files.len()));
            let tok = train_bpe(&files, vocab)?;
            let out = lr.output_dir();
            std::fs::create_dir_all(&out).map_err(|e| Error::io(format!("creating {}", out.display()), e))?;
            let path = out.join("tokenizer.json");
            let text = tok.to_string(false).map_err(|e| Error::Invalid(e.to_string()))?;
            write_atomic(&path, text.as_bytes())?;
            // The model's embedding table has one row per token.
            if let Some(cfg) = lr.recipe.student.config.as_mut() {
                cfg.insert("vocab_size".into(), toml::Value::Integer(tok.get_vocab_size(true) as i64));
            }
            Some((tok, path))
        }
        None => None,
    };
    run_with_tokenizer(&lr, opts, tokenizer, ctx)
}
