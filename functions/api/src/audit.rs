//! The audit events the api writes about itself: who changed a project's streaming, and the
//! Test connection event.

use crate::Api;
use crate::request::Caller;
use audit_log::clock::seconds_text;
use audit_log::streaming::StreamingConfig;
use serde_json::json;
use time::OffsetDateTime;

impl Api {
    /// Puts an audit event about a configuration change on the events queue, like any other.
    pub(crate) async fn audit(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        action: &str,
        description: &str,
        config: Option<&StreamingConfig>,
    ) {
        let event = configuration_event(
            caller,
            org,
            project,
            action,
            description,
            config,
            self.clock.now(),
        );
        if let Err(e) = self.send(&self.settings.events_queue_url, &event).await {
            tracing::error!(
                organization_id = org,
                project_id = project,
                action,
                error = %e,
                "audit event of a configuration change not sent"
            );
        }
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
    action: &str,
    description: &str,
    config: Option<&StreamingConfig>,
    now: OffsetDateTime,
) -> serde_json::Value {
    let mut event = json!({
        "status": "OK",
        "action": action,
        "description": description,
        "organization_id": org,
        "project_id": project,
        "timestamp": seconds_text(now),
        "actor": actor(caller),
    });
    if let Some(c) = config {
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
                "update",
                "Updated streaming configuration",
                None,
                OffsetDateTime::now_utc(),
            );
            let parsed = AuditEvent::from_value(event).unwrap();
            assert_eq!(parsed.description(), "Updated streaming configuration");
        }
    }
}
