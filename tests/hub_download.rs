//! The hub client against a fake hub on 127.0.0.1 (tiny_http) that speaks the protocol hf-hub
//! 0.4.3 expects: downloads into a temporary cache, cache-first and offline lookups, error
//! mapping, sharded and GGUF repos, search, cache listing, and a token sent but never shown.

use distill_tui::engine::hub::{self, DownloadProgress, FileSet, HubRepo, HubSettings, Snapshot};
use distill_tui::engine::Error;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::{cell::RefCell, fs};
use FileSet::HfModel;

const ID: &str = "local-test/tiny-llama";
const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const TOKEN: &str = "hf_SecretTestToken0123456789";
const WEIGHTS: &str = "model.safetensors";
const FILES: [&str; 4] = ["config.json", WEIGHTS, "tokenizer.json", "generation_config.json"];

fn fixture(file: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/models");
    dir.join("tiny-llama").join(file)
}

fn read(path: impl AsRef<Path>) -> Vec<u8> {
    fs::read(path).unwrap()
}

/// A repository of the fake hub: files at commit `SHA`, an optional only accepted Authorization.
type FakeRepo = (BTreeMap<String, Vec<u8>>, Option<String>);

fn fake_repo(dir: &Path, names: &[&str]) -> FakeRepo {
    let files = names.iter().map(|n| (n.to_string(), read(dir.join(n))));
    (files.collect(), None)
}

