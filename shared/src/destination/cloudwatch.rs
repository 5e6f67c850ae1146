//! CloudWatch Logs in the customer's account: the service assumes the customer's role with the
//! organization's External ID, creates its log group and streams when they are missing, and
//! writes batches cut by `PutLogEvents`' limits. What is retried is decided in `put`.
//!
//! Timestamp policy: CloudWatch refuses events more than 14 days old or 2 hours ahead. Such an
//! event is written with the delivery time as its timestamp; its message (the original JSON)
//! still carries its own `timestamp`. Nothing is dropped for its age.

use super::{CloudWatchSettings, DeliveryError, Failures};
use crate::event::AuditEvent;
use crate::retry::Backoff;
use aws_config::SdkConfig;
use aws_credential_types::Credentials as AwsCredentials;
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_sdk_cloudwatchlogs::Client as LogsClient;
use aws_sdk_cloudwatchlogs::config::{IdentityCache, Region};
use aws_sdk_cloudwatchlogs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use time::OffsetDateTime;
use tokio::time::{Instant, timeout_at};

/// `PutLogEvents` limits.
pub const MAX_BATCH_EVENTS: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 1_048_576;
pub const EVENT_OVERHEAD_BYTES: usize = 26;
pub const MAX_BATCH_SPAN: Duration = Duration::from_secs(24 * 3600);
/// How far back and ahead CloudWatch accepts timestamps, less a margin for clock skew.
pub const MAX_AGE: Duration = Duration::from_secs(14 * 24 * 3600 - 3600);
pub const MAX_AHEAD: Duration = Duration::from_secs(2 * 3600 - 300);

/// Credentials of the customer's role are renewed this long before they expire.
const CREDENTIALS_BUFFER: Duration = Duration::from_secs(300);

/// Log group of real events, under the operator's prefix.
pub fn events_log_group(prefix: &str) -> String {
    format!("{}/packer/audit-logs", prefix.trim_end_matches('/'))
}

/// Log group of "Test connection" events.
pub fn test_log_group(prefix: &str) -> String {
    format!("{}/packer/audit-logs-test", prefix.trim_end_matches('/'))
}

/// CloudWatch forbids `:` and `*` in stream names.
const STREAM_ESCAPES: &AsciiSet = &CONTROLS.add(b':').add(b'*').add(b'%');

/// One log stream per project.
pub fn log_stream(project_id: &str) -> String {
    utf8_percent_encode(project_id, STREAM_ESCAPES).to_string()
}

/// One `PutLogEvents` request's events, sorted by time, with the positions they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub positions: Vec<usize>,
    pub events: Vec<InputLogEvent>,
}

impl Batch {
    pub fn bytes(&self) -> usize {
        self.events
            .iter()
            .map(|e| e.message.len() + EVENT_OVERHEAD_BYTES)
            .sum()
    }
}

/// The timestamp an event is written with (see the module's policy).
pub fn log_timestamp(event: &AuditEvent, now: OffsetDateTime) -> OffsetDateTime {
    let t = event.timestamp();
    if now - t > MAX_AGE || t - now > MAX_AHEAD {
        now
    } else {
        t
    }
}

/// Sorts events by timestamp and cuts them into requests within the limits. An event too large
/// for a request on its own is reported, never truncated.
pub fn batches(events: &[AuditEvent], now: OffsetDateTime) -> (Vec<Batch>, Failures) {
    let mut timed: Vec<(usize, i64)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                i,
                (log_timestamp(e, now).unix_timestamp_nanos() / 1_000_000) as i64,
            )
        })
        .collect();
    timed.sort_by_key(|&(i, ms)| (ms, i));
    let span_ms = MAX_BATCH_SPAN.as_millis() as i64;
    let mut out: Vec<Batch> = Vec::new();
    let mut failures = Vec::new();
    let mut current = Batch {
        positions: Vec::new(),
        events: Vec::new(),
    };
    let mut bytes = 0;
    for (position, ms) in timed {
        let message = events[position].to_compact_json();
        let size = message.len() + EVENT_OVERHEAD_BYTES;
        if size > MAX_BATCH_BYTES {
            failures.push((
                position,
                DeliveryError::Rejected(format!(
                    "the event is {} bytes, over CloudWatch Logs' {} -byte limit for one event",
                    message.len(),
                    MAX_BATCH_BYTES - EVENT_OVERHEAD_BYTES
                )),
            ));
            continue;
        }
        let first = current.events.first().map(|e| e.timestamp);
        if first.is_some_and(|first| {
            current.events.len() == MAX_BATCH_EVENTS
                || bytes + size > MAX_BATCH_BYTES
                || ms - first > span_ms
        }) {
            out.push(std::mem::replace(
                &mut current,
                Batch {
                    positions: Vec::new(),
                    events: Vec::new(),
                },
            ));
            bytes = 0;
        }
        bytes += size;
        current.positions.push(position);
        current.events.push(
            InputLogEvent::builder()
                .timestamp(ms)
                .message(message)
                .build()
                .expect("timestamp and message are set"),
        );
    }
    if !current.events.is_empty() {
        out.push(current);
    }
    (out, failures)
}

