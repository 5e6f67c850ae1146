//! api: streaming configuration, "Test connection", stored audit events and their exports,
//! behind an API Gateway HTTP API with a JWT authorizer. The caller's organization comes only
//! from the verified claim named by `ORGANIZATION_CLAIM`; it must be the path's organization.
//! The export queue hands the same function the steps of running exports (`export`).

mod audit;
pub mod console;
pub mod cursor;
pub mod error;
pub mod export;
pub mod input;
mod invocation;
pub mod request;
mod routes;
pub mod view;

#[cfg(test)]
mod tests;

pub use audit::{AUDIT_EVENT_LOST, Change, configuration_event};
pub use invocation::{Answer, Invocation};
pub use routes::{DOWNLOAD_VALID, MAX_FAILURE_PAGE, MAX_REPLAY_DAYS};

use audit_log::clock::{Clock, SystemClock};
use audit_log::credentials::{CredentialsError, SecretStore, Secrets};
use audit_log::destination::DestinationClients;
use audit_log::destination::cloudwatch::CloudWatch;
use audit_log::destination::datadog::DatadogClient;
use audit_log::lane::timers::SqsTimers;
use audit_log::lane::{LaneStore, Timers};
use audit_log::message::Queues;
use audit_log::settings::{
    SettingsError, datadog_endpoint_override_from_env, env, log_group_prefix_from_env,
    optional_env, required_env, service_account_from_env,
};
use audit_log::store::EventTable;
use audit_log::streaming::{
    ConfigError, ConfigTable, Configurations, ConnectionTests, Exports, FailureLog, Organizations,
    ProjectIndex, Replays,
};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use console::{ConsoleSettings, SignIn};
use error::ApiError;
use export::ExportSteps;
use export::bucket::ExportBucket;
use lambda_runtime::LambdaEvent;
use request::{Caller, Route, Target};
use secrecy::SecretString;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

/// What `template.yaml` gives the function. `DATADOG_ENDPOINT_OVERRIDE` is for local runs only.
pub const ENVIRONMENT: [&str; 16] = [
    env::EVENTS_TABLE,
    env::CONFIG_TABLE,
    env::EVENTS_QUEUE,
    env::REPLAY_QUEUE,
    env::EXPORT_QUEUE,
    env::EXPORT_BUCKET,
    env::SECRET_PREFIX,
    env::LOG_GROUP_PREFIX,
    env::ORGANIZATION_CLAIM,
    env::SERVICE_ACCOUNT,
    env::LANE_QUEUE,
    env::CONSOLE_CLIENT_ID,
    env::CONSOLE_ISSUER,
    env::RETENTION_DAYS,
    env::RETRY_WINDOW,
    env::MAX_BACKOFF,
];

pub const DEFAULT_ORGANIZATION_CLAIM: &str = "organization_id";
/// A PUT without `If-Match` that loses a race with another save tries again, up to this many
/// times in all, rather than answer 412 to a caller who set no condition: every round has a
/// winner, so this many writers at once all get through (past that, a 429 asks it to retry).
const SAVE_ATTEMPTS: usize = 10;
/// Connection tests listed by `GET /streaming/tests`.
pub const KEPT_TESTS: usize = 10;
pub const DEFAULT_PAGE_SIZE: usize = 100;
pub const MAX_PAGE_SIZE: usize = 1_000;
/// Bytes of events (or failures) per page, as the Lambda response carries them: it is capped at
/// 6 MB, and the rest of the page is small.
const PAGE_BYTES: usize = 5_000_000;
/// Items a page of events reads at most before it answers with what it found: about 3.5 MB
/// of packed events, a few queries of one project. The organization's listing first reads
/// every project with events of the range, 16 at a time, which this counts too (README's
/// known limit past about 1,500 of them); its reads after those stop at `SEARCH_TIME`.
const SEARCH_BUDGET: usize = 5_000;
/// A page of events answers with what it found after this long, well inside API Gateway's
/// 30 seconds.
const SEARCH_TIME: Duration = Duration::from_secs(10);
/// Projects listed per page at most (each costs at least two queries).
pub const MAX_PROJECT_PAGE: usize = 100;
/// An export step stops this long before the invocation's deadline.
const STEP_MARGIN: Duration = Duration::from_secs(2);
/// A connection test must answer well inside API Gateway's 30 seconds.
const TEST_BUDGET: Duration = Duration::from_secs(20);