type Repos = HashMap<&'static str, FakeRepo>;
/// A request the fake hub saw: its url and Authorization header.
type Seen = (String, Option<String>);
type Reply = (u16, Vec<(&'static str, String)>, Vec<u8>);

/// The fake hub; records `(url, Authorization)` of every request.
struct FakeHub {
    url: String,
    server: Arc<tiny_http::Server>,
    log: Arc<Mutex<Vec<Seen>>>,
}

impl FakeHub {
    fn start(repos: Vec<(&'static str, FakeRepo)>) -> Self {
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

    fn requests(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    fn answer(repos: &Repos, url: &str, auth: Option<String>, range: Option<String>) -> Reply {
        let fail = |status, code: &str| (status, vec![("X-Error-Code", code.into())], vec![]);
        let json = |v: Value| (200, vec![], v.to_string().into_bytes());
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        if path == "/api/models" {
            return json(search_results(repos, &query_params(query)));
        }
        let (id, rev, file) = match path.strip_prefix("/api/models/") {
            Some(rest) => {
                let (id, rev) = rest.split_once("/revision/").unwrap_or((rest, "main"));
                (id, rev, None)
            }
            None => {
                let (id, rest) = path[1..].split_once("/resolve/").unwrap_or(("", ""));
                let (rev, file) = rest.split_once('/').unwrap_or((rest, ""));
                (id, rev, Some(file))
            }
        };
        let Some((files, gated)) = repos.get(id) else {
            return fail(404, "RepoNotFound");
        };
        if gated.is_some() && *gated != auth {
            return fail(403, "GatedRepo");
        }
        if rev != "main" && rev != SHA {
            return fail(404, "RevisionNotFound");
        }
        let Some(file) = file else {
            let siblings: Vec<_> = files.keys().map(|f| json!({ "rfilename": f })).collect();
            return json(json!({ "id": id, "sha": SHA, "siblings": siblings }));
        };
        let Some(data) = files.get(file) else {
            return fail(404, "EntryNotFound");
        };
        // As on the real hub: LFS files are known by their sha256, others by a git sha1.
        let sha256 = sha256_hex(data);
        let etag = format!("\"{}\"", &sha256[..40]);
        let mut headers = vec![("X-Repo-Commit", SHA.into()), ("ETag", etag)];
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

/// The repos whose id has every search word, their total size as "downloads", most first.
fn search_results(repos: &Repos, params: &HashMap<String, String>) -> Value {
    let words: Vec<&str> = params["search"].split_whitespace().collect();
    let size = |r: &FakeRepo| r.0.values().map(Vec::len).sum::<usize>();
    let matches = |id: &&&str| words.iter().all(|w| id.contains(w));
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

/// Decodes a form-encoded query string (`a=b+c&d=%21`).
fn query_params(query: &str) -> HashMap<String, String> {
    let decode = |s: &str| {
        let (bytes, mut out, mut i) = (s.as_bytes(), Vec::new(), 0);
        while i < bytes.len() {
            let hex = s.get(i + 1..i + 3).filter(|_| bytes[i] == b'%');
            let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok());
            out.push(byte.unwrap_or(if bytes[i] == b'+' { b' ' } else { bytes[i] }));
            i += if byte.is_some() { 3 } else { 1 };
        }
        String::from_utf8(out).unwrap()
    };
    let pairs = query.split('&').filter_map(|kv| kv.split_once('='));
    pairs.map(|(k, v)| (decode(k), decode(v))).collect()
}

/// SHA-256 (FIPS 180-4) as hex; its constants are the fractional parts of prime roots.
fn sha256_hex(data: &[u8]) -> String {
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

/// Online settings for a hub and a cache, with the test token.
fn settings(endpoint: &str, cache: &Path) -> HubSettings {
    let s = HubSettings::from_vars(|_| None).with_cache_dir(cache);
    s.with_endpoint(endpoint).with_token(Some(TOKEN.into()))
}

/// An endpoint where nothing listens.
fn dead_endpoint() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

fn get(settings: &HubSettings, repo: &HubRepo, wanted: FileSet) -> Result<Snapshot, Error> {
    hub::fetch(settings, repo, &wanted, &|_| {})
}

fn repo(id: &str) -> HubRepo {
    HubRepo::new(id)
}

fn bearer(auth: &Option<String>) -> bool {
    auth.as_deref() == Some(format!("Bearer {TOKEN}").as_str())
}

#[test]
fn downloads_then_serves_from_cache_online_and_offline_then_lists() {
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(sha256_hex(b"abc"), abc);
    let hub = FakeHub::start(vec![(ID, fake_repo(&fixture(""), &FILES))]);
    let cache = tempfile::tempdir().unwrap();
    let online = settings(&hub.url, cache.path());
    let events = RefCell::new(Vec::new());
    let record = |p: &DownloadProgress| events.borrow_mut().push(p.clone());
    let snap = hub::fetch(&online, &repo(ID), &HfModel, &record).unwrap();

    let repo_dir = cache.path().join("models--local-test--tiny-llama");
    assert_eq!((snap.id.as_str(), snap.revision.as_str()), (ID, SHA));
    assert_eq!(snap.dir, repo_dir.join("snapshots").join(SHA));
    assert_eq!(read(repo_dir.join("refs/main")), SHA.as_bytes());
    // huggingface_hub writes no refs/<sha> (hf-hub does, when fetching pinned to a commit).
    assert!(!repo_dir.join("refs").join(SHA).exists());
    assert_eq!(snap.files, FILES);
    for file in FILES {
        assert_eq!(read(snap.dir.join(file)), read(fixture(file)), "{file}");
    }
    let weights = read(fixture(WEIGHTS));
    let blob = repo_dir.join("blobs").join(sha256_hex(&weights));
    assert!(blob.is_file(), "the blob is named by its sha256");
    let size = weights.len() as u64;
    let events = events.into_inner();
    let last = events.iter().rfind(|p| p.file == WEIGHTS).unwrap();
    assert_eq!((last.bytes, last.total), (size, size));

    let requests = hub.requests();
    let asked = |url: String| requests.iter().any(|(u, _)| *u == url);
    assert!(asked(format!("/api/models/{ID}/revision/main")));
    assert!(asked(format!("/{ID}/resolve/{SHA}/{WEIGHTS}")));
    assert!(requests.iter().all(|(_, auth)| bearer(auth)));

    // Complete in the cache: no request at all, online...
    assert_eq!(get(&online, &repo(ID), HfModel).unwrap(), snap);
    assert_eq!(hub.requests().len(), requests.len());
    // ...and offline with nothing listening, by branch or by commit.
    let offline = online.clone().with_offline(true);
    let offline = offline.with_endpoint(dead_endpoint());
    assert_eq!(get(&offline, &repo(ID), HfModel).unwrap(), snap);
    assert_eq!(get(&offline, &repo(ID).at(SHA), HfModel).unwrap(), snap);

    let listed = hub::list_cache(&offline).unwrap();
    assert_eq!(listed.len(), 1);
    let model = &listed[0];
    assert_eq!((model.id.as_str(), &model.snapshot), (ID, &snap.dir));
    assert_eq!(model.revisions, [SHA]);
    let mut sorted = FILES.to_vec();
    sorted.sort();
    assert_eq!(model.files, sorted);
    let total: usize = FILES.iter().map(|f| read(fixture(f)).len()).sum();
    assert_eq!(model.bytes, total as u64);
    assert!(model.has_safetensors && model.gguf_files.is_empty());
    let absent = offline.with_cache_dir(cache.path().join("absent"));
    assert!(hub::list_cache(&absent).unwrap().is_empty());
}

#[test]
fn errors_name_the_model_and_never_show_the_token() {
    let fx = fixture("");
    let mut gated = fake_repo(&fx, &FILES);
    gated.1 = Some("Bearer hf_other".into());
    let no_weights = fake_repo(&fx, &["config.json", "tokenizer.json"]);
    let hub =
        FakeHub::start(vec![(ID, fake_repo(&fx, &FILES)), ("local/no-weights", no_weights), ("local/gated", gated)]);
    let cache = tempfile::tempdir().unwrap();
    let online = settings(&hub.url, cache.path());
    let debug = format!("{online:?}");
    assert!(online.has_token() && debug.contains("token: Some(\"***\")"));
    assert!(!debug.contains(TOKEN), "{debug}");
    let unknown = repo("local/nothing-here");
    let mut errors = Vec::new();
    let mut check = |ok: bool, e: Error| {
        assert!(ok, "{e:?}");
        errors.push(e);
    };

    let e = get(&online.clone().with_offline(true), &unknown, HfModel).unwrap_err();
    let ok = matches!(&e, Error::NotInCache { id, cache: c } if *id == unknown.id && c == cache.path());
    check(ok, e);
    let e = get(&online, &unknown, HfModel).unwrap_err();
    let ok = matches!(&e, Error::NotOnHub { id, endpoint } if *id == unknown.id && *endpoint == hub.url);
    check(ok, e);
    let e = get(&online, &repo(ID).at("no-such-branch"), HfModel).unwrap_err();
    check(matches!(&e, Error::NotOnHub { .. }), e);
    // A repo without weights: the error names it and lists what it has.
    let e = get(&online, &repo("local/no-weights"), HfModel).unwrap_err();
    let named = ["local/no-weights", WEIGHTS, "`config.json`, `tokenizer.json`"];
    let ok = matches!(&e, Error::Invalid(t) if named.iter().all(|s| t.contains(s)));
    check(ok, e);
    let e = get(&online, &repo(ID), FileSet::Gguf("x.Q4_0.gguf".into())).unwrap_err();
    let ok = matches!(&e, Error::Invalid(t) if t.contains("x.Q4_0.gguf") && t.contains(ID));
    check(ok, e);
    let e = get(&online, &repo("local/gated"), HfModel).unwrap_err();
    let ok = matches!(&e, Error::Unauthorized { id, status: 403 } if id == "local/gated");
    check(ok, e);
    let dead = online.clone().with_endpoint(dead_endpoint());
    let e = get(&dead, &repo(ID), HfModel).unwrap_err();
    check(matches!(&e, Error::Network { id, .. } if id == ID), e);

    for e in &errors[..2] {
        assert!(e.to_string().contains(&unknown.id), "{e}");
    }
    for e in &errors {
        assert!(!format!("{e} {e:?}").contains(TOKEN), "{e}");
    }
    assert!(hub.requests().iter().any(|(_, auth)| bearer(auth)));
    let listed = hub::list_cache(&online).unwrap();
    assert!(listed.is_empty(), "the failures cached nothing");
}

#[test]
fn sharded_and_gguf_repos() {
    // Split the fixture's tensors into two shards plus an index, as transformers does.
    let dir = tempfile::tempdir().unwrap();
    let put = |name: &str, data: &[u8]| fs::write(dir.path().join(name), data).unwrap();
    let bytes = read(fixture(WEIGHTS));
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = tensors.names();
    names.sort();
    let (first, second) = names.split_at(names.len() / 2);
    let shards = ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"];
    let mut weight_map = serde_json::Map::new();
    for (shard, part) in shards.into_iter().zip([first, second]) {
        let view = |n: &&str| (n.to_string(), tensors.tensor(n).unwrap());
        let data = safetensors::serialize(part.iter().map(view), None).unwrap();
        put(shard, &data);
        weight_map.extend(part.iter().map(|n| (n.to_string(), json!(shard))));
    }
    let index = json!({ "metadata": { "total_size": bytes.len() }, "weight_map": weight_map });
    let index_file = "model.safetensors.index.json";
    put(index_file, index.to_string().as_bytes());
    put("tiny.Q8_0.gguf", b"GGUF\x03\0\0\0 not really");
    for f in ["config.json", "tokenizer.json"] {
        put(f, &read(fixture(f)));
    }
    let mut files = vec!["config.json", index_file];
    files.extend(shards);
    files.push("tokenizer.json");
    let gguf_files = ["tiny.Q8_0.gguf", "tokenizer.json"];
    let hub = FakeHub::start(vec![
        ("local/sharded", fake_repo(dir.path(), &files)),
        ("local/gguf", fake_repo(dir.path(), &gguf_files)),
    ]);
    let cache = tempfile::tempdir().unwrap();
    let (online, sharded) = (settings(&hub.url, cache.path()), repo("local/sharded"));

    let snap = get(&online, &sharded, HfModel).unwrap();
    assert_eq!(snap.files, files);
    for f in &files {
        assert_eq!(read(snap.dir.join(f)), read(dir.path().join(f)), "{f}");
    }
    let offline = online.clone().with_offline(true);
    assert_eq!(get(&offline, &sharded, HfModel).unwrap(), snap);
    // A shard gone from the cache makes the snapshot incomplete; online fetches it again.
    fs::remove_file(snap.dir.join(shards[1])).unwrap();
    let e = get(&offline, &sharded, HfModel).unwrap_err();
    assert!(matches!(e, Error::NotInCache { .. }), "{e:?}");
    assert_eq!(get(&online, &sharded, HfModel).unwrap(), snap);

    let gguf = FileSet::Gguf("tiny.Q8_0.gguf".into());
    let snap = get(&online, &repo("local/gguf"), gguf).unwrap();
    assert_eq!(snap.files, gguf_files);
    let listed = hub::list_cache(&offline).unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["local/gguf", "local/sharded"]);
    assert_eq!(listed[0].gguf_files, ["tiny.Q8_0.gguf"]);
    assert!(!listed[0].has_safetensors && listed[1].has_safetensors);
}

#[test]
fn search_sends_the_query_and_the_token_from_the_token_file() {
    let small = || fake_repo(&fixture(""), &["config.json"]);
    let hub = FakeHub::start(vec![
        (ID, fake_repo(&fixture(""), &FILES)),
        ("local/tiny-llama-config", small()),
        ("other/bert", small()),
    ]);
    let home = tempfile::tempdir().unwrap();
    fs::write(home.path().join("token"), "  hf_from_the_token_file\n").unwrap();
    let home_dir = home.path().display().to_string();
    let endpoint = format!("{}/", hub.url);
    let vars = HashMap::from([("HF_HOME", home_dir), ("HF_ENDPOINT", endpoint)]);
    let settings = HubSettings::from_vars(|name| vars.get(name).cloned());
    assert!(settings.has_token() && settings.endpoint == hub.url);

    // Both matches, most downloaded first.
    let found = hub::search(&settings, "tiny llama", 5).unwrap();
    let ids: Vec<&str> = found.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, [ID, "local/tiny-llama-config"]);
    let total: usize = FILES.iter().map(|f| read(fixture(f)).len()).sum();
    let m = &found[0];
    assert_eq!((m.downloads, m.likes), (total as u64, 7));
    assert_eq!(m.tags, ["llama", "safetensors"]);
    assert_eq!(m.pipeline_tag.as_deref(), Some("text-generation"));
    assert_eq!(m.library.as_deref(), Some("transformers"));

    let (url, auth) = hub.requests().pop().unwrap();
    let (path, query) = url.split_once('?').unwrap();
    let params = query_params(query);
    let sent = ["search", "limit", "sort", "direction"].map(|name| params[name].as_str());
    assert_eq!(path, "/api/models");
    assert_eq!(sent, ["tiny llama", "5", "downloads", "-1"]);
    assert_eq!(auth.as_deref(), Some("Bearer hf_from_the_token_file"));

    assert_eq!(hub::search(&settings, "tiny", 1).unwrap().len(), 1);
    let before = hub.requests().len();
    let offline = settings.clone().with_offline(true);
    let e = hub::search(&offline, "tiny", 5).unwrap_err();
    assert!(matches!(e, Error::Invalid(_)), "{e:?}");
    let after = hub.requests().len();
    assert_eq!(after, before, "offline search makes no request");
}

#[test]
fn the_binary_downloads_through_hf_endpoint_then_runs_offline_with_golden_logits() {
    let hub = FakeHub::start(vec![(ID, fake_repo(&fixture(""), &FILES))]);
    let cache = tempfile::tempdir().unwrap();
    let c = cache.path().to_str().unwrap();
    let bin = env!("CARGO_BIN_EXE_distill-tui");
    let run = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(bin)
            .args(["inspect", ID, "--json"])
            .env_remove("HF_HUB_OFFLINE")
            .env("HF_HUB_CACHE", c)
            .env("HF_TOKEN", TOKEN)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{stderr}");
        assert!(!stdout.contains(TOKEN) && !stderr.contains(TOKEN), "the token leaked");
        serde_json::from_str::<Value>(&stdout).unwrap()
    };
    let online = run(&[("HF_ENDPOINT", &hub.url)]);
    assert_eq!(online["hub_id"], ID);
    let downloads = hub.requests().len();
    assert!(downloads >= 3, "config, weights and tokenizer were downloaded");
    let offline = run(&[("HF_ENDPOINT", &dead_endpoint()), ("HF_HUB_OFFLINE", "1")]);
    assert_eq!(offline["source_path"], online["source_path"]);
    assert_eq!(hub.requests().len(), downloads, "offline run made no request");
    // The downloaded snapshot runs through the same resolver and matches transformers.
    let offline_settings = settings(&dead_endpoint(), cache.path()).with_offline(true);
    let resolved = distill_tui::engine::source::resolve(ID, &offline_settings, &|_| {}).unwrap();
    let model = distill_tui::engine::loader::load_model(&resolved, &Default::default()).unwrap();
    let golden = candle_core::safetensors::load(fixture("golden.safetensors"), &candle_core::Device::Cpu).unwrap();
    let ids = golden["input_ids"].to_dtype(candle_core::DType::U32).unwrap();
    let logits = model.network.forward(&ids).unwrap();
    let diff = (logits - &golden["logits"]).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    assert!(diff.to_scalar::<f32>().unwrap() <= 1e-4);
}
