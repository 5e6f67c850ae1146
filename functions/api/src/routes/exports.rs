//! `POST <base>/exports` and `GET <base>/exports/{export_id}`: a project's stored events of a
//! range, with the search's filters, as one gzip file (NDJSON or CSV) written in the background
//! and downloaded through a presigned link.

use crate::error::ApiError;
use crate::view::ExportView;
use crate::{Api, Ports, config_error, input, internal, json_response};
use audit_log::clock::seconds_text;
use audit_log::message::ExportStep;
use audit_log::streaming::{Export, ExportState, Exports, RUNNING_EXPORTS};
use aws_lambda_events::event::apigw::ApiGatewayV2httpResponse;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// How long a download link works.
pub const DOWNLOAD_VALID: Duration = Duration::from_secs(15 * 60);
/// A running export that has not started a step for this long has died for good (its step was
/// dead-lettered): it is shown as failed, and its slot is free to take.
const STOPPED_AFTER: time::Duration =
    time::Duration::seconds(audit_log::streaming::EXPORT_STALE_AFTER_SECONDS);
/// One without a step for this long may only be waiting its turn: shown running, saying so.
const STALLED_AFTER: time::Duration =
    time::Duration::seconds(audit_log::streaming::EXPORT_STALLED_AFTER_SECONDS);
/// What a caller turned away for the organization's running exports is told to wait.
const RETRY_EXPORT_AFTER: u64 = 60;

impl<P: Ports> Api<P> {
    pub(crate) async fn start_export(
        &self,
        org: &str,
        project: &str,
        body: &[u8],
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let request = input::export(body)?;
        let now = self.clock.now();
        // A range that ends before it starts reads nothing, and DynamoDB refuses it.
        if request.until.is_none() && request.since.is_some_and(|since| since > now) {
            return Err(ApiError::bad_request(
                "invalid_field",
                "`since` must not be in the future when `until` is not given (it is then now)",
            ));
        }
        let time = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let mut export = Export {
            export_id: audit_log::streaming::new_external_id(),
            organization_id: org.to_owned(),
            project_id: project.to_owned(),
            state: ExportState::Running,
            format: request.format,
            since: request.since.map(time),
            // The range ends when it was asked for: events captured later are not in it.
            until: time(request.until.unwrap_or(now)),
            filters: request.filters,
            events: 0,
            bytes: 0,
            created_at: seconds_text(now),
            updated_at: seconds_text(now),
            finished_at: None,
            error: None,
            cursor: None,
            upload_id: None,
            parts: Vec::new(),
            pending: None,
            step: 0,
            failed_steps: 0,
            lease_until: 0,
            slot: 0,
            uploaded: false,
            unreadable: 0,
        };
        if !self
            .configs
            .start_export(&mut export, now)
            .await
            .map_err(config_error)?
        {
            return Err(ApiError::too_many(
                "exports_running",
                format!(
                    "{RUNNING_EXPORTS} exports of this organization are running; retry when one has finished"
                ),
                RETRY_EXPORT_AFTER,
            ));
        }
        let step = ExportStep {
            organization_id: org.to_owned(),
            project_id: project.to_owned(),
            export_id: export.export_id.clone(),
        };
        if let Err(e) = self.send(&self.settings.export_queue_url, &step).await {
            let mut failed = export.clone();
            failed.state = ExportState::Failed;
            failed.error = Some("the export could not be queued".into());
            let _ = self.configs.save_export(&failed, now, false).await;
            return Err(internal("export queue")(&e));
        }
        tracing::info!(
            organization_id = org,
            project_id = project,
            export_id = export.export_id,
            format = %export.format,
            "export started"
        );
        let mut response = json_response(202, &ExportView::of(&export, None));
        if let Ok(location) = http::HeaderValue::from_str(&format!("exports/{}", export.export_id))
        {
            response.headers.insert(http::header::LOCATION, location);
        }
        Ok(response)
    }

    pub(crate) async fn get_export(
        &self,
        org: &str,
        project: &str,
        id: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        super::job_id(id, "export_id")?;
        let mut export = self
            .configs
            .export(org, project, id)
            .await
            .map_err(config_error)?
            .ok_or_else(|| super::unknown_job("export"))?;
        let now = self.clock.now();
        if now >= export.expires_at(now) {
            return Err(ApiError::not_found(
                "this export and its file have expired; start another",
            ));
        }
        let moved = OffsetDateTime::parse(&export.updated_at, &Rfc3339).unwrap_or(now);
        if export.state == ExportState::Running && now - moved > STOPPED_AFTER {
            export.state = ExportState::Failed;
            export.error = Some("the export stopped making progress; start it again".into());
        } else if export.state == ExportState::Running && now - moved > STALLED_AFTER {
            export.error = Some(audit_log::streaming::EXPORT_STALLED.into());
        }
        let download = match export.state {
            ExportState::Completed => {
                let url = self
                    .bucket
                    .download_url(&export.object_key(), DOWNLOAD_VALID)
                    .await
                    .map_err(|e| internal("export bucket")(&e))?;
                Some((url, seconds_text(now + DOWNLOAD_VALID)))
            }
            _ => None,
        };
        Ok(json_response(200, &ExportView::of(&export, download)))
    }
}
