//! Every knob of a recipe as an editable field, by its dotted TOML key. Editing goes through the
//! recipe's own TOML form, so a new key needs only a row in [`FIELDS`], and every edit is checked
//! by the same deserialisation and `Recipe::validate` a recipe file is.

use crate::engine::recipe::Recipe;

/// How a field's text is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A text that may be empty (the key is then removed).
    OptText,
    Int,
    /// An integer that may be empty (the key is then removed).
    OptInt,
    Float,
    Bool,
    /// A comma-separated list of strings.
    List,
}

pub struct Field {
    pub key: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

const fn f(key: &'static str, kind: Kind, help: &'static str) -> Field {
    Field { key, kind, help }
}

/// The recipe's fields in screen order.
pub const FIELDS: &[Field] = &[
    f("teacher.model", Kind::Text, "hub id, folder or .gguf of the teacher"),
    f("student.model", Kind::OptText, "an existing student (clears derive)"),
    f("student.derive.layers", Kind::OptInt, "derive a student with this many layers (clears model)"),
    f("student.derive.hidden", Kind::OptInt, "derived student's hidden size (empty: the teacher's)"),
    f("student.derive.heads", Kind::OptInt, "derived student's attention heads"),
    f("student.derive.kv_heads", Kind::OptInt, "derived student's key/value heads"),
    f("data.train", Kind::Text, "training text: a file or a glob"),
    f("data.eval", Kind::Text, "held-out text for evaluation"),
    f("data.seq_len", Kind::Int, "tokens per training window"),
    f("data.eval_tokens", Kind::Int, "eval tokens per evaluation"),
    f("distill.loss", Kind::Text, "forward_kl, reverse_kl, jsd or mse_logits"),
    f("distill.temperature", Kind::Float, "softening temperature T (> 0)"),
    f("distill.alpha", Kind::Float, "soft-loss weight; 1-alpha weighs hard CE"),
    f("distill.jsd_beta", Kind::Float, "JSD mixing weight"),
    f("distill.steps", Kind::Int, "optimizer steps"),
    f("distill.batch_size", Kind::Int, "windows per micro-batch"),
    f("distill.grad_accum", Kind::Int, "micro-batches per step"),
    f("distill.lr", Kind::Float, "peak learning rate"),
    f("distill.min_lr_ratio", Kind::Float, "cosine floor as a fraction of lr"),
    f("distill.warmup_steps", Kind::Int, "linear warmup steps"),
    f("distill.weight_decay", Kind::Float, "AdamW weight decay"),
    f("distill.grad_clip", Kind::Float, "gradient-norm clip (0: off)"),
    f("distill.eval_every", Kind::Int, "steps between evaluations"),
    f("distill.seed", Kind::Int, "data order and init seed"),
    f("distill.baseline", Kind::Bool, "also train a hard-label baseline"),
    f("distill.cache_top_k", Kind::Int, "teacher logits cached per position (0: none)"),
    f("distill.checkpoint_every", Kind::Int, "steps between checkpoints"),
    f("distill.precision", Kind::Text, "student's matmuls while training: f32 or bf16"),
    f(
        "distill.teacher_precision",
        Kind::OptText,
        "teacher: f32, bf16, int8, gguf, q8_0, q4_k… (empty: GGUF as stored, else precision)",
    ),
    f("distill.activation_checkpointing", Kind::Bool, "recompute each block in backward: less memory"),
    f("distill.on_policy.lmbda", Kind::Float, "on-policy (GKD): share of batches the student continues"),
    f("distill.qad", Kind::OptText, "train the student in this format: int3-g32, q4_0… (empty: float)"),
    f(
        "quantize.formats",
        Kind::List,
        "formats to sweep, comma separated (budget-5: per-tensor formats for 5 bits/weight)",
    ),
    f("quantize.targets", Kind::List, "models to quantize: teacher, student, baseline"),
    f("quantize.group_size", Kind::OptInt, "columns per scale for intN formats: 32, 64, 128"),
    f("quantize.imatrix", Kind::Bool, "importance matrix from the training text"),
    f("output.dir", Kind::Text, "where runs write (relative to the working dir)"),
];

fn to_value(recipe: &Recipe) -> toml::Value {
    toml::Value::try_from(recipe).expect("a recipe always serialises to TOML")
}

/// The field's current text ("" when absent; "false" for an absent switch, which the recipe
/// leaves out when it is off).
pub fn get(recipe: &Recipe, key: &str) -> String {
    let mut v = &to_value(recipe);
    for part in key.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None if FIELDS.iter().any(|f| f.key == key && f.kind == Kind::Bool) => return "false".into(),
            None => return String::new(),
        }
    }
    match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Array(a) => {
            a.iter().map(|x| x.as_str().map(String::from).unwrap_or(x.to_string())).collect::<Vec<_>>().join(", ")
        }
        other => other.to_string(),
    }
}

