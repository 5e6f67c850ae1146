//! `POST /streaming/replays` and its status: stored events delivered again.

use crate::error::ApiError;
use crate::{Api, Ports, config_error, input, internal, json_response};
use audit_log::clock::seconds_text;
use audit_log::message::ReplayPart;
use audit_log::streaming::{
    Configurations, REPLAY_LOST, REPLAY_STALLED, REPLAY_SUPERSEDED, REPLAYS_STARTED, Replay,
    ReplayState, Replays,
};
use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;
use time::format_description::well_known::Rfc3339;

/// A replay asks for at most this many days.
pub const MAX_REPLAY_DAYS: i64 = 366;
/// Replays an organization runs at once, across its projects (checked before a replay
/// starts: two requests at the same moment may both pass).
pub const REPLAYS_AT_ONCE: usize = 2;
/// Seconds a caller is told to wait while the project's replay runs.
const RUNNING_REPLAY_RETRY_AFTER: u64 = 60;

impl<P: Ports> Api<P> {
    pub(crate) async fn start_replay(
        &self,
        org: &str,
        project: &str,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        // Both in UTC already.
        let (since, until, only_failed) = input::replay(body)?;
        if self
            .configs
            .configuration(org, project)
            .await
            .map_err(config_error)?
            .is_none()
        {
            return Err(ApiError::not_found(
                "nothing is saved to replay to; save a destination first",
            ));
        }
        let at = self.clock.now();
        // Checked before the organization's count: a replay turned away costs none of it.
        if self
            .configs
            .replay_running(org, project, at)
            .await
            .map_err(config_error)?
        {
            return Err(replay_running());
        }
        // The service runs two replay parts at once, whoever's: an organization running more
        // replays than that would only push everyone's parts further back in the queue.
        let running = self
            .configs
            .replays_running(org, at, REPLAYS_AT_ONCE)
            .await
            .map_err(config_error)?;
        if running >= REPLAYS_AT_ONCE {
            return Err(ApiError::too_many(
                "replays_running",
                format!(
                    "{REPLAYS_AT_ONCE} replays of the organization's projects are running; \
                     wait for one to finish"
                ),
                RUNNING_REPLAY_RETRY_AFTER,
            ));
        }
        self.rate_limit(org, REPLAYS_STARTED, at).await?;
        let now = seconds_text(at);
        let mut replay = Replay {
            replay_id: audit_log::streaming::new_external_id(),
            organization_id: org.to_owned(),
            project_id: project.to_owned(),
            state: ReplayState::Running,
            since: since.format(&Rfc3339).unwrap_or_default(),
            until: until.format(&Rfc3339).unwrap_or_default(),
            only_failed,
            cursor: None,
            saves: 0,
            paused: false,
            delivered: 0,
            failed: 0,
            created_at: now.clone(),
            updated_at: now,
            finished_at: None,
            last_error: None,
        };
        if !self
            .configs
            .start_replay(&mut replay, at)
            .await
            .map_err(config_error)?
        {
            // Started by another request since the check above.
            return Err(replay_running());
        }
        let message = ReplayPart {
            organization_id: org.to_owned(),
            project_id: project.to_owned(),
            replay_id: replay.replay_id.clone(),
            troubled: 0,
        };
        if let Err(e) = self.send(&self.settings.replay_queue_url, &message).await {
            let mut failed = replay.clone();
            failed.state = ReplayState::Failed;
            failed.finished_at = Some(seconds_text(at));
            failed.last_error = Some("the replay could not be queued".into());
            let _ = self.configs.save_replay(&mut failed, at).await;
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
            // Relative to the request's `.../streaming/replay`: a client resolves it to
            // `.../streaming/replays/{id}`.
            http::HeaderValue::from_str(&format!("replays/{}", replay.replay_id))
        {
            response.headers.insert(http::header::LOCATION, location);
        }
        Ok(response)
    }

    /// A replay as its caller sees it: one whose heartbeat went stale (its part kept waiting by
    /// a busy queue, or dead-lettered) still runs while it holds the project's lock, and says
    /// so and what replaces it; once it does not (a newer replay took the lock, and may have
    /// ended since), it is failed, as its part will stop.
    pub(crate) async fn get_replay(
        &self,
        org: &str,
        project: &str,
        id: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        super::job_id(id, "replay_id")?;
        let mut replay = self
            .configs
            .replay(org, project, id)
            .await
            .map_err(config_error)?
            .ok_or_else(|| super::unknown_job("replay"))?;
        let now = self.clock.now();
        if replay.stalled_at(now) {
            let holder = self
                .configs
                .replay_lock_holder(org, project)
                .await
                .map_err(config_error)?;
            if holder.as_deref() != Some(replay.replay_id.as_str()) {
                replay.state = ReplayState::Failed;
                replay.last_error = Some(REPLAY_SUPERSEDED.into());
            } else if replay.lost_at(now) {
                replay.state = ReplayState::Failed;
                replay.last_error = Some(REPLAY_LOST.into());
            } else {
                replay.last_error = Some(REPLAY_STALLED.into());
            }
        }
        Ok(json_response(200, &replay))
    }

    /// Puts a JSON message on one of the service's queues, in its organization's group.
    pub(crate) async fn send(
        &self,
        queue_url: &str,
        message: &impl audit_log::message::Queued,
    ) -> Result<(), String> {
        audit_log::message::send(&self.queues, queue_url, message, 0).await
    }
}

/// 429 like a third export: what the project already has under way.
fn replay_running() -> ApiError {
    ApiError::too_many(
        "replay_running",
        "a replay of this project is running; wait for it to finish (GET its replay id)",
        RUNNING_REPLAY_RETRY_AFTER,
    )
}
