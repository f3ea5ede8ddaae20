//! A TOML document as a tree in which every value and every key remembers
//! where it was written.
//!
//! `toml::Spanned<T>` works only where the document has a span for the value;
//! implicit tables (`[a.b]` without `[a]`, dotted keys) have none and make
//! `Spanned` fail with an unhelpful error. This deserializer asks for the span
//! the same way `toml::Spanned` does, but accepts a plain value too: such a
//! value then takes the span of its key. Type checking is left to the
//! validator, so that every type error can be reported, not only the first.

use std::fmt;
use std::ops::Range;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

// The protocol `toml` uses to hand out spans (serde_spanned 0.6). If it ever
// changed, values would merely arrive without spans (the unit tests on error
// positions would catch that); nothing would fail to parse.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";
const SPANNED_FIELDS: &[&str] = &[SPANNED_START, SPANNED_END, SPANNED_VALUE];
// How `toml` hands out a date-time through `deserialize_any` (toml_datetime 0.6).
const DATETIME_FIELD: &str = "$__toml_private_datetime";

/// A value and the byte range of its text in the document.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub span: Option<Range<usize>>,
    pub value: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    String(String),
    Integer(i64),
    Float(f64),
    Boolean(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Vec<Entry>),
}

/// One `key = value` of a table, in document order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Entry {
    pub key: String,
    pub key_span: Option<Range<usize>>,
    pub node: Node,
}

impl Value {
    /// "a string", "an integer", ...: for messages like "expected X, found Y".
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Datetime(_) => "a date-time",
            Value::Array(_) => "an array",
            Value::Table(_) => "a table",
        }
    }
}

/// Parses `text` into a tree. The error is the `toml` error (a syntax error,
/// with its span).
pub(crate) fn parse_document(text: &str) -> Result<Node, toml::de::Error> {
    let node = NodeSeed.deserialize(toml::Deserializer::new(text))?;
    Ok(Node {
        span: Some(node.span.unwrap_or(0..0)),
        value: node.value,
    })
}

/// Deserializes a value, asking for its span.
struct NodeSeed;

impl<'de> DeserializeSeed<'de> for NodeSeed {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, NodeVisitor)
    }
}

/// Deserializes the value inside a span wrapper (never asks for a span again).
struct PlainSeed;

