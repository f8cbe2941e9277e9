//! Files of hub *dataset* repositories, named by `hf://datasets/ORG/NAME[@REV]/PATH`, through the
//! fake hub of `common::fake_hub`: a download into an empty cache (`datasets--ORG--NAME`),
//! cache-first and offline reads with no request, revisions (a tag, `refs/convert/parquet`), a
//! glob, the errors, and the binary running a classification recipe on Parquet files from the hub.

use crate::common;

use common::fake_hub::{dead_endpoint, FakeHub, FakeRepo, Files, SHA};
use common::{fixture, run_cli};
use distill_tui::engine::classify::data::{read_rows, Columns};
use distill_tui::engine::hub::{fetch_uri, HubSettings, RepoKind};
use distill_tui::engine::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const DATASET: &str = "local/animals";
const V1: &str = "89abcdef0123456789abcdef0123456789abcdef";
const CONVERTED: &str = "fedcba9876543210fedcba9876543210fedcba98";

fn parquet(name: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/classify");
    std::fs::read(dir.join(name)).unwrap()
}

fn files(list: &[(&str, &str)]) -> Files {
    list.iter().map(|(name, fixture)| (name.to_string(), parquet(fixture))).collect()
}

/// `datasets/local/animals`: train/eval at `main`, two train shards at tag `v1`, a converted copy
/// at `refs/convert/parquet`; and a *model* `local/animals` whose same-named file differs.
fn hub() -> FakeHub {
    let main = FakeRepo::of([
        ("README.md", b"# animals\n".to_vec()),
        ("data/train.parquet", parquet("animals-classlabel.parquet")),
        ("data/eval.parquet", parquet("animals-ids-gzip.parquet")),
    ]);
    let shards = [
        ("data/train-00000-of-00002.parquet", "animals-classlabel.parquet"),
        ("data/train-00001-of-00002.parquet", "animals-ids-gzip.parquet"),
        ("data/other.parquet", "null-text.parquet"),
    ];
    let converted = [("default/train/0000.parquet", "animals-snappy.parquet")];
    let dataset = main.with_revision("v1", V1, files(&shards)).with_revision(
        "refs/convert/parquet",
        CONVERTED,
        files(&converted),
    );
    let model = FakeRepo::of([("data/train.parquet", b"not the dataset".to_vec())]);
    FakeHub::start(vec![("datasets/local/animals", dataset), (DATASET, model)])
}

/// Settings as the binary builds them from HF_HUB_CACHE and HF_ENDPOINT.
fn settings(endpoint: &str, cache: &Path) -> HubSettings {
    let vars = HashMap::from([("HF_HUB_CACHE", cache.display().to_string()), ("HF_ENDPOINT", endpoint.to_string())]);
    HubSettings::from_vars(|name| vars.get(name).cloned())
}

fn fetch(settings: &HubSettings, uri: &str) -> Result<Vec<PathBuf>, Error> {
    fetch_uri(settings, uri, &|_| {})
}

