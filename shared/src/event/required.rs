//! The fields every event must have, and their checks. Read in place from the JSON text where
//! they are plain strings (the common case), or from a parsed object when they are not.

use super::kinds::{Action, ActorType, OneOf, Status};
use super::{EventError, parse_timestamp};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::borrow::Cow;
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

#[derive(Deserialize)]
struct Actor<'a> {
    /// Asked only to be a string.
    #[serde(borrow, rename = "principal_id")]
    _principal_id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
}

/// What the checks found, for the event to keep.
pub(super) struct Checked {
    pub organization_id: String,
    pub project_id: String,
    pub description: String,
    pub timestamp: OffsetDateTime,
    pub status: Status,
    pub action: Action,
}

impl<'a> Required<'a> {
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
            actor: Actor {
                _principal_id: required_str(actor, "principal_id", "actor.principal_id")?.into(),
                kind: required_str(actor, "type", "actor.type")?.into(),
            },
        })
    }

    /// The contract's rules on each field, in the order the fields are listed there.
    pub fn check(self) -> Result<Checked, EventError> {
        let status = Status::parse_field(&self.status)?;
        let action = Action::parse_field(&self.action)?;
        if self.description.trim().is_empty() {
            return Err(EventError::Empty("description"));
        }
        crate::id::check("organization_id", &self.organization_id)?;
        crate::id::check("project_id", &self.project_id)?;
        let timestamp = parse_timestamp(&self.timestamp)?;
        ActorType::parse_field(&self.actor.kind)?;
        Ok(Checked {
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
