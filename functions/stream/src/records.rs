//! What the stream function reads of a DynamoDB stream record: its id, its kind, its sequence
//! number, and the four attributes of the new image that hold a stored event. Lambda's record
//! carries much more (the keys again, the old image, the stream's ARN, the region...);
//! `aws_lambda_events`' `EventRecord` builds a map of every attribute of every image, for every
//! record, and delivery uses four of them. The rest is skipped while parsing instead.

use audit_log::lambda_event::absent_if_null;
use audit_log::store::attr;
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// A batch of stream records as Lambda hands it to the function.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct StreamRecords {
    #[serde(rename = "Records")]
    pub records: Vec<StreamRecord>,
}

/// A record's id and kind are required, as `aws_lambda_events` requires them: a payload
/// without them is not a stream batch. (An id that is there but empty is never remembered as
/// handled: `delivery.rs`.)
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventID")]
    pub event_id: String,
    /// `INSERT`, `MODIFY` or `REMOVE` (a TTL expiry).
    #[serde(rename = "eventName")]
    pub event_name: String,
    #[serde(rename = "dynamodb", default, deserialize_with = "absent_if_null")]
    pub change: Change,
}

#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct Change {
    #[serde(rename = "SequenceNumber", default)]
    pub sequence_number: Option<String>,
    #[serde(rename = "NewImage", default, deserialize_with = "absent_if_null")]
    pub new_image: Image,
}

/// The attributes of an item that make a stored event (their names are
/// `audit_log::store::attr`'s); any other is skipped unread.
#[derive(Debug, Default, Clone, PartialEq, Deserialize)]
pub struct Image {
    /// Names the event's project even when the event itself cannot be read.
    #[serde(rename = "pk", default)]
    pub partition_key: Option<Attribute>,
    #[serde(rename = "sk", default)]
    pub sort_key: Option<Attribute>,
    #[serde(default)]
    pub expires_at: Option<Attribute>,
    #[serde(default)]
    pub event: Option<Attribute>,
}

/// One attribute's value, as far as a stored event's attributes can hold one. Anything else
/// (another type, a binary that is not base64) is kept as `Other`: that record is unreadable,
/// the rest of the batch is not.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    S(String),
    N(String),
    B(Vec<u8>),
    Other,
}

impl From<aws_sdk_dynamodbstreams::types::AttributeValue> for Attribute {
    fn from(value: aws_sdk_dynamodbstreams::types::AttributeValue) -> Self {
        use aws_sdk_dynamodbstreams::types::AttributeValue as Sdk;
        match value {
            Sdk::S(s) => Self::S(s),
            Sdk::N(n) => Self::N(n),
            Sdk::B(b) => Self::B(b.into_inner()),
            _ => Self::Other,
        }
    }
}

impl From<&serde_dynamo::AttributeValue> for Attribute {
    fn from(value: &serde_dynamo::AttributeValue) -> Self {
        use serde_dynamo::AttributeValue as Full;
        match value {
            Full::S(s) => Self::S(s.clone()),
            Full::N(n) => Self::N(n.clone()),
            Full::B(b) => Self::B(b.clone()),
            _ => Self::Other,
        }
    }
}

/// What the function reads of `aws_lambda_events`' full record (tests and local runs build
/// those, as Lambda sends them).
impl From<&aws_lambda_events::event::dynamodb::EventRecord> for StreamRecord {
    fn from(full: &aws_lambda_events::event::dynamodb::EventRecord) -> Self {
        let image = full.change.new_image.inner();
        Self {
            event_id: full.event_id.clone(),
            event_name: full.event_name.clone(),
            change: Change {
                sequence_number: full.change.sequence_number.clone(),
                new_image: Image::taking(|name| image.get(name).map(Attribute::from)),
            },
        }
    }
}

impl Image {
    /// The image as the DynamoDB Streams API returns it (an on-failure batch read back).
    pub fn from_stream(
        mut image: std::collections::HashMap<
            String,
            aws_sdk_dynamodbstreams::types::AttributeValue,
        >,
    ) -> Self {
        Self::taking(|name| image.remove(name).map(Attribute::from))
    }

    /// The image of an item whose attributes `attribute` gives by name.
    fn taking(mut attribute: impl FnMut(&str) -> Option<Attribute>) -> Self {
        Self {
            partition_key: attribute(attr::PARTITION_KEY),
            sort_key: attribute(attr::SORT_KEY),
            expires_at: attribute(attr::EXPIRES_AT),
            event: attribute(attr::EVENT),
        }
    }
}

/// A type tag of DynamoDB's JSON (`{"S": "..."}`).
#[derive(Deserialize)]
#[serde(field_identifier)]
enum Tag {
    S,
    N,
    B,
    #[serde(other)]
    Other,
}

/// Base64 text, decoded from where it lies in the payload when it can be borrowed.
struct Base64(Option<Vec<u8>>);

impl<'de> Deserialize<'de> for Base64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Base64Visitor;
        impl Visitor<'_> for Base64Visitor {
            type Value = Base64;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("base64 text")
            }
            fn visit_str<E>(self, text: &str) -> Result<Base64, E> {
                Ok(Base64(aws_smithy_types::base64::decode(text).ok()))
            }
        }
        d.deserialize_str(Base64Visitor)
    }
}

impl<'de> Deserialize<'de> for Attribute {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct AttributeVisitor;
        impl<'de> Visitor<'de> for AttributeVisitor {
            type Value = Attribute;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an attribute value such as {\"S\": \"...\"}")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attribute, A::Error> {
                let mut value = Attribute::Other;
                while let Some(tag) = map.next_key::<Tag>()? {
                    value = match tag {
                        Tag::S => Attribute::S(map.next_value()?),
                        Tag::N => Attribute::N(map.next_value()?),
                        Tag::B => match map.next_value::<Base64>()?.0 {
                            Some(bytes) => Attribute::B(bytes),
                            None => Attribute::Other,
                        },
                        Tag::Other => {
                            map.next_value::<IgnoredAny>()?;
                            Attribute::Other
                        }
                    };
                }
                Ok(value)
            }
        }
        d.deserialize_map(AttributeVisitor)
    }
}

#[cfg(test)]
mod tests;