#[derive(Debug, Clone)]
pub struct Settings {
    pub events_table: String,
    pub config_table: String,
    pub events_queue_url: String,
    pub replay_queue_url: String,
    pub lane_queue_url: String,
    pub export_queue_url: String,
    pub export_bucket: String,
    pub secret_prefix: String,
    pub log_group_prefix: String,
    pub organization_claim: String,
    pub service_account_id: Option<String>,
    pub datadog_endpoint_override: Option<String>,
    /// How the console signs people in (`CONSOLE_CLIENT_ID` and `CONSOLE_ISSUER`).
    pub console: SignIn,
    /// The lanes' settings, read and checked as the stream function reads them: a stack whose
    /// lane settings stream refuses is refused here too, and the lane controls (pause, resume,
    /// a new try) never run on other numbers than the lanes'. Today they use only its fixed
    /// timings (housekeeping, page).
    pub lanes: audit_log::lane::Policy,
    /// How long events are kept (`RETENTION_DAYS`): where a project's live events start.
    pub retention: audit_log::Retention,
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Ok(Self {
            events_table: required_env(env::EVENTS_TABLE)?,
            config_table: required_env(env::CONFIG_TABLE)?,
            events_queue_url: required_env(env::EVENTS_QUEUE)?,
            replay_queue_url: required_env(env::REPLAY_QUEUE)?,
            lane_queue_url: required_env(env::LANE_QUEUE)?,
            export_queue_url: required_env(env::EXPORT_QUEUE)?,
            export_bucket: required_env(env::EXPORT_BUCKET)?,
            secret_prefix: required_env(env::SECRET_PREFIX)?,
            log_group_prefix: log_group_prefix_from_env()?,
            organization_claim: optional_env(env::ORGANIZATION_CLAIM)
                .unwrap_or_else(|| DEFAULT_ORGANIZATION_CLAIM.into()),
            service_account_id: service_account_from_env()?,
            datadog_endpoint_override: datadog_endpoint_override_from_env()?,
            console: SignIn::oidc_from_env().unwrap_or(SignIn::Off),
            lanes: audit_log::lane::Policy::from_env()?,
            retention: audit_log::Retention::from_env()?,
        })
    }
}

/// What the API reaches besides the events table and the destinations, as ports: the AWS
/// services in the function ([`Aws`]), in-memory doubles in its unit tests.
pub trait Ports: 'static {
    type Configs: Configurations
        + ProjectIndex
        + Organizations
        + ConnectionTests
        + FailureLog
        + Replays
        + Exports
        + LaneStore;
    type Secrets: Secrets;
    type Timers: Timers;
    type Queues: Queues;
}

/// The function's ports: the configuration table, Secrets Manager, the lanes queue and SQS.
pub struct Aws;

impl Ports for Aws {
    type Configs = ConfigTable;
    type Secrets = SecretStore;
    type Timers = SqsTimers;
    type Queues = aws_sdk_sqs::Client;
}

pub struct Api<P: Ports = Aws> {
    settings: Settings,
    events: EventTable,
    bucket: ExportBucket,
    export_steps: ExportSteps,
    configs: P::Configs,
    secrets: P::Secrets,
    queues: P::Queues,
    destinations: DestinationClients,
    timers: P::Timers,
    lanes: audit_log::lane::Policy,
    /// Where handlers read the time: rate-limit windows, event pages, health, timestamps.
    clock: Arc<dyn Clock>,
    /// Items one page of events may read before it answers with what it found.
    search_budget: usize,
    /// How often an organization may search or list across its projects.
    searches: audit_log::streaming::RateLimit,
    /// Where the console's sign-in posts its code, found on the first console request.
    token_endpoint: console::TokenEndpoint,
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
        // As a secret that is still being deleted: the same deletion, one step earlier.
        ConfigError::Deleting { retry_after } => {
            ApiError::too_many("credentials_being_deleted", e.to_string(), retry_after)
        }
        other => internal("configuration table")(&other),
    }
}

