//! Short labels of axis values for table cells, legends and panel titles.
//!
//! A mixer `{ kind = "linear", feature_map = "taylor2", feature_dim = 16 }` is shown as
//! `linear(taylor2,feature_dim=16)`: a table with a `kind` becomes the kind with its other
//! entries in parentheses (first the strings, bare since they name themselves, then the other
//! values as `key=value`), a table without one `{key=value,…}`, a list `[a,b]`, a string itself and a
//! number as Rust prints it (`0.001`, `64`). When two different values of one column would get
//! the same short label, the whole column falls back to the full TOML text, so labels stay
//! unique within a column.

use std::collections::BTreeMap;

/// The compact label of one value.
pub fn label(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => format!("{f}"),
        toml::Value::Boolean(b) => b.to_string(),
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::Array(items) => {
            let inner: Vec<String> = items.iter().map(label).collect();
            format!("[{}]", inner.join(","))
        }
        toml::Value::Table(table) => {
            // Strings first (they name themselves), then `key=value`; each group by key.
            let named = table
                .iter()
                .filter(|(k, v)| *k != "kind" && v.is_str())
                .map(|(_, v)| label(v));
            let keyed = table
                .iter()
                .filter(|(k, v)| *k != "kind" && !v.is_str())
                .map(|(k, v)| format!("{k}={}", label(v)));
            let entries: Vec<String> = named.chain(keyed).collect();
            match table.get("kind") {
                Some(toml::Value::String(kind)) if entries.is_empty() => kind.clone(),
                Some(toml::Value::String(kind)) => format!("{kind}({})", entries.join(",")),
                _ => {
                    let all: Vec<String> = table
                        .iter()
                        .map(|(k, v)| format!("{k}={}", label(v)))
                        .collect();
                    format!("{{{}}}", all.join(","))
                }
            }
        }
    }
}

/// The canonical text of a value: equal values, equal text (tables are key-sorted).
pub fn canonical(value: &toml::Value) -> String {
    value.to_string()
}

/// Labels for the distinct values of one column, keyed by [`canonical`] text: compact when
/// those are unique, the full TOML text otherwise.
pub fn column_labels<'a>(
    values: impl Iterator<Item = &'a toml::Value>,
) -> BTreeMap<String, String> {
    let mut distinct: BTreeMap<String, &toml::Value> = BTreeMap::new();
    for v in values {
        distinct.entry(canonical(v)).or_insert(v);
    }
    let compact: BTreeMap<String, String> = distinct
        .iter()
        .map(|(key, v)| (key.clone(), label(v)))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    if compact.values().all(|l| seen.insert(l.clone())) {
        compact
    } else {
        distinct.keys().map(|k| (k.clone(), k.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(text: &str) -> toml::Value {
        format!("x = {text}").parse::<toml::Table>().unwrap()["x"].clone()
    }

    #[test]
    fn compact_forms() {
        assert_eq!(
            label(&v(
                "{ kind = \"linear\", feature_map = \"taylor2\", feature_dim = 16 }"
            )),
            "linear(taylor2,feature_dim=16)"
        );
        assert_eq!(label(&v("{ kind = \"softmax\" }")), "softmax");
        assert_eq!(label(&v("1e-3")), "0.001");
        assert_eq!(label(&v("64")), "64");
        assert_eq!(label(&v("[64, 128]")), "[64,128]");
        assert_eq!(label(&v("\"cosine\"")), "cosine");
        assert_eq!(
            label(&v("{ seq_len = 64, steps = 10 }")),
            "{seq_len=64,steps=10}"
        );
    }

    #[test]
    fn colliding_labels_fall_back_to_toml() {
        let a = v("{ kind = \"linear\", feature_map = \"elu\" }");
        let b = v("{ kind = \"linear\", other = \"elu\" }");
        let labels = column_labels([&a, &b].into_iter());
        assert_eq!(labels.len(), 2);
        let shown: Vec<&String> = labels.values().collect();
        assert_ne!(shown[0], shown[1]);
        assert!(shown.iter().all(|l| l.contains("kind")), "{shown:?}");
        // No collision: compact.
        let c = v("{ kind = \"softmax\" }");
        let labels = column_labels([&a, &c].into_iter());
        assert!(labels.values().any(|l| l == "softmax"));
    }
}
