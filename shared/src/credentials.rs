//! Destination credentials: one Secrets Manager secret per organization and project, named from
//! the ids alone, cached per container. Secret values live in `SecretString`, whose `Debug`
//! prints nothing of them and which has no `Display`.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

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
}

impl CredentialsError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CredentialsError::Unavailable(_))
    }
}

/// The service's secrets, under one name prefix that IAM scopes the functions to.
#[derive(Clone)]
pub struct SecretStore {
    client: Client,
    prefix: String,
    cache: moka::future::Cache<String, Arc<Credentials>>,
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
        }
    }

    /// The secret of an organization's project: `<prefix><organization>/<project>`.
    pub fn secret_name(&self, organization_id: &str, project_id: &str) -> String {
        format!(
            "{}{}/{}",
            self.prefix,
            name_part(organization_id),
            name_part(project_id)
        )
    }

    /// The project's credentials, from the cache unless `refresh` asks for a fresh read.
    pub async fn get(
        &self,
        organization_id: &str,
        project_id: &str,
        refresh: bool,
    ) -> Result<Arc<Credentials>, CredentialsError> {
        let name = self.secret_name(organization_id, project_id);
        if refresh {
            self.cache.invalidate(&name).await;
        }
        self.cache
            .try_get_with(name.clone(), async { self.read(&name).await.map(Arc::new) })
            .await
            .map_err(|e| (*e).clone())
    }

    async fn read(&self, name: &str) -> Result<Credentials, CredentialsError> {
        let out = self
            .client
            .get_secret_value()
            .secret_id(name)
            .send()
            .await
            .map_err(classify)?;
        let value = SecretString::from(out.secret_string.unwrap_or_default());
        serde_json::from_str(value.expose_secret()).map_err(|_| CredentialsError::Unreadable)
    }

    /// Stores the project's credentials, as a new version when the secret exists.
    pub async fn put(
        &self,
        organization_id: &str,
        project_id: &str,
        credentials: &Credentials,
    ) -> Result<(), CredentialsError> {
        let name = self.secret_name(organization_id, project_id);
        let value = SecretString::from(
            serde_json::to_string(credentials).map_err(|_| CredentialsError::Unreadable)?,
        );
        let put = self
            .client
            .put_secret_value()
            .secret_id(&name)
            .secret_string(value.expose_secret())
            .send()
            .await;
        match put {
            Ok(_) => {}
            Err(e)
                if e.as_service_error().and_then(|s| s.code())
                    == Some("ResourceNotFoundException") =>
            {
                self.client
                    .create_secret()
                    .name(&name)
                    .description("Audit-log streaming credentials of one organization's project")
                    .secret_string(value.expose_secret())
                    .send()
                    .await
                    .map_err(classify)?;
            }
            Err(e) => return Err(classify(e)),
        }
        self.cache.invalidate(&name).await;
        self.forget_previous(&name).await
    }

    /// Takes the `AWSPREVIOUS` label off the replaced version, so a rotated key or a switched
    /// provider's credentials cannot be read back by label; unlabelled versions are removed by
    /// Secrets Manager.
    async fn forget_previous(&self, name: &str) -> Result<(), CredentialsError> {
        let described = self
            .client
            .describe_secret()
            .secret_id(name)
            .send()
            .await
            .map_err(classify)?;
        let previous = described
            .version_ids_to_stages
            .unwrap_or_default()
            .into_iter()
            .find(|(_, stages)| stages.iter().any(|s| s == "AWSPREVIOUS"));
        if let Some((version, _)) = previous {
            self.client
                .update_secret_version_stage()
                .secret_id(name)
                .version_stage("AWSPREVIOUS")
                .remove_from_version_id(version)
                .send()
                .await
                .map_err(classify)?;
        }
        Ok(())
    }

    /// Removes the project's credentials at once (no recovery window: a deleted destination's
    /// key must stop existing).
    pub async fn delete(
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
        self.cache.invalidate(&name).await;
        match deleted {
            Ok(_) => Ok(()),
            Err(e) => match classify(e) {
                CredentialsError::NotFound => Ok(()),
                other => Err(other),
            },
        }
    }
}

fn classify<E, R>(err: SdkError<E, R>) -> CredentialsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => match service.err().code() {
            Some("ResourceNotFoundException") => CredentialsError::NotFound,
            Some("InternalServiceError" | "ThrottlingException") => {
                CredentialsError::Unavailable(code_of(&err))
            }
            _ => CredentialsError::Refused(code_of(&err)),
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            CredentialsError::Unavailable("no answer".into())
        }
        _ => CredentialsError::Refused("the request could not be built".into()),
    }
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
            let c = store.get("o", "p", false).await.unwrap();
            assert!(
                matches!(&*c, Credentials::Datadog { api_key } if api_key.expose_secret() == "k")
            );
        }
        assert_eq!(rule.num_calls(), 1);
        store.get("o", "p", true).await.unwrap();
        assert_eq!(rule.num_calls(), 2);
    }
}
