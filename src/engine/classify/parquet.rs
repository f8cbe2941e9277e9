//! Parquet data files: the text and label columns of every row group, read with the `parquet`
//! crate's record API (no arrow). Text is a string (or UTF-8 binary) column; labels are strings or
//! integer class ids. When the file carries the `huggingface` key-value metadata that the `datasets`
//! library writes (`{"info": {"features": {LABEL: {"_type": "ClassLabel", "names": [...]}}}}`), the
//! ids become those class names.

use super::data::{missing_column, Columns};
use crate::engine::{Error, Result};
use parquet::basic::Type as Physical;
use parquet::errors::ParquetError;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::record::Field;
use parquet::schema::types::Type;
use std::path::Path;
use std::sync::Arc;

/// The key-value metadata key under which `datasets` stores a table's features.
const HF_METADATA: &str = "huggingface";

/// The `(text, label)` rows of a Parquet file, in file order across its row groups. A null text
/// is read as an empty text; a null label is an error naming the row.
pub fn read_parquet(path: &Path, cols: &Columns) -> Result<Vec<(String, String)>> {
    guarded(path, || read_all(path, cols))
}

fn read_all(path: &Path, cols: &Columns) -> Result<Vec<(String, String)>> {
    let reader = open(path)?;
    let names = class_names_in(&reader, path, &cols.label)?;
    let schema = reader.metadata().file_metadata().schema();
    let text = column(schema, path, "text", &cols.text)?;
    let label = column(schema, path, "label", &cols.label)?;
    check_type(path, "text", &text, &[Physical::BYTE_ARRAY], "text (a string column)")?;
    let label_types = [Physical::BYTE_ARRAY, Physical::INT32, Physical::INT64, Physical::BOOLEAN];
    check_type(path, "label", &label, &label_types, "strings or integer class ids")?;
    let same = cols.text == cols.label;
    let fields = if same { vec![text] } else { vec![text, label] };
    let projection =
        Type::group_type_builder(schema.name()).with_fields(fields).build().map_err(|e| unreadable(path, e))?;
    let rows_declared = usize::try_from(reader.metadata().file_metadata().num_rows()).unwrap_or(0);
    let mut rows = Vec::with_capacity(rows_declared.min(1 << 24));
    for (i, row) in reader.get_row_iter(Some(projection)).map_err(|e| unreadable(path, e))?.enumerate() {
        let mut values = row.map_err(|e| unreadable(path, e))?.into_columns().into_iter().map(|(_, v)| v);
        let at = || format!("{} row {}", path.display(), i + 1);
        let text_value = values.next().unwrap_or(Field::Null);
        let label_value = if same { text_value.clone() } else { values.next().unwrap_or(Field::Null) };
        rows.push((text_of(text_value, &cols.text, &at)?, label_of(label_value, &cols.label, names.as_deref(), &at)?));
    }
    Ok(rows)
}

/// The class names the file's `huggingface` metadata gives the label column (a `ClassLabel`
/// feature), or `None` when it names none.
pub fn class_names(path: &Path, label_column: &str) -> Result<Option<Vec<String>>> {
    guarded(path, || class_names_in(&open(path)?, path, label_column))
}

/// Runs `f` on the file `path`, turning a panic into the corrupt-file error: the `parquet` crate
/// asserts (panics) on some malformed metadata and pages instead of returning an error.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    crate::engine::error::quiet_panics(f).unwrap_or_else(|msg| Err(corrupt(path, msg)))
}

fn open(path: &Path) -> Result<SerializedFileReader<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    SerializedFileReader::new(file).map_err(|e| unreadable(path, e))
}

/// The error for a file the `parquet` crate cannot read: a codec this build leaves out, a feature
/// it does not implement, or else damage.
fn unreadable(path: &Path, e: ParquetError) -> Error {
    let file = path.display();
    match &e {
        ParquetError::General(m) if m.starts_with(DISABLED) => Error::Invalid(format!(
            "{file}: compressed with {}, which this build does not read (it reads snappy, zstd, gzip, \
             lz4 and uncompressed files); rewrite it with one of those, e.g. pyarrow's compression=\"zstd\"",
            &m[DISABLED.len()..]
        )),
        ParquetError::NYI(m) => Error::Invalid(format!(
            "{file}: uses a Parquet feature this reader does not implement ({m}); rewrite it with \
             pyarrow's or pandas' defaults"
        )),
        _ => corrupt(path, e),
    }
}

/// How the `parquet` crate starts the message for a codec left out at compile time.
const DISABLED: &str = "Disabled feature at compile time: ";

fn corrupt(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!(
        "{}: not a readable Parquet file ({e}); it is truncated or corrupt: download or write it again",
        path.display()
    ))
}

fn class_names_in(
    reader: &SerializedFileReader<std::fs::File>,
    path: &Path,
    label: &str,
) -> Result<Option<Vec<String>>> {
    let kv = reader.metadata().file_metadata().key_value_metadata();
    let Some(text) = kv.into_iter().flatten().find(|kv| kv.key == HF_METADATA).and_then(|kv| kv.value.as_deref())
    else {
        return Ok(None);
    };
    let bad =
        |detail: &str| Error::Invalid(format!("{}: the `{HF_METADATA}` metadata of the file {detail}", path.display()));
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(&format!("is not JSON ({e})")))?;
    let feature = &json["info"]["features"][label];
    if feature["_type"] != "ClassLabel" {
        return Ok(None);
    }
    let names = feature["names"].as_array().ok_or_else(|| bad(&format!("has a ClassLabel `{label}` without names")))?;
    let names = names.iter().map(|n| n.as_str().map(str::to_string)).collect::<Option<Vec<_>>>();
    names.map(Some).ok_or_else(|| bad(&format!("has a ClassLabel `{label}` whose names are not all strings")))
}

