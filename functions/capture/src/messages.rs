//! What capture reads of an SQS batch: each message's id and body, nothing else. Lambda's SQS
//! event carries much more per message (receipt handle, attributes, digests, the queue's ARN);
//! `aws_lambda_events`' `SqsMessage` makes a string or a map entry of each, for every message,
//! and capture uses none of them. Those fields are skipped while parsing instead.

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use serde::Deserialize;

/// An SQS batch as Lambda hands it to capture.
#[derive(Debug, Default, Deserialize)]
pub struct Messages {
    #[serde(rename = "Records")]
    pub records: Vec<Message>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct Message {
    #[serde(rename = "messageId")]
    pub message_id: Option<String>,
    pub body: Option<String>,
}

impl From<SqsMessage> for Message {
    fn from(m: SqsMessage) -> Self {
        Self {
            message_id: m.message_id,
            body: m.body,
        }
    }
}

impl From<SqsEvent> for Messages {
    fn from(event: SqsEvent) -> Self {
        Self {
            records: event.records.into_iter().map(Message::from).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_as_lambda_sends_it_gives_each_message_id_and_body() {
        let fixture = audit_log::fixtures::lambda_event("sqs-receive-message.json");
        let typed: SqsEvent = serde_json::from_str(&fixture).unwrap();
        let lean: Messages = serde_json::from_str(&fixture).unwrap();
        assert_eq!(lean.records.len(), typed.records.len());
        assert!(!lean.records.is_empty());
        for (lean, typed) in lean.records.iter().zip(&typed.records) {
            assert!(lean.message_id.is_some());
            assert_eq!(lean.message_id, typed.message_id);
            assert_eq!(lean.body, typed.body);
        }
    }
}