/// The customer's role, assumed with the organization's External ID. The SDK's identity cache
/// in front of it keeps the credentials until shortly before they expire.
#[derive(Clone)]
pub struct CustomerRole {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    external_id: SecretString,
    session_name: String,
}

impl std::fmt::Debug for CustomerRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerRole")
            .field("role_arn", &self.role_arn)
            .field("session_name", &self.session_name)
            .finish_non_exhaustive()
    }
}

/// Why the customer's role could not be assumed, carried inside the SDK's credentials error.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RoleRefused {
    pub retryable: bool,
    pub message: String,
}

impl CustomerRole {
    pub fn new(
        sts: aws_sdk_sts::Client,
        role_arn: &str,
        external_id: SecretString,
        organization_id: &str,
    ) -> Self {
        Self {
            sts,
            role_arn: role_arn.to_owned(),
            external_id,
            session_name: session_name(organization_id),
        }
    }

    async fn assume(&self) -> Result<AwsCredentials, CredentialsError> {
        let out = self
            .sts
            .assume_role()
            .role_arn(&self.role_arn)
            .external_id(self.external_id.expose_secret())
            .role_session_name(&self.session_name)
            .send()
            .await
            .map_err(|e| {
                let permanent = |message: String| RoleRefused {
                    retryable: false,
                    message,
                };
                let refused = match e.as_service_error().and_then(|s| s.code()) {
                    None => RoleRefused {
                        retryable: true,
                        message: "STS did not answer while assuming the customer's role".into(),
                    },
                    Some("AccessDenied" | "AccessDeniedException") => permanent(format!(
                        "could not assume {}: its trust policy must allow the service's AWS \
                         account with the organization's External ID (see GET /streaming)",
                        self.role_arn
                    )),
                    Some(
                        "Throttling"
                        | "ThrottlingException"
                        | "InternalFailure"
                        | "ServiceUnavailable",
                    ) => RoleRefused {
                        retryable: true,
                        message: "STS was busy while assuming the customer's role".into(),
                    },
                    Some(code) => permanent(format!("could not assume {} ({code})", self.role_arn)),
                };
                CredentialsError::provider_error(refused)
            })?;
        let c = out.credentials.ok_or_else(|| {
            CredentialsError::provider_error(RoleRefused {
                retryable: true,
                message: "STS returned no credentials".into(),
            })
        })?;
        let expires = std::time::SystemTime::try_from(c.expiration).ok();
        Ok(AwsCredentials::new(
            c.access_key_id,
            c.secret_access_key,
            Some(c.session_token),
            expires,
            "CustomerRole",
        ))
    }
}

impl ProvideCredentials for CustomerRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(self.assume())
    }
}

/// `[\w+=,.@-]{2,64}`, naming the organization so the customer's CloudTrail shows who wrote.
fn session_name(organization_id: &str) -> String {
    let clean: String = organization_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "+=,.@-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = format!("audit-log-{clean}");
    name.truncate(64);
    name
}

/// Writes to customers' CloudWatch Logs. Clients (and with them the assumed-role credentials)
/// are kept per organization, role and region for the life of the container (a clone shares
/// them).
#[derive(Clone)]
pub struct CloudWatch {
    base: SdkConfig,
    sts: aws_sdk_sts::Client,
    log_group_prefix: String,
    clients: moka::sync::Cache<(String, String, String), LogsClient>,
    backoff: Backoff,
}

impl CloudWatch {
    pub fn new(base: &SdkConfig, log_group_prefix: impl Into<String>) -> Self {
        Self {
            base: base.clone(),
            sts: aws_sdk_sts::Client::new(base),
            log_group_prefix: log_group_prefix.into(),
            clients: moka::sync::Cache::builder().max_capacity(1_000).build(),
            backoff: Backoff::default(),
        }
    }