fn credentials_error(e: CredentialsError) -> ApiError {
    match e {
        // The project's previous secret, deleted by a `DELETE` moments ago, is still going.
        CredentialsError::Deleting => {
            ApiError::too_many("credentials_being_deleted", e.to_string(), 10)
        }
        CredentialsError::TooManyVersions => {
            ApiError::too_many("credentials_changed_too_often", e.to_string(), 3600)
        }
        other => internal("secrets")(&other),
    }
}

impl Api {
    pub fn new(settings: Settings, aws: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        let sqs = aws_sdk_sqs::Client::new(aws);
        Api::with_ports(
            aws,
            ConfigTable::new(dynamodb, &settings.config_table),
            SecretStore::new(
                aws_sdk_secretsmanager::Client::new(aws),
                &settings.secret_prefix,
            ),
            SqsTimers::new(sqs.clone(), &settings.lane_queue_url),
            sqs,
            settings,
        )
    }
}

impl<P: Ports> Api<P> {
    /// The verified claim that names the caller's organization (`ORGANIZATION_CLAIM`).
    pub fn organization_claim(&self) -> &str {
        &self.settings.organization_claim
    }

    /// The API over these ports; the events table and the destinations' clients come from
    /// `aws` (nothing is called before a request needs it).
    pub fn with_ports(
        aws: &aws_config::SdkConfig,
        configs: P::Configs,
        secrets: P::Secrets,
        timers: P::Timers,
        queues: P::Queues,
        settings: Settings,
    ) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(aws);
        Self {
            events: EventTable::new(dynamodb, &settings.events_table),
            bucket: ExportBucket::new(aws, &settings.export_bucket),
            export_steps: ExportSteps::default(),
            configs,
            secrets,
            queues,
            timers,
            lanes: settings.lanes.clone(),
            clock: Arc::new(SystemClock),
            search_budget: SEARCH_BUDGET,
            searches: audit_log::streaming::SEARCHES,
            token_endpoint: console::TokenEndpoint::default(),
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

    /// Reads the time from this clock (tests hold it still or move it by hand).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Lets a page of events read at most `items` (tests show the budget at small sizes).
    pub fn with_search_budget(mut self, items: usize) -> Self {
        self.search_budget = items.max(1);
        self
    }

    /// Limits searches this way (tests show the limit at small sizes).
    pub fn with_search_limit(mut self, limit: audit_log::streaming::RateLimit) -> Self {
        self.searches = limit;
        self
    }

    /// Cuts exports this way (tests: small parts, a few pages per step).
    pub fn with_export_steps(mut self, steps: ExportSteps) -> Self {
        self.export_steps = steps;
        self
    }

    pub fn with_datadog(mut self, datadog: DatadogClient) -> Self {
        self.destinations.datadog = datadog;
        self
    }

    /// The Lambda entry: a request from API Gateway, or steps of exports from the export queue.
    pub async fn handle(
        &self,
        event: LambdaEvent<Invocation>,
    ) -> Result<Answer, std::convert::Infallible> {
        let (payload, context) = event.into_parts();
        Ok(match payload {
            Invocation::Request(request) => {
                Answer::Response(Box::new(self.respond(&request).await))
            }
            Invocation::Exports(steps) => {
                let deadline = audit_log::retry::deadline_before(context.deadline(), STEP_MARGIN);
                Answer::Exports(self.handle_exports(steps, deadline).await)
            }
        })
    }

    /// Answers one request; every outcome, errors included, is a response.
    pub async fn respond(&self, request: &ApiGatewayV2httpRequest) -> ApiGatewayV2httpResponse {
        let started = std::time::Instant::now();
        let path = request::path(request);
        if console::is_console(path) {
            let settings = ConsoleSettings {
                sign_in: &self.settings.console,
                log_group_prefix: &self.settings.log_group_prefix,
                // Only the page's own policy governs where it connects: its files do not wait
                // on the issuer.
                token_origin: if console::is_page(&request.request_context.http.method, path) {
                    self.token_endpoint.origin(&self.settings.console).await
                } else {
                    self.token_endpoint.known()
                },
            };
            let query = request.raw_query_string.as_deref().unwrap_or_default();
            let gzip = request
                .headers
                .get(http::header::ACCEPT_ENCODING)
                .and_then(|v| v.to_str().ok())
                .is_some_and(console::accepts_gzip);
            return console::respond(
                &request.request_context.http.method,
                path,
                query,
                gzip,
                &settings,
            );
        }
        // Who asks before what they ask: the caller's claim against the path's organization,
        // then the ids and the route.
        let address = request::address(request);
        // Named in the request's log line, refused or not (a caller of another organization
        // most of all), once it is an id: the path's raw text goes into no log line.
        let organization_id = address
            .as_ref()
            .ok()
            .map(|a| a.organization_id.clone())
            .filter(|org| audit_log::id::check("organization_id", org).is_ok());
        let target = address.and_then(|address| {
            let caller = request::caller(
                request,
                &self.settings.organization_claim,
                &address.organization_id,
            )?;
            Ok((caller, address.target(request)?))
        });
        let route = target.as_ref().ok().map(|(_, t)| t.route);
        let response = match target {
            Ok((caller, target)) => match self.dispatch(request, &caller, target).await {
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
        caller: &Caller,
        target: Target,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (org, project) = (&target.organization_id, &target.project_id);
        // The listings check their parameters themselves (`request::only_parameters`); the
        // other routes take none, and leave alone any they are given but their body's fields.
        match target.route {
            Route::GetStreaming => {
                let config = self
                    .configs
                    .configuration(org, project)
                    .await
                    .map_err(config_error)?;
                self.view(org, project, config.as_ref()).await
            }
            Route::PutStreaming => {
                let body = request::body(request)?;
                let input = input::destination(&body)?;
                let if_match = request::if_match(request);
                self.check_role_account(&input.destination).await?;
                self.put(caller, org, project, &input, if_match).await
            }
            Route::DeleteStreaming => {
                input::nothing(&request::body(request)?)?;
                let if_match = request::if_match(request);
                self.delete(caller, org, project, if_match).await
            }
            Route::TestStreaming => {
                let body = request::body(request)?;
                self.test(caller, org, project, &body).await
            }
            Route::PauseStreaming => {
                input::nothing(&request::body(request)?)?;
                self.pause(caller, org, project).await
            }
            Route::ResumeStreaming => {
                input::nothing(&request::body(request)?)?;
                self.resume(caller, org, project).await
            }
            Route::ListEvents => self.list(request, org, Some(project)).await,
            Route::ListOrganizationEvents => self.list(request, org, None).await,
            Route::ListProjects => self.projects(request, org).await,
            Route::ListFailures => self.failures(request, org, project).await,
            Route::StartReplay => {
                request::fields_in_body(request, &input::REPLAY_FIELDS)?;
                let body = request::body(request)?;
                self.start_replay(org, project, &body).await
            }
            Route::StartExport => {
                request::fields_in_body(request, &input::export_fields())?;
                let body = request::body(request)?;
                self.start_export(org, project, &body).await
            }
            Route::GetExport => {
                let id = target.job_id.as_deref().unwrap_or_default();
                self.get_export(org, project, id).await
            }
            Route::GetReplay => {
                let id = target.job_id.as_deref().unwrap_or_default();
                self.get_replay(org, project, id).await
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

    /// The key cursors are signed with. Asked for only where a cursor is read or made.
    pub(crate) async fn service_key(&self) -> Result<Arc<SecretString>, ApiError> {
        self.secrets
            .service_key()
            .await
            .map_err(|e| internal("the service key (Secrets Manager)")(&e))
    }

    /// Where a listing resumes: the sort key the request's `cursor` names in `scope`, between
    /// `since` and `until`; `None` without a cursor (and then no key is read).
    pub(crate) async fn resume_after(
        &self,
        scope: &cursor::Scope,
        request: &ApiGatewayV2httpRequest,
        since: Option<time::OffsetDateTime>,
        until: Option<time::OffsetDateTime>,
    ) -> Result<Option<String>, ApiError> {
        match request::query(request, "cursor") {
            Some(c) => {
                let key = self.service_key().await?;
                cursor::resume_after(scope, &key, &c, since, until).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The cursor of the next page, if there is one.
    pub(crate) async fn next_cursor(
        &self,
        scope: &cursor::Scope,
        position: Option<String>,
    ) -> Result<Option<String>, ApiError> {
        match position {
            Some(p) => Ok(Some(scope.encode(&*self.service_key().await?, &p))),
            None => Ok(None),
        }
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
}
