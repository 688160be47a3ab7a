//! Reading numbers and strings out of JSON written by other commands.
//!
//! The report reads files that the trainer, `noprop eval --json` and
//! `noprop info --json` write. A field is looked up by a list of candidate
//! keys (the first present wins), each key possibly a dotted path
//! (`"timing.ms_per_image"`), so that the report keeps working when a writer
//! nests a value or names it slightly differently.

use serde_json::Value;

/// The value at a dotted path (`"a.b.c"`), if every step exists.
pub fn at_path<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(value, |current, key| current.as_object()?.get(key))
}

/// The first of `keys` that holds a finite number.
pub fn number(value: &Value, keys: &[&str]) -> Option<f64> {
    keys.iter()
        .filter_map(|key| at_path(value, key)?.as_f64())
        .find(|x| x.is_finite())
}

/// The first of `keys` that holds a string.
pub fn string(value: &Value, keys: &[&str]) -> Option<String> {
    keys.iter()
        .find_map(|key| at_path(value, key)?.as_str().map(str::to_owned))
}

/// An accuracy as a fraction in [0, 1]. Writers may record either a fraction
/// or a percentage; a value above 1 can only be a percentage.
pub fn accuracy(value: &Value, keys: &[&str]) -> Option<f64> {
    number(value, keys).map(as_fraction)
}

/// A fraction in [0, 1] from a fraction or a percentage (see [`accuracy`]).
pub fn as_fraction(x: f64) -> f64 {
    if x > 1.0 {
        x / 100.0
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn looks_up_aliases_and_dotted_paths() {
        let v = json!({"a": {"b": 2.5}, "c": "x", "n": null, "arr": [1, 2.5]});
        assert_eq!(number(&v, &["missing", "a.b"]), Some(2.5));
        assert_eq!(number(&v, &["n"]), None);
        assert_eq!(number(&v, &["c"]), None);
        assert_eq!(string(&v, &["a", "c"]), Some("x".to_owned()));
        assert!(at_path(&v, "a.b.c").is_none());
    }

    #[test]
    fn accuracy_accepts_fraction_or_percentage() {
        let v = json!({"frac": 0.975, "pct": 97.5});
        assert_eq!(accuracy(&v, &["frac"]), Some(0.975));
        assert_eq!(accuracy(&v, &["pct"]), Some(0.975));
    }
}
