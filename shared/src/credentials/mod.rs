//! Destination credentials: one Secrets Manager secret per organization and project, named from
//! the ids alone, cached per container. Secret values live in `SecretString`, whose `Debug`
//! prints nothing of them and which has no `Display`.

use crate::sdk::in_trouble;
use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

#[cfg(any(test, feature = "test-util"))]
pub mod memory;

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";
const PREVIOUS: &str = "AWSPREVIOUS";
/// The value of a new secret before its first credentials are saved: no provider's shape.
const PLACEHOLDER: &str = r#"{"provider":"none"}"#;

/// How long a container trusts a secret it read: a rotated Datadog key is also picked up at
/// once on the first 401/403, so this only bounds how stale a switched destination can be.
pub const SECRET_CACHE_TTL: Duration = Duration::from_secs(300);

/// What a destination needs to be reached.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum Credentials {
    Cloudwatch {
        role_arn: String,
        #[serde(serialize_with = "expose")]
        external_id: SecretString,
    },
    Datadog {
        #[serde(serialize_with = "expose")]
        api_key: SecretString,
    },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Cloudwatch { role_arn, .. } => f
                .debug_struct("Cloudwatch")
                .field("role_arn", role_arn)
                .finish_non_exhaustive(),
            Credentials::Datadog { .. } => f.debug_struct("Datadog").finish_non_exhaustive(),
        }
    }
}

// Only ever serialized into the secret's own value.
fn expose<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(secret.expose_secret())
}

/// Only letters, digits and `-` pass through; everything else becomes `_XX`, so any id makes a
/// valid, unambiguous secret name.
const NAME_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-');

/// Secrets Manager's longest secret name.
const MAX_SECRET_NAME: usize = 512;

fn name_part(id: &str) -> String {
    utf8_percent_encode(id, NAME_ESCAPES)
        .to_string()
        .replace('%', "_")
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error(
        "no credentials are stored for this destination; save the streaming configuration again"
    )]
    NotFound,
    #[error("the stored credentials could not be read; save the streaming configuration again")]
    Unreadable,
    #[error("Secrets Manager refused the request: {0}")]
    Refused(String),
    #[error("Secrets Manager was unavailable: {0}")]
    Unavailable(String),
    /// A `DELETE` forces the project's secret's deletion, which Secrets Manager completes in
    /// the background; until then no new one of that name can be saved.
    #[error(
        "the destination's previous credentials are still being deleted; try again in a few seconds"
    )]
    Deleting,
    /// Secrets Manager keeps every version of a secret for a day and refuses new ones past
    /// about 100 in that time: the credentials were changed that often.
    #[error("the destination's credentials were changed too often today; try again in an hour")]
    TooManyVersions,
}

/// What an `Unavailable` error says when Secrets Manager never answered (timed out, connection
/// lost, an answer not understood): the request may still have landed, or land later.
pub const NO_ANSWER: &str = "no answer";

impl CredentialsError {
    /// Whether the call may have done its work nonetheless: Secrets Manager never answered.
    pub fn may_have_landed(&self) -> bool {
        matches!(self, CredentialsError::Unavailable(what) if what == NO_ANSWER)
    }

    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            CredentialsError::Unavailable(_) | CredentialsError::Deleting
        )
    }
}

/// Waits before a save tries again while the project's previous secret is being deleted
/// (seconds, usually): 7.5 s in all, well within the API's time.
const WHILE_DELETING: [std::time::Duration; 4] = [
    std::time::Duration::from_millis(500),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(2),
    std::time::Duration::from_secs(4),
];

/// Where destination credentials are kept, version by version (Secrets Manager; in tests,
/// memory). A save stages a version, saves the configuration naming it, then promotes it.
pub trait Secrets: Sync {
    /// The version a saved configuration names (`None`: the current one); `refresh` reads
    /// past any cache.
    fn get(
        &self,
        organization_id: &str,
        project_id: &str,
        version: Option<&str>,
        refresh: bool,
    ) -> impl Future<Output = Result<Arc<Credentials>, CredentialsError>> + Send;

    /// Stores a version that is not current yet, and returns its id.
    fn stage(
        &self,
        organization_id: &str,
        project_id: &str,
        credentials: &Credentials,
    ) -> impl Future<Output = Result<String, CredentialsError>> + Send;

