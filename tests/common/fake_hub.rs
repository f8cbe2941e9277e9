//! A fake Hugging Face hub on 127.0.0.1 (tiny_http) that speaks the protocol hf-hub 0.4.3 expects:
//! repository info (`/api/{models,datasets}/ID/revision/REV`), file downloads with ranges and the
//! hub's headers (`[/datasets]/ID/resolve/REV/FILE`), model search, and the hub's error codes.

use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The commit `main` points to in every repository of the fake hub.
pub const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

/// Files by repo-relative name.
pub type Files = BTreeMap<String, Vec<u8>>;

/// A repository of the fake hub: its files at commit `SHA` (`main`), other revisions, and the
/// only Authorization it accepts, if it is gated.
#[derive(Clone, Default)]
pub struct FakeRepo {
    pub files: Files,
    pub gated: Option<String>,
    /// Other revisions (a tag, `refs/convert/parquet`, …): name, commit, files.
    pub revisions: Vec<(String, String, Files)>,
}

impl FakeRepo {
    /// A repository with these files at `main`.
    pub fn of<'a>(files: impl IntoIterator<Item = (&'a str, Vec<u8>)>) -> Self {
        FakeRepo { files: files.into_iter().map(|(n, d)| (n.to_string(), d)).collect(), ..Default::default() }
    }

    /// The same repository with the revision `name` at `commit`, holding `files`.
    pub fn with_revision(mut self, name: &str, commit: &str, files: Files) -> Self {
        self.revisions.push((name.into(), commit.into(), files));
        self
    }

    /// The commit and files of a revision (a name or a commit), if there is one.
    fn at(&self, rev: &str) -> Option<(&str, &Files)> {
        if rev == "main" || rev == SHA {
            return Some((SHA, &self.files));
        }
        self.revisions.iter().find(|(n, c, _)| n == rev || c == rev).map(|(_, c, f)| (c.as_str(), f))
    }
}

/// A repository holding the files `names` of the folder `dir`.
pub fn fake_repo(dir: &Path, names: &[&str]) -> FakeRepo {
    FakeRepo::of(names.iter().map(|n| (*n, std::fs::read(dir.join(n)).unwrap())))
}

