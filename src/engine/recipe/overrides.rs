//! `--set section.key=value` on the command line: a recipe value changed without editing the file,
//! typed and validated exactly as the file is. Each override is applied to the recipe's TOML and
//! the whole recipe parsed again, so the first override that breaks it is the one named, with the
//! closest valid key for a misspelt one.

use crate::engine::{Error, Result};

/// One `KEY=VALUE`: a dotted key (`distill.temperature`, `student.derive.layers`) and a TOML value
/// (`5`, `0.5`, `true`, `["q4_0", "q8_0"]`; a bare word is a string: `distill.loss=reverse_kl`).
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub key: Vec<String>,
    pub value: toml::Value,
    /// Where it comes from, as the user wrote it, for messages (`--set distill.temperature=5`,
    /// `[sweep] distill.temperature = 5`).
    pub text: String,
}

impl Override {
    pub fn parse(arg: &str) -> Result<Self> {
        let Some((key, raw)) = arg.split_once('=') else {
            return Err(Error::Invalid(format!("--set {arg}: expected KEY=VALUE, e.g. --set distill.temperature=5")));
        };
        let key: Vec<String> = key.trim().split('.').map(|k| k.trim().to_string()).collect();
        if key.iter().any(|k| k.is_empty()) {
            return Err(Error::Invalid(format!("--set {arg}: the key needs a name between every dot")));
        }
        let raw = raw.trim();
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.to_string()));
        Ok(Self { key, value, text: format!("--set {arg}") })
    }

    /// `section.key`, as written.
    pub fn dotted(&self) -> String {
        self.key.join(".")
    }

    /// Sets the value in `table`, creating missing sections.
    fn apply(&self, table: &mut toml::Table) -> Result<()> {
        let (last, sections) = self.key.split_last().expect("parse refuses an empty key");
        let mut at = table;
        for (i, name) in sections.iter().enumerate() {
            let entry = at.entry(name.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = match entry {
                toml::Value::Table(t) => t,
                _ => {
                    return Err(Error::Invalid(format!(
                        "{}: `{}` is a value, not a section",
                        self.text,
                        self.key[..=i].join(".")
                    )))
                }
            };
        }
        at.insert(last.clone(), self.value.clone());
        Ok(())
    }
}

/// `text` (a recipe) with `overrides` applied and parsed by `parse` (reading and validating): each
/// override is first read alone (keys and types, by `T`'s deserializer), so that the first one that
/// breaks the recipe is named, with the closest valid key when the key is unknown; the values are
/// validated together at the end (`steps` and `warmup_steps` may be set in either order).
pub fn apply<T: serde::de::DeserializeOwned>(
    text: &str,
    overrides: &[Override],
    parse: impl Fn(&str) -> Result<T>,
) -> Result<(String, T)> {
    if overrides.is_empty() {
        return Ok((text.to_string(), parse(text)?));
    }
    parse(text)?;
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| Error::Invalid(format!("recipe: {}", e.message())))?;
    let mut current = text.to_string();
    for o in overrides {
        o.apply(&mut table)?;
        current = toml::to_string(&table).map_err(|e| Error::Invalid(format!("{}: {e}", o.text)))?;
        toml::from_str::<T>(&current).map_err(|e| explain(o, e.message()))?;
    }
    let origins = if overrides.iter().all(|o| o.text.starts_with("[sweep]")) {
        overrides.iter().map(|o| o.text.trim_start_matches("[sweep] ")).collect::<Vec<_>>().join(", ")
    } else {
        "the --set values".to_string()
    };
    let parsed = parse(&current).map_err(|e| Error::Invalid(format!("with {origins}: {e}")))?;
    Ok((current, parsed))
}

/// The recipe's complaint about `o`, with the closest valid name for an unknown key.
fn explain(o: &Override, message: &str) -> Error {
    // The parser's own words end the message: "unknown field `x`, expected one of `a`, `b`".
    let reason =
        message.lines().rev().find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('|')).unwrap_or(message);
    let reason = reason.trim().trim_start_matches("recipe ").to_string();
    if let Some(rest) = reason.split("unknown field `").nth(1) {
        let unknown = rest.split('`').next().unwrap_or_default();
        let valid: Vec<&str> = rest.split_once(", expected").map(|(_, v)| names(v)).unwrap_or_default();
        let depth = o.key.iter().rposition(|k| k == unknown).unwrap_or(o.key.len() - 1);
        let section = o.key[..depth].join(".");
        let place = if section.is_empty() { "at the top level".to_string() } else { format!("in [{section}]") };
        let hint = match closest(unknown, &valid) {
            Some(best) => format!("; did you mean `{best}`?"),
            None => String::new(),
        };
        let listing = if valid.is_empty() { String::new() } else { format!(" (valid: {})", valid.join(", ")) };
        return Error::Invalid(format!("{}: no key `{unknown}` {place}{hint}{listing}", o.text));
    }
    Error::Invalid(format!("{}: {} (key `{}`)", o.text, strip_origin(&reason), o.dotted()))
}

/// The names between backticks in `text`.
fn names(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The valid name most like `unknown` (Jaro-Winkler similarity of at least 0.7).
fn closest<'a>(unknown: &str, valid: &[&'a str]) -> Option<&'a str> {
    valid
        .iter()
        .map(|v| (strsim::jaro_winkler(unknown, v), *v))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v)
}

/// `invalid type: …` without the `PATH: ` prefix the recipe parser puts before it.
fn strip_origin(reason: &str) -> &str {
    ["invalid type", "invalid value", "missing field", "invalid length"]
        .iter()
        .filter_map(|k| reason.find(k))
        .min()
        .map(|i| &reason[i..])
        .unwrap_or(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_as_toml_and_bare_words_are_strings() {
        let o = Override::parse("distill.temperature=5").unwrap();
        assert_eq!((o.key.join("."), o.value.clone()), ("distill.temperature".into(), toml::Value::Integer(5)));
        assert_eq!(Override::parse("distill.loss=reverse_kl").unwrap().value, toml::Value::String("reverse_kl".into()));
        assert_eq!(Override::parse("a.b = true").unwrap().value, toml::Value::Boolean(true));
        let list = Override::parse("quantize.formats=[\"q4_0\", \"q8_0\"]").unwrap().value;
        assert_eq!(list.as_array().map(|a| a.len()), Some(2));
        assert!(Override::parse("distill.temperature").is_err());
        assert!(Override::parse("distill..x=1").is_err());
    }

    #[test]
    fn the_closest_name_is_offered() {
        assert_eq!(closest("temprature", &["loss", "temperature", "alpha"]), Some("temperature"));
        assert_eq!(closest("zzz", &["loss", "temperature"]), None);
    }
}
