//! Classification on real pretrained weights (opt-in: needs `../shared/scripts/real-models.sh`;
//! skips with a printed reason when the hub cache lacks all-MiniLM-L6-v2). The full run is
//! `assets/recipes/classify-novels-minilm.toml` (numbers in the README); this test checks what makes
//! it meaningful: the bare `BertModel` becomes a `BertForSequenceClassification` whose encoder is
//! exactly the pretrained one, and a 3-layer DistilBERT-style student derives from it.

use crate::common;

use candle_core::{Device, Tensor};
use distill_tui::engine::classify::model::with_head;
use distill_tui::engine::derive::{derive_student, StudentShape};

const MINILM: &str = "sentence-transformers/all-MiniLM-L6-v2";

#[test]
fn minilm_gets_a_head_without_changing_its_encoder() {
    let dir = common::hub().cache_dir.join("models--sentence-transformers--all-MiniLM-L6-v2");
    if !dir.join("refs/main").is_file() {
        eprintln!("skipped: {MINILM} is not in the hub cache; run ../shared/scripts/real-models.sh");
        return;
    }
    let base = common::load(MINILM, false);
    assert!(base.config.labels().is_empty(), "a bare encoder");
    let classes: Vec<String> = ["emma", "prideprejudice", "sensesensibility"].map(String::from).to_vec();
    let path = base.resolved.path().join("config.json");
    let (config, built) = with_head(&base.config_json, &base.params, &[], &classes, 0, &path).unwrap();
    assert_eq!(config["architectures"][0], "BertForSequenceClassification");
    assert_eq!(built.config.labels(), classes.as_slice());
    let enc = base.tokenizer().unwrap().encode("It is a truth universally acknowledged.", true).unwrap();
    let ids = Tensor::new(enc.get_ids(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let (logits, hidden) = built.network.classify_with_hidden(&ids, None).unwrap();
    assert_eq!(logits.dims(), [1, 3]);
    let (_, reference) = base.network.classify_with_hidden(&ids, None).unwrap();
    let diff = common::max_abs_diff(&hidden, &reference);
    assert!(diff < 1e-5, "encoder hidden states changed by {diff}");
    // Every pretrained tensor was used (renamed under `bert.`), none drawn at random.
    for name in base.params.keys() {
        let key = if name.starts_with("bert.") { name.clone() } else { format!("bert.{name}") };
        assert!(built.params.contains_key(&key), "{key} missing from the classifier");
    }
    // The DistilBERT-style student of the fine-tuned layout: 3 of 6 layers, 0, 2, 4.
    let tmp = tempfile::tempdir().unwrap();
    let teacher_dir = tmp.path().join("teacher");
    let weights = built.weights();
    let tok = distill_tui::engine::derive::TokenizerOut::File(base.resolved.tokenizer.as_ref().unwrap());
    distill_tui::engine::derive::save_hf_folder(&teacher_dir, &config, &weights, tok).unwrap();
    let teacher = common::load(teacher_dir.to_str().unwrap(), false);
    let student = derive_student(&teacher, &StudentShape { layers: 3, ..Default::default() }, 0).unwrap();
    assert_eq!(student.copied_layers, vec![0, 2, 4]);
    assert!(student.parameters < teacher.parameter_count());
}
