//! Reads one value at a key path out of a JSON document without building the rest of it.
//!
//! The policy runs in a fresh wasm instance per request; a ConfigMap holding the whole table is
//! ~100 KB, of which one request needs one key. Skipping everything else with `IgnoredAny`
//! (no allocation) instead of deserialising the document halves the cost of that path.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;
use std::marker::PhantomData;

/// Returns the value at `path` (a list of object keys) in `json`, or `None` when a key on the way is
/// absent or a value on the way is `null`. A non-object on the way, invalid JSON or a value at the
/// path that is not a `T` is an error.
pub fn extract<'de, T: Deserialize<'de>>(
    json: &'de [u8],
    path: &[&str],
) -> Result<Option<T>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let found = PathSeed::<T> {
        path,
        _t: PhantomData,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(found)
}

/// Like [`extract`] on a `&str`.
pub fn extract_str<'de, T: Deserialize<'de>>(
    json: &'de str,
    path: &[&str],
) -> Result<Option<T>, serde_json::Error> {
    extract(json.as_bytes(), path)
}

struct PathSeed<'p, T> {
    path: &'p [&'p str],
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> DeserializeSeed<'de> for PathSeed<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        match self.path.split_first() {
            None => T::deserialize(d).map(Some),
            Some((first, rest)) => d.deserialize_any(PathVisitor::<T> {
                key: first,
                rest,
                _t: PhantomData,
            }),
        }
    }
}

struct PathVisitor<'p, T> {
    key: &'p str,
    rest: &'p [&'p str],
    _t: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for PathVisitor<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object (looking for key {:?})", self.key)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_key) = map.next_key_seed(KeyIs(self.key))? {
            if is_key && found.is_none() {
                found = map.next_value_seed(PathSeed::<T> {
                    path: self.rest,
                    _t: PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Compares a map key with the wanted one without allocating (unless it has escapes).
struct KeyIs<'p>(&'p str);

impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_value_and_skips_the_rest() {
        let doc = br#"{"kind":"ConfigMap","metadata":{"name":"x","annotations":{"a":"b"}},
            "data":{"c5":"{\"large\":1}","m5":"{\"xlarge\":{}}","z":[1,{"q":null}]}}"#;
        let v: Option<String> = extract(doc, &["data", "m5"]).unwrap();
        assert_eq!(v.as_deref(), Some(r#"{"xlarge":{}}"#));
        let v: Option<String> = extract(doc, &["data", "m6"]).unwrap();
        assert_eq!(v, None);
        let v: Option<String> = extract(doc, &["metadata", "annotations", "a"]).unwrap();
        assert_eq!(v.as_deref(), Some("b"));
    }

    #[test]
    fn null_and_missing_are_none() {
        let v: Option<String> = extract(br#"{"data":null}"#, &["data", "m5"]).unwrap();
        assert_eq!(v, None);
        let v: Option<String> = extract(br#"{}"#, &["data", "m5"]).unwrap();
        assert_eq!(v, None);
    }

    #[test]
    fn escaped_keys_still_match() {
        let v: Option<u32> = extract(br#"{"m\u0035":7}"#, &["m5"]).unwrap();
        assert_eq!(v, Some(7));
    }

    #[test]
    fn first_of_duplicate_keys_wins() {
        let v: Option<u32> = extract(br#"{"a":1,"a":2}"#, &["a"]).unwrap();
        assert_eq!(v, Some(1));
    }

    #[test]
    fn errors() {
        assert!(extract::<String>(br#"{"data":"oops"}"#, &["data", "m5"]).is_err());
        assert!(extract::<String>(br#"{"data":{"m5":3}}"#, &["data", "m5"]).is_err());
        assert!(extract::<String>(br#"{"data":{"#, &["data", "m5"]).is_err());
        assert!(extract::<String>(br#"{} trailing"#, &["data"]).is_err());
        assert!(extract::<String>(b"", &["data"]).is_err());
        // a bad value elsewhere in the document is still invalid JSON
        assert!(extract::<String>(br#"{"data":{"m5":"x"},"junk":[1,}"#, &["data", "m5"]).is_err());
    }
}
