//! What both binaries share about their TOML configuration files:
//!
//! - [`from_toml`] parses a file into a configuration type and, when that fails, says in
//!   one line which key is wrong, on which line, and why (`topics.first_level: invalid
//!   type: string "t1", expected a sequence (line 9)`), instead of TOML's multi-line
//!   snippet;
//! - [`keys`] lists every key a configuration type accepts, as dotted paths
//!   (`limits.max_packet_size`, `listener.tls.cert`; arrays of tables without an index),
//!   read from the types' `Deserialize` implementations themselves. The tests check the
//!   docs against it, so a key added in code and missing from the docs fails a test.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, IntoDeserializer, Visitor};

/// Why a TOML text is not a valid configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TomlError {
    /// The dotted key (`limits.max_packet_size`, `listener[0].bind`); empty for a syntax
    /// error outside any key.
    pub key: String,
    /// The line (from 1) where the problem is, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for TomlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.reason)?;
        if let Some(line) = self.line {
            write!(f, " (line {line})")?;
        }
        Ok(())
    }
}

impl std::error::Error for TomlError {}

/// Parses `text` as a `T`; the error names the key, the line and the reason in one line.
pub fn from_toml<T: DeserializeOwned>(text: &str) -> Result<T, TomlError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let inner = e.into_inner();
        let line = inner
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        // TOML's own messages may span lines ("invalid table header\nexpected ..."). The
        // line is said once, at the end.
        let message = inner
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        let join = |field: &str| {
            if path.is_empty() {
                field.to_owned()
            } else {
                format!("{path}.{field}")
            }
        };
        let (key, reason) = if let Some(field) = quoted_after(&message, "missing field `") {
            (join(field), "missing (this key has no default)".to_owned())
        } else if let Some(field) = quoted_after(&message, "unknown field `") {
            // serde_path_to_error already ends the path with the unknown key.
            let key = if path.ends_with(field) {
                path.clone()
            } else {
                join(field)
            };
            (key, format!("unknown key; {}", expected(&message)))
        } else {
            (path.clone(), message)
        };
        TomlError { key, line, reason }
    })
}

/// The text between `prefix` and the next backquote.
fn quoted_after<'a>(message: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = message.strip_prefix(prefix)?;
    rest.split_once('`').map(|(field, _)| field)
}

/// "expected one of `a`, `b`" from serde's unknown-field message, as "known keys: a, b".
fn expected(message: &str) -> String {
    match message.split_once("expected ") {
        Some((_, list)) => format!("known keys here: {}", list.replace("one of ", "")),
        None => "this table has no keys".to_owned(),
    }
}

/// Every key `T` accepts, dotted; tables themselves are not listed, only their keys.
///
/// It runs `T`'s `Deserialize` against a tracer that offers every field a struct names,
/// with a stand-in value of the type asked for (so it needs no sample file and sees
/// renamed keys such as `[[listener]]` and `type` exactly as the parser does).
pub fn keys<T: DeserializeOwned>() -> Result<BTreeSet<String>, String> {
    let seen = RefCell::new(Seen::default());
    T::deserialize(Tracer {
        path: String::new(),
        seen: &seen,
    })
    .map_err(|e| e.0)?;
    let seen = seen.into_inner();
    Ok(seen.keys.difference(&seen.tables).cloned().collect())
}

#[derive(Debug, Default)]
struct Seen {
    keys: BTreeSet<String>,
    tables: BTreeSet<String>,
}

#[derive(Debug)]
struct TraceError(String);

impl fmt::Display for TraceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TraceError {}

impl de::Error for TraceError {
    fn custom<M: fmt::Display>(msg: M) -> Self {
        TraceError(msg.to_string())
    }
}

/// Stands in for a value at `path`. Strings read "127.0.0.1:1", which is also a valid
/// socket address and path; numbers are 0; options are present; sequences hold one
/// element; enums take their first variant.
struct Tracer<'a> {
    path: String,
    seen: &'a RefCell<Seen>,
}

impl<'a> Tracer<'a> {
    fn at(&self, path: String) -> Tracer<'a> {
        Tracer {
            path,
            seen: self.seen,
        }
    }
}

const STAND_IN: &str = "127.0.0.1:1";

