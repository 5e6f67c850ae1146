//! api: streaming configuration, "Test connection" and stored audit events, behind an API
//! Gateway HTTP API with a JWT authorizer. The caller's organization comes only from the
//! verified claim named by `ORGANIZATION_CLAIM`; it must be the path's organization.

pub mod cursor;
pub mod error;
pub mod input;
mod lanes;
pub mod request;
pub mod view;

use audit_log::AuditEvent;
use audit_log::credentials::{Credentials, CredentialsError, SecretStore};
use audit_log::destination::cloudwatch::CloudWatch;
use audit_log::destination::datadog::DatadogClient;
use audit_log::destination::{Destination, DestinationClients, Project};
use audit_log::settings::{SettingsError, required_env};
use audit_log::store::{EventTable, PageRequest};
use audit_log::streaming::{
    CONNECTION_TESTS, ConfigError, ConfigTable, NewConfig, REPLAYS_STARTED, Replay, ReplayState,
    StreamingConfig, TestRecord,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use cursor::Scope;
use error::ApiError;
use lambda_runtime::LambdaEvent;
use request::{Caller, IfMatch, Route, Target};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::time::Instant;
use view::{DestinationView, EventPage, TestResult, View};

pub const EVENTS_TABLE_ENV: &str = "EVENTS_TABLE_NAME";
pub const CONFIG_TABLE_ENV: &str = "CONFIG_TABLE_NAME";
pub const EVENTS_QUEUE_ENV: &str = "EVENTS_QUEUE_URL";
pub const REPLAY_QUEUE_ENV: &str = "REPLAY_QUEUE_URL";
pub const SECRET_PREFIX_ENV: &str = "SECRET_NAME_PREFIX";
pub const LOG_GROUP_PREFIX_ENV: &str = "LOG_GROUP_PREFIX";
pub const ORGANIZATION_CLAIM_ENV: &str = "ORGANIZATION_CLAIM";
pub const SERVICE_ACCOUNT_ENV: &str = "SERVICE_AWS_ACCOUNT_ID";
pub const DATADOG_ENDPOINT_OVERRIDE_ENV: &str = "DATADOG_ENDPOINT_OVERRIDE";
pub const LANE_QUEUE_ENV: &str = "LANE_QUEUE_URL";
/// What `template.yaml` gives the function. `DATADOG_ENDPOINT_OVERRIDE` is for local runs only.
pub const ENVIRONMENT: [&str; 9] = [
    EVENTS_TABLE_ENV,
    CONFIG_TABLE_ENV,
    EVENTS_QUEUE_ENV,
    REPLAY_QUEUE_ENV,
    SECRET_PREFIX_ENV,
    LOG_GROUP_PREFIX_ENV,
    ORGANIZATION_CLAIM_ENV,
    SERVICE_ACCOUNT_ENV,
    LANE_QUEUE_ENV,
];

pub const DEFAULT_ORGANIZATION_CLAIM: &str = "organization_id";
/// A PUT without `If-Match` that loses a race with another save tries again, up to this many
/// times in all, rather than answer 412 to a caller who set no condition: every round has a
/// winner, so this many writers at once all get through.
const SAVE_ATTEMPTS: usize = 10;
/// Connection tests listed by `GET /streaming/tests`.
pub const KEPT_TESTS: usize = 10;
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Bytes of events (or failures) per page, as the Lambda response carries them: it is capped at
/// 6 MB, and the rest of the page is small.
const PAGE_BYTES: usize = 5_000_000;
/// A connection test must answer well inside API Gateway's 30 seconds.
const TEST_BUDGET: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Settings {
    pub events_table: String,
    pub config_table: String,
    pub events_queue_url: String,
    pub replay_queue_url: String,
    pub lane_queue_url: String,
    pub secret_prefix: String,
    pub log_group_prefix: String,
    pub organization_claim: String,
    pub service_account_id: Option<String>,
    pub datadog_endpoint_override: Option<String>,
}

fn optional_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            events_table: required_env(EVENTS_TABLE_ENV)?,
            config_table: required_env(CONFIG_TABLE_ENV)?,
            events_queue_url: required_env(EVENTS_QUEUE_ENV)?,
            replay_queue_url: required_env(REPLAY_QUEUE_ENV)?,
            lane_queue_url: required_env(LANE_QUEUE_ENV)?,
            secret_prefix: required_env(SECRET_PREFIX_ENV)?,
            log_group_prefix: optional_env(LOG_GROUP_PREFIX_ENV)
                .unwrap_or_else(|| "/hashicorp".into()),
            organization_claim: optional_env(ORGANIZATION_CLAIM_ENV)
                .unwrap_or_else(|| DEFAULT_ORGANIZATION_CLAIM.into()),
            service_account_id: optional_env(SERVICE_ACCOUNT_ENV),
            datadog_endpoint_override: optional_env(DATADOG_ENDPOINT_OVERRIDE_ENV),
        })
    }
}