    /// Makes a staged version current.
    fn promote(
        &self,
        organization_id: &str,
        project_id: &str,
        version: &str,
    ) -> impl Future<Output = Result<(), CredentialsError>> + Send;

    /// Gives up a staged version whose configuration was not saved (best effort).
    fn discard(
        &self,
        organization_id: &str,
        project_id: &str,
        version: &str,
    ) -> impl Future<Output = ()> + Send;

    /// Removes every version of the project's credentials.
    fn delete(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> impl Future<Output = Result<(), CredentialsError>> + Send;

    /// The service's own key, for what it hands callers and must know again as its own
    /// (listing cursors): made at its first use by any function of the deployment, then kept.
    fn service_key(
        &self,
    ) -> impl Future<Output = Result<Arc<SecretString>, CredentialsError>> + Send;
}

impl Secrets for SecretStore {
    /// The project's credentials: the version a saved configuration names (`None`: the current
    /// one), from the cache unless `refresh` asks for a fresh read. Naming the version keeps a
    /// configuration and its secret together: a new configuration is never paired with an old
    /// secret, nor an old one with a new secret.
    async fn get(
        &self,
        organization_id: &str,
        project_id: &str,
        version: Option<&str>,
        refresh: bool,
    ) -> Result<Arc<Credentials>, CredentialsError> {
        let name = self.secret_name(organization_id, project_id);
        let cached = format!("{name}@{}", version.unwrap_or(CURRENT));
        if refresh {
            self.cache.invalidate(&cached).await;
        }
        self.cache
            .try_get_with(cached, async {
                self.read(&name, version).await.map(Arc::new)
            })
            .await
            .map_err(|e| (*e).clone())
    }

    /// Stores credentials as a new version that is not current yet (labelled `AWSPENDING`), and
    /// returns its version id. Until [`SecretStore::promote`] makes it current, only a reader
    /// that names this version sees it: a PUT that loses its race never replaces the secret.
    async fn stage(
        &self,
        organization_id: &str,
        project_id: &str,
        credentials: &Credentials,
    ) -> Result<String, CredentialsError> {
        let name = self.secret_name(organization_id, project_id);
        let value = SecretString::from(
            serde_json::to_string(credentials).map_err(|_| CredentialsError::Unreadable)?,
        );
        let mut waits = WHILE_DELETING.iter();
        loop {
            match self.stage_once(&name, &value).await {
                Err(CredentialsError::Deleting) => match waits.next() {
                    Some(wait) => tokio::time::sleep(*wait).await,
                    None => return Err(CredentialsError::Deleting),
                },
                staged => return staged,
            }
        }
    }

    /// Makes a staged version current, once the configuration that names it is saved, and
    /// takes the labels off the version it replaces, so a rotated key or a switched provider's
    /// credentials cannot be read back by label (Secrets Manager removes unlabelled versions).
    /// `NotFound` or `Deleting` when the staged version went with its secret (a `DELETE` of the
    /// project since the stage). A version no longer labelled (another stage took its pending
    /// label) is still there, though `DescribeSecret` lists only labelled ones.
    async fn promote(
        &self,
        organization_id: &str,
        project_id: &str,
        version: &str,
    ) -> Result<(), CredentialsError> {
        let name = self.secret_name(organization_id, project_id);
        let secret = self
            .client
            .describe_secret()
            .secret_id(&name)
            .send()
            .await
            .map_err(classify)?;
        if secret.deleted_date.is_some() {
            return Err(CredentialsError::Deleting);
        }
        let stages = secret.version_ids_to_stages.unwrap_or_default();
        let current = stages
            .iter()
            .find(|(_, labels)| labels.iter().any(|l| l == CURRENT))
            .map(|(id, _)| id.clone());
        if current.as_deref() != Some(version) {
            self.client
                .update_secret_version_stage()
                .secret_id(&name)
                .version_stage(CURRENT)
                .move_to_version_id(version)
                .set_remove_from_version_id(current.clone())
                .send()
                .await
                .map_err(staging_error)?;
        }
        self.cache.invalidate(&format!("{name}@{CURRENT}")).await;
        let mut unlabel = vec![(PENDING, version.to_owned())];
        if let Some(replaced) = current.filter(|c| c != version) {
            unlabel.push((PREVIOUS, replaced));
        }
        for (label, from) in unlabel {
            self.unlabel(&name, label, &from).await?;
        }
        Ok(())
    }

