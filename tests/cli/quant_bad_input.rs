//! Bad input to `quantize` and `sweep` through the real binary: a width that does not fit the
//! blocks falls back per tensor (reported), an unknown format lists the valid ones, an output that
//! cannot be written leaves nothing behind.

use crate::common;

use common::{fixture, run_cli};

#[test]
fn widths_that_do_not_fit_the_blocks_fall_back_per_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let model = fixture("tiny-llama");
    let args = ["quantize", model.to_str().unwrap(), "--format", "q4_k", "--out", out.to_str().unwrap(), "--json"];
    let (code, stdout, stderr) = run_cli(&args, &[]);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let tensors = report["tensors"].as_array().unwrap();
    let down = tensors.iter().find(|t| t["name"] == "model.layers.0.mlp.down_proj.weight").unwrap();
    // 172-wide rows: not a multiple of 256 (q4_k) nor of 32 (q5_0, its fallback) → f16.
    assert_eq!(down["requested"], "q4_k");
    assert_eq!(down["format"], "f16");
    assert!(down["note"].as_str().unwrap().contains("172"), "{down}");
    let q = tensors.iter().find(|t| t["name"] == "model.layers.0.self_attn.q_proj.weight").unwrap();
    assert_eq!(q["format"], "q5_0", "64-wide rows take llama.cpp's fallback of q4_k: {q}");
    let fallbacks = tensors.iter().filter(|t| !t["note"].is_null()).count();
    assert_eq!(report["size"]["fallbacks"].as_u64().unwrap() as usize, fallbacks);
    assert!(fallbacks >= 28, "every 2-D tensor of this model falls back: {fallbacks}");
    assert!(out.is_file());
}

#[test]
fn unknown_format_lists_the_valid_ones() {
    let model = fixture("tiny-llama");
    let m = model.to_str().unwrap();
    for args in [
        vec!["quantize", m, "--format", "q7_x", "--out", "/tmp/never-written.gguf"],
        vec!["sweep", m, "--formats", "q8_0,q7_x", "--data", "/dev/null"],
    ] {
        let (code, _, stderr) = run_cli(&args, &[]);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        for needle in ["unknown quantization format `q7_x`", "q8_0", "q4_k", "int4-g64"] {
            assert!(stderr.contains(needle), "{args:?}: stderr lacks `{needle}`: {stderr}");
        }
    }
    assert!(!std::path::Path::new("/tmp/never-written.gguf").exists());
}