pub struct Api {
    settings: Settings,
    events: EventTable,
    configs: ConfigTable,
    secrets: SecretStore,
    sqs: aws_sdk_sqs::Client,
    destinations: DestinationClients,
    timers: audit_log::lane::timers::SqsTimers,
    lanes: audit_log::lane::Policy,
}

pub fn json_response(status: u16, body: &impl serde::Serialize) -> ApiGatewayV2httpResponse {
    let mut response = ApiGatewayV2httpResponse::default();
    response.status_code = i64::from(status);
    response.headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response.body = Some(Body::Text(serde_json::to_string(body).unwrap_or_default()));
    response
}

fn internal(context: &'static str) -> impl Fn(&dyn std::fmt::Display) -> ApiError {
    move |e| {
        tracing::error!(error = %e, context, "request failed");
        ApiError::internal()
    }
}

fn config_error(e: ConfigError) -> ApiError {
    match e {
        ConfigError::VersionMismatch { current } => ApiError::version_mismatch(current),
        other => internal("configuration table")(&other),
    }
}

fn credentials_error(e: CredentialsError) -> ApiError {
    internal("secrets")(&e)
}

impl Api {
    pub fn new(settings: Settings, aws: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        Self {
            events: EventTable::new(dynamodb.clone(), &settings.events_table),
            configs: ConfigTable::new(dynamodb, &settings.config_table),
            secrets: SecretStore::new(
                aws_sdk_secretsmanager::Client::new(aws),
                &settings.secret_prefix,
            ),
            sqs: aws_sdk_sqs::Client::new(aws),
            timers: audit_log::lane::timers::SqsTimers::new(
                aws_sdk_sqs::Client::new(aws),
                &settings.lane_queue_url,
            ),
            lanes: audit_log::lane::Policy::default(),
            destinations: DestinationClients {
                cloudwatch: CloudWatch::new(aws, &settings.log_group_prefix)
                    .with_service_account(settings.service_account_id.clone()),
                datadog: DatadogClient::new(settings.datadog_endpoint_override.clone()),
            },
            settings,
        }
    }

    /// Uses this STS client to assume customers' roles (tests hand in a mocked one).
    pub fn with_customer_sts(mut self, sts: aws_sdk_sts::Client) -> Self {
        self.destinations.cloudwatch = self.destinations.cloudwatch.with_sts(sts);
        self
    }

    pub fn with_datadog(mut self, datadog: DatadogClient) -> Self {
        self.destinations.datadog = datadog;
        self
    }

    pub async fn handle(
        &self,
        event: LambdaEvent<ApiGatewayV2httpRequest>,
    ) -> Result<ApiGatewayV2httpResponse, std::convert::Infallible> {
        Ok(self.respond(&event.payload).await)
    }

    /// Answers one request; every outcome, errors included, is a response.
    pub async fn respond(&self, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let started = std::time::Instant::now();
        let target = request::route(request);
        let (route, organization_id) = match &target {
            Ok(t) => (Some(t.route), Some(t.organization_id.clone())),
            Err(_) => (None, None),
        };
        let response = match target {
            Ok(target) => match self.dispatch(request, target).await {
                Ok(response) => response,
                Err(e) => e.into_response(),
            },
            Err(e) => e.into_response(),
        };
        tracing::info!(
            method = %request.request_context.http.method,
            route = ?route,
            organization_id,
            status = response.status_code,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "api request"
        );
        response
    }

