//! The hub client against a fake hub on 127.0.0.1 (`common::fake_hub`) that speaks the protocol
//! hf-hub 0.4.3 expects: downloads into a temporary cache, cache-first and offline lookups, error
//! mapping, sharded and GGUF repos, search, cache listing, and a token sent but never shown.

use crate::common;

use common::fake_hub::{dead_endpoint, fake_repo, query_params, sha256_hex, FakeHub, SHA};
use distill_tui::engine::hub::{self, DownloadProgress, FileSet, HubRepo, HubSettings, Snapshot};
use distill_tui::engine::Error;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::{cell::RefCell, fs};
use FileSet::HfModel;

const ID: &str = "local-test/tiny-llama";
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

/// Online settings for a hub and a cache, with the test token.
fn settings(endpoint: &str, cache: &Path) -> HubSettings {
    let s = HubSettings::from_vars(|_| None).with_cache_dir(cache);
    s.with_endpoint(endpoint).with_token(Some(TOKEN.into()))
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
    // Offline misses name what is missing: another revision (the cached ones listed), or files.
    let e = get(&offline, &repo(ID).at("v2"), HfModel).unwrap_err().to_string();
    assert!(e.contains("in the local cache") && e.contains("not at revision `v2` (cached: main)"), "{e}");
    let e = get(&offline, &repo(ID), FileSet::Gguf("m.Q4_0.gguf".into())).unwrap_err().to_string();
    assert!(e.contains("at `main`") && e.contains("without `m.Q4_0.gguf`"), "{e}");
    let absent = offline.with_cache_dir(cache.path().join("absent"));
    let e = get(&absent, &repo(ID), HfModel).unwrap_err();
    assert!(matches!(e, Error::NotInCache { .. }), "{e}");
    assert!(hub::list_cache(&absent).unwrap().is_empty());
}

#[test]
fn errors_name_the_model_and_never_show_the_token() {
    let fx = fixture("");
    let mut gated = fake_repo(&fx, &FILES);
    gated.gated = Some("Bearer hf_other".into());
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
    let ok = matches!(&e, Error::NotInCache { id, cache: c, .. } if *id == unknown.id && c == cache.path());
    check(ok, e);
    let e = get(&online, &unknown, HfModel).unwrap_err();
    let ok = matches!(&e, Error::NotOnHub { id, endpoint, .. } if *id == unknown.id && *endpoint == hub.url);
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
    // Refused with a token: the token is what to check; without one: set one.
    let e = get(&online, &repo("local/gated"), HfModel).unwrap_err();
    let ok = matches!(&e, Error::Unauthorized { id, status: 403, token_sent: true } if id == "local/gated")
        && e.to_string().contains("a token was sent");
    check(ok, e);
    let e = get(&online.clone().with_token(None), &repo("local/gated"), HfModel).unwrap_err();
    let ok = matches!(&e, Error::Unauthorized { token_sent: false, .. }) && e.to_string().contains("set HF_TOKEN");
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
    let e = get(&offline, &sharded, HfModel).unwrap_err().to_string();
    assert!(
        e.contains("is in the local cache at `main`") && e.contains("without config.json and safetensors weights"),
        "{e}"
    );
    assert_eq!(get(&online, &sharded, HfModel).unwrap(), snap);

    let gguf = FileSet::Gguf("tiny.Q8_0.gguf".into());
    let snap = get(&online, &repo("local/gguf"), gguf).unwrap();
    assert_eq!(snap.files, gguf_files);
    let listed = hub::list_cache(&offline).unwrap();
    let ids: Vec<&str> = listed.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(ids, ["local/gguf", "local/sharded"]);
    assert_eq!(listed[0].gguf_files, ["tiny.Q8_0.gguf"]);
    assert!(!listed[0].has_safetensors && listed[1].has_safetensors);
    // A GGUF repository named as a Hugging Face model: the error names the spec that works.
    let e = get(&offline, &repo("local/gguf"), HfModel).unwrap_err().to_string();
    assert!(e.contains("it holds GGUF files (tiny.Q8_0.gguf): name one as `local/gguf:tiny.Q8_0.gguf`"), "{e}");
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