#[test]
fn downloads_a_dataset_file_then_reads_it_from_the_cache_with_no_request() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let online = settings(&hub.url, cache.path());
    let uri = "hf://datasets/local/animals/data/train.parquet";
    let paths = fetch(&online, uri).unwrap();

    let repo_dir = cache.path().join("datasets--local--animals");
    assert_eq!(paths, [repo_dir.join("snapshots").join(SHA).join("data/train.parquet")]);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), parquet("animals-classlabel.parquet"));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/main")).unwrap(), SHA);
    assert!(!cache.path().join("models--local--animals").exists(), "the model of the same name is untouched");
    let requests: Vec<String> = hub.requests().into_iter().map(|(url, _)| url).collect();
    assert_eq!(requests[0], "/api/datasets/local/animals/revision/main");
    assert!(requests.contains(&format!("/datasets/local/animals/resolve/{SHA}/data/train.parquet")), "{requests:?}");
    let rows = read_rows(&paths[0], &Columns { text: "text".into(), label: "label".into() }).unwrap();
    assert_eq!((rows.len(), rows[1].1.as_str()), (90, "dog"));

    // Cached: no request online, and none offline with nothing listening.
    let seen = hub.requests().len();
    assert_eq!(fetch(&online, uri).unwrap(), paths);
    let offline = online.clone().with_offline(true).with_endpoint(dead_endpoint());
    assert_eq!(fetch(&offline, uri).unwrap(), paths);
    assert_eq!(fetch(&offline, &format!("hf://datasets/local/animals@{SHA}/data/train.parquet")).unwrap(), paths);
    assert_eq!(hub.requests().len(), seen, "served from the cache");

    // Offline, a file not in the cached snapshot: the error names the dataset, the file and where
    // the snapshot is (the dataset itself is cached).
    let e = fetch(&offline, "hf://datasets/local/animals/data/eval.parquet").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("dataset `local/animals`") && text.contains("HF_HUB_OFFLINE"), "{text}");
    assert!(text.contains("without `data/eval.parquet`"), "{text}");
    assert!(text.contains(&cache.path().display().to_string()), "{text}");
    // The model repository of the same id is another repository.
    let model = fetch(&online, "hf://local/animals/data/train.parquet").unwrap();
    assert_eq!(std::fs::read(&model[0]).unwrap(), b"not the dataset");
    assert!(model[0].starts_with(cache.path().join("models--local--animals")));
}

#[test]
fn revisions_and_globs() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let online = settings(&hub.url, cache.path());
    let repo_dir = cache.path().join("datasets--local--animals");

    let glob = "hf://datasets/local/animals@v1/data/train-*.parquet";
    let shards = fetch(&online, glob).unwrap();
    let v1 = repo_dir.join("snapshots").join(V1).join("data");
    let want = [v1.join("train-00000-of-00002.parquet"), v1.join("train-00001-of-00002.parquet")];
    assert_eq!(shards, want, "sorted, `other.parquet` left out");
    assert_eq!(std::fs::read(&shards[1]).unwrap(), parquet("animals-ids-gzip.parquet"));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/v1")).unwrap(), V1);
    assert!(!v1.join("other.parquet").exists(), "only the matches are downloaded");
    // Offline, the glob is matched in the cached snapshot.
    let offline = online.clone().with_offline(true).with_endpoint(dead_endpoint());
    let seen = hub.requests().len();
    assert_eq!(fetch(&offline, glob).unwrap(), want);
    assert_eq!(fetch(&offline, "hf://datasets/local/animals@v1/data/*-00001-*").unwrap(), want[1..]);
    assert_eq!(hub.requests().len(), seen);

    // A special revision, written as it is or %-encoded, as huggingface_hub accepts both.
    let converted =
        fetch(&online, "hf://datasets/local/animals@refs/convert/parquet/default/train/0000.parquet").unwrap();
    assert_eq!(converted, [repo_dir.join("snapshots").join(CONVERTED).join("default/train/0000.parquet")]);
    assert_eq!(std::fs::read(&converted[0]).unwrap(), parquet("animals-snappy.parquet"));
    assert_eq!(std::fs::read_to_string(repo_dir.join("refs/refs/convert/parquet")).unwrap(), CONVERTED);
    let asked = hub.requests().iter().any(|(url, _)| url.ends_with("/revision/refs%2Fconvert%2Fparquet"));
    assert!(asked, "{:?}", hub.requests());
    let encoded = "hf://datasets/local/animals@refs%2Fconvert%2Fparquet/default/train/0000.parquet";
    assert_eq!(fetch(&offline, encoded).unwrap(), converted);
}