    /// Takes a staged version that was not saved out of reach of labels (best effort: a later
    /// stage moves the label anyway, and the version never became current).
    async fn discard(&self, organization_id: &str, project_id: &str, version: &str) {
        let name = self.secret_name(organization_id, project_id);
        if let Err(e) = self.unlabel(&name, PENDING, version).await {
            tracing::debug!(error = %e, "staged secret version kept its label");
        }
    }

    /// Removes the project's credentials at once (no recovery window: a deleted destination's
    /// key must stop existing).
    async fn delete(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Result<(), CredentialsError> {
        let name = self.secret_name(organization_id, project_id);
        let deleted = self
            .client
            .delete_secret()
            .secret_id(&name)
            .force_delete_without_recovery(true)
            .send()
            .await;
        // Versioned entries name versions no configuration will name again.
        self.cache.invalidate(&format!("{name}@{CURRENT}")).await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) => match classify(e) {
                CredentialsError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }

    async fn service_key(&self) -> Result<Arc<SecretString>, CredentialsError> {
        self.service_key
            .try_get_with((), self.read_or_make_service_key())
            .await
            .map_err(|e| (*e).clone())
    }
}

/// The service's secrets, under one name prefix that IAM scopes the functions to.
#[derive(Clone)]
pub struct SecretStore {
    client: Client,
    prefix: String,
    cache: moka::future::Cache<String, Arc<Credentials>>,
    /// The service key, once read: one entry, kept for the container's life.
    service_key: moka::future::Cache<(), Arc<SecretString>>,
}

impl SecretStore {
    pub fn new(client: Client, prefix: impl Into<String>) -> Self {
        Self {
            client,
            prefix: prefix.into(),
            cache: moka::future::Cache::builder()
                .time_to_live(SECRET_CACHE_TTL)
                .max_capacity(10_000)
                .build(),
            service_key: moka::future::Cache::new(1),
        }
    }

    /// The service key's secret: no project's secret is named without a `/` after the prefix.
    fn service_key_name(&self) -> String {
        format!("{}service-key", self.prefix)
    }

    /// Reads the service key, making it first if no function of the deployment has yet.
    async fn read_or_make_service_key(&self) -> Result<Arc<SecretString>, CredentialsError> {
        let name = self.service_key_name();
        let read = || async {
            let out = self
                .client
                .get_secret_value()
                .secret_id(&name)
                .send()
                .await
                .map_err(classify)?;
            match out.secret_string {
                Some(key) if key.len() >= 64 => Ok(Arc::new(SecretString::from(key))),
                _ => Err(CredentialsError::Unreadable),
            }
        };
        match read().await {
            Err(CredentialsError::NotFound) => {}
            other => return other,
        }
        let key = new_service_key();
        let created = self
            .client
            .create_secret()
            .name(&name)
            .description("Key the audit-log service signs its listing cursors with")
            .secret_string(&key)
            .send()
            .await;
        match created {
            Ok(_) => Ok(Arc::new(SecretString::from(key))),
            // Another container made it in between: its key is the one.
            Err(e) if code(&e) == Some("ResourceExistsException") => read().await,
            Err(e) => Err(classify(e)),
        }
    }

    /// The secret of an organization's project: `<prefix><organization>/<project>`. Where
    /// that is too long for Secrets Manager, each id takes at most half of what the prefix
    /// leaves, shortened to its start and a digest of it (`__` between them, which no escaped
    /// id holds): a name that fits is never changed.
    pub fn secret_name(&self, organization_id: &str, project_id: &str) -> String {
        let (org, project) = (name_part(organization_id), name_part(project_id));
        let name = format!("{}{org}/{project}", self.prefix);
        if name.len() <= MAX_SECRET_NAME {
            return name;
        }
        let half = MAX_SECRET_NAME.saturating_sub(self.prefix.len() + 1) / 2;
        format!(
            "{}{}/{}",
            self.prefix,
            crate::id::fitted(org, organization_id, half, "__"),
            crate::id::fitted(project, project_id, half, "__")
        )
    }

