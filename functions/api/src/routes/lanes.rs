//! The destination's delivery lane through the API: pause, resume, a new try after a fix,
//! and the lane's part of the health view.

use crate::audit::Change;
use crate::error::ApiError;
use crate::request::Caller;
use crate::view::HealthView;
use crate::{Api, Ports, config_error};
use audit_log::clock::Clock;
use audit_log::lane::{LaneError, LaneKey, LaneStore, Lanes, OwedSpan};
use audit_log::streaming::{Configurations, StreamingConfig};
use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;

impl<P: Ports> Api<P> {
    fn lanes(&self) -> Lanes<'_, P::Configs, P::Timers, dyn Clock> {
        Lanes {
            store: &self.configs,
            timers: &self.timers,
            clock: &*self.clock,
            policy: &self.lanes,
        }
    }

    async fn saved(&self, org: &str, project: &str) -> Result<StreamingConfig, ApiError> {
        self.configs
            .configuration(org, project)
            .await
            .map_err(config_error)?
            .ok_or_else(|| ApiError::not_found("no destination is saved for this project"))
    }

    /// `POST /streaming/pause`: nothing is sent; events are kept owed until resumed.
    /// Pausing a lane that is paused already changes nothing.
    pub(crate) async fn pause(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let before = self.saved(org, project).await?;
        let key = LaneKey::new(org, project);
        let paused = self.lanes().pause(&key).await.map_err(lane_error)?;
        let change = paused.then_some("Paused log streaming");
        self.lane_changed(caller, &before, change).await
    }

    /// `POST /streaming/resume`: what was owed is delivered oldest first, then live events.
    /// Resuming a lane that is not paused changes nothing.
    pub(crate) async fn resume(
        &self,
        caller: &Caller,
        org: &str,
        project: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let before = self.saved(org, project).await?;
        let key = LaneKey::new(org, project);
        let resumed = self.lanes().resume(&key).await.map_err(lane_error)?;
        let change = resumed.then_some("Resumed log streaming");
        self.lane_changed(caller, &before, change).await
    }

    /// Logs and audits a pause or resume that changed the lane (`change`: its description),
    /// then answers with the configuration as it now is. The audit names the destination as
    /// read before the change (the lane's change leaves it as it was), so a failed read of the
    /// answer cannot lose the audit event: a retried resume changes nothing and audits nothing.
    async fn lane_changed(
        &self,
        caller: &Caller,
        before: &StreamingConfig,
        change: Option<&str>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (org, project) = (&*before.organization_id, &*before.project_id);
        if let Some(description) = change {
            tracing::info!(
                organization_id = org,
                project_id = project,
                description,
                "delivery changed"
            );
            let change = Change {
                action: "update",
                description,
                config: Some(before),
            };
            self.audit(caller, org, project, change).await;
        }
        let saved = self.saved(org, project).await?;
        self.view(org, project, Some(&saved)).await
    }

    /// A refused or retrying destination tries again at once (after a save or a successful
    /// Test connection); after a save (`saved`), a catching-up one goes on at once with the new
    /// settings. The lane's own schedule is the fallback if this fails.
    pub(crate) async fn retry_lane_now(&self, org: &str, project: &str, saved: bool) {
        let (lanes, key) = (self.lanes(), LaneKey::new(org, project));
        let asked = if saved {
            lanes.saved(&key).await
        } else {
            lanes.retry_now(&key).await
        };
        if let Err(e) = asked {
            tracing::warn!(organization_id = org, project_id = project, error = %e, "could not ask the destination's lane to try again");
        }
    }

    /// A removed destination is owed nothing: a destination saved later must not inherit
    /// events owed to this one. The lane's own call finishes what this leaves (a few seconds'
    /// worth here, inside the request).
    /// `removed_ms`: taken before the destination was deleted (see `Lanes::forget`).
    pub(crate) async fn forget_owed(&self, org: &str, project: &str, removed_ms: i64) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        if let Err(e) = self
            .lanes()
            .forget(&LaneKey::new(org, project), removed_ms, deadline)
            .await
        {
            tracing::warn!(organization_id = org, project_id = project, error = %e, "owed events of a removed destination left for its lane's call");
        }
    }

    /// Health as the view shows it: the recorded deliveries and the lane.
    pub(crate) async fn health(
        &self,
        org: &str,
        project: &str,
        config: Option<&StreamingConfig>,
    ) -> Result<HealthView, ApiError> {
        self.health_of(org, project, config)
            .await
            .map_err(lane_error)
    }

    /// [`Self::health`], the lane's failure left to the caller.
    pub(crate) async fn health_of(
        &self,
        org: &str,
        project: &str,
        config: Option<&StreamingConfig>,
    ) -> Result<HealthView, LaneError> {
        let Some(config) = config else {
            return Ok(HealthView::at(
                &Default::default(),
                &Default::default(),
                None,
                self.clock.now(),
            ));
        };
        let oldest = if config.lane.owed > 0 || config.lane.state != Default::default() {
            self.configs
                .oldest_owed_at(&LaneKey::new(org, project), OwedSpan::of(&config.lane))
                .await?
        } else {
            None
        };
        Ok(HealthView::at(
            &config.health,
            &config.lane,
            oldest,
            self.clock.now(),
        ))
    }
}

fn lane_error(e: LaneError) -> ApiError {
    tracing::error!(error = %e, "the delivery lane could not be read or updated");
    ApiError::internal()
}
