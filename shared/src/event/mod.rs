//! The audit event: what a producer puts on the events queue, validated against the contract.
//!
//! Only the shared metadata fields are checked; everything else (`registry`, `bucket`, `version`,
//! `builds`, `channel`, fields not documented yet) travels verbatim, in the producer's field order.
//!
//! An event is kept as its compact JSON text, not as a tree of values: that text is what is
//! stored, what CloudWatch Logs receives and what Datadog's entries are cut from, so the
//! functions read each event's fields once and never build them into maps on the way through.

mod compact;
mod kinds;
mod raw_fields;
mod repeats;
mod required;

pub use kinds::{Action, ActorType, Status};
pub use raw_fields::RawFields;
use required::Required;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// SQS's own ceiling on a message body; anything larger cannot have come from the queue intact.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// A validated audit event: its compact JSON, with the fields the service reads.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// The producer's object as compact JSON, in the producer's field order.
    json: String,
    metadata: required::Metadata,
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
    #[error("`{0}` is given twice: an event names each of its required fields once")]
    GivenTwice(&'static str),
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
    #[error("`{field}` must be at most {max_chars} characters")]
    IdTooLong {
        field: &'static str,
        max_chars: usize,
    },
    #[error(
        "event needs {size} bytes of storage even compressed, over DynamoDB's {max}-byte item limit"
    )]
    TooLargeToStore { size: usize, max: usize },
}

impl AuditEvent {
    /// Parses and validates one message body.
    pub fn from_json(body: &str) -> Result<Self, EventError> {
        // A byte order mark is no part of the JSON text (RFC 8259 §8.1 lets a parser ignore
        // it), and a file saved by some editors and sent as the body starts with one.
        let body = body.strip_prefix('\u{feff}').unwrap_or(body);
        if body.len() > MAX_EVENT_BYTES {
            return Err(EventError::TooLarge {
                size: body.len(),
                max: MAX_EVENT_BYTES,
            });
        }
        // Two passes over the text, neither building a tree: the required fields (which fails
        // on any body that is not plainly valid, left to the parsed path to name the problem),
        // then the whitespace between tokens left out, every value kept as it was written.
        let Some(required) = Required::read(body) else {
            let event = Self::parse(body, Coming::In)?;
            return match repeats::repeated(body) {
                Some(field) => Err(EventError::GivenTwice(field)),
                None => Ok(event),
            };
        };
        let checked = required.check_coming_in()?;
        match compact::minified(body) {
            Some(json) => Ok(Self::new(json.into_owned(), checked)),
            None => Self::parse(body, Coming::In),
        }
    }

    /// An event as the events table keeps it: compact JSON that capture validated. Checked
    /// again, but kept as the text it is, not written again. A required field named twice is
    /// read with its last value, as capture read it before it refused such events.
    pub fn from_stored(json: String) -> Result<Self, EventError> {
        match Required::read(&json).map(Required::check) {
            Some(checked) => Ok(Self::new(json, checked?)),
            None => Self::parse(&json, Coming::FromStore),
        }
    }

    pub fn from_value(value: Value) -> Result<Self, EventError> {
        Self::from_fields(value, Coming::In)
    }

    fn from_fields(value: Value, coming: Coming) -> Result<Self, EventError> {
        let Value::Object(fields) = value else {
            return Err(EventError::NotAnObject);
        };
        let required = Required::of(&fields)?;
        let checked = match coming {
            Coming::In => required.check_coming_in()?,
            Coming::FromStore => required.check()?,
        };
        // Serializing a map of `Value`s has no failure case: keys are strings, numbers finite.
        let json = serde_json::to_string(&fields).unwrap_or_default();
        Ok(Self::new(json, checked))
    }

    /// The parsed path: every body the text path declines (a required field given twice, say),
    /// and the error naming what is wrong. A valid body is still kept as its text, whitespace
    /// left out: written again from a `Value`, a 23-digit integer would become a double.
    fn parse(body: &str, coming: Coming) -> Result<Self, EventError> {
        let value: Value =
            serde_json::from_str(body).map_err(|e| EventError::NotJson(syntax_error(&e)))?;
        let event = Self::from_fields(value, coming)?;
        Ok(match compact::minified(body) {
            Some(json) => Self::new(json.into_owned(), event.metadata),
            None => event,
        })
    }

    fn new(json: String, metadata: required::Metadata) -> Self {
        Self {
            json,
            metadata,
            id: None,
        }
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
        &self.metadata.organization_id
    }

    pub fn project_id(&self) -> &str {
        &self.metadata.project_id
    }

    pub fn description(&self) -> &str {
        &self.metadata.description
    }

    pub fn timestamp(&self) -> OffsetDateTime {
        self.metadata.timestamp
    }

    pub fn status(&self) -> Status {
        self.metadata.status
    }

    pub fn action(&self) -> Action {
        self.metadata.action
    }

    /// The event as compact JSON: what is stored and what destinations receive.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// Every field of the event, in the producer's order, parsed from its JSON.
    pub fn fields(&self) -> Map<String, Value> {
        // The text was written from a JSON object by serde_json.
        serde_json::from_str(&self.json).unwrap_or_default()
    }

    /// Every field of the event, each value as its JSON text.
    pub fn raw_fields(&self) -> RawFields<'_> {
        // The text was written from a JSON object by serde_json.
        serde_json::from_str(&self.json).unwrap_or(RawFields(Default::default()))
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.fields())
    }
}

/// Where an event is read from: coming in, it is held to every rule; from the store, to those
/// it was stored under.
#[derive(Clone, Copy)]
enum Coming {
    In,
    FromStore,
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

/// serde_json's message with the position, minus any echo of the input: its syntax messages
/// ("recursion limit exceeded", "number out of range", "lone leading surrogate in hex escape")
/// name the problem and never repeat the text; a data error may, and is said in general.
fn syntax_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Eof | Category::Syntax => e.to_string(),
        Category::Data => format!("data error at line {} column {}", e.line(), e.column()),
        Category::Io => format!("read error at line {} column {}", e.line(), e.column()),
    }
}

#[cfg(test)]
mod tests;
