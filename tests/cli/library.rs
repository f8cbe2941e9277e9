//! The run library and sweeps, headless: a 2×2 sweep (two temperatures × two student sizes) on the
//! fixture models leaves four runs with summaries and prints one table; killed during its third
//! run and resumed it finishes with the same four summaries; `runs`, `show` and `compare` read the
//! library back; a finished run's folder gets a numbered run beside it; bad `[sweep]` sections are
//! refused naming the key before anything trains.

use crate::common;
use std::path::{Path, PathBuf};

const METRICS: [&str; 4] = ["perplexity", "top1_accuracy", "kl_to_teacher", "agreement"];
const MEMBERS: [&str; 4] = ["01-T=1_layers=1", "02-T=1_layers=2", "03-T=4_layers=1", "04-T=4_layers=2"];

/// Training and eval text (slices of Austen) in `dir`, shared by the recipes there.
fn data(dir: &Path) {
    let train = dir.join("train.txt");
    if !train.exists() {
        let austen = common::shared_dir().join("data/austen");
        let text = std::fs::read_to_string(austen.join("emma.txt")).unwrap();
        std::fs::write(&train, &text[..60_000]).unwrap();
        let eval = std::fs::read_to_string(austen.join("persuasion.txt")).unwrap();
        std::fs::write(dir.join("eval.txt"), &eval[..12_000]).unwrap();
    }
}

