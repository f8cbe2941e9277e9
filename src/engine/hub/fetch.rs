//! Cache-first downloads of the files a model needs, or of chosen files of a model or dataset
//! repository; one code path for both kinds.

use super::files::{plan, present_files, shard_names, FileSet, Has, Plan, INDEX};
use super::progress::ProgressReporter;
use super::{check_id, is_commit_hash, repo_folder, scrub};
use super::{DownloadProgress, HubSettings, RepoKind};
use crate::engine::fsutil::write_atomic;
use crate::engine::{Error, Result};
use hf_hub::api::sync::{ApiBuilder, ApiError, ApiRepo};
use hf_hub::api::RepoInfo;
use hf_hub::{Cache, Repo};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A model or dataset repository on the hub, at a branch, tag or commit (`None` means `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRepo {
    pub kind: RepoKind,
    pub id: String,
    pub revision: Option<String>,
}

impl HubRepo {
    /// The model repository `id` (`ORG/NAME`) at `main`.
    pub fn new(id: impl Into<String>) -> Self {
        HubRepo { kind: RepoKind::Model, id: id.into(), revision: None }
    }

    /// The dataset repository `id` (`ORG/NAME`) at `main`.
    pub fn dataset(id: impl Into<String>) -> Self {
        HubRepo { kind: RepoKind::Dataset, id: id.into(), revision: None }
    }

    /// The same repository at `revision` (a branch, tag or commit hash).
    pub fn at(mut self, revision: impl Into<String>) -> Self {
        self.revision = Some(revision.into());
        self
    }

    /// The revision asked for, `main` by default.
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

/// A repository's files in the local cache, all present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub id: String,
    /// The commit hash the files belong to.
    pub revision: String,
    /// The snapshot folder, `<cache>/models--ORG--NAME/snapshots/<commit>` (`datasets--…` for a dataset).
    pub dir: PathBuf,
    /// The wanted files present in `dir` (required ones first), repo-relative.
    pub files: Vec<String>,
}

impl Snapshot {
    /// The local path of a repo-relative file.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// Makes the files `wanted` of `repo` available in the cache and returns their snapshot.
///
/// The cache comes first: when the revision resolves (through `refs/<revision>`, or as a commit
/// hash) to a snapshot that holds every required file, no request is made at all, online or
/// offline (a [`FileSet::Matching`] glob online excepted). Otherwise, offline gives
/// [`Error::NotInCache`]; online, the repository's file list is read from the hub and the missing
/// files are downloaded, pinned to the commit the revision points to, and `refs/<revision>` is
/// updated.
pub fn fetch(
    settings: &HubSettings,
    repo: &HubRepo,
    wanted: &FileSet,
    progress: &dyn Fn(&DownloadProgress),
) -> Result<Snapshot> {
    check_id(repo.kind, &repo.id)?;
    wanted.check(&repo.id)?;
    let rev = repo.revision();
    let rev_ok = !rev.starts_with('/') && rev.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
    if !rev_ok {
        return Err(Error::Invalid(format!("`{rev}` is not a valid revision of `{}`", repo.id)));
    }
    let repo_dir = settings.cache_dir.join(repo_folder(repo.kind, &repo.id));
    // Online, a glob is matched against the hub's list: the cache may hold only some matches.
    let cache_decides = settings.offline || !matches!(wanted, FileSet::Matching(_));
    if let Some(commit) = cached_commit(&repo_dir, rev).filter(|_| cache_decides) {
        let dir = repo_dir.join("snapshots").join(&commit);
        if let Some(files) = present_files(&repo.id, &dir, wanted) {
            return Ok(Snapshot { id: repo.id.clone(), revision: commit, dir, files });
        }
    }
    if settings.offline {
        return Err(offline_miss(repo, &repo_dir, wanted, settings));
    }
    download(settings, repo, &repo_dir, wanted, progress)
}

/// Why an offline lookup failed: the repository is not cached at all, or is cached but not at this
/// revision (the cached ones named), or is cached at it without the files this needs.
fn offline_miss(repo: &HubRepo, repo_dir: &Path, wanted: &FileSet, settings: &HubSettings) -> Error {
    let (kind, id, rev) = (repo.kind, repo.id.clone(), repo.revision());
    if !repo_dir.join("snapshots").is_dir() {
        return Error::NotInCache { kind, id, cache: settings.cache_dir.clone() };
    }
    let Some(commit) = cached_commit(repo_dir, rev) else {
        let mut cached: Vec<String> = std::fs::read_dir(repo_dir.join("refs"))
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        cached.sort();
        return Error::Invalid(format!(
            "{kind} `{id}` is in the local cache ({}) but not at revision `{rev}` (cached: {}), and the hub is offline; \
             use a cached revision or unset HF_HUB_OFFLINE to download it",
            repo_dir.display(),
            if cached.is_empty() { "snapshots by commit only".to_string() } else { cached.join(", ") }
        ));
    };
    let what = match wanted {
        FileSet::HfModel => "config.json and safetensors weights".to_string(),
        FileSet::Gguf(f) => format!("`{f}`"),
        FileSet::Files(f) => f.iter().map(|f| format!("`{f}`")).collect::<Vec<_>>().join(", "),
        FileSet::Matching(g) => format!("files matching `{g}`"),
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    // A GGUF repository asked for as a Hugging Face folder: name the files it does have.
    let mut ggufs: Vec<String> = std::fs::read_dir(&snapshot)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.to_ascii_lowercase().ends_with(".gguf"))
        .collect();
    ggufs.sort();
    let hint = match (wanted, ggufs.first()) {
        (FileSet::HfModel, Some(first)) => {
            format!("; it holds GGUF files ({}): name one as `{id}:{first}`", ggufs.join(", "))
        }
        _ => String::new(),
    };
    Error::Invalid(format!(
        "{kind} `{id}` is in the local cache at `{rev}` ({}) but without {what}, and the hub is offline; \
         unset HF_HUB_OFFLINE to download the missing files{hint}",
        snapshot.display()
    ))
}

/// The commit `rev` stands for in the cache: itself when it is a commit hash, else `refs/<rev>`.
fn cached_commit(repo_dir: &Path, rev: &str) -> Option<String> {
    if is_commit_hash(rev) {
        return Some(rev.to_string());
    }
    let commit = std::fs::read_to_string(repo_dir.join("refs").join(rev)).ok()?;
    let commit = commit.trim();
    is_commit_hash(commit).then(|| commit.to_string())
}

fn download(
    settings: &HubSettings,
    repo: &HubRepo,
    repo_dir: &Path,
    wanted: &FileSet,
    progress: &dyn Fn(&DownloadProgress),
) -> Result<Snapshot> {
    let (id, rev) = (repo.id.as_str(), repo.revision());
    let ctx = Ctx { kind: repo.kind, id, endpoint: &settings.endpoint, token: settings.token() };
    let api = ApiBuilder::from_cache(Cache::new(settings.cache_dir.clone()))
        .with_endpoint(settings.endpoint.clone())
        .with_token(settings.token().map(str::to_string))
        .with_progress(false)
        .with_retries(2)
        .with_user_agent("distill-tui", env!("CARGO_PKG_VERSION"))
        .build()
        .map_err(|e| ctx.api_error(e, None))?;
    let at = |rev: &str| api.repo(Repo::with_revision(id.to_string(), repo.kind.hf_hub(), rev.to_string()));

    let info = ctx.info(&at(rev))?;
    let sha = info.sha;
    if !is_commit_hash(&sha) {
        let e = format!("the hub at {} gave `{sha}` as the commit of `{id}`; check HF_ENDPOINT", ctx.endpoint);
        return Err(Error::Invalid(e));
    }
    let on_hub: BTreeSet<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let dir = repo_dir.join("snapshots").join(&sha);

    // Files are fetched at the commit itself, so that they all belong to one snapshot even if
    // the branch moves meanwhile. hf-hub then writes `refs/<sha>`, which `huggingface_hub`
    // never does; it is removed again below.
    let pinned = at(&sha);
    let sha_ref = repo_dir.join("refs").join(&sha);
    let sha_ref_existed = sha_ref.exists();
    let get = |file: &str| -> Result<()> {
        if dir.join(file).is_file() {
            return Ok(());
        }
        let reporter = ProgressReporter::new(file, progress);
        pinned.download_with_progress(file, reporter).map(drop).map_err(|e| ctx.api_error(e, Some(file)))
    };
    let fetched = (|| {
        let shards = || {
            get(INDEX)?;
            shard_names(id, &dir.join(INDEX))
        };
        let has = Has { file: &|f| on_hub.contains(f), names: &|| on_hub.iter().cloned().collect(), shards: &shards };
        let files = match plan(wanted, &has)? {
            Plan::Files(files) => files,
            Plan::Lacks(what) => return Err(lacks(repo, &what, &on_hub, matches!(wanted, FileSet::Gguf(_)))),
        };
        files.iter().try_for_each(|f| get(f))?;
        Ok(files)
    })();
    if !sha_ref_existed {
        let _ = std::fs::remove_file(&sha_ref);
    }
    let files = fetched?;
    if rev != sha {
        write_atomic(&repo_dir.join("refs").join(rev), sha.as_bytes())?;
    }
    if let Some(absent) = files.iter().find(|f| !dir.join(f).is_file()) {
        return Err(Error::Invalid(format!(
            "downloaded `{id}` but `{absent}` is missing from {}; delete that folder and fetch again",
            dir.display()
        )));
    }
    Ok(Snapshot { id: id.to_string(), revision: sha, dir, files })
}

/// The error for a repository that lacks a required file, listing (some of) what it has:
/// all its files, or only its GGUF files.
fn lacks(repo: &HubRepo, what: &str, on_hub: &BTreeSet<String>, gguf_only: bool) -> Error {
    const MAX: usize = 30;
    let is_gguf = |f: &str| f.to_ascii_lowercase().ends_with(".gguf");
    let names: Vec<String> = on_hub.iter().filter(|f| !gguf_only || is_gguf(f)).map(|f| format!("`{f}`")).collect();
    let kind = if gguf_only { "GGUF files" } else { "files" };
    let list = match names.len() {
        0 => format!("it has no {kind}"),
        n if n <= MAX => format!("its {kind}: {}", names.join(", ")),
        n => format!("its {kind}: {} and {} more", names[..MAX].join(", "), n - MAX),
    };
    let at = repo.revision.as_deref().map(|r| format!(" at `{r}`")).unwrap_or_default();
    Error::Invalid(format!("{} `{}`{at} on the hub has no {what}; {list}", repo.kind, repo.id))
}

/// What a request was about, to turn hf-hub and HTTP failures into engine errors.
struct Ctx<'a> {
    kind: RepoKind,
    id: &'a str,
    endpoint: &'a str,
    token: Option<&'a str>,
}

impl Ctx<'_> {
    /// `GET {endpoint}/api/{models,datasets}/{id}/revision/{rev}`: the commit and the file list.
    fn info(&self, repo: &ApiRepo) -> Result<RepoInfo> {
        let response = repo.info_request().call().map_err(|e| self.http_error(e, None))?;
        response.into_json().map_err(|e| {
            let detail = scrub(e.to_string(), self.token);
            let (id, endpoint) = (self.id, self.endpoint);
            Error::Invalid(format!(
                "the hub at {endpoint} described `{id}` in an unexpected form ({detail}); \
                 check HF_ENDPOINT"
            ))
        })
    }

    fn api_error(&self, error: ApiError, file: Option<&str>) -> Error {
        let (id, endpoint) = (self.id, self.endpoint);
        let what = file.map_or_else(|| format!("`{id}`"), |f| format!("`{f}` of `{id}`"));
        match error {
            ApiError::RequestError(e) => self.http_error(*e, file),
            ApiError::TooManyRetries(e) => self.api_error(*e, file),
            ApiError::IoError(e) => Error::io(format!("downloading {what} into the hub cache"), e),
            ApiError::LockAcquisition(lock) => Error::Invalid(format!(
                "another download of {what} holds {}; wait for it to end, \
                 or delete that file if none is running",
                lock.display()
            )),
            ApiError::InvalidResume => Error::Invalid(format!(
                "the partial download of {what} is longer than the file; \
                 delete the `.part` files in the model's `blobs` folder and fetch again"
            )),
            other => Error::Invalid(format!(
                "the hub at {endpoint} answered for {what} without the headers \
                 a Hugging Face hub sends ({}); check HF_ENDPOINT",
                scrub(other.to_string(), self.token)
            )),
        }
    }

    fn http_error(&self, error: ureq::Error, file: Option<&str>) -> Error {
        let (kind, id, endpoint) = (self.kind, self.id.to_string(), self.endpoint.to_string());
        match error {
            ureq::Error::Transport(t) => Error::Network { id, endpoint, detail: scrub(t.to_string(), self.token) },
            ureq::Error::Status(status, response) => match (response.header("X-Error-Code"), status) {
                (Some("EntryNotFound"), _) => Error::Invalid(format!(
                    "{kind} `{id}` on the hub at {endpoint} has no file `{}` (HTTP {status})",
                    file.unwrap_or("?")
                )),
                (Some("RepoNotFound" | "RevisionNotFound"), _) | (_, 404) => Error::NotOnHub { kind, id, endpoint },
                (Some("GatedRepo"), _) | (_, 401 | 403) => {
                    Error::Unauthorized { id, status, token_sent: self.token.is_some() }
                }
                _ => Error::Network { id, endpoint, detail: format!("HTTP {status}") },
            },
        }
    }
}
