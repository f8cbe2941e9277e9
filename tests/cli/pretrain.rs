//! `pretrain`: a BPE tokenizer and a small model trained from scratch; the result is a Hugging Face
//! folder the rest of the workbench loads like any other model.

use crate::common;

#[test]
fn pretrain_trains_a_tokenizer_and_a_model_that_loads_and_improves() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(common::shared_dir().join("data/austen/emma.txt")).unwrap();
    std::fs::write(dir.path().join("train.txt"), &text[..150_000]).unwrap();
    std::fs::write(dir.path().join("eval.txt"), &text[200_000..215_000]).unwrap();
    let out = dir.path().join("out");
    let recipe = format!(
        "[student]\nconfig = {{ model_type = \"llama\", hidden_size = 32, intermediate_size = 64, num_hidden_layers = 1, \
         num_attention_heads = 2, num_key_value_heads = 1, max_position_embeddings = 64, tie_word_embeddings = true, vocab_size = 1 }}\n\
         [pretrain]\ntrain_tokenizer_vocab = 400\n[data]\ntrain = \"train.txt\"\neval = \"eval.txt\"\nseq_len = 32\neval_tokens = 1024\n\
         [distill]\nsteps = 30\nbatch_size = 8\nlr = 3e-3\nwarmup_steps = 3\neval_every = 10\n[output]\ndir = \"{}\"\n",
        out.display()
    );
    let path = dir.path().join("pretrain.toml");
    std::fs::write(&path, recipe).unwrap();
    let (code, stdout, stderr) = common::run_cli(&["pretrain", path.to_str().unwrap(), "--json"], &[]);
    assert_eq!(code, 0, "{stderr}");
    let events: Vec<serde_json::Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let evals: Vec<f64> =
        events.iter().filter(|e| e["event"] == "eval").map(|e| e["metrics"]["perplexity"].as_f64().unwrap()).collect();
    assert_eq!(evals.len(), 3);
    assert!(evals[2] < evals[0], "held-out perplexity did not fall: {evals:?}");
    let summary = &events.last().unwrap()["summary"];
    assert!(summary["model"]["perplexity"].as_f64().unwrap() < 400.0, "better than uniform over 400 tokens");
    // The trained tokenizer sized the embedding table; the folder loads through the resolver.
    let model = common::load(out.join("model").to_str().unwrap(), false);
    assert_eq!(model.config.vocab_size(), 400);
    assert_eq!(model.tokenizer().unwrap().get_vocab_size(true), 400);
    let ids = distill_tui::engine::tokenizer::encode_plain(model.tokenizer().unwrap(), "It is a truth").unwrap();
    assert!(ids.len() < "It is a truth".len(), "BPE merges characters: {ids:?}");
}

#[test]
fn a_pretrain_recipe_with_a_teacher_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.toml");
    let teacher = common::fixture("tiny-llama");
    std::fs::write(
        &path,
        format!(
            "[teacher]\nmodel = \"{}\"\n[student]\nderive = {{ layers = 1 }}\n[data]\ntrain = \"x.txt\"\neval = \"x.txt\"\n[output]\ndir = \"o\"\n",
            teacher.display()
        ),
    )
    .unwrap();
    let (code, _, stderr) = common::run_cli(&["pretrain", path.to_str().unwrap()], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("not a pretrain recipe"), "{stderr}");
}