impl<'de> de::Deserializer<'de> for Tracer<'_> {
    type Error = TraceError;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, TraceError> {
        Err(TraceError(format!(
            "{}: a self-describing type cannot be traced",
            self.path
        )))
    }
    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_bool(false)
    }
    fn deserialize_i8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_i64(0)
    }
    fn deserialize_i16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_i64(0)
    }
    fn deserialize_i32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_i64(0)
    }
    fn deserialize_i64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_i64(0)
    }
    fn deserialize_u8<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_u64(0)
    }
    fn deserialize_u16<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_u64(0)
    }
    fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_u64(0)
    }
    fn deserialize_u64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_u64(0)
    }
    fn deserialize_f32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_f64(0.0)
    }
    fn deserialize_f64<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_f64(0.0)
    }
    fn deserialize_char<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_char('x')
    }
    fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_str(STAND_IN)
    }
    fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_str(STAND_IN)
    }
    fn deserialize_bytes<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_bytes(b"")
    }
    fn deserialize_byte_buf<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_bytes(b"")
    }
    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_some(self)
    }
    fn deserialize_unit<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_unit()
    }
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, TraceError> {
        v.visit_unit()
    }
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        v: V,
    ) -> Result<V::Value, TraceError> {
        v.visit_newtype_struct(self)
    }
    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_seq(Elements {
            tracer: self,
            left: 1,
        })
    }
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, TraceError> {
        v.visit_seq(Elements {
            tracer: self,
            left: len,
        })
    }
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        v: V,
    ) -> Result<V::Value, TraceError> {
        self.deserialize_tuple(len, v)
    }
    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_map(Fields {
            tracer: self,
            fields: &[],
            next: 0,
        })
    }
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        {
            let mut seen = self.seen.borrow_mut();
            if !self.path.is_empty() {
                seen.tables.insert(self.path.clone());
            }
            for f in fields {
                seen.keys.insert(join(&self.path, f));
            }
        }
        v.visit_map(Fields {
            tracer: self,
            fields,
            next: 0,
        })
    }
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        let first = variants
            .first()
            .ok_or_else(|| TraceError(format!("{}: an enum without variants", self.path)))?;
        v.visit_enum(Variant {
            tracer: self,
            name: first,
        })
    }
    fn deserialize_identifier<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_str(STAND_IN)
    }
    fn deserialize_ignored_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, TraceError> {
        v.visit_unit()
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The elements of a traced sequence (the same path: arrays of tables have no index).
struct Elements<'a> {
    tracer: Tracer<'a>,
    left: usize,
}

impl<'de> de::SeqAccess<'de> for Elements<'_> {
    type Error = TraceError;
    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, TraceError> {
        if self.left == 0 {
            return Ok(None);
        }
        self.left -= 1;
        seed.deserialize(self.tracer.at(self.tracer.path.clone()))
            .map(Some)
    }
}

/// The fields of a traced struct, each with a traced value.
struct Fields<'a> {
    tracer: Tracer<'a>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'de> de::MapAccess<'de> for Fields<'_> {
    type Error = TraceError;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, TraceError> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(IntoDeserializer::<TraceError>::into_deserializer(*field))
            .map(Some)
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        let field = self.fields.get(self.next).copied().unwrap_or_default();
        self.next += 1;
        seed.deserialize(self.tracer.at(join(&self.tracer.path, field)))
    }
}

/// The first variant of a traced enum.
struct Variant<'a> {
    tracer: Tracer<'a>,
    name: &'static str,
}

impl<'de, 'a> de::EnumAccess<'de> for Variant<'a> {
    type Error = TraceError;
    type Variant = Tracer<'a>;
    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Tracer<'a>), TraceError> {
        let name =
            seed.deserialize(IntoDeserializer::<TraceError>::into_deserializer(self.name))?;
        Ok((name, self.tracer))
    }
}

impl<'de> de::VariantAccess<'de> for Tracer<'_> {
    type Error = TraceError;
    fn unit_variant(self) -> Result<(), TraceError> {
        Ok(())
    }
    fn newtype_variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<S::Value, TraceError> {
        seed.deserialize(self)
    }
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, v: V) -> Result<V::Value, TraceError> {
        de::Deserializer::deserialize_tuple(self, len, v)
    }
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, TraceError> {
        de::Deserializer::deserialize_struct(self, "", fields, v)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Top {
        name: String,
        #[serde(default)]
        limits: Limits,
        #[serde(default, rename = "listener")]
        listeners: Vec<Listener>,
        mode: Mode,
    }

    #[allow(dead_code)]
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Limits {
        max: u16,
        ratio: f64,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Listener {
        bind: std::net::SocketAddr,
        tls: Option<Tls>,
        #[serde(rename = "type")]
        kind: String,
    }

    #[allow(dead_code)]
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tls {
        cert: std::path::PathBuf,
        ids: Vec<u8>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Mode {
        Fast,
        #[allow(dead_code)]
        Slow,
    }

    #[test]
    fn keys_are_every_leaf_with_renames_and_no_tables() {
        let keys: Vec<String> = keys::<Top>().unwrap().into_iter().collect();
        assert_eq!(
            keys,
            [
                "limits.max",
                "limits.ratio",
                "listener.bind",
                "listener.tls.cert",
                "listener.tls.ids",
                "listener.type",
                "mode",
                "name"
            ]
        );
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let ok = "name = \"x\"\nmode = \"fast\"\n";
        from_toml::<Top>(ok).unwrap();

        let e = from_toml::<Top>("mode = \"fast\"\n").unwrap_err();
        assert_eq!(e.key, "name");
        assert!(e.reason.contains("missing"), "{e}");

        let e = from_toml::<Top>(&format!("{ok}[limits]\nmax = 1\nbogus = 2\n")).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("limits.bogus", Some(5)), "{e}");
        assert!(
            e.reason.contains("known keys here: `max` or `ratio`"),
            "{e}"
        );

        let e = from_toml::<Top>(&format!(
            "{ok}[[listener]]\nbind = \"nowhere\"\ntype = \"t\"\n"
        ))
        .unwrap_err();
        assert_eq!(
            (e.key.as_str(), e.line),
            ("listener[0].bind", Some(4)),
            "{e}"
        );

        let e = from_toml::<Top>(&format!("{ok}[[listener]]\ntype = \"t\"\n")).unwrap_err();
        assert_eq!(e.key, "listener[0].bind", "{e}");

        let e = from_toml::<Top>("name = \"x\"\nmode = \"fast\"\n[[[").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
}
