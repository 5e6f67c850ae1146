//! The audit events the api writes about itself: who changed a project's streaming, and the
//! Test connection event.

use crate::request::Caller;
use crate::{Api, Ports};
use audit_log::AuditEvent;
use audit_log::clock::seconds_text;
use audit_log::store::{EventWriter, StoredEvent};
use audit_log::streaming::{ProjectIndex, StreamingConfig, note_for};
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

/// What the api logs when a change's audit event was neither queued nor stored: the template's
/// `AuditEventsLostFilter` counts these lines, and its alarm tells the operator.
pub const AUDIT_EVENT_LOST: &str =
    "audit event of a configuration change neither queued nor stored";

/// How long storing an audit event the events queue refused may take, inside the request:
/// room for the project's note and a retried put (each attempt cut at 5 s).
const STORE_TIME: std::time::Duration = std::time::Duration::from_secs(12);

impl<P: Ports> Api<P> {
    /// Puts an audit event about a configuration change on the events queue, like any other.
    /// The change is made by then: should the queue refuse the event, it is stored directly,
    /// as capture stores one, rather than lost.
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
        let Err(e) = self.send(&self.settings.events_queue_url, &event).await else {
            return;
        };
        tracing::warn!(organization_id = org, project_id = project, action = change.action, error = %e, "audit event of a configuration change not queued; stored directly");
        let deadline = tokio::time::Instant::now() + STORE_TIME;
        let stored = tokio::time::timeout_at(deadline, self.store_directly(event.event, deadline));
        let error = match stored.await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(_) => "storing it took too long (it may have landed)".to_owned(),
        };
        tracing::error!(
            organization_id = org,
            project_id = project,
            action = change.action,
            error,
            "{AUDIT_EVENT_LOST}"
        );
    }

    /// Stores an audit event as capture does: its project noted, then the event, under an id
    /// of its own. Written as capture writes a claimed one, one item on condition: nothing
    /// stored is overwritten, and the api's role may put an item, not write in batches.
    async fn store_directly(
        &self,
        event: serde_json::Value,
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        let event = AuditEvent::from_value(event).map_err(|e| e.to_string())?;
        let id = audit_log::store::new_message_id();
        let stored = StoredEvent::new(&id, &event, self.settings.retention)
            .map_err(|e| e.to_string())?
            .claimed();
        let project = (
            event.organization_id().to_owned(),
            event.project_id().to_owned(),
        );
        self.configs
            .note(&[note_for(project, stored.expires_at)])
            .await
            .map_err(|unnoted| unnoted.error.to_string())?;
        match self.events.put_events(vec![stored], deadline).await.pop() {
            None => Ok(()),
            Some(failure) => Err(failure.reason.to_string()),
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
