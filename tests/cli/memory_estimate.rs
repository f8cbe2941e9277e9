//! The training-memory estimate (the pair check's, the preflight's) against the peak resident
//! size a run measures: within 25% on two fixture-sized students of different shapes, with and
//! without activation checkpointing, which must lower the measured peak.

use crate::common;

use std::path::Path;

/// A KD recipe: the demo teacher into a llama student of the given shape, trained 2 steps.
fn recipe(
    dir: &Path,
    name: &str,
    shape: (usize, usize, usize, usize),
    batch: usize,
    seq: usize,
    extra: &str,
) -> std::path::PathBuf {
    let (hidden, intermediate, layers, heads) = shape;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = format!(
        "[teacher]\nmodel = \"{teacher}\"\n\
         [student.config]\nmodel_type = \"llama\"\narchitectures = [\"LlamaForCausalLM\"]\nhidden_size = {hidden}\n\
         intermediate_size = {intermediate}\nnum_hidden_layers = {layers}\nnum_attention_heads = {heads}\n\
         num_key_value_heads = {heads}\nvocab_size = 2048\nmax_position_embeddings = 512\nrms_norm_eps = 1e-5\n\
         rope_theta = 10000.0\ntie_word_embeddings = true\nhidden_act = \"silu\"\n\
         [data]\ntrain = \"{train}\"\neval = \"{eval}\"\nseq_len = {seq}\neval_tokens = 256\n\
         [distill]\nsteps = 2\nbatch_size = {batch}\nwarmup_steps = 1\neval_every = 2\ncheckpoint_every = 2\n\
         baseline = false\ncache_top_k = 0\n{extra}\n[output]\ndir = \"{out}\"\n",
        teacher = root.join("assets/models/demo-teacher").display(),
        train = root.join("assets/corpus/train/*.txt").display(),
        eval = root.join("assets/corpus/eval.txt").display(),
        out = dir.join(name).display(),
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn the_memory_estimate_is_within_a_quarter_of_the_measured_training_peak() {
    let dir = tempfile::tempdir().unwrap();
    let mut peaks = std::collections::HashMap::new();
    let checkpointed = "activation_checkpointing = true";
    for (name, shape, batch, seq, extra) in [
        ("wide", (512, 1536, 6, 8), 8, 256, ""),
        ("deep", (256, 1024, 8, 4), 16, 128, ""),
        ("wide-checkpointed", (512, 1536, 6, 8), 8, 256, checkpointed),
    ] {
        let r = recipe(dir.path(), name, shape, batch, seq, extra);
        let (code, _, stderr) = common::run_cli(&["--quiet", "run", r.to_str().unwrap()], &[]);
        assert_eq!(code, 0, "{stderr}");
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.path().join(name).join("summary.json")).unwrap())
                .unwrap();
        let peak = summary["training_peak_memory_bytes"].as_f64().unwrap();
        let estimate = summary["memory_estimate_bytes"].as_f64().unwrap();
        let ratio = estimate / peak;
        println!("{name}: estimate {:.0} MB, measured peak {:.0} MB ({ratio:.3}×)", estimate / 1e6, peak / 1e6);
        assert!((0.75..=1.25).contains(&ratio), "{name}: estimate {estimate} vs measured peak {peak} ({ratio:.3}×)");
        peaks.insert(name, (peak, estimate));
    }
    let ((full, full_est), (ckpt, ckpt_est)) = (peaks["wide"], peaks["wide-checkpointed"]);
    assert!(ckpt_est < full_est, "checkpointing lowers the estimate: {ckpt_est} vs {full_est}");
    assert!(ckpt < 0.9 * full, "checkpointing lowers the measured peak: {ckpt} vs {full}");
}
