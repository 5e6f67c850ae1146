//! `GET`, `PUT` and `DELETE /streaming`: a project's destination, saved with its credentials.

use crate::audit::Change;
use crate::error::ApiError;
use crate::request::{Caller, IfMatch};
use crate::view::{DestinationView, HealthView, View};
use crate::{
    Api, Ports, SAVE_ATTEMPTS, config_error, credentials_error, input, internal, json_response,
};
use audit_log::credentials::{Credentials, CredentialsError, Secrets};
use audit_log::destination::Destination;
use audit_log::streaming::{
    CONFIGURATION_CHANGES, ConfigError, Configurations, Deletion, MAX_DESTINATIONS, NewConfig,
    Organizations, StreamingConfig,
};
use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;
use secrecy::{ExposeSecret, SecretString};

impl<P: Ports> Api<P> {
    /// The AWS account customers trust: the setting, or the function's own account.
    pub(crate) async fn aws_account_id(&self) -> Result<String, ApiError> {
        self.destinations
            .cloudwatch
            .service_account()
            .id()
            .await
            .map_err(|e| internal("sts")(&e))
    }

    /// A role in the service's own account could trust the account root without an External
    /// ID: the service would be a confused deputy. Refused before any call (and by IAM, through
    /// the template's `Deny` of the account's roles).
    pub(crate) async fn check_role_account(
        &self,
        destination: &Destination,
    ) -> Result<(), ApiError> {
        let Destination::Cloudwatch(settings) = destination else {
            return Ok(());
        };
        if input::role_account(&settings.role_arn) == self.aws_account_id().await? {
            return Err(ApiError::bad_request(
                "invalid_field",
                "`cloudwatch.role_arn` must be a role in your own AWS account, not in the service's (the AWS ID the Audit Logs page and GET /streaming show)",
            ));
        }
        Ok(())
    }

    /// What the view shows of the organization and of the service.
    async fn trust(&self, org: &str) -> Result<Trust, ApiError> {
        let external_id = self
            .configs
            .external_id(org, self.clock.now())
            .await
            .map_err(config_error)?;
        Ok(Trust {
            external_id,
            aws_account_id: self.aws_account_id().await?,
        })
    }

    pub(crate) async fn view(
        &self,
        org: &str,
        project: &str,
        config: Option<&StreamingConfig>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let trust = self.trust(org).await?;
        let health = self.health(org, project, config).await?;
        Ok(view_of(org, project, config, trust, health))
    }

    pub(crate) async fn put(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        input: &input::DestinationInput,
        if_match: Option<IfMatch>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let mut attempt = 0;
        let mut counted = false;
        loop {
            attempt += 1;
            match self
                .put_once(caller, org, project, input, if_match.as_ref(), &mut counted)
                .await?
            {
                Ok(response) => return Ok(response),
                Err(current) if if_match.as_ref().is_some_and(|m| !m.allows(current)) => {
                    return Err(ApiError::version_mismatch(current));
                }
                // A condition still met (none; `*` while something is saved; `"0"` when the
                // deletion mark that refused the save was gone by the time it was read) is
                // tried again, then told to come back.
                Err(_) if attempt == SAVE_ATTEMPTS => return Err(busy()),
                Err(_) => {}
            }
        }
    }

    /// After a save that failed: the configuration it saved after all, if the table holds its
    /// write (named by `save`, [`NewConfig::save`]). An attempt whose answer was lost (a
    /// timeout, a 5xx) is sent again by the SDK, and meets the write it made: answered as a
    /// lost race, the save would be told 412 (and credentials it staged discarded while the
    /// saved configuration names them). Credentials it `staged` are discarded only where no
    /// configuration names them, and kept when the table could not say (a version left staged
    /// is harmless: the next stage moves its label).
    async fn landed(
        &self,
        (org, project): (&str, &str),
        save: &str,
        staged: Option<&str>,
    ) -> Option<StreamingConfig> {
        match self.configs.configuration(org, project).await {
            Ok(Some(stored)) if stored.saved_by.as_deref() == Some(save) => {
                tracing::warn!(
                    organization_id = org,
                    project_id = project,
                    "the save landed though its answer said otherwise; answered as saved"
                );
                Some(stored)
            }
            Ok(stored) => {
                // A later save that kept those credentials names them: they stay.
                let named = stored.and_then(|s| s.secret_version);
                if let Some(version) = staged
                    && named.as_deref() != Some(version)
                {
                    self.secrets.discard(org, project, version).await;
                }
                None
            }
            Err(e) => {
                tracing::warn!(organization_id = org, project_id = project, error = %e, "whether the save landed is unknown; its staged credentials kept");
                None
            }
        }
    }

