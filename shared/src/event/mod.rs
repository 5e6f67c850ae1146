//! The audit event: what a producer puts on the events queue, validated against the contract.
//!
//! Only the shared metadata fields are checked; everything else (`registry`, `bucket`, `version`,
//! `builds`, `channel`, fields not documented yet) travels verbatim, in the producer's field order.

mod kinds;

use kinds::OneOf;
pub use kinds::{Action, ActorType, Status};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// SQS's own ceiling on a message body; anything larger cannot have come from the queue intact.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// A validated audit event. The JSON object is kept whole so it can be given back exactly.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    fields: Map<String, Value>,
    timestamp: OffsetDateTime,
    status: Status,
    action: Action,
    /// The stored event's stable id (its SQS message id), once it has been stored.
    id: Option<String>,
}

/// Why a message is not a valid audit event. The text names the field and what is expected,
/// never the value it had: a body may carry anything, secrets included.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("body is {size} bytes, over the {max}-byte limit of an audit event")]
    TooLarge { size: usize, max: usize },
    #[error("body is not valid JSON ({0})")]
    NotJson(String),
    #[error("body must be a JSON object")]
    NotAnObject,
    #[error("`{0}` is required")]
    Missing(&'static str),
    #[error("`{field}` must be {expected}")]
    WrongType {
        field: &'static str,
        expected: &'static str,
    },
    #[error("`{0}` must not be empty")]
    Empty(&'static str),
    #[error("`{field}` must be one of {}", allowed.join(", "))]
    NotAllowed {
        field: &'static str,
        allowed: &'static [&'static str],
    },
    #[error("`timestamp` must be an RFC 3339 date-time in UTC, such as 2023-07-12T15:50:02Z")]
    BadTimestamp,
    #[error("`{0}` must not contain control characters")]
    ControlCharacters(&'static str),
    #[error(
        "`{field}` must be at most {max_chars} characters and {max_bytes} bytes once percent-encoded (each non-ASCII UTF-8 byte counts three)"
    )]
    IdTooLong {
        field: &'static str,
        max_chars: usize,
        max_bytes: usize,
    },
    #[error(
        "event needs {size} bytes of storage even compressed, over DynamoDB's {max}-byte item limit"
    )]
    TooLargeToStore { size: usize, max: usize },
}

impl AuditEvent {
    /// Parses and validates one message body.
    pub fn from_json(body: &str) -> Result<Self, EventError> {
        if body.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge {
                size: body.len(),
                max: MAX_EVENT_BYTES,
            });
        }
        let value: Value =
            serde_json::from_str(body).map_err(|e| EventError::NotJson(syntax_error(&e)))?;
        Self::from_value(value)
    }

    pub fn from_value(value: Value) -> Result<Self, EventError> {
        let Value::Object(fields) = value else {
            return Err(EventError::NotAnObject);
        };
        let status = Status::parse_field(required_str(&fields, "status")?)?;
        let action = Action::parse_field(required_str(&fields, "action")?)?;
        non_empty(&fields, "description")?;
        crate::id::check("organization_id", required_str(&fields, "organization_id")?)?;
        crate::id::check("project_id", required_str(&fields, "project_id")?)?;
        let timestamp = parse_timestamp(required_str(&fields, "timestamp")?)?;
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
        required_nested_str(actor, "principal_id", "actor.principal_id")?;
        ActorType::parse_field(required_nested_str(actor, "type", "actor.type")?)?;
        Ok(Self {
            fields,
            timestamp,
            status,
            action,
            id: None,
        })
    }

    /// The same event, known by its stable id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    pub fn organization_id(&self) -> &str {
        self.str_field("organization_id")
    }

    pub fn project_id(&self) -> &str {
        self.str_field("project_id")
    }

    pub fn description(&self) -> &str {
        self.str_field("description")
    }

    pub fn timestamp(&self) -> OffsetDateTime {
        self.timestamp
    }

    pub fn status(&self) -> Status {
        self.status
    }

    pub fn action(&self) -> Action {
        self.action
    }

    /// Every field of the event, in the producer's order.
    pub fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.fields)
    }

    /// The event as compact JSON: what is stored and what destinations receive.
    pub fn to_compact_json(&self) -> String {
        // Serializing a map of `Value`s has no failure case: keys are strings, numbers finite.
        serde_json::to_string(&self.fields).unwrap_or_default()
    }

    fn str_field(&self, name: &str) -> &str {
        // Validation guaranteed these are present strings.
        self.fields.get(name).and_then(Value::as_str).unwrap_or("")
    }
}

/// Parses an RFC 3339 date-time and insists on UTC, as the event schema promises.
pub fn parse_timestamp(s: &str) -> Result<OffsetDateTime, EventError> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|_| EventError::BadTimestamp)?;
    if t.offset().is_utc() {
        Ok(t)
    } else {
        Err(EventError::BadTimestamp)
    }
}

/// serde_json's message with the position, minus any echo of the input.
fn syntax_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let kind = match e.classify() {
        Category::Eof => "unexpected end of input",
        Category::Syntax => "syntax error",
        Category::Data => "data error",
        Category::Io => "read error",
    };
    format!("{kind} at line {} column {}", e.line(), e.column())
}

fn required_str<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, EventError> {
    required_nested_str(fields, name, name)
}

fn required_nested_str<'a>(
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

fn non_empty<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, EventError> {
    let s = required_str(fields, name)?;
    if s.trim().is_empty() {
        Err(EventError::Empty(name))
    } else {
        Ok(s)
    }
}

#[cfg(test)]
mod tests;