    async fn dispatch(
        &self,
        request: &ApiGatewayV2httpRequest,
        target: Target,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let caller = request::caller(
            request,
            &self.settings.organization_claim,
            &target.organization_id,
        )?;
        let (org, project) = (&target.organization_id, &target.project_id);
        match target.route {
            Route::GetStreaming => {
                let config = self.configs.get(org, project).await.map_err(config_error)?;
                self.view(org, project, config.as_ref()).await
            }
            Route::PutStreaming => {
                let body = request::body(request)?;
                let input = input::destination(&body)?;
                let if_match = request::if_match(request)?;
                self.check_role_account(&input.destination).await?;
                self.put(&caller, org, project, &input, if_match).await
            }
            Route::DeleteStreaming => {
                let if_match = request::if_match(request)?;
                self.delete(&caller, org, project, if_match).await
            }
            Route::TestStreaming => {
                let body = request::body(request)?;
                self.test(&caller, org, project, &body).await
            }
            Route::PauseStreaming => self.pause(&caller, org, project).await,
            Route::ResumeStreaming => self.resume(&caller, org, project).await,
            Route::ListEvents => self.list(request, org, project).await,
            Route::ListFailures => self.failures(request, org, project).await,
            Route::StartReplay => {
                let body = request::body(request)?;
                self.start_replay(org, project, &body).await
            }
            Route::GetReplay => {
                let id = target.replay_id.as_deref().unwrap_or_default();
                let unknown = || ApiError::not_found("no replay of this project has that id");
                // Replay ids are 32 hex digits; anything else names none (and is no key).
                if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(unknown());
                }
                let replay = self
                    .configs
                    .replay(org, project, id)
                    .await
                    .map_err(config_error)?
                    .ok_or_else(unknown)?;
                Ok(json_response(200, &replay))
            }
            Route::ListTests => {
                let tests = self
                    .configs
                    .recent_tests(org, project, KEPT_TESTS)
                    .await
                    .map_err(config_error)?;
                Ok(json_response(200, &json!({"tests": tests})))
            }
        }
    }

    /// The AWS account customers trust: the setting, or the function's own account.
    async fn aws_account_id(&self) -> Result<String, ApiError> {
        self.destinations
            .cloudwatch
            .service_account()
            .id()
            .await
            .map_err(|e| internal("sts")(&e))
    }

    /// Counts one costly request of the organization: 429 with `Retry-After` over the limit.
    async fn rate_limit(
        &self,
        org: &str,
        limit: audit_log::streaming::RateLimit,
        now: OffsetDateTime,
    ) -> Result<(), ApiError> {
        match self.configs.take_slot(org, limit, now).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(retry_after)) => Err(ApiError::rate_limited(retry_after, limit)),
            Err(e) => Err(config_error(e)),
        }
    }

    /// A role in the service's own account could trust the account root without an External
    /// ID: the service would be a confused deputy. Refused before any call (and by IAM, through
    /// the template's `aws:ResourceAccount` condition).
    async fn check_role_account(&self, destination: &Destination) -> Result<(), ApiError> {
        let Destination::Cloudwatch(settings) = destination else {
            return Ok(());
        };
        if input::role_account(&settings.role_arn) == self.aws_account_id().await? {
            return Err(ApiError::bad_request(
                "invalid_field",
                "`cloudwatch.role_arn` must be a role in your own AWS account, not in the service's (the AWS ID that GET /streaming shows)",
            ));
        }
        Ok(())
    }

    async fn view(
        &self,
        org: &str,
        project: &str,
        config: Option<&StreamingConfig>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let external_id = self.configs.external_id(org).await.map_err(config_error)?;
        let view = View {
            organization_id: org.to_owned(),
            project_id: project.to_owned(),
            aws_account_id: self.aws_account_id().await?,
            external_id,
            destination: config.map(DestinationView::from),
            health: self.health(org, project, config).await?,
            version: config.map_or(0, |c| c.version),
            updated_at: config.map(|c| c.updated_at.clone()),
        };
        let mut response = json_response(200, &view);
        response.headers.insert(
            http::header::ETAG,
            http::HeaderValue::from_str(&format!("\"{}\"", view.version)).expect("digits"),
        );
        Ok(response)
    }

    async fn put(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        input: &input::DestinationInput,
        if_match: Option<IfMatch>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.put_once(caller, org, project, input, if_match).await? {
                Ok(response) => return Ok(response),
                Err(current) if if_match.is_some() || attempt == SAVE_ATTEMPTS => {
                    return Err(ApiError::version_mismatch(current));
                }
                Err(_) => {}
            }
        }
    }

    /// One try at a save: `Ok(Err(current))` when another save got in between the read and
    /// this one's conditional write. The credentials go to a new secret version that only
    /// becomes current once the configuration naming it is saved: a PUT that answers 412 or
    /// fails leaves the stored credentials exactly as they were.
    async fn put_once(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        input: &input::DestinationInput,
        if_match: Option<IfMatch>,
    ) -> Result<Result<ApiGatewayV2httpResponse, u64>, ApiError> {
        let current = self.configs.get(org, project).await.map_err(config_error)?;
        let current_version = current.as_ref().map_or(0, |c| c.version);
        if if_match.is_some_and(|m| !m.allows(current_version)) {
            return Err(ApiError::version_mismatch(current_version));
        }
        let (credentials, last4) = match &input.destination {
            Destination::Cloudwatch(c) => (
                Credentials::Cloudwatch {
                    role_arn: c.role_arn.clone(),
                    external_id: SecretString::from(
                        self.configs.external_id(org).await.map_err(config_error)?,
                    ),
                },
                None,
            ),
            Destination::Datadog(_) => {
                let key = match &input.api_key {
                    Some(key) => key.clone(),
                    None => {
                        self.saved_datadog_key(org, project, current.as_ref())
                            .await?
                    }
                };
                let last4 = key
                    .expose_secret()
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                (Credentials::Datadog { api_key: key }, Some(last4))
            }
        };
        let secret_version = self
            .secrets
            .stage(org, project, &credentials)
            .await
            .map_err(credentials_error)?;
        let new = NewConfig {
            name: input.name.clone(),
            destination: input.destination.clone(),
            api_key_last4: last4,
            secret_version: Some(secret_version.clone()),
        };
        let saved = match self.configs.save(org, project, new, current_version).await {
            Ok(saved) => saved,
            Err(e) => {
                self.secrets.discard(org, project, &secret_version).await;
                return match e {
                    ConfigError::VersionMismatch { current } => Ok(Err(current)),
                    other => Err(config_error(other)),
                };
            }
        };
        if let Err(e) = self.secrets.promote(org, project, &secret_version).await {
            // The configuration names its secret version, so delivery already uses the new
            // credentials; only the label is behind, and the next save moves it.
            tracing::warn!(organization_id = org, project_id = project, error = %e, "saved secret version not made current");
        }
        let (action, description) = if current.is_some() {
            ("update", "Updated streaming configuration")
        } else {
            ("create", "Created streaming configuration")
        };
        self.audit(caller, org, project, action, description, Some(&saved))
            .await;
        // New settings may be what a refused or retrying destination needed.
        self.retry_lane_now(org, project).await;
        let saved = self
            .configs
            .get(org, project)
            .await
            .map_err(config_error)?
            .unwrap_or(saved);
        self.view(org, project, Some(&saved)).await.map(Ok)
    }

    /// The Datadog key already saved, for a request that leaves `api_key` out.
    async fn saved_datadog_key(
        &self,
        org: &str,
        project: &str,
        current: Option<&StreamingConfig>,
    ) -> Result<SecretString, ApiError> {
        let required = || {
            ApiError::bad_request(
                "missing_field",
                "`datadog.api_key` is required unless the saved destination is Datadog",
            )
        };
        if !current.is_some_and(|c| matches!(c.destination, Destination::Datadog(_))) {
            return Err(required());
        }
        let version = current.and_then(|c| c.secret_version.as_deref());
        match &*self
            .secrets
            .get(org, project, version, true)
            .await
            .map_err(credentials_error)?
        {
            Credentials::Datadog { api_key } => Ok(api_key.clone()),
            Credentials::Cloudwatch { .. } => Err(required()),
        }
    }

    async fn delete(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        if_match: Option<IfMatch>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        // Without If-Match the delete is unconditional: it cannot lose a race, so never 412.
        let condition = match if_match {
            None => None,
            Some(m) => {
                let current = self.configs.get(org, project).await.map_err(config_error)?;
                let current_version = current.as_ref().map_or(0, |c| c.version);
                if !m.allows(current_version) {
                    return Err(ApiError::version_mismatch(current_version));
                }
                current.map(|c| c.version)
            }
        };
        let deleted = if if_match.is_some() && condition.is_none() {
            // If-Match: 0 and nothing saved: nothing to delete.
            None
        } else {
            self.configs
                .delete(org, project, condition)
                .await
                .map_err(config_error)?
        };
        self.secrets
            .delete(org, project)
            .await
            .map_err(credentials_error)?;
        if let Some(deleted) = &deleted {
            self.forget_owed(org, project).await;
            self.audit(
                caller,
                org,
                project,
                "delete",
                "Deleted streaming configuration",
                Some(deleted),
            )
            .await;
        }
        let mut response = ApiGatewayV2httpResponse::default();
        response.status_code = 204;
        Ok(response)
    }

    /// Puts an audit event about a configuration change on the events queue, like any other.
    async fn audit(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        action: &str,
        description: &str,
        config: Option<&StreamingConfig>,
    ) {
        let event = configuration_event(caller, org, project, action, description, config);
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

    async fn test(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let saved = self.configs.get(org, project).await.map_err(config_error)?;
        // An empty body tests what is saved; a body tests the settings it carries.
        let (destination, key) = if body.iter().all(u8::is_ascii_whitespace) {
            let saved = saved.as_ref().ok_or_else(|| {
                ApiError::not_found(
                    "nothing is saved to test; send the settings to test in the body",
                )
            })?;
            let key = match &saved.destination {
                Destination::Datadog(_) => {
                    Some(self.saved_datadog_key(org, project, Some(saved)).await?)
                }
                Destination::Cloudwatch(_) => None,
            };
            (saved.destination.clone(), key)
        } else {
            let input = input::destination(body)?;
            self.check_role_account(&input.destination).await?;
            let key = match (&input.destination, input.api_key) {
                (Destination::Datadog(_), Some(key)) => Some(key),
                (Destination::Datadog(_), None) => {
                    Some(self.saved_datadog_key(org, project, saved.as_ref()).await?)
                }
                (Destination::Cloudwatch(_), _) => None,
            };
            (input.destination, key)
        };
        let now = OffsetDateTime::now_utc();
        self.rate_limit(org, CONNECTION_TESTS, now).await?;
        let event = test_event(caller, org, project, now)?;
        let credentials = match (&destination, key) {
            (Destination::Cloudwatch(settings), _) => Credentials::Cloudwatch {
                role_arn: settings.role_arn.clone(),
                external_id: SecretString::from(
                    self.configs.external_id(org).await.map_err(config_error)?,
                ),
            },
            (Destination::Datadog(_), Some(api_key)) => Credentials::Datadog { api_key },
            (Destination::Datadog(_), None) => return Err(ApiError::internal()),
        };
        let tested = self
            .destinations
            .sink(
                &destination,
                Project {
                    organization_id: org,
                    project_id: project,
                    credentials: Box::new(credentials),
                },
            )
            .test_connection(&event, Instant::now() + TEST_BUDGET)
            .await;
        let result = TestResult {
            success: tested.success,
            provider: destination.provider().as_str(),
            message: tested.message,
            log_group: tested.log_group,
        };
        tracing::info!(
            organization_id = org,
            project_id = project,
            provider = result.provider,
            success = result.success,
            "connection tested"
        );
        // A saved destination that passes its test is tried again at once.
        let tested_saved = saved.as_ref().is_some_and(|s| s.destination == destination);
        if result.success && tested_saved {
            self.retry_lane_now(org, project).await;
        }
        let record = TestRecord {
            tested_at: now_text(now),
            provider: result.provider.to_owned(),
            success: result.success,
            message: result.message.clone(),
        };
        if let Err(e) = self.configs.record_test(org, project, &record).await {
            tracing::error!(organization_id = org, project_id = project, error = %e, "connection test not recorded");
        }
        Ok(json_response(200, &result))
    }

    async fn list(
        &self,
        request: &ApiGatewayV2httpRequest,
        org: &str,
        project: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (since, until) = (time_query(request, "since")?, time_query(request, "until")?);
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`since` must not be after `until`",
            ));
        }
        let limit = limit_query(request, MAX_PAGE_SIZE)?;
        let scope = Scope::new(
            "events",
            org,
            project,
            &[
                request::query(request, "since"),
                request::query(request, "until"),
            ],
        );
        let after = request::query(request, "cursor")
            .map(|c| scope.decode(c))
            .transpose()?;
        if after
            .as_deref()
            .is_some_and(|sk| !audit_log::store::is_sort_key_within(sk, since, until))
        {
            return Err(cursor::invalid());
        }
        let page = self
            .events
            .page(
                org,
                project,
                &PageRequest {
                    since,
                    until,
                    after,
                    limit,
                    max_bytes: PAGE_BYTES,
                    now: OffsetDateTime::now_utc().unix_timestamp(),
                },
            )
            .await
            .map_err(|e| internal("events table")(&e))?;
        Ok(json_response(
            200,
            &EventPage {
                events: page.events,
                next_cursor: page.next_after.map(|sk| scope.encode(&sk)),
            },
        ))
    }
}

