//! `GET /events`: the stored audit events of a project, by time, in pages.

use crate::cursor::{self, Scope};
use crate::error::ApiError;
use crate::view::EventPage;
use crate::{
    Api, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PAGE_BYTES, Ports, internal, json_response, request,
};
use audit_log::store::PageRequest;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

impl<P: Ports> Api<P> {
    pub(crate) async fn list(
        &self,
        request: &ApiGatewayV2httpRequest,
        org: &str,
        project: &str,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        let (since, until) = (time_query(request, "since")?, time_query(request, "until")?);
        if let (Some(s), Some(u)) = (since, until)
            && s > u
        {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`since` must not be after `until`",
            ));
        }
        let limit = limit_query(request, MAX_PAGE_SIZE)?;
        let scope = Scope::new(
            "events",
            org,
            project,
            &[
                request::query(request, "since"),
                request::query(request, "until"),
            ],
        );
        let after = cursor::resume_after(&scope, request::query(request, "cursor"), since, until)?;
        let page = self
            .events
            .page(
                org,
                project,
                &PageRequest {
                    since,
                    until,
                    after,
                    limit,
                    max_bytes: PAGE_BYTES,
                    now: self.clock.now().unix_timestamp(),
                },
            )
            .await
            .map_err(|e| internal("events table")(&e))?;
        Ok(json_response(
            200,
            &EventPage {
                events: page.events,
                next_cursor: page.next_after.map(|sk| scope.encode(&sk)),
            },
        ))
    }
}

/// An RFC 3339 query parameter, in UTC whatever offset it was given with.
pub(crate) fn time_query(
    request: &ApiGatewayV2httpRequest,
    name: &str,
) -> Result<Option<OffsetDateTime>, ApiError> {
    request::query(request, name)
        .map(|v| {
            OffsetDateTime::parse(v, &Rfc3339)
                .map(|t| t.to_offset(time::UtcOffset::UTC))
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!(
                            "`{name}` must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z"
                        ),
                    )
                })
        })
        .transpose()
}

/// `limit`, from 1 to `max`; 100 when absent (or `max` when smaller).
pub(crate) fn limit_query(
    request: &ApiGatewayV2httpRequest,
    max: usize,
) -> Result<usize, ApiError> {
    match request::query(request, "limit") {
        None => Ok(DEFAULT_PAGE_SIZE.min(max)),
        Some(v) => v
            .parse()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`limit` must be a whole number from 1 to {max}"),
                )
            }),
    }
}
