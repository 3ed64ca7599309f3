//! A small walker over a YAML mapping that takes known fields one by one, converts each,
//! and collects every problem (type errors, bad values, unknown keys) instead of stopping at
//! the first, the way `serde(deny_unknown_fields)` would.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

/// One configuration problem: where the value came from, the field, and why it is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File path, `env TOLLGATE_…`, or `--flag`.
    pub origin: String,
    /// Dotted field path (`upstream.connect_timeout`); empty for the document itself.
    pub field: String,
    /// Plain-words reason.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}: {}", self.origin, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.origin, self.field, self.reason)
        }
    }
}

/// Every problem found in a configuration, one per line when displayed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Which layer (file, environment variable, flag) set each field: kept in the [`Config`]
/// (`crate::config::Config`) so that problems found after loading (a name that does not
/// resolve, an unreadable certificate) name their origin like the loader's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origins {
    /// Default origin (the file, or `built-in defaults`).
    pub default: String,
    /// Field path → origin for values set by env or flags.
    pub by_field: BTreeMap<String, String>,
}

impl Origins {
    /// The origin of a field: the layer that set it or one of its parents, else the file.
    pub fn of(&self, field: &str) -> String {
        let mut probe = field;
        loop {
            if let Some(o) = self.by_field.get(probe) {
                return o.clone();
            }
            match probe.rfind('.') {
                Some(i) => probe = &probe[..i],
                None => return self.default.clone(),
            }
        }
    }

    /// A problem with `field`, attributed to the layer that set it.
    pub fn problem(&self, field: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            origin: self.of(field),
            field: field.to_string(),
            reason: reason.into(),
        }
    }
}

/// Collects errors and knows which layer (file, env, flag) set each field.
#[derive(Debug, Default)]
pub struct Collector {
    /// Where each field came from.
    pub origins: Origins,
    /// Problems so far.
    pub errors: Vec<ConfigError>,
    /// Every field the loader asked for, in order (compared with the sample file).
    #[cfg(test)]
    pub taken: Vec<String>,
}

impl Collector {
    /// Records a problem with `field`.
    pub fn error(&mut self, field: &str, reason: impl Into<String>) {
        let e = self.origins.problem(field, reason);
        self.errors.push(e);
    }
}

/// A mapping being taken apart field by field.
pub struct Section<'c> {
    col: &'c mut Collector,
    path: String,
    map: Mapping,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

impl<'c> Section<'c> {
    /// Starts on `value`, which must be a mapping (or null, meaning all defaults).
    pub fn new(col: &'c mut Collector, path: &str, value: Value) -> Self {
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            other => {
                col.error(
                    path,
                    format!("expected a mapping, found {}", kind_of(&other)),
                );
                Mapping::new()
            }
        };
        Section {
            col,
            path: path.to_string(),
            map,
        }
    }

    /// The collector, for errors found by later validation.
    pub fn collector(&mut self) -> &mut Collector {
        self.col
    }

    /// The raw value of `key`, without taking it.
    pub fn peek(&self, key: &str) -> Option<&Value> {
        self.map.get(key)
    }

    /// Full dotted path of `key` in this section.
    pub fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Takes `key` and converts it with `convert`; absent or null gives `default`, a failed
    /// conversion records the error and gives `default`.
    pub fn take_with<T>(
        &mut self,
        key: &str,
        default: T,
        convert: impl FnOnce(Value) -> Result<T, String>,
    ) -> T {
        #[cfg(test)]
        self.col.taken.push(self.field(key));
        match self.map.remove(key) {
            None | Some(Value::Null) => default,
            Some(v) => match convert(v) {
                Ok(t) => t,
                Err(reason) => {
                    let f = self.field(key);
                    self.col.error(&f, reason);
                    default
                }
            },
        }
    }

    /// Takes `key` as any serde-deserializable type.
    pub fn take<T: DeserializeOwned>(&mut self, key: &str, default: T) -> T {
        self.take_with(key, default, |v| {
            let shown = kind_of(&v);
            serde_yaml_ng::from_value(v).map_err(|e| format!("{e} (found {shown})"))
        })
    }

    /// Takes `key` as a nested section and runs `f` on it.
    pub fn section<T>(&mut self, key: &str, f: impl FnOnce(&mut Section<'_>) -> T) -> T {
        let value = self.map.remove(key).unwrap_or(Value::Null);
        let path = self.field(key);
        #[cfg(test)]
        self.col.taken.push(path.clone());
        let mut sub = Section::new(self.col, &path, value);
        let out = f(&mut sub);
        sub.finish();
        out
    }

    /// Reports every key nobody took as unknown.
    pub fn finish(self) {
        for (k, _) in self.map {
            let name = match k {
                Value::String(s) => s,
                other => format!("{other:?}"),
            };
            let f = join(&self.path, &name);
            self.col.error(&f, "unknown field");
        }
    }
}

/// A short name of a YAML value's kind, for messages.
pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

/// A string value (numbers and booleans are taken as their text, as env values are).
pub fn as_string(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("expected a string, found {}", kind_of(&other))),
    }
}

/// A duration: `250ms`, `2s`, `5m`, `1h`, `30d`, or a bare number of seconds.
pub fn as_duration(v: Value) -> Result<std::time::Duration, String> {
    if let Value::Number(n) = &v {
        return n
            .as_u64()
            .map(std::time::Duration::from_secs)
            .ok_or_else(|| format!("expected a whole number of seconds, found {n}"));
    }
    let s = as_string(v)?;
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration ({e}); use e.g. 500ms, 2s, 5m, 1h"))
}

/// `trusted_proxies`: a list of networks or addresses, or (from the environment) one string of
/// them separated by commas.
pub(super) fn trusted_proxies(v: Value) -> Result<crate::net::TrustedProxies, String> {
    let items: Vec<String> = match v {
        Value::Null => Vec::new(),
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect(),
        Value::Sequence(seq) => seq.into_iter().map(as_string).collect::<Result<_, _>>()?,
        other => {
            return Err(format!(
                "must be a list of networks, not {}",
                kind_of(&other)
            ))
        }
    };
    items
        .iter()
        .map(|i| crate::token::parse_network(i))
        .collect::<Result<Vec<_>, _>>()
        .map(crate::net::TrustedProxies::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_problem() {
        let doc: Value = serde_yaml_ng::from_str("a: 1\nb: x\nc: {d: 2, e: 3}\nzzz: 1\n").unwrap();
        let mut col = Collector::default();
        col.origins.default = "f.yaml".into();
        let mut s = Section::new(&mut col, "", doc);
        let a: u32 = s.take("a", 0);
        let b: u32 = s.take("b", 7);
        let d: u32 = s.section("c", |c| c.take("d", 0));
        s.finish();
        assert_eq!((a, b, d), (1, 7, 2));
        let msgs: Vec<String> = col.errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert!(msgs[0].starts_with("f.yaml: b: "), "{msgs:?}");
        assert!(msgs.contains(&"f.yaml: c.e: unknown field".to_string()));
        assert!(msgs.contains(&"f.yaml: zzz: unknown field".to_string()));
    }

    #[test]
    fn durations() {
        let d = |s: &str| as_duration(serde_yaml_ng::from_str(s).unwrap());
        assert_eq!(d("2s"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(d("500ms"), Ok(std::time::Duration::from_millis(500)));
        assert_eq!(d("5m"), Ok(std::time::Duration::from_secs(300)));
        assert_eq!(d("30"), Ok(std::time::Duration::from_secs(30)));
        assert!(d("soon").is_err());
        assert!(d("[1]").is_err());
    }
}
