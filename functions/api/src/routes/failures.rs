//! `GET /streaming/failures`: events a destination never took, with their events.

use super::events::limit_query;
use crate::cursor::Scope;
use crate::error::ApiError;
use crate::view::{FailurePage, FailureView};
use crate::{Api, PAGE_BYTES, Ports, config_error, internal, json_response, request};
use audit_log::streaming::FailureLog;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use serde_json::value::RawValue;

/// Failures listed per page at most (their events come along).
pub const MAX_FAILURE_PAGE: usize = 100;

impl<P: Ports> Api<P> {
    pub(crate) async fn failures(
        &self,
        request: &ApiGatewayV2httpRequest,
        org: &str,
        project: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        request::only_parameters(request, &["limit", "cursor"])?;
        let limit = limit_query(request, MAX_FAILURE_PAGE)?;
        let scope = Scope::new("failures", org, project, &[]);
        let after = self.resume_after(&scope, request, None, None).await?;
        let (failures, mut next) = self
            .configs
            .failures(org, project, after.as_deref(), limit)
            .await
            .map_err(config_error)?;
        let keys: Vec<String> = failures.iter().map(|f| f.event_sort_key.clone()).collect();
        let now = self.clock.now().unix_timestamp();
        let mut events: std::collections::HashMap<String, String> = self
            .events
            .events_at(org, project, &keys)
            .await
            .map_err(|e| internal("events table")(&e))?
            .into_iter()
            // Past its retention the event is gone, as the listing has it, though DynamoDB
            // deletes its item only days later.
            .filter(|(key, _)| key.expires_at > now)
            .filter_map(|(key, json)| Some((key.sort_key, json?)))
            .collect();
        let mut listed: Vec<FailureView> = Vec::with_capacity(failures.len());
        let mut bytes = 0;
        for f in failures {
            let event = events
                .remove(&f.event_sort_key)
                .and_then(|json| RawValue::from_string(json).ok());
            let item = FailureView {
                event_id: f.event_id,
                failed_at: f.failed_at,
                reason: f.reason,
                event,
            };
            let size = audit_log::store::bytes_in_response(
                &serde_json::to_string(&item).map_err(|e| internal("failure")(&e))?,
            ) + 1;
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
            &FailurePage {
                failures: listed,
                next_cursor: self.next_cursor(&scope, next).await?,
            },
        ))
    }
}
