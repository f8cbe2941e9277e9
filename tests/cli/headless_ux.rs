//! The headless commands as users of cargo, huggingface-cli and llama.cpp expect them: progress on
//! stderr (never on stdout, so `--json` stays JSON lines), `--quiet`, `--set` overrides checked as
//! the recipe file is, completions and a man page, exit codes in `--help`.

use crate::common;
use std::path::{Path, PathBuf};

fn persuasion() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/austen/persuasion.txt")
}

fn demo() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/recipes/demo.toml").display().to_string()
}

/// Every non-empty stdout line parses as JSON.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn eval_shows_progress_on_a_piped_stderr_and_keeps_stdout_json() {
    let model = common::fixture("tiny-llama");
    let data = persuasion();
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let args = ["eval", m, "--data", d, "--max-tokens", "8192", "--seq-len", "256", "--json"];
    let (code, stdout, stderr) = common::run_cli(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    let lines = json_lines(&stdout);
    assert_eq!(lines.len(), 1, "{stdout}");
    assert!(lines[0]["perplexity"].as_f64().unwrap() > 1.0);
    // Before the work: what will be scored. Then progress lines (not a terminal: plain lines).
    assert!(stderr.contains("scoring 8192 tokens of the text's"), "{stderr}");
    let progress: Vec<&str> = stderr.lines().filter(|l| l.starts_with("eval: ")).collect();
    assert!(progress.len() >= 2, "want at least two progress lines: {stderr}");
    assert!(progress[0].starts_with("eval: 0/32 windows"), "{stderr}");
    assert!(progress.last().unwrap().starts_with("eval: 32/32 windows (100%) in "), "{stderr}");

    // --quiet: the same result, nothing on stderr.
    let quiet = ["--quiet", "eval", m, "--data", d, "--max-tokens", "8192", "--seq-len", "256", "--json"];
    let (code, quiet_out, quiet_err) = common::run_cli(&quiet, &[]);
    assert_eq!(code, 0, "{quiet_err}");
    assert_eq!(quiet_err, "");
    assert_eq!(json_lines(&quiet_out)[0]["perplexity"], lines[0]["perplexity"]);
}