/// The top-level column `name`, or the error listing the columns there are.
fn column(schema: &Type, path: &Path, what: &str, name: &str) -> Result<Arc<Type>> {
    let fields = schema.get_fields();
    fields.iter().find(|f| f.name() == name).cloned().ok_or_else(|| {
        let found: Vec<String> = fields.iter().map(|f| f.name().to_string()).collect();
        missing_column(path, what, name, &found)
    })
}

fn check_type(path: &Path, what: &str, col: &Type, allowed: &[Physical], wanted: &str) -> Result<()> {
    let name = col.name();
    let held = if col.is_primitive() {
        let physical = col.get_physical_type();
        if allowed.contains(&physical) {
            return Ok(());
        }
        match col.get_basic_info().logical_type_ref() {
            Some(logical) => format!("{logical:?} values"),
            None => format!("{physical} values"),
        }
    } else {
        "nested values (a list, struct or map)".to_string()
    };
    Err(Error::Invalid(format!(
        "{}: the {what} column `{name}` holds {held}; it must hold {wanted} (set data.{what}_column)",
        path.display()
    )))
}

fn text_of(value: Field, name: &str, at: &dyn Fn() -> String) -> Result<String> {
    match value {
        Field::Str(s) => Ok(s),
        Field::Null => Ok(String::new()),
        Field::Bytes(b) => String::from_utf8(b.data().to_vec())
            .map_err(|_| Error::Invalid(format!("{}: the text column `{name}` holds bytes that are not UTF-8", at()))),
        other => Err(Error::Invalid(format!("{}: the text column `{name}` holds `{other}`, not text", at()))),
    }
}

fn label_of(value: Field, name: &str, names: Option<&[String]>, at: &dyn Fn() -> String) -> Result<String> {
    let id: i128 = match value {
        Field::Str(s) => return Ok(s.trim().to_string()),
        Field::Bytes(b) => {
            let s = std::str::from_utf8(b.data()).map_err(|_| {
                Error::Invalid(format!("{}: the label column `{name}` holds bytes that are not UTF-8", at()))
            })?;
            return Ok(s.trim().to_string());
        }
        Field::Bool(b) => return Ok(b.to_string()),
        Field::Null => {
            return Err(Error::Invalid(format!(
                "{}: the label column `{name}` is null; every example needs a label",
                at()
            )))
        }
        Field::Byte(v) => v.into(),
        Field::Short(v) => v.into(),
        Field::Int(v) => v.into(),
        Field::Long(v) => v.into(),
        Field::UByte(v) => v.into(),
        Field::UShort(v) => v.into(),
        Field::UInt(v) => v.into(),
        Field::ULong(v) => v.into(),
        other => {
            return Err(Error::Invalid(format!(
                "{}: the label column `{name}` holds `{other}`, neither text nor an integer class id",
                at()
            )))
        }
    };
    let Some(names) = names else {
        return Ok(id.to_string());
    };
    match usize::try_from(id).ok().and_then(|i| names.get(i)) {
        Some(class) => Ok(class.clone()),
        None => Err(Error::Invalid(format!(
            "{}: label {id} is not a class id of the ClassLabel `{name}` (0 to {}: {}); -1 marks an \
             unlabelled example, as in many test splits: use a labelled split",
            at(),
            names.len().saturating_sub(1),
            names.join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_of_every_kind() {
        let at = || "f.parquet row 7".to_string();
        let names: Vec<String> = ["neg", "pos"].iter().map(|s| s.to_string()).collect();
        let label = |v: Field, names: Option<&[String]>| label_of(v, "label", names, &at);
        assert_eq!(label(Field::Str(" pos ".into()), None).unwrap(), "pos");
        assert_eq!(label(Field::Long(1), Some(&names)).unwrap(), "pos");
        assert_eq!(label(Field::Byte(0), Some(&names)).unwrap(), "neg");
        assert_eq!(label(Field::Long(7), None).unwrap(), "7");
        assert_eq!(label(Field::Bool(true), None).unwrap(), "true");
        let e = label(Field::Long(-1), Some(&names)).unwrap_err().to_string();
        assert!(e.contains("f.parquet row 7: label -1 is not a class id") && e.contains("0 to 1: neg, pos"), "{e}");
        assert!(e.contains("unlabelled"), "{e}");
        let e = label(Field::Null, None).unwrap_err().to_string();
        assert!(e.contains("row 7: the label column `label` is null"), "{e}");
        let e = label(Field::Double(0.5), None).unwrap_err().to_string();
        assert!(e.contains("neither text nor an integer class id"), "{e}");
        assert_eq!(text_of(Field::Null, "text", &at).unwrap(), "");
        assert!(text_of(Field::Int(3), "text", &at).is_err());
    }
}
