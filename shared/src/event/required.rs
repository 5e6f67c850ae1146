//! The fields every event must have, and their checks. Read in place from the JSON text where
//! they are plain strings (the common case), or from a parsed object when they are not.

use super::kinds::{Action, ActorType, OneOf, Status};
use super::raw_fields::Text;
use super::{EventError, parse_timestamp};
use serde::Deserialize;
use serde::de::{Deserializer, Error as _, IgnoredAny, MapAccess, Visitor};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;
use time::OffsetDateTime;

/// The required fields as text, borrowed from the body where no escape forced a copy. Reading
/// a body into this fails on anything but a JSON object whose required fields are strings,
/// each given once: those bodies take the slower path through a parsed object, which names
/// the problem.
#[derive(Deserialize)]
pub(super) struct Required<'a> {
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(borrow)]
    action: Cow<'a, str>,
    #[serde(borrow)]
    description: Cow<'a, str>,
    #[serde(borrow)]
    organization_id: Cow<'a, str>,
    #[serde(borrow)]
    project_id: Cow<'a, str>,
    #[serde(borrow)]
    timestamp: Cow<'a, str>,
    #[serde(borrow)]
    actor: Actor<'a>,
}

/// The actor's `type`; its `principal_id` is asked only to be a string.
struct Actor<'a> {
    kind: Cow<'a, str>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Actor<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // An object only: a derived struct would read an array of its fields as well.
        d.deserialize_map(ActorVisitor)
    }
}

struct ActorVisitor;

impl<'de> Visitor<'de> for ActorVisitor {
    type Value = Actor<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Actor<'de>, A::Error> {
        let (mut principal_id, mut kind) = (None, None);
        while let Some(Text(name)) = map.next_key()? {
            let slot = match name.as_ref() {
                "principal_id" => &mut principal_id,
                "type" => &mut kind,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            if slot.replace(map.next_value::<Text>()?.0).is_some() {
                return Err(A::Error::custom("a field given twice"));
            }
        }
        match (principal_id, kind) {
            (Some(_), Some(kind)) => Ok(Actor { kind }),
            _ => Err(A::Error::custom("a field missing")),
        }
    }
}

/// What the checks found: the fields the service reads of an event.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Metadata {
    pub organization_id: String,
    pub project_id: String,
    pub description: String,
    pub timestamp: OffsetDateTime,
    pub status: Status,
    pub action: Action,
}

impl<'a> Required<'a> {
    /// The required fields read in place from a JSON text, if it is plainly an event.
    pub fn read(text: &'a str) -> Option<Self> {
        // A derived struct reads an array of its fields too; an event is an object.
        let object = text
            .trim_start_matches([' ', '\t', '\n', '\r'])
            .starts_with('{');
        object.then(|| serde_json::from_str(text).ok()).flatten()
    }

    /// The required fields of a parsed object, or the first one missing or not a string.
    pub fn of(fields: &'a Map<String, Value>) -> Result<Self, EventError> {
        let text = |name: &'static str| required_str(fields, name, name).map(Cow::Borrowed);
        let status = text("status")?;
        let action = text("action")?;
        let description = text("description")?;
        let organization_id = text("organization_id")?;
        let project_id = text("project_id")?;
        let timestamp = text("timestamp")?;
        let actor = match fields.get("actor") {
            None | Some(Value::Null) => return Err(EventError::Missing("actor")),
            Some(Value::Object(actor)) => actor,
            Some(_) => {
                return Err(EventError::WrongType {
                    field: "actor",
                    expected: "an object",
                });
            }
        };
        Ok(Self {
            status,
            action,
            description,
            organization_id,
            project_id,
            timestamp,
            actor: {
                required_str(actor, "principal_id", "actor.principal_id")?;
                Actor {
                    kind: required_str(actor, "type", "actor.type")?.into(),
                }
            },
        })
    }

    /// [`Self::check`] for an event coming in: its timestamp must also be written as RFC 3339
    /// writes one. Stored events are only checked: those stored before this rule stay readable.
    pub fn check_coming_in(self) -> Result<Metadata, EventError> {
        if !crate::clock::is_joined_as_rfc3339(&self.timestamp) {
            return Err(EventError::BadTimestamp);
        }
        self.check()
    }

    /// The contract's rules on each field, in the order the fields are listed there.
    pub fn check(self) -> Result<Metadata, EventError> {
        let status = Status::parse_field(&self.status)?;
        let action = Action::parse_field(&self.action)?;
        if self.description.is_empty() {
            return Err(EventError::Empty("description"));
        }
        crate::id::check("organization_id", &self.organization_id)?;
        crate::id::check("project_id", &self.project_id)?;
        let timestamp = parse_timestamp(&self.timestamp)?;
        ActorType::parse_field(&self.actor.kind)?;
        Ok(Metadata {
            organization_id: self.organization_id.into_owned(),
            project_id: self.project_id.into_owned(),
            description: self.description.into_owned(),
            timestamp,
            status,
            action,
        })
    }
}

fn required_str<'a>(
    fields: &'a Map<String, Value>,
    name: &str,
    path: &'static str,
) -> Result<&'a str, EventError> {
    match fields.get(name) {
        None | Some(Value::Null) => Err(EventError::Missing(path)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(EventError::WrongType {
            field: path,
            expected: "a string",
        }),
    }
}