/// A small distillation recipe over the tiny llama fixture, with `extra` appended.
fn recipe(dir: &Path, name: &str, extra: &str) -> PathBuf {
    data(dir);
    let text = format!(
        "[teacher]\nmodel = \"{}\"\n[student]\nderive = {{ layers = 2 }}\n[data]\ntrain = \"train.txt\"\neval = \"eval.txt\"\nseq_len = 32\neval_tokens = 512\n\
         [distill]\nsteps = 8\nbatch_size = 4\nwarmup_steps = 1\neval_every = 4\ncheckpoint_every = 2\ncache_top_k = 16\nbaseline = false\n\
         [output]\ndir = \"{}\"\n{extra}\n",
        common::fixture("tiny-llama").display(),
        dir.join(name).display()
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

const SWEEP: &str = "[sweep]\ndistill.temperature = [1, 4]\nstudent.derive.layers = [1, 2]\n";

fn cli(args: &[&str], cache: &Path) -> (i32, String, String) {
    common::run_cli(args, &[("DISTILL_CACHE_DIR", cache.to_str().unwrap())])
}

fn summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn a_two_by_two_sweep_killed_in_its_third_run_resumes_to_the_same_four_summaries() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let whole = recipe(tmp.path(), "whole", SWEEP);
    let (code, out, err) = cli(&["run", whole.to_str().unwrap()], &cache);
    assert_eq!(code, 0, "{err}");
    let root = tmp.path().join("whole");
    for m in MEMBERS {
        assert!(root.join(m).join("summary.json").is_file(), "{m} has no summary:\n{out}");
    }
    // One table at the end, each member's student labelled by what it sets.
    let table = &out[out.find("sweep finished").expect("the sweep table")..];
    for (run, point) in [("T=1 layers=1", "student float"), ("T=4 layers=2", "student float"), ("-", "teacher float")] {
        assert!(table.lines().any(|l| l.contains(run) && l.contains(point)), "no `{run} {point}` in\n{table}");
    }
    // The teacher's logits are computed once for the whole sweep: later members read the cache.
    let first = summary(&root.join(MEMBERS[0]));
    assert!(first["teacher_cache"]["misses"].as_u64().unwrap() > 0);
    for m in &MEMBERS[1..] {
        let s = summary(&root.join(m));
        assert_eq!(s["teacher_cache"]["misses"], 0, "{m} recomputed teacher logits");
        assert_eq!(s["student"]["layers"], if m.ends_with("layers=1") { 1 } else { 2 });
    }
    let t1 = std::fs::read_to_string(root.join(MEMBERS[0]).join("recipe.toml")).unwrap();
    assert!(t1.contains("temperature = 1"), "{t1}");

    // The same sweep, killed with SIGKILL once its third run checkpointed, then resumed.
    let killed = recipe(tmp.path(), "killed", SWEEP);
    let kroot = tmp.path().join("killed");
    let env = [("DISTILL_CACHE_DIR", cache.to_str().unwrap())];
    common::kill_9_at_checkpoint(&killed, &env, &kroot.join(MEMBERS[2]), 4);
    assert!(!kroot.join(MEMBERS[2]).join("summary.json").exists(), "the third run finished before the kill");
    assert!(!kroot.join(MEMBERS[3]).exists(), "the fourth run started before the kill");
    // Without --resume the unfinished sweep is refused, not restarted.
    let (code, _, err) = cli(&["run", killed.to_str().unwrap()], &cache);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--resume"), "{err}");
    let (code, out, err) = cli(&["run", killed.to_str().unwrap(), "--resume"], &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("finished before: kept"), "{out}");
    assert!(out.contains("(resuming)"), "{out}");
    for m in MEMBERS {
        let (a, b) = (summary(&root.join(m)), summary(&kroot.join(m)));
        for metric in METRICS {
            assert_eq!(a["student"][metric], b["student"][metric], "{m}: student.{metric} differs");
        }
        assert_eq!(a["steps"], b["steps"]);
    }

    // The library lists both sweeps and their members; `show` and `compare` read them back.
    let (code, out, err) = cli(&["runs", "--json"], &cache);
    assert_eq!(code, 0, "{err}");
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(runs.len(), 10, "two sweeps and their eight members: {out}");
    assert!(runs.iter().all(|r| r["status"] == "finished"), "{out}");
    let (code, out, _) = cli(&["runs"], &cache);
    assert_eq!(code, 0);
    assert!(out.contains("T=4 layers=2") && out.contains("sweep"), "{out}");
    let kroot_s = kroot.to_str().unwrap();
    let (code, out, err) = cli(&["compare", kroot_s, "--markdown", "--sort", "ppl"], &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("| front | run | point |"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("student float")).count(), 4, "{out}");
    let ppl: Vec<f64> = out
        .lines()
        .skip(2)
        .filter(|l| l.starts_with('|'))
        .map(|l| l.split('|').nth(5).unwrap().trim().parse().unwrap())
        .collect();
    assert!(ppl.windows(2).all(|w| w[0] <= w[1]), "not sorted by perplexity: {ppl:?}");
    assert!(out.lines().any(|l| l.starts_with("| * |")), "no point marked on the Pareto front:\n{out}");
    let (code, out, _) = cli(&["compare", kroot_s, "--json"], &cache);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["rows"].as_array().unwrap().len(), 5, "teacher + four students: {out}");
    let (code, out, err) = cli(&["show", kroot.join(MEMBERS[2]).to_str().unwrap()], &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("status   finished") && out.contains("T=4"), "{out}");
    let events = std::fs::read_to_string(kroot.join(MEMBERS[2]).join("events.jsonl")).unwrap();
    assert!(events.contains("\"event\":\"resumed\""), "the third run's log does not say it resumed");
    assert!(events.lines().last().unwrap().contains("\"event\":\"summary\""));
    let (code, _, err) = cli(&["show", "no-such-run"], &cache);
    assert_eq!(code, 2);
    assert!(err.contains("no run named `no-such-run`"), "{err}");
}

