//! The engine's error type: every failure a user can cause names the thing and says what to do.

use crate::engine::hub::RepoKind;
use std::path::PathBuf;

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{kind} `{id}` is not in the local hub cache ({cache}) and the hub is offline (HF_HUB_OFFLINE is set); \
             unset HF_HUB_OFFLINE to download it{hint}",
        hint = kind.cache_hint()
    )]
    NotInCache { kind: RepoKind, id: String, cache: PathBuf },

    #[error(
        "{kind} `{id}` was not found on the hub at {endpoint} (HTTP 404); check the id and revision{hint}",
        hint = kind.search_hint()
    )]
    NotOnHub { kind: RepoKind, id: String, endpoint: String },

    #[error("the hub refused access to `{id}` (HTTP {status}); {}", auth_hint(*.token_sent))]
    Unauthorized { id: String, status: u16, token_sent: bool },

    #[error(
        "could not reach the hub at {endpoint} for `{id}`: {detail}; check the network or HF_ENDPOINT, \
             or set HF_HUB_OFFLINE=1 to use the local cache only"
    )]
    Network { id: String, endpoint: String, detail: String },

    #[error("`{path}` is not a model: {detail}")]
    BadSource { path: PathBuf, detail: String },

    #[error("weights file {path} is corrupt or truncated: {detail}; delete it and download it again")]
    CorruptWeights { path: PathBuf, detail: String },

    #[error("weights are missing tensor `{name}` ({context}); the file does not match its config.json")]
    MissingTensor { name: String, context: String },

    #[error(
        "no tokenizer for {model}: expected {expected}; add a tokenizer.json to the model folder \
             (or use a GGUF file that carries its vocabulary)"
    )]
    MissingTokenizer { model: String, expected: String },

    #[error("tokenizer {path}: {detail}")]
    Tokenizer { path: String, detail: String },

    #[error("unsupported model_type `{model_type}` in {path}; supported: {supported}")]
    UnsupportedArch { model_type: String, path: String, supported: String },

    #[error("config {path}: {detail}")]
    Config { path: PathBuf, detail: String },

    #[error(
        "teacher and student vocabularies differ: {detail}; distillation needs one tokenizer — \
             pick a student of the same family or derive one with `distill-tui derive-student`"
    )]
    VocabMismatch { detail: String },

    #[error("{0}")]
    Invalid(String),

    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },

    #[error("tensor error: {0}")]
    Candle(#[from] candle_core::Error),

    #[error("cancelled")]
    Cancelled,
}

impl Error {
    /// Wraps an I/O error with what was being done, e.g. `Error::io("writing out/model.safetensors", e)`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// True when the cause is the user's input (exit code 2 in the CLI), not the machine.
    pub fn is_bad_input(&self) -> bool {
        match self {
            // A file that is not what it should be (binary where text belongs, a missing file the
            // user named) is bad input; a disk or permission failure is not.
            Error::Io { source, .. } => {
                matches!(source.kind(), std::io::ErrorKind::InvalidData | std::io::ErrorKind::NotFound)
            }
            _ => !matches!(self, Error::Candle(_) | Error::Cancelled | Error::Network { .. }),
        }
    }
}

/// What to do about a refused download: a token to set, or the one that was sent to check.
fn auth_hint(token_sent: bool) -> &'static str {
    if token_sent {
        "a token was sent (HF_TOKEN or the token file) and refused: it may be invalid or expired, or its \
         account has not accepted this gated repository's licence on the hub"
    } else {
        "the repository is gated or private: accept its licence on the hub and set HF_TOKEN (or run \
         `huggingface-cli login`)"
    }
}

/// `text` from a file (metadata, tensor names, an error quoting them) made safe for a terminal:
/// control characters (escape sequences that would retitle the window or clear the screen) are
/// shown escaped (`\u{1b}`), line breaks only where `lines` allows them, and anything past
/// `max_chars` is cut with a count of what was left out.
pub fn printable(text: &str, max_chars: usize, lines: bool) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars + 32));
    let mut count = 0;
    for c in text.chars() {
        if count == max_chars {
            let rest = text.chars().count() - count;
            out.push_str(&format!("… ({rest} more characters)"));
            break;
        }
        if (c == '\n' && lines) || !c.is_control() || (c == '\t' && lines) {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
        count += 1;
    }
    out
}

#[cfg(test)]
mod printable_tests {
    use super::printable;

    #[test]
    fn escapes_are_shown_not_sent_and_long_values_are_cut() {
        assert_eq!(printable("a\u{1b}]0;pwned\u{7}b", 100, false), "a\\u{1b}]0;pwned\\u{7}b");
        assert_eq!(printable("x\ny", 100, true), "x\ny");
        assert_eq!(printable("x\ny", 100, false), "x\\ny");
        assert_eq!(printable(&"z".repeat(50), 10, false), format!("{}… (40 more characters)", "z".repeat(10)));
    }
}

thread_local! {
    /// Set while this thread runs a third-party decoder under [`quiet_panics`].
    static DECODING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f`, a third-party decoder that may assert (panic) on malformed input instead of
/// returning an error (the `parquet` and `tokenizers` crates do): a panic comes back as `Err`
/// with its message, and is not printed (a panic hook, installed once, passes every other panic on).
pub fn quiet_panics<T>(f: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !DECODING.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    let was = DECODING.with(|d| d.replace(true));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    DECODING.with(|d| d.set(was));
    outcome.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the decoder failed".into())
    })
}
