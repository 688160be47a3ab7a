//! Command-line overrides of configuration keys: `--set dt.eta=0.1`.
//!
//! An override is a dotted key path into the TOML configuration and a value.
//! The value is read as a TOML value when it parses as one (`0.1`, `10`,
//! `true`, `"text"`, `[1, 2]`), otherwise taken as a bare string, so
//! `--set dt.embedding=one-hot` works without quotes. The dedicated flags
//! (`--epochs 3`, `--lr 0.01`, ...) are turned into overrides too, so every
//! source of settings goes through the same path and the same validation.

use anyhow::{bail, Result};
use toml::{Table, Value};

/// One `key.path = value` assignment and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// The key path, for example `["dt", "eta"]`.
    pub path: Vec<String>,
    pub value: Value,
    /// What the user typed, for error messages (`--set dt.eta=0.1`, `--epochs`).
    pub origin: String,
}

impl Override {
    /// An override from a dedicated flag.
    pub fn flag(origin: &str, path: &[&str], value: impl Into<Value>) -> Self {
        Self {
            path: path.iter().map(|s| s.to_string()).collect(),
            value: value.into(),
            origin: origin.to_string(),
        }
    }

    /// Parses `key.path=value` as given to `--set`.
    pub fn parse_set(text: &str) -> Result<Self> {
        let origin = format!("--set {text}");
        let Some((key, raw_value)) = text.split_once('=') else {
            bail!("{origin}: expected KEY=VALUE, for example --set dt.eta=0.1");
        };
        let path: Vec<String> = key.trim().split('.').map(|s| s.to_string()).collect();
        let valid_segment = |s: &String| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        if !path.iter().all(valid_segment) {
            bail!(
                "{origin}: `{key}` is not a key path (letters, digits, `_`, `-`, separated by `.`)"
            );
        }
        Ok(Self {
            path,
            value: parse_value(raw_value.trim()),
            origin,
        })
    }

    /// Writes the value into `table`, creating intermediate tables.
    pub fn apply(&self, table: &mut Table) -> Result<()> {
        let Some((last, parents)) = self.path.split_last() else {
            bail!("{}: empty key", self.origin);
        };
        let mut current = table;
        for (depth, segment) in parents.iter().enumerate() {
            let entry = current
                .entry(segment.clone())
                .or_insert_with(|| Value::Table(Table::new()));
            current = match entry {
                Value::Table(t) => t,
                _ => bail!(
                    "{}: `{}` is a value, not a table",
                    self.origin,
                    self.path[..=depth].join(".")
                ),
            };
        }
        current.insert(last.clone(), self.value.clone());
        Ok(())
    }
}

/// A TOML value if `text` is one, else the text as a string.
fn parse_value(text: &str) -> Value {
    match format!("v = {text}").parse::<Table>() {
        Ok(mut table) => table
            .remove("v")
            .unwrap_or_else(|| Value::String(text.into())),
        Err(_) => Value::String(text.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed_when_they_parse_as_toml() {
        let cases = [
            ("a=0.1", Value::Float(0.1)),
            ("a=10", Value::Integer(10)),
            ("a=true", Value::Boolean(true)),
            ("a=one-hot", Value::String("one-hot".into())),
            ("a=\"x y\"", Value::String("x y".into())),
        ];
        for (text, expected) in cases {
            assert_eq!(Override::parse_set(text).unwrap().value, expected, "{text}");
        }
    }

    #[test]
    fn nested_keys_create_tables_and_replace_values() {
        let mut table: Table = "epochs = 1\n[dt]\neta = 0.5\n".parse().unwrap();
        Override::parse_set("dt.eta=0.1")
            .unwrap()
            .apply(&mut table)
            .unwrap();
        Override::parse_set("eval.steps=20")
            .unwrap()
            .apply(&mut table)
            .unwrap();
        assert_eq!(table["dt"]["eta"], Value::Float(0.1));
        assert_eq!(table["eval"]["steps"], Value::Integer(20));
        let err = Override::parse_set("epochs.x=1")
            .unwrap()
            .apply(&mut table)
            .unwrap_err();
        assert!(err.to_string().contains("`epochs` is a value"), "{err}");
    }

    #[test]
    fn malformed_assignments_are_errors_naming_the_input() {
        for bad in ["eta", "=1", "dt..eta=1", "dt eta=1"] {
            let err = Override::parse_set(bad).unwrap_err().to_string();
            assert!(err.contains(bad), "{bad}: {err}");
        }
    }
}