    async fn read(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<Credentials, CredentialsError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            .set_version_id(version.map(str::to_owned))
            // Named, not left to the default: the local emulator's default does not follow
            // the label when it moves.
            .set_version_stage(version.is_none().then(|| CURRENT.to_owned()))
            .send()
            .await
            .map_err(classify)?;
        let value = SecretString::from(out.secret_string.unwrap_or_default());
        serde_json::from_str(value.expose_secret()).map_err(|_| CredentialsError::Unreadable)
    }

    async fn unlabel(
        &self,
        name: &str,
        label: &str,
        version: &str,
    ) -> Result<(), CredentialsError> {
        let removed = self
            .client
            .update_secret_version_stage()
            .secret_id(name)
            .version_stage(label)
            .remove_from_version_id(version)
            .send()
            .await;
        match removed {
            Ok(_) => Ok(()),
            // The label already moved on to a newer version.
            Err(e) if code(&e) == Some("InvalidParameterException") => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Stores credentials and makes them current at once (set-up of tests and local runs;
    /// the API stages, saves the configuration, then promotes). Returns the version id.
    pub async fn put(
        &self,
        organization_id: &str,
        project_id: &str,
        credentials: &Credentials,
    ) -> Result<String, CredentialsError> {
        let version = self.stage(organization_id, project_id, credentials).await?;
        self.promote(organization_id, project_id, &version).await?;
        Ok(version)
    }
}

impl SecretStore {
    /// Stages one new version, creating the secret first when it does not exist.
    async fn stage_once(
        &self,
        name: &str,
        value: &SecretString,
    ) -> Result<String, CredentialsError> {
        let version = crate::streaming::new_external_id();
        let put = || {
            self.client
                .put_secret_value()
                .secret_id(name)
                .client_request_token(&version)
                .version_stages(PENDING)
                .secret_string(value.expose_secret())
                .send()
        };
        match put().await {
            Ok(_) => return Ok(version),
            Err(e) if code(&e) == Some("ResourceNotFoundException") => {}
            Err(e) => return Err(put_error(name, e)),
        }
        // A secret's first version becomes current whatever its labels say, so a new secret
        // starts with a placeholder that no provider reads as credentials.
        let created = self
            .client
            .create_secret()
            .name(name)
            .description("Audit-log streaming credentials of one organization's project")
            .secret_string(PLACEHOLDER)
            .send()
            .await;
        match created {
            Ok(_) => {}
            // Another first save of the project created it in between.
            Err(e) if code(&e) == Some("ResourceExistsException") => {}
            Err(e) => return Err(staging_error(e)),
        }
        put().await.map_err(|e| put_error(name, e))?;
        Ok(version)
    }
}

/// What a new version's `PutSecretValue` met: of Secrets Manager's quotas, the one a version
/// can exceed is the secret's versions (every one is kept for a day, about 100 at most).
fn put_error(
    name: &str,
    err: SdkError<
        aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError,
        HttpResponse,
    >,
) -> CredentialsError {
    if code(&err) == Some("LimitExceededException") {
        tracing::warn!(
            secret = name,
            "the secret has as many versions as Secrets Manager keeps in a day"
        );
        return CredentialsError::TooManyVersions;
    }
    staging_error(err)
}

/// What a save's call met: Secrets Manager answers `InvalidRequestException` saying the
/// secret is marked (or scheduled) for deletion until a forced deletion ends.
fn staging_error<E>(err: SdkError<E, HttpResponse>) -> CredentialsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let service = err.as_service_error();
    let deleting = service.and_then(|e| e.code()) == Some("InvalidRequestException")
        && service
            .and_then(|e| e.message())
            .is_some_and(|m| m.contains("for deletion"));
    if deleting {
        CredentialsError::Deleting
    } else {
        classify(err)
    }
}

/// A new service key: 256 random bits, as hex.
fn new_service_key() -> String {
    format!(
        "{}{}",
        crate::streaming::new_external_id(),
        crate::streaming::new_external_id()
    )
}

fn classify<E>(err: SdkError<E, HttpResponse>) -> CredentialsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ResourceNotFoundException") => CredentialsError::NotFound,
            // Secrets Manager's own trouble, whatever its code: the next attempt may pass.
            _ if in_trouble(&err, &["InternalServiceError"]) => {
                CredentialsError::Unavailable(code_of(&err))
            }
            _ => CredentialsError::Refused(code_of(&err)),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            CredentialsError::Unavailable(NO_ANSWER.into())
        }
        _ => CredentialsError::Refused("the request could not be built".into()),
    }
}

fn code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    err.as_service_error().and_then(|e| e.code())
}

