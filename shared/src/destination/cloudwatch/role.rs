//! The customer's role, assumed with the organization's External ID, and the service's own AWS
//! account that the role's trust policy names.

use aws_credential_types::Credentials as AwsCredentials;
use aws_credential_types::provider::{ProvideCredentials, error::CredentialsError, future};
use aws_sdk_sts::error::ProvideErrorMetadata;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use tokio::sync::OnceCell;

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
    /// STS said the role does not trust the service with this External ID: the customer's
    /// trust policy is what to fix.
    pub untrusted: bool,
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

    /// Assumes the role once; a refusal says whether trying again later may succeed.
    pub async fn assume(&self) -> Result<AwsCredentials, RoleRefused> {
        if let Some(refused) = self.in_another_partition() {
            return Err(refused);
        }
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
                    untrusted: false,
                    message,
                };
                match e.as_service_error().and_then(|s| s.code()) {
                    None => RoleRefused {
                        retryable: true,
                        untrusted: false,
                        message: "STS did not answer while assuming the customer's role".into(),
                    },
                    Some("AccessDenied" | "AccessDeniedException") => RoleRefused {
                        untrusted: true,
                        // The role is named by the configuration, not here: this message goes into
                        // the service's log lines too, which name no customer's account.
                        ..permanent(
                            "could not assume the customer's role: its trust policy must allow \
                             the AWS ID with the External ID, both shown on the Audit Logs page"
                                .to_owned(),
                        )
                    },
                    // STS's own trouble, by its code or its status (any 5xx, 408, 429).
                    Some(_) if crate::sdk::in_trouble(&e, &[]) => RoleRefused {
                        retryable: true,
                        untrusted: false,
                        message: "STS was busy while assuming the customer's role".into(),
                    },
                    Some(code) => {
                        permanent(format!("could not assume the customer's role ({code})"))
                    }
                }
            })?;
        let c = out.credentials.ok_or_else(|| RoleRefused {
            retryable: true,
            untrusted: false,
            message: "STS returned no credentials".into(),
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

    /// A role of another partition than the service's (`aws-cn`, `aws-us-gov`) is in another
    /// IAM altogether, which no STS of the service's can assume it from: said as that, not as a
    /// trust policy to fix, and without asking STS.
    fn in_another_partition(&self) -> Option<RoleRefused> {
        let ours = super::regions::partition_of(self.sts.config().region()?.as_ref())?;
        let theirs = role_partition(&self.role_arn);
        (!theirs.is_empty() && theirs != ours).then(|| RoleRefused {
            retryable: false,
            untrusted: false,
            message: format!(
                "the role is in the {theirs} partition, and this service runs in {ours}, whose \
                 STS cannot assume it: use a role (and a region) of {ours}"
            ),
        })
    }
}

impl ProvideCredentials for CustomerRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        // The refusal travels inside the SDK's error, where `answer` finds it again.
        future::ProvideCredentials::new(async {
            self.assume()
                .await
                .map_err(CredentialsError::provider_error)
        })
    }
}

/// The partition of a valid role ARN (`aws`, `aws-cn`, `aws-us-gov`).
pub fn role_partition(role_arn: &str) -> &str {
    role_arn.split(':').nth(1).unwrap_or_default()
}

/// The account of a valid role ARN.
pub fn role_account(role_arn: &str) -> &str {
    role_arn.split(':').nth(4).unwrap_or_default()
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

/// The service's own AWS account, which customers' trust policies name: the operator's setting,
/// or else the account the function runs in, asked of STS once per container.
#[derive(Clone)]
pub struct ServiceAccount {
    setting: Option<String>,
    sts: aws_sdk_sts::Client,
    found: Arc<OnceCell<String>>,
}

impl ServiceAccount {
    pub fn new(setting: Option<String>, sts: aws_sdk_sts::Client) -> Self {
        Self {
            setting,
            sts,
            found: Arc::default(),
        }
    }

    pub async fn id(&self) -> Result<String, String> {
        if let Some(id) = &self.setting {
            return Ok(id.clone());
        }
        self.found
            .get_or_try_init(|| async {
                let out = self.sts.get_caller_identity().send().await.map_err(|e| {
                    format!(
                        "STS did not tell the service's account: {}",
                        aws_sdk_sts::error::DisplayErrorContext(e)
                    )
                })?;
                out.account
                    .ok_or_else(|| "STS did not tell the service's account".to_owned())
            })
            .await
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sts_answering(status: u16, code: &'static str) -> aws_sdk_sts::Client {
        use aws_smithy_mocks::{RuleMode, mock, mock_client};
        use aws_smithy_runtime_api::http::{Response, StatusCode};
        let answer = mock!(aws_sdk_sts::Client::assume_role).then_http_response(move || {
            Response::new(
                StatusCode::try_from(status).unwrap(),
                aws_smithy_types::body::SdkBody::from(format!(
                    "<ErrorResponse><Error><Type>Receiver</Type><Code>{code}</Code>\
                     <Message>from the test</Message></Error></ErrorResponse>"
                )),
            )
        });
        mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&answer], |c| c
            .retry_config(aws_config::retry::RetryConfig::disabled()))
    }

    #[tokio::test]
    async fn sts_s_own_trouble_is_tried_again_whatever_its_code_and_a_refusal_is_not() {
        let role = |sts| {
            CustomerRole::new(
                sts,
                "arn:aws:iam::111111111111:role/r",
                SecretString::from("external-id"),
                "org",
            )
        };
        for (status, code) in [
            (500, "InternalError"),
            (503, "Unlisted"),
            (400, "Throttling"),
        ] {
            let refused = role(sts_answering(status, code))
                .assume()
                .await
                .unwrap_err();
            assert!(refused.retryable, "{status} {code}: {refused:?}");
        }
        let refused = role(sts_answering(400, "RegionDisabledException"))
            .assume()
            .await
            .unwrap_err();
        assert!(!refused.retryable);
    }

    #[tokio::test]
    async fn a_role_of_another_partition_is_refused_as_such_without_asking_sts() {
        use aws_smithy_mocks::{RuleMode, mock, mock_client};
        let assumed = mock!(aws_sdk_sts::Client::assume_role).then_output(|| {
            aws_sdk_sts::operation::assume_role::AssumeRoleOutput::builder()
                .credentials(
                    aws_sdk_sts::types::Credentials::builder()
                        .access_key_id("AKID")
                        .secret_access_key("secret")
                        .session_token("token")
                        .expiration(aws_smithy_types::DateTime::from_secs(4_000_000_000))
                        .build()
                        .unwrap(),
                )
                .build()
        });
        let sts = mock_client!(aws_sdk_sts, RuleMode::MatchAny, [&assumed], |c| c
            .region(aws_sdk_sts::config::Region::new("us-west-2")));
        let role = |arn: &str| CustomerRole::new(sts.clone(), arn, SecretString::from("x"), "org");
        for arn in [
            "arn:aws-cn:iam::111111111111:role/r",
            "arn:aws-us-gov:iam::111111111111:role/r",
        ] {
            let refused = role(arn).assume().await.unwrap_err();
            assert!(!refused.retryable && !refused.untrusted, "{refused:?}");
            assert!(
                refused.message.contains(arn.split(':').nth(1).unwrap())
                    && refused.message.contains("runs in aws,"),
                "{}",
                refused.message
            );
        }
        assert_eq!(assumed.num_calls(), 0);
        // Its own partition's role is asked for.
        role("arn:aws:iam::111111111111:role/r")
            .assume()
            .await
            .unwrap();
        assert_eq!(assumed.num_calls(), 1);
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
}
