//! The events listings: one project's stored events (`GET <base>`) and the organization's
//! across its projects (`GET /v1/organizations/{organization_id}/audit-logs`), by time, with
//! the search's filters, in pages.

use crate::cursor::Scope;
use crate::error::ApiError;
use crate::view::EventPage;
use crate::{
    Api, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, PAGE_BYTES, Ports, SEARCH_TIME, config_error, internal,
    json_response, request,
};
use audit_log::search::{Filter, PARAMETERS};
use audit_log::store::{PageRequest, StoreError, partition_key};
use audit_log::streaming::noted_projects;
use aws_lambda_events::event::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpResponse};
use time::OffsetDateTime;

impl<P: Ports> Api<P> {
    /// One page of a project's events, or (without a project) of the organization's.
    pub(crate) async fn list(
        &self,
        request: &ApiGatewayV2httpRequest,
        org: &str,
        project: Option<&str>,
    ) -> Result<ApiGatewayV2httpResponse, ApiError> {
        request::only_parameters(request, &[&request::PAGING[..], &PARAMETERS[..]].concat())?;
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
        let filter = filter_query(request)?;
        // The instants, not their text: a client may write the same time another way
        // between pages (`Z` or `+00:00`, with or without fractions).
        let instant = |t: Option<OffsetDateTime>| t.map(|t| t.unix_timestamp_nanos().to_string());
        let mut shape = vec![instant(since), instant(until)];
        shape.extend(filter.named());
        let shape: Vec<Option<&str>> = shape.iter().map(Option::as_deref).collect();
        let scope = match project {
            Some(project) => Scope::new("events", org, project, &shape),
            None => Scope::new("organization-events", org, "", &shape),
        };
        let after = self.resume_after(&scope, request, since, until).await?;
        // Counted once the request is known to be good: a refused one reads nothing.
        if !filter.is_empty() || project.is_none() {
            self.rate_limit(org, self.searches, self.clock.now())
                .await?;
        }
        let partitions = match project {
            Some(project) => vec![partition_key(org, project)],
            None => noted_projects(&self.configs, org, self.clock.now().unix_timestamp())
                .await
                .map_err(config_error)?
                .iter()
                .map(|project| partition_key(org, project))
                .collect(),
        };
        let page = self
            .events
            .page(
                &partitions,
                &PageRequest {
                    since,
                    until,
                    after,
                    limit,
                    max_bytes: PAGE_BYTES,
                    now: self.clock.now().unix_timestamp(),
                    filter,
                    read_budget: self.search_budget,
                    deadline: Some(tokio::time::Instant::now() + SEARCH_TIME),
                },
            )
            .await
            .map_err(|e| match e {
                StoreError::TimedOut => ApiError::too_slow(
                    "the organization's listing reads every project with events before it \
                     answers, and could not read them all in time: retry later, or list \
                     events project by project (/projects/{project_id}/audit-logs)",
                ),
                e => internal("events table")(&e),
            })?;
        Ok(json_response(
            200,
            &EventPage {
                events: page.events,
                next_cursor: self.next_cursor(&scope, page.next_after).await?,
            },
        ))
    }
}

/// The search's filters among the query parameters.
pub(crate) fn filter_query(request: &ApiGatewayV2httpRequest) -> Result<Filter, ApiError> {
    Filter::from_pairs(request::query_pairs(request))
        .map_err(|e| ApiError::bad_request("invalid_query", e.to_string()))
}

/// An RFC 3339 query parameter, in UTC whatever offset it was given with.
pub(crate) fn time_query(
    request: &ApiGatewayV2httpRequest,
    name: &str,
) -> Result<Option<OffsetDateTime>, ApiError> {
    request::query(request, name)
        .map(|v| {
            let read = audit_log::clock::utc_from_rfc3339;
            read(&v)
                .or_else(|| read(&offset_sent_bare(&v)?))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_query",
                        format!(
                            "`{name}` must be an RFC 3339 date-time such as 2026-01-01T00:00:00Z \
                         (in a query, an offset's `+` is sent as %2B)"
                        ),
                    )
                })
        })
        .transpose()
}

/// A date-time whose offset's `+` came unencoded in a hand-made URL (`T10:00:00+02:00`), which
/// form decoding reads as a space: RFC 3339 has no space before an offset, so it was a `+`.
fn offset_sent_bare(value: &str) -> Option<String> {
    let (time, offset) = value.rsplit_once(' ')?;
    let hours_minutes = offset.len() == 5
        && offset.bytes().enumerate().all(|(i, b)| {
            if i == 2 {
                b == b':'
            } else {
                b.is_ascii_digit()
            }
        });
    hours_minutes.then(|| format!("{time}+{offset}"))
}

/// `limit`, from 1 to `max`; 100 when absent (or `max` when smaller).
pub(crate) fn limit_query(
    request: &ApiGatewayV2httpRequest,
    max: usize,
) -> Result<usize, ApiError> {
    match request::query(request, "limit") {
        None => Ok(DEFAULT_PAGE_SIZE.min(max)),
        // Digits only: Rust's parser would take a sign (`+5`) too.
        Some(v) => Some(v)
            .filter(|v| v.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|v| v.parse().ok())
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_query",
                    format!("`limit` must be a whole number from 1 to {max}"),
                )
            }),
    }
}
