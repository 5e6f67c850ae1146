//! A body's JSON read as one meaning only. An object that names a key twice
//! (`{"provider": "datadog", "provider": "cloudwatch"}`) is read by serde_json as its last
//! value, by other parsers as its first: a proxy or a log in front of the API could check one
//! destination while the service saves the other. Such a body is refused, at any depth.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::fmt;

/// A JSON value in which no object names a key twice.
pub struct Unambiguous(pub Value);

impl<'de> Deserialize<'de> for Unambiguous {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Values).map(Unambiguous)
    }
}

struct Values;

impl<'de> Visitor<'de> for Values {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        // JSON has no NaN nor infinity: every number read is finite.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unambiguous(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("names `{key}` twice")));
            }
            let Unambiguous(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Value, serde_json::Error> {
        serde_json::from_str::<Unambiguous>(text).map(|u| u.0)
    }

    #[test]
    fn a_key_named_twice_at_any_depth_is_refused_and_anything_else_reads_as_serde_json_reads_it() {
        for twice in [
            r#"{"provider": "datadog", "provider": "cloudwatch"}"#,
            r#"{"datadog": {"site": "datadoghq.eu", "api_key": "a", "api_key": "b"}}"#,
            r#"{"filters": [{"q": 1, "q": 2}]}"#,
        ] {
            let e = read(twice).unwrap_err();
            assert!(
                e.is_data() && e.to_string().contains("twice"),
                "{twice}: {e}"
            );
        }
        let text = r#"{"a": [1, -2, 3.5, 18446744073709551615, true, null, "é\n"], "b": {"c": {}}, "c": []}"#;
        assert_eq!(
            read(text).unwrap(),
            serde_json::from_str::<Value>(text).unwrap()
        );
        assert!(read("{").unwrap_err().is_eof());
    }
}