#[test]
fn missing_files_revisions_and_datasets_are_named() {
    let hub = hub();
    let cache = tempfile::tempdir().unwrap();
    let online = settings(&hub.url, cache.path());
    let e = fetch(&online, "hf://datasets/local/animals/data/test.parquet").unwrap_err().to_string();
    assert!(e.contains("dataset `local/animals` on the hub has no `data/test.parquet`"), "{e}");
    assert!(e.contains("its files: `README.md`, `data/eval.parquet`, `data/train.parquet`"), "{e}");
    let e = fetch(&online, "hf://datasets/local/animals@v1/data/test-*.parquet").unwrap_err().to_string();
    assert!(e.contains("`local/animals` at `v1` on the hub has no file matching `data/test-*.parquet`"), "{e}");
    assert!(e.contains("`data/train-00000-of-00002.parquet`"), "{e}");
    let e = fetch(&online, "hf://datasets/local/absent/train.csv").unwrap_err();
    assert!(matches!(&e, Error::NotOnHub { kind: RepoKind::Dataset, id, .. } if id == "local/absent"), "{e:?}");
    assert!(e.to_string().starts_with("dataset `local/absent` was not found on the hub"), "{e}");
    let e = fetch(&online, "hf://datasets/local/animals@v9/data/train.parquet").unwrap_err();
    assert!(matches!(&e, Error::NotOnHub { .. }), "{e:?}");
    let e = fetch(&online, "hf://datasets/local/animals/../x.csv").unwrap_err().to_string();
    assert!(e.contains("not a valid file name"), "{e}");
    assert!(std::fs::read_dir(cache.path().join("datasets--local--animals/snapshots")).map_or(true, |d| d.count() == 0));
}

/// A tiny classification recipe (the tiny BERT fixture, a few steps) on `train` and `eval`.
fn recipe(dir: &Path, train: &str, eval: &str) -> PathBuf {
    let text = format!(
        r#"task = "classification"
[data]
train = "{train}"
eval = "{eval}"
max_len = 24
[teacher]
model = "{}"
[finetune]
steps = 3
batch_size = 8
lr = 1e-3
[student]
layers = 2
[distill]
steps = 3
batch_size = 8
lr = 1e-3
baseline = false
[output]
dir = "{}"
"#,
        fixture("tiny-bert-cls").display(),
        dir.join("out").display()
    );
    let path = dir.join("recipe.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_binary_runs_a_recipe_on_parquet_files_from_a_hub_dataset_then_offline() {
    let hub = hub();
    let (cache, work) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let c = cache.path().to_str().unwrap();
    let train = "hf://datasets/local/animals@v1/data/train-*.parquet";
    let path = recipe(work.path(), train, "hf://datasets/local/animals/data/eval.parquet");
    let run = |env: &[(&str, &str)]| {
        // Later entries win: the defaults first.
        let mut all = vec![("HF_HUB_CACHE", c), ("HF_HOME", c), ("HF_HUB_OFFLINE", "0")];
        all.extend(env);
        let (code, stdout, stderr) = run_cli(&["run", path.to_str().unwrap(), "--json"], &all);
        assert_eq!(code, 0, "stderr: {stderr}");
        stdout
    };
    run(&[("HF_ENDPOINT", &hub.url)]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.path().join("out/summary.json")).unwrap()).unwrap();
    assert_eq!(summary["classes"], serde_json::json!(["cat", "dog", "horse"]));
    assert_eq!((summary["train_examples"].as_u64(), summary["eval_examples"].as_u64()), (Some(120), Some(30)));
    assert!(summary["student"]["accuracy"].is_number(), "{summary}");
    let downloaded = hub.requests().len();
    assert!(downloaded >= 4, "two info requests and three files: {:?}", hub.requests());

    // Offline with nothing listening: the same files from the cache, no request. (The finished run
    // keeps its checkpoints, so the rerun goes to an emptied folder.)
    std::fs::remove_dir_all(work.path().join("out")).unwrap();
    run(&[("HF_ENDPOINT", &dead_endpoint()), ("HF_HUB_OFFLINE", "1")]);
    assert!(work.path().join("out/summary.json").is_file());
    assert_eq!(hub.requests().len(), downloaded);

    // A file the dataset lacks: exit code 2 and the error names the key and the repo's files.
    std::fs::remove_dir_all(work.path().join("out")).unwrap();
    let bad = recipe(work.path(), "hf://datasets/local/animals/data/train.csv", "eval.csv");
    let env = [("HF_HUB_CACHE", c), ("HF_HUB_OFFLINE", "0"), ("HF_ENDPOINT", &hub.url)];
    let (code, _, stderr) = run_cli(&["run", bad.to_str().unwrap()], &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("data.train") && stderr.contains("has no `data/train.csv`"), "{stderr}");
    assert!(stderr.contains("`data/train.parquet`"), "{stderr}");
}
