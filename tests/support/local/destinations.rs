//! What the customers' destinations received: the Datadog stand-in's entries and the
//! CloudWatch log groups' messages, each as the event it carries.

use super::*;

/// JSON with every object's keys sorted, to compare values whatever their field order.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&o[k])))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(v).to_string()
}

/// A Datadog log entry back to the event it carries (the inverse of the service's encoding).
pub fn event_of_datadog_entry(entry: &Value) -> Value {
    let mut event = entry.as_object().cloned().unwrap_or_default();
    for reserved in audit_log::destination::datadog::RESERVED {
        let original = event.remove(&format!("event_{reserved}"));
        match (reserved, original) {
            (_, Some(v)) => {
                event.insert(reserved.to_owned(), v);
            }
            ("timestamp", None) => {}
            (_, None) => {
                event.remove(reserved);
            }
        }
    }
    // `message` was the description, written again.
    Value::Object(event)
}

/// The Datadog stand-in: accepts keys and logs like the real intake.
pub async fn datadog_stand_in() -> wiremock::MockServer {
    DatadogIntake::start(DatadogFaults::default()).await.server
}

/// Every log entry the stand-in received.
pub async fn datadog_entries(server: &wiremock::MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == "/api/v2/logs")
        .flat_map(crate::faults::log_entries)
        .collect()
}

/// Every event in a log stream of the customer's account.
pub(super) async fn cloudwatch_messages(
    aws: &aws_config::SdkConfig,
    role: &str,
    group: &str,
    stream: &str,
) -> Vec<String> {
    let logs = crate::customer_logs(aws, role, "us-east-1").await;
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = match logs
            .get_log_events()
            .log_group_name(group)
            .log_stream_name(stream)
            .start_from_head(true)
            .set_next_token(token.clone())
            .send()
            .await
        {
            Ok(page) => page,
            Err(_) => return out,
        };
        let events = page.events.unwrap_or_default();
        let next = page.next_forward_token;
        if events.is_empty() || next == token {
            return out;
        }
        out.extend(events.into_iter().filter_map(|e| e.message));
        token = next;
    }
}
