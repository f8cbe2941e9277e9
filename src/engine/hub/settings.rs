//! Where the hub cache is, which hub to talk to, and with which token.

use std::fmt;
use std::path::{Path, PathBuf};

/// The public Hugging Face hub, used unless `HF_ENDPOINT` says otherwise.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Hub settings, normally read from the environment by `main` (`Settings::from_env`).
///
/// The token is private: it is sent to the hub and nowhere else, and `Debug` shows `"***"`.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// The hub cache folder, the one holding `models--ORG--NAME` folders.
    pub cache_dir: PathBuf,
    /// Base URL of the hub, without a trailing `/`.
    pub endpoint: String,
    token: Option<String>,
    /// When true nothing goes to the network: only the cache is used.
    pub offline: bool,
    /// The user's home folder (`HOME`), which a leading `~/` in a model argument stands for.
    pub home: PathBuf,
}

impl HubSettings {
    /// Reads the settings through `get` (a variable name → its value), following the
    /// `huggingface_hub` conventions:
    ///
    /// - cache: `HF_HUB_CACHE` (or the legacy `HUGGINGFACE_HUB_CACHE`), else `$HF_HOME/hub`;
    ///   `HF_HOME` defaults to `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`;
    /// - endpoint: `HF_ENDPOINT` without trailing `/`, default [`DEFAULT_ENDPOINT`];
    /// - token: `HF_TOKEN` (or the legacy `HUGGING_FACE_HUB_TOKEN`), else the token file
    ///   `HF_TOKEN_PATH`, default `$HF_HOME/token`; blank tokens count as none;
    /// - offline: `HF_HUB_OFFLINE` (or `TRANSFORMERS_OFFLINE`) set to `1`, `ON`, `YES` or `TRUE`,
    ///   in any case.
    ///
    /// Empty variables count as unset, and a leading `~` is expanded. The home folder is `HOME`
    /// as given by `get`, falling back to the platform's home folder.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let home = var("HOME")
            .map(PathBuf::from)
            .or_else(|| directories::BaseDirs::new().map(|d| d.home_dir().to_path_buf()))
            .unwrap_or_else(|| PathBuf::from("."));
        let path = |value: String| expand_home(&value, &home);

        let hf_home = var("HF_HOME").map(path).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(path).unwrap_or_else(|| home.join(".cache"));
            cache.join("huggingface")
        });
        let cache_dir = var("HF_HUB_CACHE")
            .or_else(|| var("HUGGINGFACE_HUB_CACHE"))
            .map(path)
            .unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT")
            .map(|e| trim_endpoint(&e))
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = var("HF_TOKEN").or_else(|| var("HUGGING_FACE_HUB_TOKEN")).and_then(clean_token).or_else(|| {
            let file = var("HF_TOKEN_PATH").map(path).unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(file).ok().and_then(clean_token)
        });
        let offline = var("HF_HUB_OFFLINE").or_else(|| var("TRANSFORMERS_OFFLINE")).is_some_and(|v| is_true(&v));
        HubSettings { cache_dir, endpoint, token, offline, home }
    }

    /// Uses `dir` as the hub cache folder (the one holding `models--ORG--NAME`).
    pub fn with_cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = dir.into();
        self
    }

    /// Talks to the hub at `endpoint` (a trailing `/` is removed).
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = trim_endpoint(&endpoint.into());
        self
    }

    /// Sets or clears the access token (a blank token clears it).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.and_then(clean_token);
        self
    }

    /// Switches offline mode (cache only) on or off.
    pub fn with_offline(mut self, offline: bool) -> Self {
        self.offline = offline;
        self
    }

    /// Whether a token will be sent to the hub.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token, for building requests inside this module only.
    pub(super) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

impl fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubSettings")
            .field("cache_dir", &self.cache_dir)
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("offline", &self.offline)
            .field("home", &self.home)
            .finish()
    }
}

