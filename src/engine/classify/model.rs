//! Classifier construction: an encoder (or a classifier, or a config from scratch) given a fresh
//! classification head for a set of classes, with the family's `…ForSequenceClassification` layout.

use crate::engine::loader::{build_network, Built, LoadOptions};
use crate::engine::models::encoder::EncoderKind;
use crate::engine::models::init::InitSource;
use crate::engine::models::weights::TensorSource;
use crate::engine::models::ArchConfig;
use crate::engine::{Error, Result};
use candle_core::Tensor;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// The config.json of a classifier over `classes`: `id2label`/`label2id` and the architecture set.
pub fn classifier_config(base: &Value, classes: &[String], path: &Path) -> Result<(Value, EncoderKind)> {
    let kind = match ArchConfig::from_json(base, path)? {
        ArchConfig::Encoder(e) => e.kind,
        other => {
            return Err(Error::Invalid(format!(
                "{}: a `{}` model is not an encoder; classification needs `bert` or `distilbert`",
                path.display(),
                other.model_type()
            )))
        }
    };
    let mut c = base.clone();
    let obj =
        c.as_object_mut().ok_or_else(|| Error::Invalid(format!("{}: config is not an object", path.display())))?;
    let id2label: Map<String, Value> = classes.iter().enumerate().map(|(i, l)| (i.to_string(), json!(l))).collect();
    let label2id: Map<String, Value> = classes.iter().enumerate().map(|(i, l)| (l.clone(), json!(i))).collect();
    obj.insert("id2label".into(), Value::Object(id2label));
    obj.insert("label2id".into(), Value::Object(label2id));
    let arch = match kind {
        EncoderKind::Bert => "BertForSequenceClassification",
        EncoderKind::DistilBert => "DistilBertForSequenceClassification",
    };
    obj.insert("architectures".into(), json!([arch]));
    Ok((c, kind))
}

/// A trainable classifier over `classes` built from `base_params` (an encoder's or a classifier's
/// tensors, any of the families' layouts): every encoder tensor is kept; the classifier is kept only
/// when the base already classifies into exactly `classes`; the rest is drawn from a seeded init.
pub fn with_head(
    base_config: &Value,
    base_params: &BTreeMap<String, Tensor>,
    base_labels: &[String],
    classes: &[String],
    seed: u64,
    path: &Path,
) -> Result<(Value, Built)> {
    let (config, kind) = classifier_config(base_config, classes, path)?;
    let prefix = match kind {
        EncoderKind::Bert => "bert.",
        EncoderKind::DistilBert => "distilbert.",
    };
    let keep_head = base_labels == classes;
    let std = base_config.get("initializer_range").and_then(|v| v.as_f64()).unwrap_or(0.02);
    let mut init = InitSource::new(seed, std);
    for (name, t) in base_params {
        let is_head = name.starts_with("classifier.") || name.starts_with("pre_classifier.");
        if is_head && !keep_head {
            continue;
        }
        let key = if is_head || name.starts_with(prefix) { name.clone() } else { format!("{prefix}{name}") };
        init.overlay.insert(key, t.detach());
    }
    let built =
        build_network(&config, path, TensorSource::Init(init), &LoadOptions { trainable: true, ..Default::default() })?;
    Ok((config, built))
}