#[test]
fn a_finished_run_gets_a_numbered_run_beside_it_and_an_unfinished_one_needs_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let path = recipe(tmp.path(), "demo", "");
    let p = path.to_str().unwrap();
    let (code, _, err) = cli(&["run", p], &cache);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&["run", p], &cache);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("holds a finished run: this run is"), "{out}");
    let second = tmp.path().join("demo-2");
    assert!(second.join("summary.json").is_file());
    assert_eq!(summary(&second)["output_dir"], second.display().to_string());
    // Both are in the library, with their event logs; the second's recipe is the same.
    let (_, out, _) = cli(&["runs", "--json"], &cache);
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(runs.len(), 2, "{out}");
    assert_eq!(runs[1]["record"]["task"], "distill");
    assert_eq!(runs[1]["record"]["settings"]["T"], "2");
    // An unfinished run (checkpoint, no summary) is not silently replaced.
    std::fs::remove_file(second.join("summary.json")).unwrap();
    let (code, _, err) = cli(&["run", p, "--output", second.to_str().unwrap()], &cache);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("holds an unfinished run; pass --resume"), "{err}");
}

#[test]
fn bad_sweeps_are_refused_naming_the_key_before_anything_trains() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let seeds: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    let many = format!("[sweep]\ndistill.seed = [{}]\n", seeds.join(", "));
    let cases = [
        ("[sweep]\ndistill.temprature = [1, 2]\n", "no key `temprature` in [distill]; did you mean `temperature`?"),
        ("[sweep]\ndistill.temperature = [\"hot\"]\n", "[sweep] distill.temperature = \"hot\": invalid type"),
        ("[sweep]\ndistill.temperature = []\n", "distill.temperature is an empty list"),
        ("[sweep]\ndistill.temperature = 5\n", "give a list of values"),
        ("[sweep]\ndistill.temperature = [1, -2]\n", "distill.temperature must be > 0"),
        ("[sweep]\nmode = \"zip\"\ndistill.temperature = [1, 2]\ndistill.alpha = [0.5]\n", "needs lists of one length"),
        (&many, "makes 65 runs (65), more than 64"),
        ("[sweep]\noutput.dir = [\"a\", \"b\"]\n", "a sweep puts each run in a folder of its own"),
    ];
    for (i, (sweep, expected)) in cases.iter().enumerate() {
        let name = format!("bad{i}");
        let path = recipe(tmp.path(), &name, sweep);
        let (code, _, err) = cli(&["run", path.to_str().unwrap()], &cache);
        assert_eq!(code, 2, "{sweep}: {err}");
        assert!(err.contains(expected), "{sweep}: expected `{expected}` in: {err}");
        assert!(!tmp.path().join(&name).exists(), "{sweep}: the run's folder was created");
    }
    // max_runs raises the limit: the 65 runs are accepted (checked with --help-free dry parse:
    // a recipe error would exit 2 before training; here the data path is broken on purpose).
    let ok = format!("{many}max_runs = 65\n");
    let path = recipe(tmp.path(), "limit", &ok);
    let text = std::fs::read_to_string(&path).unwrap().replace("train.txt", "missing.txt");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = cli(&["run", path.to_str().unwrap()], &cache);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.txt") && !err.contains("max_runs"), "{err}");
}

#[test]
fn a_quantization_sweep_kept_with_out_joins_the_library() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    data(tmp.path());
    let out = tmp.path().join("q");
    let model = common::fixture("tiny-llama");
    let eval = tmp.path().join("eval.txt");
    let args = ["sweep", model.to_str().unwrap(), "--formats", "q8_0,q4_0", "--data", eval.to_str().unwrap()];
    let args: Vec<&str> = args.into_iter().chain(["--max-tokens", "256", "--out", out.to_str().unwrap()]).collect();
    let (code, _, err) = cli(&args, &cache);
    assert_eq!(code, 0, "{err}");
    assert_eq!(summary(&out)["quantize"].as_array().unwrap().len(), 2);
    let (_, listed, _) = cli(&["runs", "--json"], &cache);
    let runs: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(runs.len(), 1, "{listed}");
    assert_eq!(runs[0]["record"]["task"], "quantize");
    assert_eq!(runs[0]["record"]["settings"]["formats"], "q8_0+q4_0");
    let (code, csv, err) = cli(&["compare", out.to_str().unwrap(), "--csv"], &cache);
    assert_eq!(code, 0, "{err}");
    assert!(
        csv.starts_with(
            "front,run,point,MB,ppl,top-1,KL,agree,prefill tok/s,decode tok/s,cost s,cpu s,train tokens,path\n"
        ),
        "{csv}"
    );
    assert!(csv.contains("teacher q8_0") && csv.contains("teacher q4_0"), "{csv}");
    // Again into the same folder: a numbered one beside it.
    let (code, _, err) = cli(&args, &cache);
    assert_eq!(code, 0, "{err}");
    assert!(tmp.path().join("q-2/summary.json").is_file());
}

