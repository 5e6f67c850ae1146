//! The audit events the api writes about itself: who changed a project's streaming, and the
//! Test connection event.

use crate::request::Caller;
use crate::{Api, Ports};
use audit_log::clock::seconds_text;
use audit_log::streaming::StreamingConfig;
use serde_json::json;
use time::OffsetDateTime;

/// A change to a project's streaming, as its audit event tells it.
pub struct Change<'a> {
    /// The event's action: `create`, `update` or `delete`.
    pub action: &'a str,
    pub description: &'a str,
    /// The destination after the change (before it, for a deletion).
    pub config: Option<&'a StreamingConfig>,
}

impl<P: Ports> Api<P> {
    /// Puts an audit event about a configuration change on the events queue, like any other.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        change: Change<'_>,
    ) {
        let event = Produced {
            event: configuration_event(caller, org, project, &change, self.clock.now()),
            organization_id: org,
        };
        if let Err(e) = self.send(&self.settings.events_queue_url, &event).await {
            tracing::error!(
                organization_id = org,
                project_id = project,
                action = change.action,
                error = %e,
                "audit event of a configuration change not sent"
            );
        }
    }
}

/// An audit event on the events queue, in its organization's group as producers put theirs.
#[derive(serde::Serialize)]
#[serde(transparent)]
struct Produced<'a> {
    event: serde_json::Value,
    #[serde(skip)]
    organization_id: &'a str,
}

impl audit_log::message::Queued for Produced<'_> {
    fn organization_id(&self) -> &str {
        self.organization_id
    }
}

/// The actor of a request: a user when the token names an email, a service otherwise.
pub(crate) fn actor(caller: &Caller) -> serde_json::Value {
    match &caller.email {
        Some(email) => json!({
            "principal_id": caller.subject,
            "type": "TYPE_USER",
            "user": {"id": caller.subject, "email": email, "name": caller.name.as_deref().unwrap_or(email)},
        }),
        None => json!({
            "principal_id": caller.subject,
            "type": "TYPE_SERVICE",
            "service": {"id": caller.subject, "name": caller.name.as_deref().unwrap_or(&caller.subject)},
        }),
    }
}

/// The audit event of a configuration change: who, what, which destination; no credential.
pub fn configuration_event(
    caller: &Caller,
    org: &str,
    project: &str,
    change: &Change<'_>,
    now: OffsetDateTime,
) -> serde_json::Value {
    let mut event = json!({
        "status": "OK",
        "action": change.action,
        "description": change.description,
        "organization_id": org,
        "project_id": project,
        "timestamp": seconds_text(now),
        "actor": actor(caller),
    });
    if let Some(c) = change.config {
        event["streaming"] = json!({"provider": c.destination.provider().as_str(), "name": c.name, "version": c.version});
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;
    use audit_log::AuditEvent;

    fn caller(email: Option<&str>) -> Caller {
        Caller {
            organization_id: "o".into(),
            subject: "user-1".into(),
            email: email.map(str::to_owned),
            name: None,
        }
    }

    #[test]
    fn configuration_events_are_valid_audit_events() {
        for email in [Some("a@example.com"), None] {
            let event = configuration_event(
                &caller(email),
                "o",
                "p",
                &Change {
                    action: "update",
                    description: "Updated streaming configuration",
                    config: None,
                },
                OffsetDateTime::now_utc(),
            );
            let parsed = AuditEvent::from_value(event).unwrap();
            assert_eq!(parsed.description(), "Updated streaming configuration");
        }
    }
}
