//! The audit-log service's domain: the audit event, its validation and its storage.
//! The capture, stream and api functions are thin shells around this library.

pub mod clock;
pub mod compression;
pub mod credentials;
pub mod destination;
pub mod event;
#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;
pub mod id;
pub mod lambda_event;
pub mod lane;
pub mod logging;
pub mod message;
pub mod retry;
pub mod sdk;
pub mod search;
pub mod settings;
pub mod store;
pub mod streaming;

pub use event::{Action, ActorType, AuditEvent, EventError, Status};
pub use settings::{Retention, SettingsError};