    /// Counts a save against the organization's configuration changes, once a request
    /// (`counted`: whether one of its tries already did).
    async fn count_change(&self, org: &str, counted: &mut bool) -> Result<(), ApiError> {
        if !std::mem::replace(counted, true) {
            self.rate_limit(org, CONFIGURATION_CHANGES, self.clock.now())
                .await?;
        }
        Ok(())
    }

    /// A new destination only while the organization has fewer than [`MAX_DESTINATIONS`] (two
    /// first saves at once may both pass: the limit guards the account's secrets against an
    /// organization's scripts, not its last unit).
    async fn within_destination_limit(&self, org: &str) -> Result<(), ApiError> {
        let saved = self
            .configs
            .destinations(org, MAX_DESTINATIONS)
            .await
            .map_err(config_error)?;
        if saved >= MAX_DESTINATIONS {
            return Err(ApiError::bad_request(
                "too_many_destinations",
                format!(
                    "the organization has {MAX_DESTINATIONS} destinations saved, the most it may \
                     have (paused ones included): delete the streaming configuration of a project \
                     that no longer needs it, then configure this one"
                ),
            ));
        }
        Ok(())
    }

    /// One try at a save: `Ok(Err(current))` when another save (or a deletion) got in between
    /// the read and this one's conditional write. New credentials go to a new secret version
    /// that only becomes current once the configuration naming it is saved (the saved ones keep
    /// their version): a PUT that answers 412 or fails leaves the stored credentials exactly as
    /// they were.
    pub(crate) async fn put_once(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        input: &input::DestinationInput,
        if_match: Option<&IfMatch>,
        counted: &mut bool,
    ) -> Result<Result<ApiGatewayV2httpResponse, u64>, ApiError> {
        let current = self
            .configs
            .configuration(org, project)
            .await
            .map_err(config_error)?;
        let current_version = current.as_ref().map_or(0, |c| c.version);
        if if_match.is_some_and(|m| !m.allows(current_version)) {
            return Err(ApiError::version_mismatch(current_version));
        }
        // A Datadog save without a key takes the saved one: refused for want of it before it
        // counts as a change or reads the organization's trust.
        let saved_key = match (&input.destination, &input.api_key) {
            (Destination::Datadog(_), None) => Some(
                self.saved_datadog_key(org, project, current.as_ref())
                    .await?,
            ),
            _ => None,
        };
        if current.is_none() {
            // Counted first: at the limit, a script's refused saves each read the
            // organization's destinations, which the rate limits as it limits saves.
            self.count_change(org, counted).await?;
            self.within_destination_limit(org).await?;
        }
        // Read before the save: one that lands is never answered with a 500 for want of them.
        let trust = self.trust(org).await?;
        let (credentials, last4) = match &input.destination {
            Destination::Cloudwatch(c) => (
                Credentials::Cloudwatch {
                    role_arn: c.role_arn.clone(),
                    external_id: SecretString::from(trust.external_id.clone()),
                },
                None,
            ),
            Destination::Datadog(_) => {
                let key = input
                    .api_key
                    .clone()
                    .or(saved_key)
                    .ok_or_else(ApiError::internal)?;
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
        // Saved again with the credentials it has (renamed; tooling that applies its settings
        // every few minutes): the saved version already holds them. Secrets Manager keeps every
        // version for a day and refuses new ones past about 100 in that time.
        let unchanged = match &current {
            Some(c) if c.destination.provider() != input.destination.provider() => false,
            // A Datadog save without a key keeps the key read from the saved version above.
            Some(_)
                if matches!(input.destination, Destination::Datadog(_))
                    && input.api_key.is_none() =>
            {
                true
            }
            Some(c) => self
                .secrets
                .get(org, project, c.secret_version.as_deref(), true)
                .await
                .is_ok_and(|saved| same_credentials(&saved, &credentials)),
            None => false,
        };
        let kept = current
            .as_ref()
            .and_then(|c| c.secret_version.clone())
            .filter(|_| unchanged);
        let secret_version = match &kept {
            Some(version) => version.clone(),
            None => {
                // What writes to Secrets Manager is counted.
                self.count_change(org, counted).await?;
                self.secrets
                    .stage(org, project, &credentials)
                    .await
                    .map_err(credentials_error)?
            }
        };
        // Renamed, or saved again as it was: what health says of the destination still holds.
        let same_destination = match (&current, &input.destination, &input.api_key) {
            (Some(c), _, _) if c.destination != input.destination => false,
            // Clients that send the whole resource send the key every time.
            (Some(_), Destination::Datadog(_), Some(_)) => unchanged,
            (current, _, _) => current.is_some(),
        };
        let new = NewConfig {
            name: input.name.clone(),
            destination: input.destination.clone(),
            api_key_last4: last4,
            secret_version: Some(secret_version.clone()),
            same_destination,
            save: NewConfig::new_save(),
        };
        let save = new.save.clone();
        let saved = match self
            .configs
            .save(org, project, new, current_version, self.clock.now())
            .await
        {
            Ok(saved) => saved,
            Err(e) => match self
                .landed(
                    (org, project),
                    &save,
                    // A write refused on its condition is over; one that failed otherwise (an
                    // attempt cut short) may still land: what it staged stays, as harmless as
                    // any version left staged.
                    kept.is_none()
                        .then_some(secret_version.as_str())
                        .filter(|_| matches!(e, ConfigError::VersionMismatch { .. })),
                )
                .await
            {
                Some(saved) => saved,
                None => {
                    return match e {
                        ConfigError::VersionMismatch { current } => Ok(Err(current)),
                        other => Err(config_error(other)),
                    };
                }
            },
        };
        match self.secrets.promote(org, project, &secret_version).await {
            Ok(()) => {}
            // A DELETE of the project, between the stage and the save, removed the secret with
            // the staged version in it: the configuration just saved names credentials that are
            // gone. It is taken back, and the save goes again as after a lost race.
            Err(CredentialsError::NotFound | CredentialsError::Deleting) => {
                tracing::warn!(
                    organization_id = org,
                    project_id = project,
                    "the staged credentials were deleted meanwhile; saving again"
                );
                return match self.configs.delete(org, project, Some(saved.version)).await {
                    Ok(_) => Ok(Err(0)),
                    Err(ConfigError::VersionMismatch { current }) => Ok(Err(current)),
                    Err(e) => Err(config_error(e)),
                };
            }
            // The configuration names its secret version, so delivery already uses the new
            // credentials; only the label is behind, and the next save moves it.
            Err(e) => {
                tracing::warn!(organization_id = org, project_id = project, error = %e, "saved secret version not made current");
            }
        }
        let (action, description) = if current.is_some() {
            ("update", "Updated streaming configuration")
        } else {
            ("create", "Created streaming configuration")
        };
        let change = Change {
            action,
            description,
            config: Some(&saved),
        };
        self.audit(caller, org, project, change).await;
        // New settings may be what a refused or retrying destination needed.
        self.retry_lane_now(org, project, true).await;
        // From here on the save stands: what cannot be read again is answered as saved.
        let saved = match self.configs.configuration(org, project).await {
            Ok(now) => now.unwrap_or(saved),
            Err(e) => {
                tracing::warn!(organization_id = org, project_id = project, error = %e, "the saved configuration not read again; answered as saved");
                saved
            }
        };
        // A save that landed after this one may have promoted its version before this promote
        // moved the label back: the label goes to the version the configuration names now
        // (delivery reads that version whatever the label says; the label is for people and
        // for Secrets Manager, which removes unlabelled versions).
        if let Some(named) = saved.secret_version.as_deref()
            && named != secret_version
            && let Err(e) = self.secrets.promote(org, project, named).await
        {
            tracing::warn!(organization_id = org, project_id = project, error = %e, "the saved configuration's secret version not made current");
        }
        let health = match self.health_of(org, project, Some(&saved)).await {
            Ok(health) => health,
            // Without when the oldest owed event was stored (the lane's own figures stand).
            Err(e) => {
                tracing::warn!(organization_id = org, project_id = project, error = %e, "the saved destination's oldest owed event not read; answered without it");
                HealthView::at(&saved.health, &saved.lane, None, self.clock.now())
            }
        };
        Ok(Ok(view_of(org, project, Some(&saved), trust, health)))
    }

    /// Lets saves land again; a mark left behind lapses by itself.
    async fn end_deletion(&self, org: &str, project: &str, deletion: &Deletion) {
        if let Err(e) = self.configs.end_deletion(org, project, deletion).await {
            tracing::warn!(organization_id = org, project_id = project, error = %e, "the deletion's mark was not cleared; it lapses by itself");
        }
    }

    /// The Datadog key already saved, for a request that leaves `api_key` out.
    pub(crate) async fn saved_datadog_key(
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
        let saved = self.secrets.get(org, project, version, true).await;
        match &*saved.map_err(|e| match e {
            // Gone or damaged for good: retrying cannot help, sending the key again does.
            CredentialsError::NotFound | CredentialsError::Unreadable => ApiError::bad_request(
                "missing_field",
                "the saved Datadog API key cannot be read; send `datadog.api_key` again",
            ),
            other => credentials_error(other),
        })? {
            Credentials::Datadog { api_key } => Ok(api_key.clone()),
            Credentials::Cloudwatch { .. } => Err(required()),
        }
    }

    pub(crate) async fn delete(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
        if_match: Option<IfMatch>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        // Without If-Match the delete is unconditional: never 412 (one that saves keep beating
        // to the table is told to come back, as such a save is).
        let condition = match &if_match {
            None => None,
            Some(m) => {
                let current = self
                    .configs
                    .configuration(org, project)
                    .await
                    .map_err(config_error)?;
                let current_version = current.as_ref().map_or(0, |c| c.version);
                if !m.allows(current_version) {
                    return Err(ApiError::version_mismatch(current_version));
                }
                // 0 too: a save landing before the mark below then makes this a 412.
                Some(current_version)
            }
        };
        // Every delete removes a secret (or finds none) in Secrets Manager: counted.
        self.rate_limit(org, CONFIGURATION_CHANGES, self.clock.now())
            .await?;
        // Until the secret is gone, no configuration is saved in place of the removed one: it
        // would name credentials this deletion is about to remove.
        let deletion = self
            .configs
            .begin_deletion(org, project, self.clock.now())
            .await
            .map_err(config_error)?;
        // Before the delete: what was owed before then was the removed destination's.
        let removed_ms = self.clock.now_ms();
        let deleted = match self.configs.delete(org, project, condition).await {
            Ok(deleted) => deleted,
            Err(e) => {
                self.end_deletion(org, project, &deletion).await;
                return Err(match e {
                    ConfigError::VersionMismatch { .. } if if_match.is_none() => busy(),
                    other => config_error(other),
                });
            }
        };
        // Told at once, before the secret's removal and the owed events' (whose calls may take
        // long enough for the function to be stopped): a retry of this request finds no
        // configuration left and has nothing to tell.
        if let Some(deleted) = &deleted {
            self.audit(
                caller,
                org,
                project,
                Change {
                    action: "delete",
                    description: "Deleted streaming configuration",
                    config: Some(deleted),
                },
            )
            .await;
        }
        // The owed events are dropped whether or not the secret could go: a secret Secrets
        // Manager will not delete yet fails this request, and its retry, which finds no
        // configuration left, deletes only the secret. A call that went unanswered might still
        // land: saves stay refused until the mark lapses then.
        let secret_deleted = self.secrets.delete(org, project).await;
        if !secret_deleted
            .as_ref()
            .is_err_and(CredentialsError::may_have_landed)
        {
            self.end_deletion(org, project, &deletion).await;
        }
        if deleted.is_some() {
            self.forget_owed(org, project, removed_ms).await;
        }
        secret_deleted.map_err(credentials_error)?;
        let mut response = ApiGatewayV2httpResponse::default();
        response.status_code = 204;
        Ok(response)
    }
}

/// The organization's External ID and the AWS account its customers trust.
struct Trust {
    external_id: String,
    aws_account_id: String,
}

fn view_of(
    org: &str,
    project: &str,
    config: Option<&StreamingConfig>,
    trust: Trust,
    health: HealthView,
) -> ApiGatewayV2httpResponse {
    let view = View {
        organization_id: org.to_owned(),
        project_id: project.to_owned(),
        aws_account_id: trust.aws_account_id,
        external_id: trust.external_id,
        destination: config.map(DestinationView::from),
        health,
        version: config.map_or(0, |c| c.version),
        updated_at: config.map(|c| c.updated_at.clone()),
    };
    let mut response = json_response(200, &view);
    response.headers.insert(
        http::header::ETAG,
        http::HeaderValue::from_str(&format!("\"{}\"", view.version)).expect("digits"),
    );
    response
}

/// Whether two credentials are the same (secrets compared in constant time).
fn same_credentials(a: &Credentials, b: &Credentials) -> bool {
    let same = |a: &SecretString, b: &SecretString| -> bool {
        subtle::ConstantTimeEq::ct_eq(a.expose_secret().as_bytes(), b.expose_secret().as_bytes())
            .into()
    };
    match (a, b) {
        (
            Credentials::Cloudwatch {
                role_arn: a_role,
                external_id: a_id,
            },
            Credentials::Cloudwatch {
                role_arn: b_role,
                external_id: b_id,
            },
        ) => a_role == b_role && same(a_id, b_id),
        (Credentials::Datadog { api_key: a }, Credentials::Datadog { api_key: b }) => same(a, b),
        _ => false,
    }
}

/// A change without `If-Match` that other saves kept beating to the table: 429, to retry.
fn busy() -> ApiError {
    ApiError::too_many(
        "busy",
        "the streaming configuration is being saved by other requests right now; retry in a moment",
        1,
    )
}