#[test]
fn set_overrides_change_the_run_and_a_bad_one_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("cache");
    let env = [("DISTILL_CACHE_DIR", cache.to_str().unwrap())];
    let out = tmp.path().join("out");
    let demo = demo();
    let o = out.to_str().unwrap();
    let sets = [
        "distill.steps=4",
        "distill.temperature=5",
        "distill.baseline=false",
        "distill.eval_every=4",
        "quantize.formats=[\"q8_0\"]",
        "quantize.targets=[\"student\"]",
    ];
    let mut args = vec!["run", demo.as_str(), "--output", o, "--json", "--quiet"];
    for s in &sets {
        args.extend(["--set", s]);
    }
    let (code, stdout, stderr) = common::run_cli(&args, &env);
    assert_eq!(code, 0, "{stderr}");
    let events = json_lines(&stdout);
    let steps: Vec<u64> = events.iter().filter(|e| e["event"] == "step").map(|e| e["step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [1, 2, 3, 4], "the student trains 4 steps and no baseline runs");
    let recorded = std::fs::read_to_string(out.join("recipe.toml")).unwrap();
    let recorded: toml::Table = toml::from_str(&recorded).unwrap();
    assert_eq!(recorded["distill"]["temperature"].as_float(), Some(5.0));
    assert_eq!(recorded["distill"]["steps"].as_integer(), Some(4));
    assert_eq!(recorded["output"]["dir"].as_str(), Some(o));
    assert_eq!(recorded["quantize"]["formats"].as_array().unwrap().len(), 1);

    // A misspelt key: exit 2, the valid name offered, nothing written.
    let fresh = tmp.path().join("never");
    let f = fresh.to_str().unwrap();
    let (code, _, stderr) = common::run_cli(&["run", &demo, "--set", "distill.temprature=5", "--output", f], &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no key `temprature` in [distill]; did you mean `temperature`?"), "{stderr}");
    // A value of the wrong type: exit 2 naming the key and the type it needs.
    let (code, _, stderr) = common::run_cli(&["run", &demo, "--set", "distill.temperature=hot", "--output", f], &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("distill.temperature") && stderr.contains("expected f64"), "{stderr}");
    // A value the recipe's checks refuse, and a malformed override.
    let (code, _, stderr) = common::run_cli(&["run", &demo, "--set", "distill.alpha=2", "--output", f], &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("distill.alpha must be in [0, 1]"), "{stderr}");
    let (code, _, stderr) = common::run_cli(&["run", &demo, "--set", "distill.alpha", "--output", f], &env);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("expected KEY=VALUE"), "{stderr}");
    assert!(!fresh.exists(), "a refused override wrote {}", fresh.display());
}

#[test]
fn completions_parse_and_the_man_page_renders() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, bash, err) = common::run_cli(&["completions", "bash"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(bash.contains("distill-tui") && bash.contains("--calib-tokens") && bash.contains("--set"));
    let script = tmp.path().join("distill-tui.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = std::process::Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    for shell in ["zsh", "fish", "powershell", "elvish"] {
        let (code, text, err) = common::run_cli(&["completions", shell], &[]);
        assert!(code == 0 && text.contains("distill-tui"), "{shell}: {err}");
    }
    let (code, _, err) = common::run_cli(&["completions", "tcsh"], &[]);
    assert_eq!(code, 2, "an unknown shell is a usage error: {err}");

    let (code, roff, err) = common::run_cli(&["manpage"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(roff.starts_with(".ie") || roff.contains(".TH distill-tui"), "{}", &roff[..roff.len().min(200)]);
    assert!(roff.contains("130 interrupted"), "the exit codes are in the manual");
    let page = tmp.path().join("distill-tui.1");
    std::fs::write(&page, &roff).unwrap();
    match std::process::Command::new("man").arg("-l").arg(&page).env("MANPAGER", "cat").env("PAGER", "cat").output() {
        Ok(r) => {
            let text = String::from_utf8_lossy(&r.stdout);
            assert!(r.status.success() && text.contains("knowledge distillation"), "man -l: {text}");
        }
        Err(e) => eprintln!("SKIPPED the man -l rendering: no `man` here ({e})"),
    }
}

#[test]
fn help_states_the_exit_codes() {
    let (code, help, _) = common::run_cli(&["--help"], &[]);
    assert_eq!(code, 0);
    assert!(help.contains("0 done, 1 failed, 2 bad input or usage, 130 interrupted"), "{help}");
    assert!(help.contains("--quiet"), "{help}");
}

#[test]
fn eval_and_sweep_take_the_llama_perplexity_protocol_and_a_window_count() {
    let model = common::fixture("tiny-llama");
    let data = persuasion();
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let eval = |extra: &[&str]| {
        let mut args = vec!["eval", m, "--data", d, "--seq-len", "64", "--json"];
        args.extend_from_slice(extra);
        common::run_cli(&args, &[])
    };
    let (code, out, err) = eval(&["--protocol", "llama-perplexity", "--windows", "5"]);
    assert_eq!(code, 0, "{err}");
    let r = &json_lines(&out)[0];
    // Five whole windows of 64 tokens, positions 32..62 of each scored.
    assert_eq!((r["windows"].as_u64(), r["predicted_tokens"].as_u64()), (Some(5), Some(5 * 31)), "{r}");
    let (code, out, _) = eval(&["--windows", "5"]);
    assert_eq!(code, 0);
    assert_eq!(json_lines(&out)[0]["predicted_tokens"].as_u64(), Some(5 * 63), "the default protocol scores all");
    let (code, _, err) = eval(&["--windows", "5", "--max-tokens", "100"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--windows or --max-tokens"), "{err}");
    let (code, _, err) = eval(&["--protocol", "llama"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("llama-perplexity"), "{err}");
    // The sweep measures its points the same way; its speed timing (here fewer tokens than a
    // window) scores every timed position whatever the protocol.
    let args = ["sweep", m, "--formats", "q8_0", "--data", d, "--seq-len", "64", "--protocol", "llama-perplexity"];
    let (code, out, err) =
        common::run_cli(&[&args[..], &["--windows", "4", "--speed-tokens", "16", "--json"]].concat(), &[]);
    assert_eq!(code, 0, "{err}");
    let last = json_lines(&out).pop().unwrap();
    assert!(last.to_string().contains("q8_0"), "{last}");
}