#[test]
fn advise_picks_quantize_distill_or_both_by_budget_and_names_the_nearest_when_nothing_fits() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let extra = "[quantize]\nformats = [\"q8_0\", \"q4_0\"]\ntargets = [\"teacher\", \"student\"]\n";
    let path = recipe(tmp.path(), "run", extra);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("derive = { layers = 2 }", "derive = { layers = 1, hidden = 32 }");
    std::fs::write(&path, text).unwrap();
    let (code, _, err) = cli(&["run", path.to_str().unwrap()], &cache);
    assert_eq!(code, 0, "{err}");
    let dir = tmp.path().join("run");
    let s = summary(&dir);
    // Every point has its serving speed and its cost.
    for q in s["quantize"].as_array().unwrap() {
        assert!(q["latency"]["decode_tokens_per_second"].as_f64().unwrap() > 0.0, "{q}");
        assert!(q["latency"]["prefill_tokens"].as_u64().unwrap() > 1);
    }
    assert!(s["student"]["latency"]["ms_per_token"].as_f64().unwrap() > 0.0);
    let mb = |model: &str, format: &str| -> f64 {
        if format == "float" {
            return s[model]["parameters"].as_f64().unwrap() * 4.0 / 1e6;
        }
        let q = s["quantize"]
            .as_array()
            .unwrap()
            .iter()
            .find(|q| q["format"] == format && (q["model"] == model || (model == "teacher" && q["model"] != "student")))
            .unwrap();
        q["bytes"].as_f64().unwrap() / 1e6
    };
    let (t4, s32, s4) = (mb("teacher", "q4_0"), mb("student", "float"), mb("student", "q4_0"));
    assert!(s4 < s32 && s32 < t4, "sizes: student q4_0 {s4}, student float {s32}, teacher q4_0 {t4}");
    let advise = |max_mb: f64| -> serde_json::Value {
        let (code, out, err) =
            cli(&["advise", dir.to_str().unwrap(), "--max-mb", &max_mb.to_string(), "--json"], &cache);
        assert_eq!(code, 0, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["advice"].clone()
    };
    let a = advise(t4 * 1.01);
    assert_eq!(a["verdict"], "quantize", "{a}");
    assert!(a["sentence"].as_str().unwrap().contains("teacher float breaks max size"), "{a}");
    let a = advise((s32 + t4) / 2.0);
    assert_eq!(a["verdict"], "distill", "{a}");
    let a = advise((s4 + s32) / 2.0);
    assert_eq!(a["verdict"], "distill_then_quantize", "{a}");
    assert_eq!(a["point"]["format"], "q4_0");
    let a = advise(s4 / 10.0);
    assert_eq!(a["verdict"], "nothing", "{a}");
    assert!(a["sentence"].as_str().unwrap().contains("the nearest, student q4_0"), "{a}");
    // Human output, and a budget-less call refused.
    let (code, out, _) = cli(&["advise", dir.to_str().unwrap(), "--max-mb", &(t4 * 1.01).to_string()], &cache);
    assert_eq!(code, 0);
    assert!(out.starts_with("verdict: quantize\n"), "{out}");
    let (code, _, err) = cli(&["advise", dir.to_str().unwrap()], &cache);
    assert_eq!(code, 2);
    assert!(err.contains("give at least one budget"), "{err}");
}