/// The error's code only: Secrets Manager's messages can quote the request.
fn code_of<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> String {
    err.as_service_error()
        .and_then(|e| e.code())
        .unwrap_or("unknown error")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput;
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    #[test]
    fn secret_names_come_from_the_ids_and_stay_valid_and_distinct() {
        let store = SecretStore::new(
            mock_client!(aws_sdk_secretsmanager, []),
            "audit-log/streaming/",
        );
        assert_eq!(
            store.secret_name("77f447d4-def0", "a98c3c31"),
            "audit-log/streaming/77f447d4-def0/a98c3c31"
        );
        let odd = store.secret_name("../other-org", "p q");
        assert_eq!(odd, "audit-log/streaming/_2E_2E_2Fother-org/p_20q");
        assert_ne!(store.secret_name("a/b", "c"), store.secret_name("a", "b/c"));
        assert_ne!(store.secret_name("a_2F", "c"), store.secret_name("a/", "c"));
        // The longest ids the API takes, under the longest stack name's prefix, still make a
        // name Secrets Manager takes (at most 512 characters, of its own set), each its own.
        let store = SecretStore::new(
            mock_client!(aws_sdk_secretsmanager, []),
            format!("{}/streaming/", "s".repeat(128)),
        );
        let (dots, more_dots) = (".".repeat(255), format!("{}!", ".".repeat(254)));
        let name = store.secret_name(&dots, &dots);
        assert!(name.len() <= 512, "{} characters", name.len());
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c))
        );
        assert_ne!(name, store.secret_name(&dots, &more_dots));
        assert_ne!(name, store.secret_name(&more_dots, &dots));
        // A name that fits keeps the form it always had, however long one of its ids is.
        let long = "a".repeat(255);
        assert_eq!(
            store.secret_name("77f447d4-def0", &long),
            format!("{}/streaming/77f447d4-def0/{long}", "s".repeat(128))
        );
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let dd = Credentials::Datadog {
            api_key: SecretString::from("0123456789abcdef0123456789abcdef"),
        };
        let cw = Credentials::Cloudwatch {
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            external_id: SecretString::from("ext-sentinel-id"),
        };
        let text = format!("{dd:?} {cw:?} {dd:#?} {cw:#?}");
        assert!(!text.contains("0123456789abcdef"), "{text}");
        assert!(!text.contains("ext-sentinel-id"), "{text}");
        assert!(text.contains("arn:aws:iam::123456789012:role/r"));
    }

    fn invalid_request(
        message: &'static str,
    ) -> impl Fn() -> aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError {
        move || {
            aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError::InvalidRequestException(
                aws_sdk_secretsmanager::types::error::InvalidRequestException::builder()
                    .meta(
                        aws_sdk_secretsmanager::error::ErrorMetadata::builder()
                            .code("InvalidRequestException")
                            .message(message)
                            .build(),
                    )
                    .build(),
            )
        }
    }

    const MARKED: &str =
        "You can't perform this operation on the secret because it was marked for deletion.";

    fn datadog_key() -> Credentials {
        Credentials::Datadog {
            api_key: SecretString::from("k"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_save_while_the_previous_secret_is_deleted_waits_for_the_deletion_to_end() {
        let rule = mock!(aws_sdk_secretsmanager::Client::put_secret_value)
            .sequence()
            .error(invalid_request(MARKED))
            .times(2)
            .output(|| {
                aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueOutput::builder()
                    .build()
            })
            .build();
        let store = SecretStore::new(
            mock_client!(aws_sdk_secretsmanager, RuleMode::Sequential, [&rule]),
            "p/",
        );
        let started = tokio::time::Instant::now();
        store.stage("o", "p", &datadog_key()).await.unwrap();
        assert_eq!(rule.num_calls(), 3);
        assert_eq!(started.elapsed(), std::time::Duration::from_millis(1_500));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deletion_that_outlasts_the_waits_is_told_as_such() {
        let rule = mock!(aws_sdk_secretsmanager::Client::put_secret_value)
            .then_error(invalid_request(MARKED));
        let store = SecretStore::new(
            mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, [&rule]),
            "p/",
        );
        let error = store.stage("o", "p", &datadog_key()).await.unwrap_err();
        assert!(matches!(error, CredentialsError::Deleting), "{error:?}");
        assert_eq!(rule.num_calls(), WHILE_DELETING.len() + 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_secret_with_a_days_worth_of_versions_is_told_as_such() {
        let rule = mock!(aws_sdk_secretsmanager::Client::put_secret_value).then_error(|| {
            aws_sdk_secretsmanager::operation::put_secret_value::PutSecretValueError::LimitExceededException(
                aws_sdk_secretsmanager::types::error::LimitExceededException::builder()
                    .meta(
                        aws_sdk_secretsmanager::error::ErrorMetadata::builder()
                            .code("LimitExceededException")
                            .message("You have exceeded the maximum number of versions.")
                            .build(),
                    )
                    .build(),
            )
        });
        let store = SecretStore::new(
            mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, [&rule]),
            "p/",
        );
        let error = store.stage("o", "p", &datadog_key()).await.unwrap_err();
        assert!(
            matches!(error, CredentialsError::TooManyVersions),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn another_invalid_request_is_not_taken_for_a_deletion() {
        let rule = mock!(aws_sdk_secretsmanager::Client::put_secret_value).then_error(
            invalid_request("You provided an invalid value for a parameter."),
        );
        let store = SecretStore::new(
            mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, [&rule]),
            "p/",
        );
        let error = store.stage("o", "p", &datadog_key()).await.unwrap_err();
        assert!(matches!(error, CredentialsError::Refused(_)), "{error:?}");
        assert_eq!(rule.num_calls(), 1);
    }

    /// Secrets Manager's answer of `status` with the error `kind`, to a read.
    async fn read_answered(status: u16, kind: &'static str) -> CredentialsError {
        use aws_smithy_runtime_api::http::StatusCode;
        use aws_smithy_types::body::SdkBody;
        let rule =
            mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_http_response(move || {
                HttpResponse::new(
                    StatusCode::try_from(status).unwrap(),
                    SdkBody::from(format!(r#"{{"__type":"{kind}","message":"m"}}"#)),
                )
            });
        let store = SecretStore::new(
            mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, [&rule]),
            "p/",
        );
        store.get("o", "p", None, false).await.unwrap_err()
    }

    // Paused: the SDK's own retries of a passing trouble wait on tokio's clock.
    #[tokio::test(start_paused = true)]
    async fn secrets_managers_own_trouble_is_passing_and_a_refusal_is_not() {
        for (status, kind) in [
            (503, "ServiceUnavailable"),
            (500, "InternalServiceError"),
            (400, "ThrottlingException"),
            (400, "RequestTimeout"),
            (502, "SomethingNew"),
        ] {
            let error = read_answered(status, kind).await;
            assert!(
                matches!(&error, CredentialsError::Unavailable(code) if code == kind),
                "{status} {kind}: {error:?}"
            );
        }
        let error = read_answered(400, "AccessDeniedException").await;
        assert!(matches!(error, CredentialsError::Refused(_)), "{error:?}");
        let error = read_answered(400, "ResourceNotFoundException").await;
        assert!(matches!(error, CredentialsError::NotFound), "{error:?}");
    }

    #[tokio::test]
    async fn reads_are_cached_until_a_refresh_is_asked_for() {
        let rule = mock!(aws_sdk_secretsmanager::Client::get_secret_value).then_output(|| {
            GetSecretValueOutput::builder()
                .secret_string(r#"{"provider":"datadog","api_key":"k"}"#)
                .build()
        });
        let store = SecretStore::new(
            mock_client!(aws_sdk_secretsmanager, RuleMode::MatchAny, [&rule]),
            "p/",
        );
        for _ in 0..3 {
            let c = store.get("o", "p", None, false).await.unwrap();
            assert!(
                matches!(&*c, Credentials::Datadog { api_key } if api_key.expose_secret() == "k")
            );
        }
        assert_eq!(rule.num_calls(), 1);
        store.get("o", "p", None, true).await.unwrap();
        assert_eq!(rule.num_calls(), 2);
    }
}