    /// Uses this STS client to assume roles (tests hand in a mocked one).
    pub fn with_sts(mut self, sts: aws_sdk_sts::Client) -> Self {
        self.sts = sts;
        self
    }

    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    pub fn log_group_prefix(&self) -> &str {
        &self.log_group_prefix
    }

    fn client(
        &self,
        organization_id: &str,
        settings: &CloudWatchSettings,
        external_id: &SecretString,
    ) -> LogsClient {
        let key = (
            organization_id.to_owned(),
            settings.role_arn.clone(),
            settings.region.clone(),
        );
        let role = CustomerRole::new(
            self.sts.clone(),
            &settings.role_arn,
            external_id.clone(),
            organization_id,
        );
        self.clients.get_with(key, || {
            let config = aws_sdk_cloudwatchlogs::config::Builder::from(&self.base)
                .region(Region::new(settings.region.clone()))
                .credentials_provider(role)
                .identity_cache(
                    IdentityCache::lazy()
                        .buffer_time(CREDENTIALS_BUFFER)
                        .build(),
                )
                .build();
            LogsClient::from_conf(config)
        })
    }

    /// Forgets a role's client, so the next delivery assumes the role again (after the
    /// configuration changed, or the role was refused).
    pub fn forget(&self, organization_id: &str, settings: &CloudWatchSettings) {
        self.clients.invalidate(&(
            organization_id.to_owned(),
            settings.role_arn.clone(),
            settings.region.clone(),
        ));
    }

    /// Delivers a project's events to `<prefix>/packer/audit-logs`.
    pub async fn deliver(
        &self,
        organization_id: &str,
        project_id: &str,
        settings: &CloudWatchSettings,
        external_id: &SecretString,
        events: &[AuditEvent],
        deadline: Instant,
    ) -> Failures {
        let group = events_log_group(&self.log_group_prefix);
        self.write(
            organization_id,
            project_id,
            settings,
            external_id,
            &group,
            events,
            deadline,
        )
        .await
    }

    /// Writes events to a log group of the customer's account, in as few requests as the limits
    /// allow.
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        &self,
        organization_id: &str,
        project_id: &str,
        settings: &CloudWatchSettings,
        external_id: &SecretString,
        group: &str,
        events: &[AuditEvent],
        deadline: Instant,
    ) -> Failures {
        let client = self.client(organization_id, settings, external_id);
        let failures = self
            .write_with(&client, group, &log_stream(project_id), events, deadline)
            .await;
        if failures.iter().any(|(_, e)| !e.is_retryable()) {
            // A refused role or policy may be fixed by the customer at any time: assume again.
            self.forget(organization_id, settings);
        }
        failures
    }

    /// Writes events with a given client: the whole write path but for choosing the role.
    pub async fn write_with(
        &self,
        client: &LogsClient,
        group: &str,
        stream: &str,
        events: &[AuditEvent],
        deadline: Instant,
    ) -> Failures {
        let (batches, mut failures) = batches(events, OffsetDateTime::now_utc());
        let mut batches = batches.into_iter();
        while let Some(batch) = batches.next() {
            let positions = batch.positions.clone();
            match self.put(client, group, stream, batch, deadline).await {
                Ok(rejected) => failures.extend(rejected),
                Err(error) => {
                    failures.extend(positions.into_iter().map(|p| (p, error.clone())));
                    // The rest would meet the same refusal or the same spent deadline.
                    if !error.is_retryable() || Instant::now() >= deadline {
                        for rest in batches.by_ref() {
                            failures.extend(rest.positions.into_iter().map(|p| (p, error.clone())));
                        }
                    }
                }
            }
        }
        failures
    }

    /// One `PutLogEvents`, creating the group and stream on first use and retrying throttling
    /// and outages until `deadline`. Returns the events CloudWatch rejected inside a success.
    async fn put(
        &self,
        client: &LogsClient,
        group: &str,
        stream: &str,
        batch: Batch,
        deadline: Instant,
    ) -> Result<Failures, DeliveryError> {
        let mut attempt = 0;
        let mut created = false;
        let mut last_problem: Option<String> = None;
        loop {
            let call = client
                .put_log_events()
                .log_group_name(group)
                .log_stream_name(stream)
                .set_log_events(Some(batch.events.clone()))
                .send();
            let problem = match timeout_at(deadline, call).await {
                Err(_) => {
                    return Err(DeliveryError::Retryable(match last_problem {
                        Some(problem) => format!(
                            "{problem}; gave up at the delivery's deadline after {attempt} attempts"
                        ),
                        None => {
                            "CloudWatch Logs did not answer before the delivery's deadline".into()
                        }
                    }));
                }
                Ok(Ok(out)) => return Ok(rejected(&batch, out.rejected_log_events_info())),
                Ok(Err(err)) => match classify(&err) {
                    Problem::Missing if !created => {
                        // First write to a new stream: create it, then write again. Steady
                        // state makes no create or describe call at all. A creation racing
                        // another writer (or a busy service) backs off like any other write.
                        match create(client, group, stream, deadline).await {
                            Ok(()) => {
                                created = true;
                                continue;
                            }
                            Err(DeliveryError::Retryable(message)) => message,
                            Err(refused) => return Err(refused),
                        }
                    }
                    Problem::Missing => {
                        return Err(DeliveryError::Retryable(format!(
                            "log group {group} or stream {stream} disappeared while writing"
                        )));
                    }
                    Problem::Transient(message) => message,
                    Problem::Refused(error) => return Err(error),
                },
            };
            attempt += 1;
            if !self.backoff.wait(attempt, deadline).await {
                return Err(DeliveryError::Retryable(format!(
                    "{problem}; gave up after {attempt} attempts"
                )));
            }
            last_problem = Some(problem);
        }
    }
}