/// An RFC 3339 query parameter, in UTC whatever offset it was given with.
fn time_query(
    request: &ApiGatewayV2httpRequest,
    name: &str,
) -> Result<Option<OffsetDateTime>, ApiError> {
    request::query(request, name)
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .map(|t| t.to_offset(time::UtcOffset::UTC))
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!(
                            "`{name}` must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z"
                        ),
                    )
                })
        })
        .transpose()
}

/// `limit`, from 1 to `max`; 100 when absent (or `max` when smaller).
fn limit_query(request: &ApiGatewayV2httpRequest, max: usize) -> Result<usize, ApiError> {
    match request::query(request, "limit") {
        None => Ok(DEFAULT_PAGE_SIZE.min(max)),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`limit` must be a whole number from 1 to {max}"),
                )
            }),
    }
}

/// A replay asks for at most this many days.
pub const MAX_REPLAY_DAYS: i64 = 366;

impl Api {
    async fn start_replay(
        &self,
        org: &str,
        project: &str,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (since, until, only_failed) = input::replay(body)?;
        let (since, until) = (
            since.to_offset(time::UtcOffset::UTC),
            until.to_offset(time::UtcOffset::UTC),
        );
        if self
            .configs
            .get(org, project)
            .await
            .map_err(config_error)?
            .is_none()
        {
            return Err(ApiError::not_found(
                "nothing is saved to replay to; save a destination first",
            ));
        }
        let now = OffsetDateTime::now_utc();
        self.rate_limit(org, REPLAYS_STARTED, now).await?;
        let now = now_text(now);
        let replay = Replay {
            replay_id: audit_log::streaming::new_external_id(),
            organization_id: org.to_owned(),
            project_id: project.to_owned(),
            state: ReplayState::Running,
            since: since.format(&Rfc3339).unwrap_or_default(),
            until: until.format(&Rfc3339).unwrap_or_default(),
            only_failed,
            cursor: None,
            delivered: 0,
            failed: 0,
            created_at: now.clone(),
            updated_at: now,
            finished_at: None,
            last_error: None,
        };
        if !self
            .configs
            .start_replay(&replay)
            .await
            .map_err(config_error)?
        {
            return Err(ApiError::conflict(
                "replay_running",
                "a replay of this project is running; wait for it to finish (GET its replay id)",
            ));
        }
        let message =
            json!({"organization_id": org, "project_id": project, "replay_id": replay.replay_id});
        if let Err(e) = self.send(&self.settings.replay_queue_url, &message).await {
            let mut failed = replay.clone();
            failed.state = ReplayState::Failed;
            failed.last_error = Some("the replay could not be queued".into());
            let _ = self.configs.save_replay(&failed).await;
            return Err(internal("replay queue")(&e));
        }
        tracing::info!(
            organization_id = org,
            project_id = project,
            replay_id = replay.replay_id,
            only_failed,
            "replay started"
        );
        let mut response = json_response(202, &replay);
        if let Ok(location) =
            http::HeaderValue::from_str(&format!("streaming/replays/{}", replay.replay_id))
        {
            response.headers.insert(http::header::LOCATION, location);
        }
        Ok(response)
    }