/// Repositories by the id in their URLs: `ORG/NAME` for a model, `datasets/ORG/NAME` for a dataset.
type Repos = HashMap<&'static str, FakeRepo>;
/// A request the fake hub saw: its url and Authorization header.
pub type Seen = (String, Option<String>);
type Reply = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// The fake hub; records `(url, Authorization)` of every request.
pub struct FakeHub {
    pub url: String,
    server: Arc<tiny_http::Server>,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl FakeHub {
    /// Serves `repos`, each under the id its URLs use: `ORG/NAME` for a model repository,
    /// `datasets/ORG/NAME` for a dataset repository.
    pub fn start(repos: Vec<(&'static str, FakeRepo)>) -> Self {
        let repos: Repos = repos.into_iter().collect();
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let log = Arc::default();
        let hub = FakeHub { url, server, log };
        let (server, log) = (hub.server.clone(), hub.log.clone());
        std::thread::spawn(move || {
            for request in server.incoming_requests() {
                let header = |name: &'static str| {
                    let h = request.headers().iter().find(|h| h.field.equiv(name));
                    h.map(|h| h.value.to_string())
                };
                let (url, auth) = (request.url().to_string(), header("Authorization"));
                log.lock().unwrap().push((url.clone(), auth.clone()));
                let (status, headers, body) = Self::answer(&repos, &url, auth, header("Range"));
                let mut response = tiny_http::Response::from_data(body).with_status_code(status);
                for (name, value) in headers {
                    let header = tiny_http::Header::from_bytes(name, value).unwrap();
                    response = response.with_header(header);
                }
                let _ = request.respond(response);
            }
        });
        hub
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn answer(repos: &Repos, url: &str, auth: Option<String>, range: Option<String>) -> Reply {
        let fail = |status, code: &str| (status, vec![("X-Error-Code", code.into())], vec![]);
        let json = |v: Value| (200, vec![], v.to_string().into_bytes());
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        if path == "/api/models" {
            return json(search_results(repos, &query_params(query)));
        }
        // `/api/models/ID/revision/REV`, `/api/datasets/ID/revision/REV`, `[/datasets]/ID/resolve/REV/FILE`.
        let (id, rev, file) = match path.strip_prefix("/api/") {
            Some(rest) => {
                let (repo, rev) = rest.split_once("/revision/").unwrap_or((rest, "main"));
                (repo.strip_prefix("models/").unwrap_or(repo), rev, None)
            }
            None => {
                let (id, rest) = path[1..].split_once("/resolve/").unwrap_or(("", ""));
                let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
                (id, rev, Some(file))
            }
        };
        let Some(repo) = repos.get(id) else {
            return fail(404, "RepoNotFound");
        };
        if repo.gated.is_some() && repo.gated != auth {
            return fail(403, "GatedRepo");
        }
        // hf-hub sends a revision with `/` (`refs/convert/parquet`) %-encoded.
        let Some((commit, files)) = repo.at(&decode(rev)) else {
            return fail(404, "RevisionNotFound");
        };
        let Some(file) = file else {
            let siblings: Vec<_> = files.keys().map(|f| json!({ "rfilename": f })).collect();
            return json(json!({ "id": id, "sha": commit, "siblings": siblings }));
        };
        let Some(data) = files.get(file) else {
            return fail(404, "EntryNotFound");
        };
        // As on the real hub: LFS files are known by their sha256, others by a git sha1.
        let sha256 = sha256_hex(data);
        let etag = format!("\"{}\"", &sha256[..40]);
        let mut headers = vec![("X-Repo-Commit", commit.into()), ("ETag", etag)];
        if file.ends_with(".safetensors") {
            headers.push(("X-Linked-Etag", format!("\"{sha256}\"")));
        }
        let bytes = range.as_deref().and_then(|r| r.strip_prefix("bytes="));
        let Some((a, b)) = bytes.and_then(|r| r.split_once('-')) else {
            return (200, headers, data.clone());
        };
        let start: usize = a.parse().unwrap();
        let end = b.parse().unwrap_or(usize::MAX).min(data.len() - 1);
        let content_range = format!("bytes {start}-{end}/{}", data.len());
        headers.push(("Content-Range", content_range));
        (206, headers, data[start..=end].to_vec())
    }
}

impl Drop for FakeHub {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// The model repos whose id has every search word, their total size as "downloads", most first.
fn search_results(repos: &Repos, params: &HashMap<String, String>) -> Value {
    let words: Vec<&str> = params["search"].split_whitespace().collect();
    let size = |r: &FakeRepo| r.files.values().map(Vec::len).sum::<usize>();
    let matches = |id: &&&str| !id.starts_with("datasets/") && words.iter().all(|w| id.contains(w));
    let mut found: Vec<_> = repos.iter().filter(|(id, _)| matches(id)).collect();
    found.sort_by_key(|(_, r)| std::cmp::Reverse(size(r)));
    found.truncate(params["limit"].parse().unwrap());
    let tags = ["llama", "safetensors"];
    let list = found.iter().map(|(id, r)| {
        json!({ "_id": "x", "id": id, "modelId": id, "downloads": size(r), "likes": 7, "tags": tags,
                "pipeline_tag": "text-generation", "library_name": "transformers" })
    });
    list.collect()
}

/// Decodes `%XX` escapes and `+` (form encoding).
pub fn decode(s: &str) -> String {
    let (bytes, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
    while i < bytes.len() {
        let hex = s.get(i + 1..i + 3).filter(|_| bytes[i] == b'%');
        let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
        out.push(byte.unwrap_or(if bytes[i] == b'+' { b' ' } else { bytes[i] }));
        i += if byte.is_some() { 3 } else { 1 };
    }
    String::from_utf8(out).unwrap()
}

/// Decodes a form-encoded query string (`a=b+c&d=%21`).
pub fn query_params(query: &str) -> HashMap<String, String> {
    let pairs = query.split('&').filter_map(|kv| kv.split_once('='));
    pairs.map(|(k, v)| (decode(k), decode(v))).collect()
}

/// SHA-256 (FIPS 180-4) as hex; its constants are the fractional parts of prime roots.
pub fn sha256_hex(data: &[u8]) -> String {
    let is_prime = |n: &u32| (2..*n).all(|d| !n.is_multiple_of(d));
    let primes: Vec<f64> = (2u32..312).filter(is_prime).map(f64::from).collect();
    let frac = |x: f64| ((x - x.floor()) * 4294967296.0) as u32;
    let k: Vec<u32> = primes.iter().map(|p| frac(p.cbrt())).collect();
    let mut h: Vec<u32> = primes[..8].iter().map(|p| frac(p.sqrt())).collect();
    let add = |xs: &[u32]| xs.iter().fold(0u32, |s, x| s.wrapping_add(*x));
    let word = |b: &[u8]| u32::from_be_bytes(b.try_into().unwrap());
    let mut msg = data.to_vec();
    msg.push(0x80);
    msg.resize((msg.len() + 8).next_multiple_of(64) - 8, 0);
    msg.extend_from_slice(&(data.len() as u64 * 8).to_be_bytes());
    for chunk in msg.chunks(64) {
        let mut w: Vec<u32> = chunk.chunks(4).map(word).collect();
        for i in 16..64 {
            let (x, y) = (w[i - 15], w[i - 2]);
            let s0 = x.rotate_right(7) ^ x.rotate_right(18) ^ (x >> 3);
            let s1 = y.rotate_right(17) ^ y.rotate_right(19) ^ (y >> 10);
            w.push(add(&[w[i - 16], s0, w[i - 7], s1]));
        }
        let mut v = h.clone();
        for (ki, wi) in k.iter().zip(&w) {
            let (a, e) = (v[0], v[4]);
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let t1 = add(&[v[7], s1, (e & v[5]) ^ (!e & v[6]), *ki, *wi]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let t2 = add(&[s0, (a & v[1]) ^ (a & v[2]) ^ (v[1] & v[2])]);
            v.rotate_right(1);
            (v[0], v[4]) = (add(&[t1, t2]), add(&[v[4], t1]));
        }
        for (h, v) in h.iter_mut().zip(v) {
            *h = add(&[*h, v]);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

/// An endpoint where nothing listens.
pub fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}