/// Creates the log group and stream; one that already exists is success.
async fn create(
    client: &LogsClient,
    group: &str,
    stream: &str,
    deadline: Instant,
) -> Result<(), DeliveryError> {
    let group_created = timeout_at(
        deadline,
        client.create_log_group().log_group_name(group).send(),
    )
    .await;
    check_created(group_created, "log group", group)?;
    let stream_created = timeout_at(
        deadline,
        client
            .create_log_stream()
            .log_group_name(group)
            .log_stream_name(stream)
            .send(),
    )
    .await;
    check_created(stream_created, "log stream", stream)
}

fn check_created<T, E>(
    result: Result<
        Result<T, SdkError<E, aws_sdk_cloudwatchlogs::config::http::HttpResponse>>,
        tokio::time::error::Elapsed,
    >,
    what: &str,
    name: &str,
) -> Result<(), DeliveryError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Err(_) => Err(DeliveryError::Retryable(format!(
            "CloudWatch Logs did not answer while creating {what} {name}"
        ))),
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err))
            if err.as_service_error().and_then(|e| e.code())
                == Some("ResourceAlreadyExistsException") =>
        {
            Ok(())
        }
        Ok(Err(err)) => match classify(&err) {
            Problem::Transient(m) => Err(DeliveryError::Retryable(m)),
            Problem::Refused(e) => Err(e),
            Problem::Missing => Err(DeliveryError::Retryable(format!(
                "could not create {what} {name}"
            ))),
        },
    }
}

enum Problem {
    /// The log group or stream does not exist yet.
    Missing,
    Transient(String),
    Refused(DeliveryError),
}

fn classify<E>(err: &SdkError<E, aws_sdk_cloudwatchlogs::config::http::HttpResponse>) -> Problem
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    // A refused AssumeRole surfaces from inside the SDK's credentials resolution.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if let Some(refused) = e.downcast_ref::<RoleRefused>() {
            return if refused.retryable {
                Problem::Transient(refused.message.clone())
            } else {
                Problem::Refused(DeliveryError::Refused(refused.message.clone()))
            };
        }
        source = e.source();
    }
    match err {
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ResourceNotFoundException") => Problem::Missing,
            // OperationAborted: another writer is creating the same group or stream right now
            // (two batches of a new customer at once); the next attempt finds it made.
            Some(
                code @ ("ThrottlingException"
                | "ServiceUnavailableException"
                | "ServiceUnavailable"
                | "LimitExceededException"
                | "OperationAbortedException"),
            ) => Problem::Transient(format!("CloudWatch Logs was busy ({code})")),
            // Any answer of the 5xx family is CloudWatch's trouble, whatever it is called.
            code if service.raw().status().is_server_error() => Problem::Transient(format!(
                "CloudWatch Logs failed ({})",
                code.unwrap_or("unknown error")
            )),
            Some(code @ ("AccessDeniedException" | "UnrecognizedClientException")) => {
                Problem::Refused(DeliveryError::Refused(format!(
                    "the customer's role may not write to CloudWatch Logs ({code}): attach the \
                     policy from infra/ to the role"
                )))
            }
            code => Problem::Refused(DeliveryError::Refused(format!(
                "CloudWatch Logs refused the events ({})",
                code.unwrap_or("unknown error")
            ))),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Problem::Transient("CloudWatch Logs did not answer".into())
        }
        _ => Problem::Refused(DeliveryError::Refused(
            "the request to CloudWatch Logs could not be built".into(),
        )),
    }
}