    /// Puts a JSON message on one of the service's queues.
    async fn send(&self, queue_url: &str, message: &serde_json::Value) -> Result<(), String> {
        self.sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(message.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
    }

    async fn failures(
        &self,
        request: &ApiGatewayV2httpRequest,
        org: &str,
        project: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let limit = limit_query(request, MAX_FAILURE_PAGE)?;
        let scope = Scope::new("failures", org, project, &[]);
        let after = request::query(request, "cursor")
            .map(|c| scope.decode(c))
            .transpose()?;
        if after
            .as_deref()
            .is_some_and(|sk| !audit_log::store::is_sort_key_within(sk, None, None))
        {
            return Err(cursor::invalid());
        }
        let (failures, mut next) = self
            .configs
            .failures(org, project, after.as_deref(), limit)
            .await
            .map_err(config_error)?;
        let keys: Vec<String> = failures.iter().map(|f| f.event_sort_key.clone()).collect();
        let mut events: std::collections::HashMap<String, String> = self
            .events
            .events_at(org, project, &keys)
            .await
            .map_err(|e| internal("events table")(&e))?
            .into_iter()
            .map(|(key, json)| (key.sort_key, json))
            .collect();
        let mut listed: Vec<serde_json::Value> = Vec::with_capacity(failures.len());
        let mut bytes = 0;
        for f in failures {
            let event = events
                .remove(&f.event_sort_key)
                .and_then(|json| serde_json::from_str::<serde_json::Value>(&json).ok());
            let item = json!({"event_id": f.event_id, "failed_at": f.failed_at, "reason": f.reason, "event": event});
            let size = audit_log::store::bytes_in_response(&item.to_string()) + 1;
            // A failure carries its event (up to 1 MiB): the page ends before the response
            // would pass Lambda's 6 MB, and the cursor picks up at the next one.
            if !listed.is_empty() && bytes + size > PAGE_BYTES {
                next = keys.get(listed.len() - 1).cloned();
                break;
            }
            bytes += size;
            listed.push(item);
        }
        Ok(json_response(
            200,
            &json!({"failures": listed, "next_cursor": next.map(|sk| scope.encode(&sk))}),
        ))
    }
}

/// Failures listed per page at most (their events come along).
pub const MAX_FAILURE_PAGE: usize = 100;

/// The actor of a request: a user when the token names an email, a service otherwise.
fn actor(caller: &Caller) -> serde_json::Value {
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

fn now_text(now: OffsetDateTime) -> String {
    now.replace_nanosecond(0)
        .unwrap_or(now)
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// The audit event of a configuration change: who, what, which destination; no credential.
pub fn configuration_event(
    caller: &Caller,
    org: &str,
    project: &str,
    action: &str,
    description: &str,
    config: Option<&StreamingConfig>,
) -> serde_json::Value {
    let mut event = json!({
        "status": "OK",
        "action": action,
        "description": description,
        "organization_id": org,
        "project_id": project,
        "timestamp": now_text(OffsetDateTime::now_utc()),
        "actor": actor(caller),
    });
    if let Some(c) = config {
        event["streaming"] = json!({"provider": c.destination.provider().as_str(), "name": c.name, "version": c.version});
    }
    event
}

/// The event "Test connection" sends. The path's ids were checked as an event's are, so this
/// is valid; should it not be, the caller learns which field, not a 500.
fn test_event(
    caller: &Caller,
    org: &str,
    project: &str,
    now: OffsetDateTime,
) -> Result<AuditEvent, ApiError> {
    let value = json!({
        "status": "OK",
        "action": "create",
        "description": "Test connection",
        "organization_id": org,
        "project_id": project,
        "timestamp": now_text(now),
        "actor": actor(caller),
        "test": true,
    });
    AuditEvent::from_value(value).map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
            );
            let parsed = AuditEvent::from_value(event).unwrap();
            assert_eq!(parsed.description(), "Updated streaming configuration");
        }
    }

    #[test]
    fn the_test_event_is_valid() {
        let e = test_event(&caller(None), "o", "p", OffsetDateTime::now_utc()).unwrap();
        assert_eq!(e.fields()["test"], json!(true));
    }
}