impl<'de> DeserializeSeed<'de> for PlainSeed {
    type Value = Node;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

fn plain(value: Value) -> Node {
    Node { span: None, value }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node, E> {
        Ok(plain(Value::Boolean(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(plain(Value::Integer(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        match i64::try_from(v) {
            Ok(v) => Ok(plain(Value::Integer(v))),
            Err(_) => Err(E::custom(format!("integer {v} is too large"))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node, E> {
        Ok(plain(Value::Float(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(plain(Value::String(v.to_owned())))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Node, E> {
        Ok(plain(Value::String(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(NodeSeed)? {
            items.push(item);
        }
        Ok(plain(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let Some(first) = map.next_key_seed(KeySeed)? else {
            return Ok(plain(Value::Table(Vec::new())));
        };
        match first {
            Key::SpanStart | Key::SpanEnd | Key::SpanValue => spanned(first, map),
            Key::Datetime => {
                let text: String = map.next_value()?;
                Ok(plain(Value::Datetime(text)))
            }
            Key::Name(name, span) => {
                let mut entries = Vec::new();
                let mut next = Some((name, span));
                while let Some((key, key_span)) = next {
                    let mut node = map.next_value_seed(NodeSeed)?;
                    if node.span.is_none() {
                        node.span.clone_from(&key_span);
                    }
                    entries.push(Entry {
                        key,
                        key_span,
                        node,
                    });
                    next = match map.next_key_seed(KeySeed)? {
                        None => None,
                        Some(Key::Name(name, span)) => Some((name, span)),
                        // A key spelled like the private protocol, in a table
                        // that came without a span: keep it as a plain key.
                        Some(other) => Some((other.spelling().to_owned(), None)),
                    };
                }
                Ok(plain(Value::Table(entries)))
            }
        }
    }
}

/// Reads a span wrapper whose first key has been read already.
fn spanned<'de, A: MapAccess<'de>>(first: Key, mut map: A) -> Result<Node, A::Error> {
    let mut start: Option<usize> = None;
    let mut end: Option<usize> = None;
    let mut value: Option<Node> = None;
    let mut key = Some(first);
    while let Some(k) = key {
        match k {
            Key::SpanStart => start = Some(map.next_value()?),
            Key::SpanEnd => end = Some(map.next_value()?),
            Key::SpanValue => value = Some(map.next_value_seed(PlainSeed)?),
            Key::Datetime | Key::Name(..) => {
                return Err(de::Error::custom("malformed spanned value"));
            }
        }
        key = map.next_key_seed(KeySeed)?;
    }
    match (start, end, value) {
        (Some(start), Some(end), Some(node)) => Ok(Node {
            span: Some(start..end.max(start)),
            value: node.value,
        }),
        _ => Err(de::Error::custom("malformed spanned value")),
    }
}

enum Key {
    SpanStart,
    SpanEnd,
    SpanValue,
    Datetime,
    Name(String, Option<Range<usize>>),
}

impl Key {
    fn classify(s: &str) -> Key {
        match s {
            SPANNED_START => Key::SpanStart,
            SPANNED_END => Key::SpanEnd,
            SPANNED_VALUE => Key::SpanValue,
            DATETIME_FIELD => Key::Datetime,
            _ => Key::Name(s.to_owned(), None),
        }
    }

    fn spelling(&self) -> &str {
        match self {
            Key::SpanStart => SPANNED_START,
            Key::SpanEnd => SPANNED_END,
            Key::SpanValue => SPANNED_VALUE,
            Key::Datetime => DATETIME_FIELD,
            Key::Name(name, _) => name,
        }
    }
}

/// Deserializes a map key, asking for its span.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Key, D::Error> {
        deserializer.deserialize_struct(SPANNED_NAME, SPANNED_FIELDS, KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TOML key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
        Ok(Key::classify(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Key, A::Error> {
        let mut start: Option<usize> = None;
        let mut end: Option<usize> = None;
        let mut name: Option<String> = None;
        while let Some(k) = map.next_key::<String>()? {
            match k.as_str() {
                SPANNED_START => start = Some(map.next_value()?),
                SPANNED_END => end = Some(map.next_value()?),
                SPANNED_VALUE => name = Some(map.next_value()?),
                _ => return Err(de::Error::custom("malformed spanned key")),
            }
        }
        match (start, end, name) {
            (Some(start), Some(end), Some(name)) => {
                Ok(Key::Name(name, Some(start..end.max(start))))
            }
            _ => Err(de::Error::custom("malformed spanned key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(node: &Node) -> &[Entry] {
        match &node.value {
            Value::Table(entries) => entries,
            other => panic!("expected a table, got {other:?}"),
        }
    }

    #[test]
    fn values_and_keys_carry_spans() {
        let text = "a = 1\n[t]\nname = \"x\"\nlist = [true, 2.5]\n";
        let root = parse_document(text).unwrap();
        let entries = table(&root);
        assert_eq!(entries[0].key, "a");
        assert_eq!(entries[0].key_span, Some(0..1));
        assert_eq!(entries[0].node.span, Some(4..5));
        assert_eq!(entries[0].node.value, Value::Integer(1));
        let t = &entries[1];
        assert_eq!(t.key, "t");
        // A [table]'s span starts at its header.
        assert_eq!(t.node.span.as_ref().unwrap().start, 6);
        let inner = table(&t.node);
        assert_eq!(inner[0].node.value, Value::String("x".into()));
        assert_eq!(&text[inner[0].node.span.clone().unwrap()], "\"x\"");
        match &inner[1].node.value {
            Value::Array(items) => {
                assert_eq!(items[0].value, Value::Boolean(true));
                assert_eq!(&text[items[1].span.clone().unwrap()], "2.5");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn implicit_tables_take_the_span_of_their_key() {
        let text = "x.y = 1\n[a.b]\nc = 2\n";
        let root = parse_document(text).unwrap();
        let entries = table(&root);
        let x = entries.iter().find(|e| e.key == "x").unwrap();
        assert_eq!(x.node.span, x.key_span);
        assert!(x.node.span.is_some());
        let a = entries.iter().find(|e| e.key == "a").unwrap();
        assert!(a.node.span.is_some());
        let b = &table(&a.node)[0];
        assert_eq!(b.key, "b");
        assert_eq!(table(&b.node)[0].node.value, Value::Integer(2));
    }

    #[test]
    fn datetimes_and_array_of_tables() {
        let text = "when = 1979-05-27T07:32:00Z\n[[s]]\nn = 1\n[[s]]\nn = 2\n";
        let root = parse_document(text).unwrap();
        let entries = table(&root);
        assert!(matches!(entries[0].node.value, Value::Datetime(_)));
        match &entries[1].node.value {
            Value::Array(items) => {
                assert_eq!(items.len(), 2);
                assert_eq!(items[1].span.as_ref().unwrap().start, 40);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn private_protocol_spellings_as_keys_do_not_confuse_the_tree() {
        let text = "\"$__serde_spanned_private_start\" = 1\n\"$__toml_private_datetime\" = \"x\"\n";
        let root = parse_document(text).unwrap();
        let entries = table(&root);
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].key, SPANNED_START);
        assert_eq!(entries[1].key, DATETIME_FIELD);
    }
}