fn trim_endpoint(endpoint: &str) -> String {
    endpoint.trim().trim_end_matches('/').to_string()
}

/// Like `huggingface_hub`'s `_clean_token`: line breaks and surrounding blanks removed.
fn clean_token(token: String) -> Option<String> {
    let token = token.replace(['\r', '\n'], "");
    let token = token.trim();
    (!token.is_empty()).then(|| token.to_string())
}

fn is_true(value: &str) -> bool {
    ["1", "ON", "YES", "TRUE"].contains(&value.trim().to_ascii_uppercase().as_str())
}

/// `~` and `~/…` in `value` made absolute with `home`; anything else as it is.
pub fn expand_home(value: &str, home: &Path) -> PathBuf {
    match value.strip_prefix('~') {
        Some("") => home.to_path_buf(),
        Some(rest) if rest.starts_with('/') || rest.starts_with(std::path::MAIN_SEPARATOR) => home.join(&rest[1..]),
        _ => PathBuf::from(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(pairs: &[(&str, &str)]) -> HubSettings {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        HubSettings::from_vars(move |name| map.get(name).cloned())
    }

    #[test]
    fn follows_the_huggingface_hub_conventions() {
        let home = std::env::temp_dir().join(format!("distill-hub-settings-{}", std::process::id()));
        let hf = home.join(".cache/huggingface");
        std::fs::create_dir_all(&hf).unwrap();
        std::fs::write(hf.join("token"), "hf_from_file\n").unwrap();
        let h = home.to_str().unwrap();

        let s = from(&[("HOME", h)]);
        assert_eq!(s.cache_dir, hf.join("hub"));
        assert_eq!((s.endpoint.as_str(), s.token(), s.offline), (DEFAULT_ENDPOINT, Some("hf_from_file"), false));
        let s = from(&[("HOME", h), ("XDG_CACHE_HOME", "/xdg")]);
        assert_eq!(s.cache_dir, PathBuf::from("/xdg/huggingface/hub"));
        let s = from(&[("HOME", h), ("HF_HOME", "~/hf")]);
        assert_eq!(s.cache_dir, home.join("hf/hub"));
        assert_eq!(s.token(), None, "the token file is $HF_HOME/token");
        let s = from(&[("HOME", h), ("HF_HOME", "/x"), ("HF_HUB_CACHE", "/y/hub"), ("HF_ENDPOINT", "http://m:8//")]);
        assert_eq!((s.cache_dir.to_str(), s.endpoint.as_str()), (Some("/y/hub"), "http://m:8"));
        let s = from(&[("HOME", h), ("HF_TOKEN", " hf_env \n"), ("HF_ENDPOINT", "")]);
        assert_eq!((s.token(), s.endpoint.as_str()), (Some("hf_env"), DEFAULT_ENDPOINT));
        let s = from(&[("HOME", h), ("HF_TOKEN_PATH", "/nonexistent/token")]);
        assert_eq!(s.token(), None);
        for (value, offline) in [("1", true), ("ON", true), ("yes", true), ("True", true), ("0", false), ("no", false)]
        {
            assert_eq!(from(&[("HOME", h), ("HF_HUB_OFFLINE", value)]).offline, offline, "{value}");
        }
        assert!(from(&[("HOME", h), ("TRANSFORMERS_OFFLINE", "1")]).offline);
        std::fs::remove_dir_all(&home).unwrap();
    }

    #[test]
    fn debug_hides_the_token() {
        let s = from(&[("HOME", "/nowhere"), ("HF_TOKEN", "hf_secret")]);
        let shown = format!("{s:?}");
        assert!(s.has_token() && shown.contains("token: Some(\"***\")") && !shown.contains("hf_secret"));
        let s = s.with_token(Some("  ".into()));
        assert!(!s.has_token() && format!("{s:?}").contains("token: None"));
        assert_eq!(s.with_endpoint("http://h/").endpoint, "http://h");
    }
}
