//! A required field named twice in one body. JSON leaves such an object to each reader: most
//! keep the last value, some the first, some refuse it. An event whose organization could be
//! read two ways must not be stored under one of them and read under the other by a
//! customer's tools, so capture refuses it; events stored before stay readable.

use super::raw_fields::Text;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;

const TOP: [&str; 7] = [
    "status",
    "action",
    "description",
    "organization_id",
    "project_id",
    "timestamp",
    "actor",
];
const ACTOR: [(&str, &str); 2] = [
    ("principal_id", "actor.principal_id"),
    ("type", "actor.type"),
];

/// The first required field the JSON object `text` names twice (`actor.type` for the actor's),
/// names compared with their escapes undone, as every reader compares them.
pub(super) fn repeated(text: &str) -> Option<&'static str> {
    let mut reader = serde_json::Deserializer::from_str(text);
    reader.deserialize_map(Repeats).ok().flatten()
}

struct Repeats;

impl<'de> Visitor<'de> for Repeats {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Read to the end whatever is found: a map left unread is an error to the reader.
        let (mut seen, mut repeated) = ([false; TOP.len()], None);
        while let Some(Text(name)) = map.next_key()? {
            let field = TOP.iter().position(|field| *field == name);
            let in_actor = match field {
                Some(i) if TOP[i] == "actor" && !seen[i] => map.next_value_seed(ActorRepeats)?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    None
                }
            };
            if let Some(i) = field
                && std::mem::replace(&mut seen[i], true)
            {
                repeated = repeated.or(Some(TOP[i]));
            }
            repeated = repeated.or(in_actor);
        }
        Ok(repeated)
    }
}

/// The actor's required field named twice, if the value is an object (an actor given twice
/// may be anything the first time).
struct ActorRepeats;

impl<'de> DeserializeSeed<'de> for ActorRepeats {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ActorRepeats {
    type Value = Option<&'static str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut seen, mut repeated) = ([false; ACTOR.len()], None);
        while let Some(Text(name)) = map.next_key()? {
            map.next_value::<IgnoredAny>()?;
            if let Some(i) = ACTOR.iter().position(|(field, _)| *field == name)
                && std::mem::replace(&mut seen[i], true)
            {
                repeated = repeated.or(Some(ACTOR[i].1));
            }
        }
        Ok(repeated)
    }

    // Nothing in any other value can be a required field of the actor.
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}