#[test]
fn an_output_that_cannot_be_written_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"a file").unwrap();
    let model = fixture("tiny-llama");
    for (out, format) in [(blocker.join("m.gguf"), "q8_0"), (blocker.join("m.safetensors"), "int4-g64")] {
        let args = ["quantize", model.to_str().unwrap(), "--format", format, "--out", out.to_str().unwrap()];
        let (code, _, stderr) = run_cli(&args, &[]);
        assert_ne!(code, 0, "{stderr}");
        assert!(stderr.contains("not-a-folder"), "the error names the path: {stderr}");
    }
    // An own format cannot go to GGUF: refused before writing, nothing left in the folder.
    let out = dir.path().join("m.gguf");
    let args = ["quantize", model.to_str().unwrap(), "--format", "int4-g64", "--out", out.to_str().unwrap()];
    let (code, _, stderr) = run_cli(&args, &[]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains(".safetensors"), "{stderr}");
    // A wrong extension is refused before any work.
    let (code, _, stderr) = run_cli(
        &["quantize", model.to_str().unwrap(), "--format", "q8_0", "--out", dir.path().join("m.bin").to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 2, "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("not-a-folder")], "partial output left behind");
}

#[test]
fn a_recipe_quantize_section_is_checked_as_it_is_read() {
    use distill_tui::engine::recipe::Recipe;
    let base = "[teacher]\nmodel = \"t\"\n[student]\nmodel = \"s\"\n[data]\ntrain = \"a\"\neval = \"b\"\n[output]\ndir = \"o\"\n";
    let with = |q: &str| Recipe::parse(&format!("{base}[quantize]\n{q}\n"), "test.toml");
    // group_size applies to the own formats named without a group, and to nothing else.
    let r = with("formats = [\"int4\", \"int3-g128\", \"q4_0\"]\ngroup_size = 32\nimatrix = true").unwrap();
    let names: Vec<String> = r.quantize.as_ref().unwrap().parsed_formats().unwrap().iter().map(|f| f.name()).collect();
    assert_eq!(names, ["int4-g32", "int3-g128", "q4_0"]);
    let r = with("formats = [\"int4+gptq\", \"int3+awq+gptq\"]\ngroup_size = 64\nimatrix = true").unwrap();
    let names: Vec<String> = r.quantize.as_ref().unwrap().parsed_formats().unwrap().iter().map(|f| f.name()).collect();
    assert_eq!(names, ["int4-g64+gptq", "int3-g64+awq+gptq"]);
    for (q, needle) in [
        ("formats = [\"q9_9\"]", "quantize.formats: unknown quantization format `q9_9`"),
        ("formats = [\"int4\"]\ngroup_size = 48", "quantize.group_size: 48 is not one of 32, 64, 128"),
        ("formats = [\"q8_0\"]\ntargets = [\"student\", \"pupil\"]", "unknown target `pupil`"),
        ("formats = [\"int4-g64+gptq\"]", "set quantize.imatrix = true"),
        ("formats = [\"budget-5\"]", "measured sensitivity on calibration text: set quantize.imatrix = true"),
        ("formats = [\"budget-0.2\"]\nimatrix = true", "budget-BITS"),
        ("formats = [\"q4_0+awq\"]", "measured activations (AWQ): set quantize.imatrix = true"),
    ] {
        let err = with(q).unwrap_err().to_string();
        assert!(err.contains(needle), "{err}");
    }
}

/// `--format budget-BITS`: with a calibration text the JSON report carries the plan and the file is
/// written at or under the target; a target below every format and a budget without `--calib` are
/// refused before anything is written, each with the reason.
#[test]
fn a_budget_quantizes_to_its_target_and_bad_budgets_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m.gguf");
    let model = fixture("tiny-llama");
    let model = model.to_str().unwrap();
    let calib = common::shared_dir().join("data/austen/emma.txt");
    let calib = calib.to_str().unwrap();
    let base = ["quantize", model, "--calib", calib, "--calib-tokens", "512", "--seq-len", "64", "--json"];
    let with = |format: &str, out: &std::path::Path| {
        let mut args = base.to_vec();
        args.extend(["--format", format, "--out", out.to_str().unwrap()]);
        run_cli(&args, &[])
    };
    let (code, stdout, stderr) = with("budget-7", &out);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let bits = report["size"]["bits_per_weight"].as_f64().unwrap();
    assert!(bits <= 7.0 && bits > 6.0, "{}", report["size"]);
    assert_eq!(report["budget"]["planned_bits_per_weight"].as_f64().unwrap(), bits);
    assert!(report["budget"]["probes"].as_u64().unwrap() >= 20, "{}", report["budget"]);
    assert!(out.is_file());

    let low = dir.path().join("low.gguf");
    let (code, _, stderr) = with("budget-2", &low);
    assert_ne!(code, 0);
    assert!(stderr.contains("below what any format reaches") && stderr.contains("or more"), "{stderr}");
    assert!(!low.exists());
    let (code, _, stderr) = run_cli(&["quantize", model, "--format", "budget-6", "--out", low.to_str().unwrap()], &[]);
    assert_ne!(code, 0);
    assert!(stderr.contains("measured sensitivity") && stderr.contains("--calib FILE"), "{stderr}");
    assert!(!low.exists());
}

/// `--format FORMAT+awq`: the JSON report carries each group's exponent and output errors and the
/// GGUF is written; a model AWQ cannot scale (GPT-2) is refused before calibration, and so is a run
/// without `--calib`.
#[test]
fn awq_quantizes_through_the_cli_and_refuses_what_it_cannot_scale() {
    let dir = tempfile::tempdir().unwrap();
    let calib = common::shared_dir().join("data/austen/emma.txt");
    let calib = calib.to_str().unwrap();
    let run = |model: &str, format: &str, out: &std::path::Path, with_calib: bool| {
        let model = fixture(model);
        let mut args = vec!["quantize", model.to_str().unwrap(), "--format", format, "--out", out.to_str().unwrap()];
        if with_calib {
            args.extend(["--calib", calib, "--calib-tokens", "512", "--seq-len", "64", "--json"]);
        }
        run_cli(&args, &[])
    };
    let out = dir.path().join("m.gguf");
    let (code, stdout, stderr) = run("tiny-llama", "q4_0+awq", &out, true);
    assert_eq!(code, 0, "{stderr}");
    let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["format"], "q4_0+awq");
    let groups = report["awq"]["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4 * 4, "{}", report["awq"]);
    assert!(groups.iter().all(|g| g["error_scaled"].as_f64() <= g["error_plain"].as_f64()), "{}", report["awq"]);
    let o = groups.iter().filter(|g| g["folded_into"].as_str().unwrap().ends_with("v_proj.weight")).count();
    assert_eq!(o, 4, "grouped-query attention: o_proj scaled per value head");
    assert!(out.is_file());

    let bad = dir.path().join("bad.gguf");
    let (code, _, stderr) = run("tiny-gpt2", "q8_0+awq", &bad, true);
    assert_ne!(code, 0);
    assert!(stderr.contains("llama-family") && stderr.contains("gpt2"), "{stderr}");
    let (code, _, stderr) = run("tiny-llama", "int4-g32+awq", &bad, false);
    assert_ne!(code, 0);
    assert!(stderr.contains("AWQ") && stderr.contains("--calib FILE"), "{stderr}");
    assert!(!bad.exists());
}