/// Positions CloudWatch rejected inside a successful answer: they are not delivered.
fn rejected(
    batch: &Batch,
    info: Option<&aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo>,
) -> Failures {
    let Some(info) = info else {
        return Vec::new();
    };
    let n = batch.positions.len();
    let index = |i: i32| usize::try_from(i).unwrap_or(0);
    let mut failures = Vec::new();
    let mut mark = |range: std::ops::Range<usize>, why: &str| {
        for i in range {
            failures.push((
                batch.positions[i],
                DeliveryError::Rejected(format!("CloudWatch Logs rejected the event as {why}")),
            ));
        }
    };
    if let Some(end) = info.too_old_log_event_end_index() {
        mark(0..(index(end) + 1).min(n), "too old");
    }
    if let Some(end) = info.expired_log_event_end_index() {
        mark(
            0..(index(end) + 1).min(n),
            "older than the log group's retention",
        );
    }
    if let Some(start) = info.too_new_log_event_start_index() {
        mark(index(start).min(n)..n, "too far in the future");
    }
    failures.sort_by_key(|f| f.0);
    failures.dedup_by_key(|f| f.0);
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::SEED_EVENTS;
    use proptest::prelude::*;
    use serde_json::json;

    fn at(ts: OffsetDateTime, pad: usize) -> AuditEvent {
        let mut v: serde_json::Value = serde_json::from_str(SEED_EVENTS[0].1).unwrap();
        v["timestamp"] = json!(
            ts.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        );
        v["padding"] = json!("z".repeat(pad));
        AuditEvent::from_value(v).unwrap()
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-11-21 12:00 UTC);

    #[test]
    fn batches_are_sorted_by_time_and_remember_positions() {
        let events = vec![
            at(NOW - Duration::from_secs(30), 0),
            at(NOW - Duration::from_secs(90), 0),
            at(NOW - Duration::from_secs(60), 0),
        ];
        let (batches, failures) = batches(&events, NOW);
        assert!(failures.is_empty());
        assert_eq!(batches.len(), 1);
        assert_eq!(batches[0].positions, [1, 2, 0]);
        let times: Vec<i64> = batches[0].events.iter().map(|e| e.timestamp).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(batches[0].events[0].message, events[1].to_compact_json());
    }

    #[test]
    fn events_outside_cloudwatchs_window_are_written_at_delivery_time() {
        let old = at(NOW - Duration::from_secs(15 * 86_400), 0);
        let ahead = at(NOW + Duration::from_secs(3 * 3600), 0);
        let fine = at(NOW - Duration::from_secs(13 * 86_400), 0);
        assert_eq!(log_timestamp(&old, NOW), NOW);
        assert_eq!(log_timestamp(&ahead, NOW), NOW);
        assert_eq!(log_timestamp(&fine, NOW), fine.timestamp());
        let (batches, _) = batches(std::slice::from_ref(&old), NOW);
        assert_eq!(
            batches[0].events[0].message,
            old.to_compact_json(),
            "the original time stays in the message"
        );
    }

    #[test]
    fn a_batch_never_spans_more_than_a_day() {
        let events: Vec<_> = (0..10)
            .map(|h| at(NOW - Duration::from_secs(h * 5 * 3600), 0))
            .collect();
        let (batches, _) = batches(&events, NOW);
        for b in &batches {
            let first = b.events.first().unwrap().timestamp;
            let last = b.events.last().unwrap().timestamp;
            assert!(last - first <= MAX_BATCH_SPAN.as_millis() as i64);
        }
        assert!(batches.len() >= 2);
    }

    #[test]
    fn ten_thousand_one_kilobyte_events_make_at_most_eleven_requests() {
        let one = at(NOW - Duration::from_secs(60), 0);
        let pad = 1024usize.saturating_sub(one.to_compact_json().len());
        let event = at(NOW - Duration::from_secs(60), pad);
        assert_eq!(event.to_compact_json().len(), 1024);
        let events = vec![event; 10_000];
        let (batches, failures) = batches(&events, NOW);
        assert!(failures.is_empty());
        assert!(batches.len() <= 11, "{}", batches.len());
    }

    #[test]
    fn stream_names_escape_what_cloudwatch_forbids() {
        assert_eq!(log_stream("a98c3c31-5760"), "a98c3c31-5760");
        assert_eq!(log_stream("a:b*c"), "a%3Ab%2Ac");
        assert_eq!(
            events_log_group("/hashicorp"),
            "/hashicorp/packer/audit-logs"
        );
        assert_eq!(
            test_log_group("/hashicorp/"),
            "/hashicorp/packer/audit-logs-test"
        );
    }

    #[test]
    fn session_names_fit_sts_rules() {
        let name = session_name("77f447d4-def0-46f2-bf09-6850d36745ed");
        assert_eq!(name, "audit-log-77f447d4-def0-46f2-bf09-6850d36745ed");
        let odd = session_name(&"é/ ".repeat(40));
        assert!(odd.len() <= 64);
        assert!(
            odd.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+=,.@-_".contains(c))
        );
    }

    #[test]
    fn rejected_ranges_name_exactly_the_rejected_positions() {
        let batch = Batch {
            positions: vec![7, 3, 9, 1, 4],
            events: Vec::new(),
        };
        let info = aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo::builder()
            .too_old_log_event_end_index(1)
            .too_new_log_event_start_index(4)
            .build();
        let failed: Vec<usize> = rejected(&batch, Some(&info))
            .into_iter()
            .map(|f| f.0)
            .collect();
        assert_eq!(failed, [3, 4, 7]);
        assert!(rejected(&batch, None).is_empty());
    }

    mod sdk {
        use super::*;

        use aws_sdk_cloudwatchlogs::operation::create_log_stream::CreateLogStreamOutput;
        use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsOutput;
        use aws_sdk_cloudwatchlogs::types::RejectedLogEventsInfo;
        use aws_smithy_mocks::{RuleMode, mock, mock_client};
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        use aws_smithy_types::body::SdkBody;

        fn recent(n: usize) -> Vec<AuditEvent> {
            let now = OffsetDateTime::now_utc();
            (0..n)
                .map(|i| at(now - Duration::from_secs(600 + i as u64), 0))
                .collect()
        }

        fn fast(cw: CloudWatch) -> CloudWatch {
            cw.with_backoff(Backoff {
                base: Duration::from_millis(1),
                max: Duration::from_millis(5),
            })
        }

        fn base() -> SdkConfig {
            SdkConfig::builder()
                .region(Region::new("us-east-1"))
                .behavior_version(aws_config::BehaviorVersion::latest())
                .build()
        }

        fn logs_error(status: u16, kind: &str) -> Response {
            Response::new(
                StatusCode::try_from(status).unwrap(),
                SdkBody::from(format!(
                    r#"{{"__type":"{kind}","message":"from the test"}}"#
                )),
            )
        }

        fn soon() -> Instant {
            Instant::now() + Duration::from_secs(10)
        }

        #[tokio::test]
        async fn a_role_that_refuses_to_be_assumed_fails_every_event_for_good_and_says_why() {
            let refused = mock!(aws_sdk_sts::Client::assume_role).then_http_response(|| {
                Response::new(
                    StatusCode::try_from(403).unwrap(),
                    SdkBody::from(
                        "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code>\
                         <Message>not authorized to perform sts:AssumeRole</Message></Error>\
                         <RequestId>r</RequestId></ErrorResponse>",
                    ),
                )
            });
            let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&refused]);
            let cw = fast(CloudWatch::new(&base(), "/hashicorp").with_sts(sts));
            let settings = CloudWatchSettings {
                role_arn: "arn:aws:iam::111111111111:role/hcp-log-streaming".into(),
                region: "us-west-2".into(),
            };
            let events = recent(3);
            let failures = cw
                .deliver(
                    "org",
                    "proj",
                    &settings,
                    &SecretString::from("ext-id-sentinel"),
                    &events,
                    soon(),
                )
                .await;
            let mut failed: Vec<usize> = failures.iter().map(|f| f.0).collect();
            failed.sort();
            assert_eq!(failed, [0, 1, 2]);
            for (_, error) in &failures {
                assert!(!error.is_retryable(), "{error}");
                assert!(error.message().contains("trust policy"), "{error}");
                assert!(
                    error
                        .message()
                        .contains("arn:aws:iam::111111111111:role/hcp-log-streaming")
                );
                assert!(!error.message().contains("ext-id-sentinel"));
            }
            assert_eq!(refused.num_calls(), 1, "a refusal is not retried in a loop");
        }

        #[tokio::test]
        async fn throttled_writes_are_retried_until_they_pass() {
            let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
                .sequence()
                .http_response(|| logs_error(400, "ThrottlingException"))
                .times(4)
                .output(|| PutLogEventsOutput::builder().build())
                .build();
            let client = mock_client!(aws_sdk_cloudwatchlogs, RuleMode::Sequential, [&put]);
            let cw = fast(CloudWatch::new(&base(), "/hashicorp"));
            let failures = cw.write_with(&client, "g", "s", &recent(5), soon()).await;
            assert_eq!(failures, vec![]);
            assert_eq!(put.num_calls(), 5);
        }

        #[tokio::test]
        async fn throttling_that_outlasts_the_deadline_is_a_retryable_failure() {
            let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
                .then_http_response(|| logs_error(400, "ThrottlingException"));
            let client = mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, [&put]);
            let cw = fast(CloudWatch::new(&base(), "/hashicorp"));
            let deadline = Instant::now() + Duration::from_millis(200);
            let failures = cw.write_with(&client, "g", "s", &recent(2), deadline).await;
            assert_eq!(failures.len(), 2);
            assert!(failures.iter().all(|(_, e)| e.is_retryable()));
        }

        #[tokio::test]
        async fn events_rejected_inside_a_success_are_failures_not_deliveries() {
            let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events).then_output(|| {
                PutLogEventsOutput::builder()
                    .rejected_log_events_info(
                        RejectedLogEventsInfo::builder()
                            .too_old_log_event_end_index(0)
                            .too_new_log_event_start_index(3)
                            .build(),
                    )
                    .build()
            });
            let client = mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, [&put]);
            let cw = fast(CloudWatch::new(&base(), "/hashicorp"));
            // Sorted by time, the oldest (position 3) comes first and the newest (0, 1) last.
            let events = recent(4);
            let failures = cw.write_with(&client, "g", "s", &events, soon()).await;
            let mut failed: Vec<usize> = failures.iter().map(|f| f.0).collect();
            failed.sort();
            assert_eq!(failed, [0, 3]);
            assert!(failures.iter().all(|(_, e)| !e.is_retryable()));
            assert_eq!(put.num_calls(), 1);
        }

        #[tokio::test]
        async fn a_missing_group_and_stream_are_created_once_then_written() {
            let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
                .sequence()
                .http_response(|| logs_error(400, "ResourceNotFoundException"))
                .output(|| PutLogEventsOutput::builder().build())
                .build();
            let group = mock!(aws_sdk_cloudwatchlogs::Client::create_log_group)
                .then_http_response(|| logs_error(400, "ResourceAlreadyExistsException"));
            let stream = mock!(aws_sdk_cloudwatchlogs::Client::create_log_stream)
                .then_output(|| CreateLogStreamOutput::builder().build());
            let client = mock_client!(
                aws_sdk_cloudwatchlogs,
                RuleMode::MatchAny,
                [&put, &group, &stream]
            );
            let cw = fast(CloudWatch::new(&base(), "/hashicorp"));
            let failures = cw.write_with(&client, "g", "s", &recent(2), soon()).await;
            assert_eq!(failures, vec![]);
            assert_eq!(
                (put.num_calls(), group.num_calls(), stream.num_calls()),
                (2, 1, 1)
            );
        }

        #[tokio::test]
        async fn a_creation_racing_another_writer_and_unknown_5xx_answers_are_retried() {
            // Two batches of a new customer at once: the other writer is creating the group
            // (OperationAborted) and the service has a bad moment (an unnamed 5xx).
            let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
                .sequence()
                .http_response(|| logs_error(400, "ResourceNotFoundException"))
                .times(2)
                .http_response(|| logs_error(502, "BadGatewayOfSomeKind"))
                .output(|| PutLogEventsOutput::builder().build())
                .build();
            let group = mock!(aws_sdk_cloudwatchlogs::Client::create_log_group)
                .sequence()
                .http_response(|| logs_error(400, "OperationAbortedException"))
                .http_response(|| logs_error(400, "ResourceAlreadyExistsException"))
                .build();
            let stream = mock!(aws_sdk_cloudwatchlogs::Client::create_log_stream)
                .then_http_response(|| logs_error(400, "ResourceAlreadyExistsException"));
            let client = mock_client!(
                aws_sdk_cloudwatchlogs,
                RuleMode::MatchAny,
                [&put, &group, &stream]
            );
            let cw = fast(CloudWatch::new(&base(), "/hashicorp"));
            let failures = cw.write_with(&client, "g", "s", &recent(2), soon()).await;
            assert_eq!(failures, vec![]);
            assert_eq!(put.num_calls(), 4);
            assert_eq!(group.num_calls(), 2);
        }

        #[test]
        fn operation_aborted_and_any_5xx_are_transient_and_access_denied_is_not() {
            use aws_sdk_cloudwatchlogs::operation::put_log_events::PutLogEventsError;
            let error = |status: u16, code: &str| {
                let meta = aws_sdk_cloudwatchlogs::error::ErrorMetadata::builder()
                    .code(code)
                    .build();
                SdkError::service_error(
                    PutLogEventsError::generic(meta),
                    aws_smithy_runtime_api::http::Response::new(
                        StatusCode::try_from(status).unwrap(),
                        SdkBody::empty(),
                    ),
                )
            };
            assert!(matches!(
                classify(&error(400, "OperationAbortedException")),
                Problem::Transient(_)
            ));
            assert!(matches!(
                classify(&error(503, "Whatever")),
                Problem::Transient(_)
            ));
            assert!(matches!(
                classify(&error(500, "InternalFailure")),
                Problem::Transient(_)
            ));
            assert!(matches!(
                classify(&error(400, "AccessDeniedException")),
                Problem::Refused(_)
            ));
            assert!(matches!(
                classify(&error(400, "InvalidParameterException")),
                Problem::Refused(_)
            ));
        }

        #[tokio::test]
        async fn ten_thousand_events_of_one_kilobyte_take_at_most_eleven_put_log_events() {
            let put = mock!(aws_sdk_cloudwatchlogs::Client::put_log_events)
                .match_requests(|r| {
                    let events = r.log_events();
                    events.len() <= MAX_BATCH_EVENTS
                        && events
                            .iter()
                            .map(|e| e.message().len() + EVENT_OVERHEAD_BYTES)
                            .sum::<usize>()
                            <= MAX_BATCH_BYTES
                })
                .then_output(|| PutLogEventsOutput::builder().build());
            let client = mock_client!(aws_sdk_cloudwatchlogs, RuleMode::MatchAny, [&put]);
            let cw = CloudWatch::new(&base(), "/hashicorp");
            let now = OffsetDateTime::now_utc() - Duration::from_secs(60);
            let one = at(now, 0);
            let event = at(now, 1024 - one.to_compact_json().len());
            assert_eq!(event.to_compact_json().len(), 1024);
            let failures = cw
                .write_with(&client, "g", "s", &vec![event; 10_000], soon())
                .await;
            assert_eq!(failures, vec![]);
            assert!(put.num_calls() <= 11, "{} calls", put.num_calls());
            assert!(put.num_calls() >= 10, "bytes alone need 10");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn no_request_exceeds_cloudwatchs_limits(
            specs in proptest::collection::vec((0u64..40 * 86_400, 0usize..300_000), 1..60)
        ) {
            let events: Vec<AuditEvent> = specs
                .iter()
                .map(|&(back, pad)| at(NOW - Duration::from_secs(back), pad))
                .collect();
            let (batches, failures) = batches(&events, NOW);
            let mut seen: Vec<usize> = failures.iter().map(|f| f.0).collect();
            for b in &batches {
                prop_assert!(!b.events.is_empty());
                prop_assert!(b.events.len() <= MAX_BATCH_EVENTS);
                prop_assert!(b.bytes() <= MAX_BATCH_BYTES);
                let first = b.events.first().unwrap().timestamp;
                let last = b.events.last().unwrap().timestamp;
                prop_assert!(last - first <= MAX_BATCH_SPAN.as_millis() as i64);
                prop_assert!(b.events.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));
                let now_ms = (NOW.unix_timestamp_nanos() / 1_000_000) as i64;
                prop_assert!(b.events.iter().all(|e| now_ms - e.timestamp <= MAX_AGE.as_millis() as i64));
                seen.extend(&b.positions);
            }
            seen.sort();
            prop_assert_eq!(seen, (0..events.len()).collect::<Vec<_>>());
        }
    }
}
