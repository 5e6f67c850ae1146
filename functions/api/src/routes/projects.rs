//! `GET /v1/organizations/{organization_id}/audit-logs/projects`: the organization's projects
//! with stored events, deleted registries included, so their logs can be found after the
//! registry is gone.

use super::events::limit_query;
use crate::cursor::{self, Scope};
use crate::error::ApiError;
use crate::{
    Api, MAX_PAGE_SIZE, MAX_PROJECT_PAGE, Ports, config_error, internal, json_response, request,
};
use audit_log::store::{StoredKey, partition_key};
use audit_log::streaming::ProjectIndex;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

/// Projects whose events are looked up at once.
const CONCURRENT_LOOKUPS: usize = 8;

#[derive(Debug, Serialize)]
struct ProjectWithEvents {
    project_id: String,
    newest_event_at: String,
    oldest_event_at: String,
}

impl<P: Ports> Api<P> {
    pub(crate) async fn projects(
        &self,
        request: &ApiGatewayV2httpRequest,
        org: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        request::only_parameters(request, &["limit", "cursor"])?;
        // The listing's bounds, as for events; a page looks at no more than its own most.
        let limit = limit_query(request, MAX_PAGE_SIZE)?.min(MAX_PROJECT_PAGE);
        // Positions are notes' key parts (they were project ids, which a key part is not for
        // every id): a cursor made before is refused, not read as one.
        let scope = Scope::new("projects-by-key", org, "", &[]);
        let after = match request::query(request, "cursor") {
            Some(c) => {
                // A position is a project as its note's key holds it (separators escaped):
                // anything else is no cursor of this listing.
                let position = scope.decode(&*self.service_key().await?, &c)?;
                if !audit_log::store::is_sort_key_part(&position) {
                    return Err(cursor::invalid());
                }
                Some(position)
            }
            None => None,
        };
        // An organization-wide listing: a page reads both ends of up to 100 projects.
        self.rate_limit(org, self.searches, self.clock.now())
            .await?;
        let now = self.clock.now().unix_timestamp();
        let (noted, next) = self
            .configs
            .noted(org, after.as_deref(), limit, now)
            .await
            .map_err(config_error)?;
        let retention = self.settings.retention;
        let spans: Vec<Option<ProjectWithEvents>> = futures::stream::iter(noted)
            .map(|project| async move {
                let partition = partition_key(org, &project);
                let span = self.events.span(&partition, now, retention).await?;
                Ok::<_, audit_log::store::StoreError>(span.and_then(|(newest, oldest)| {
                    Some(ProjectWithEvents {
                        newest_event_at: time_of(&newest)?,
                        oldest_event_at: time_of(&oldest)?,
                        project_id: project,
                    })
                }))
            })
            .buffered(CONCURRENT_LOOKUPS)
            .try_collect()
            .await
            .map_err(|e| internal("events table")(&e))?;
        // A noted project whose events have all expired is not listed.
        let projects: Vec<ProjectWithEvents> = spans.into_iter().flatten().collect();
        Ok(json_response(
            200,
            &serde_json::json!({
                "projects": projects,
                "next_cursor": self.next_cursor(&scope, next).await?,
            }),
        ))
    }
}

/// The RFC 3339 time a sort key starts with.
fn time_of(sort_key: &str) -> Option<String> {
    audit_log::store::rfc3339_of_sort_time(StoredKey::new(sort_key, 0)?.time_part())
}