fn parse(kind: Kind, key: &str, text: &str) -> Result<Option<toml::Value>, String> {
    let t = text.trim();
    let bad = |what: &str| format!("{key}: `{t}` is not {what}");
    Ok(Some(match kind {
        Kind::Text if t.is_empty() => return Err(format!("{key} must not be empty")),
        Kind::OptText | Kind::OptInt if t.is_empty() => return Ok(None),
        Kind::Text | Kind::OptText => toml::Value::String(t.to_string()),
        Kind::Int | Kind::OptInt => toml::Value::Integer(t.parse::<u32>().map_err(|_| bad("a whole number"))?.into()),
        Kind::Float => {
            let x: f64 = t.parse().map_err(|_| bad("a number"))?;
            if !x.is_finite() {
                return Err(bad("a finite number"));
            }
            toml::Value::Float(x)
        }
        Kind::Bool => toml::Value::Boolean(match t {
            "true" | "yes" | "on" | "1" => true,
            "false" | "no" | "off" | "0" => false,
            _ => return Err(bad("true or false")),
        }),
        Kind::List => toml::Value::Array(
            t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
    }))
}

/// The recipe with `key` set from `text`, or the message saying why the text is not valid
/// (a parse error, or the first `Recipe::validate` complaint).
pub fn set(recipe: &Recipe, key: &str, text: &str) -> Result<Recipe, String> {
    let field = FIELDS.iter().find(|f| f.key == key).ok_or_else(|| format!("unknown field {key}"))?;
    let value = parse(field.kind, key, text)?;
    let mut root = to_value(recipe);
    let parts: Vec<&str> = key.split('.').collect();
    let table = root.as_table_mut().expect("a recipe is a table");
    if key == "student.model" && value.is_some() {
        student(table).remove("derive");
    }
    if key.starts_with("student.derive.") && value.is_some() {
        student(table).remove("model");
    }
    let mut t = table;
    for part in &parts[..parts.len() - 1] {
        t = t
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(Default::default()))
            .as_table_mut()
            .ok_or_else(|| format!("{key}: {part} is not a table"))?;
    }
    let last = parts[parts.len() - 1];
    match value {
        Some(v) => {
            t.insert(last.to_string(), v);
        }
        None => {
            t.remove(last);
        }
    }
    let derive_empty = table_at(&root, &["student", "derive"]).is_some_and(|d| d.is_empty());
    if derive_empty {
        student(root.as_table_mut().expect("table")).remove("derive");
    }
    let updated: Recipe = root.try_into().map_err(|e: toml::de::Error| format!("{key}: {}", e.message()))?;
    updated.validate()?;
    Ok(updated)
}

fn student(table: &mut toml::Table) -> &mut toml::Table {
    table
        .entry("student")
        .or_insert_with(|| toml::Value::Table(Default::default()))
        .as_table_mut()
        .expect("[student] is a table")
}

fn table_at<'a>(root: &'a toml::Value, path: &[&str]) -> Option<&'a toml::Table> {
    path.iter().try_fold(root, |v, p| v.get(p))?.as_table()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe::parse(
            "[teacher]\nmodel = \"t\"\n[student]\nmodel = \"s\"\n[data]\ntrain = \"a.txt\"\neval = \"b.txt\"\n[output]\ndir = \"out\"\n",
            "test",
        )
        .unwrap()
    }

    #[test]
    fn sets_and_reads_every_kind() {
        let r = set(&recipe(), "distill.temperature", "4.5").unwrap();
        assert_eq!(r.distill.temperature, 4.5);
        assert_eq!(get(&r, "distill.temperature"), "4.5");
        let r = set(&r, "distill.baseline", "no").unwrap();
        assert!(!r.distill.baseline);
        let r = set(&r, "quantize.formats", "q8_0, q4_k").unwrap();
        assert_eq!(r.quantize.as_ref().unwrap().formats, vec!["q8_0", "q4_k"]);
        assert_eq!(get(&r, "quantize.formats"), "q8_0, q4_k");
        assert_eq!(get(&r, "student.derive.layers"), "");
    }

    #[test]
    fn invalid_values_name_the_key() {
        assert_eq!(set(&recipe(), "distill.alpha", "1.5").unwrap_err(), "distill.alpha must be in [0, 1]");
        assert!(set(&recipe(), "distill.steps", "ten").unwrap_err().contains("distill.steps"));
        assert!(set(&recipe(), "distill.loss", "l2").unwrap_err().starts_with("distill.loss"));
    }

    #[test]
    fn model_and_derive_exclude_each_other() {
        let r = set(&recipe(), "student.derive.layers", "2").unwrap();
        assert_eq!(r.student.model, None);
        assert_eq!(r.student.derive.as_ref().unwrap().layers, 2);
        let r = set(&r, "student.model", "other").unwrap();
        assert!(r.student.derive.is_none());
        assert!(set(&r, "student.model", "").unwrap_err().contains("exactly one"));
    }
}
