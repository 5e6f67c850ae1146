//! What a request says: its route, the caller's organization, its query, headers and body.

use crate::error::ApiError;
use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
use base64::Engine;
use http::Method;
use percent_encoding::percent_decode_str;

/// Bodies are small JSON documents; anything larger is refused before parsing.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    ListEvents,
    /// The organization's events across its projects.
    ListOrganizationEvents,
    /// The organization's projects with stored events.
    ListProjects,
    GetStreaming,
    PutStreaming,
    DeleteStreaming,
    TestStreaming,
    PauseStreaming,
    ResumeStreaming,
    ListTests,
    ListFailures,
    StartReplay,
    GetReplay,
    StartExport,
    GetExport,
}

/// A request aimed at one organization's project, or at the organization.
#[derive(Debug)]
pub struct Target {
    pub route: Route,
    pub organization_id: String,
    /// Empty for the organization's own routes.
    pub project_id: String,
    /// `GetReplay`'s replay or `GetExport`'s export.
    pub job_id: Option<String>,
}

/// The path the caller asked for.
pub fn path(request: &ApiGatewayV2httpRequest) -> &str {
    request
        .raw_path
        .as_deref()
        .or(request.request_context.http.path.as_deref())
        .unwrap_or_default()
}

fn not_found() -> ApiError {
    ApiError::not_found("no such route; see the API's OpenAPI document")
}

/// A path under `/v1/organizations/{organization_id}/`, its ids not yet checked: whose it is
/// is known before what it asks, so a caller of another organization is refused before a 400
/// or a 404 could tell it anything of the path. (Only a segment that is not UTF-8 once
/// percent-decoded is refused first, which API Gateway, decoding paths itself, never hands on.)
#[derive(Debug)]
pub struct Address {
    pub organization_id: String,
    project_id: Option<String>,
    rest: Vec<String>,
}

/// Matches `/v1/organizations/{organization_id}/projects/{project_id}/audit-logs[...]`.
#[cfg(test)]
pub fn route(request: &ApiGatewayV2httpRequest) -> Result<Target, ApiError> {
    address(request)?.target(request)
}

/// The organization and project a path names, and what follows them.
pub fn address(request: &ApiGatewayV2httpRequest) -> Result<Address, ApiError> {
    let path = path(request);
    // API Gateway's HTTP APIs hand over the path already decoded, and the route's parameters
    // decoded too: decoding again would read an id `a%41` as `aA`. So does their catch-all
    // `$default` route (what matched no route of the template: a trailing slash, say). A
    // request from anywhere else (the local server, a function URL) carries the path as its
    // URL had it.
    let given = |name: &str| request.path_parameters.get(name).cloned();
    let by_gateway = request.route_key.as_deref() == Some("$default")
        && !request
            .request_context
            .domain_name
            .as_deref()
            .is_some_and(|domain| domain.ends_with(".on.aws"));
    let decoded = given("organization_id").is_some() || by_gateway;
    // The route API Gateway matched names the segments, its parameters filled in: split, the
    // decoded path would cut an id holding a `/` in two.
    let matched = request
        .route_key
        .as_deref()
        .and_then(|key| key.split_once(' '))
        .map(|(_, template)| template)
        .filter(|_| decoded);
    let segments: Vec<String> = matched
        .unwrap_or(path)
        .trim_matches('/')
        .split('/')
        .map(|s| {
            if matched.is_some() {
                let parameter = s.strip_prefix('{').and_then(|s| s.strip_suffix('}'));
                return Ok(parameter.map_or(s.to_owned(), |name| given(name).unwrap_or_default()));
            }
            if decoded {
                return Ok(s.to_owned());
            }
            // Two ids that are not UTF-8 must not both read as U+FFFD.
            percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| {
                    ApiError::bad_request(
                        "invalid_path",
                        "a path segment is not UTF-8 once percent-decoded",
                    )
                })
        })
        .collect::<Result<_, _>>()?;
    let (org, project, rest) = match segments.as_slice() {
        [
            v1,
            organizations,
            org,
            projects,
            project,
            audit_logs,
            rest @ ..,
        ] if (
            v1.as_str(),
            organizations.as_str(),
            projects.as_str(),
            audit_logs.as_str(),
        ) == ("v1", "organizations", "projects", "audit-logs") =>
        {
            (org, Some(project), rest)
        }
        [v1, organizations, org, audit_logs, rest @ ..]
            if (v1.as_str(), organizations.as_str(), audit_logs.as_str())
                == ("v1", "organizations", "audit-logs") =>
        {
            (org, None, rest)
        }
        _ => return Err(not_found()),
    };
    Ok(Address {
        organization_id: given("organization_id").unwrap_or_else(|| org.clone()),
        project_id: project.map(|p| given("project_id").unwrap_or_else(|| p.clone())),
        rest: rest.to_vec(),
    })
}

impl Address {
    /// The route asked for, once the ids are found well formed.
    pub fn target(self, request: &ApiGatewayV2httpRequest) -> Result<Target, ApiError> {
        let method = &request.request_context.http.method;
        let given = |name: &str| request.path_parameters.get(name).cloned();
        let (org, project, rest) = (&self.organization_id, self.project_id.as_ref(), &self.rest);
        // The ids become keys and secret names: the same rule as an event's ids, checked once.
        let ids = [("organization_id", Some(org)), ("project_id", project)];
        for (field, id) in ids.iter().filter_map(|(f, id)| Some((*f, (*id)?))) {
            audit_log::id::check(field, id)
                .map_err(|e| ApiError::bad_request("invalid_path", e.to_string()))?;
        }
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        let route = match (project.is_some(), method, rest.as_slice()) {
            (false, &Method::GET, []) => Route::ListOrganizationEvents,
            (false, &Method::GET, ["projects"]) => Route::ListProjects,
            (false, ..) => return Err(not_found()),
            (true, &Method::GET, []) => Route::ListEvents,
            (true, &Method::GET, ["streaming"]) => Route::GetStreaming,
            (true, &Method::PUT, ["streaming"]) => Route::PutStreaming,
            (true, &Method::DELETE, ["streaming"]) => Route::DeleteStreaming,
            (true, &Method::POST, ["streaming", "test"]) => Route::TestStreaming,
            (true, &Method::POST, ["streaming", "pause"]) => Route::PauseStreaming,
            (true, &Method::POST, ["streaming", "resume"]) => Route::ResumeStreaming,
            (true, &Method::GET, ["streaming", "tests"]) => Route::ListTests,
            (true, &Method::GET, ["streaming", "failures"]) => Route::ListFailures,
            (true, &Method::POST, ["streaming", "replay"]) => Route::StartReplay,
            (true, &Method::GET, ["streaming", "replays", id]) if !id.is_empty() => {
                Route::GetReplay
            }
            (true, &Method::POST, ["exports"]) => Route::StartExport,
            (true, &Method::GET, ["exports", id]) if !id.is_empty() => Route::GetExport,
            _ => return Err(not_found()),
        };
        let job_id = match route {
            Route::GetReplay => Some(given("replay_id").unwrap_or_else(|| rest[2].to_owned())),
            Route::GetExport => Some(given("export_id").unwrap_or_else(|| rest[1].to_owned())),
            _ => None,
        };
        Ok(Target {
            route,
            organization_id: org.clone(),
            project_id: project.cloned().unwrap_or_default(),
            job_id,
        })
    }
}

/// The caller's identity, from the JWT authorizer's verified claims.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub organization_id: String,
    pub subject: String,
    pub email: Option<String>,
    pub name: Option<String>,
}

/// The caller, who must belong to the path's organization: 401 without claims, 403 otherwise.
pub fn caller(
    request: &ApiGatewayV2httpRequest,
    claim: &str,
    organization_id: &str,
) -> Result<Caller, ApiError> {
    let claims = request
        .request_context
        .authorizer
        .as_ref()
        .and_then(|a| a.jwt.as_ref())
        .map(|jwt| &jwt.claims)
        .filter(|claims| !claims.is_empty())
        .ok_or_else(ApiError::unauthenticated)?;
    let organization = claims
        .get(claim)
        .filter(|o| !o.is_empty())
        .ok_or_else(ApiError::forbidden)?;
    if organization != organization_id {
        return Err(ApiError::forbidden());
    }
    Ok(Caller {
        organization_id: organization.clone(),
        subject: claims
            .get("sub")
            .cloned()
            .unwrap_or_else(|| "unknown".into()),
        email: claims.get("email").cloned(),
        name: claims.get("name").cloned(),
    })
}

/// The request body, decoded, refused when too large.
pub fn body(request: &ApiGatewayV2httpRequest) -> Result<Vec<u8>, ApiError> {
    let Some(text) = request.body.as_deref() else {
        return Ok(Vec::new());
    };
    let bytes = if request.is_base64_encoded {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| {
                ApiError::bad_request("invalid_body", "the body is marked base64 but is not")
            })?
    } else {
        text.as_bytes().to_vec()
    };
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::too_large(MAX_BODY_BYTES));
    }
    Ok(bytes)
}

/// `If-Match`: `*`, or a list of entity tags (`"3"`, `W/"3"`, `3`, `"3", "4"`). A tag that is
/// no version of ours is a valid tag that matches nothing: a 412, as HTTP has it, not a 400.
pub fn if_match(request: &ApiGatewayV2httpRequest) -> Option<IfMatch> {
    let text = request
        .headers
        .get("if-match")?
        .to_str()
        .unwrap_or_default();
    if text.trim() == "*" {
        return Some(IfMatch::Any);
    }
    Some(IfMatch::Versions(
        text.split(',').filter_map(version_of).collect(),
    ))
}

/// The version an entity tag names, written as the ETag writes it (`"3"`; `W/` and the quotes
/// may be left out): `None` for any other tag (`"abc"`, `"03"`, half of a quoted `"1,3"`).
fn version_of(tag: &str) -> Option<u64> {
    let tag = tag.trim();
    let tag = tag.strip_prefix("W/").unwrap_or(tag);
    let bare = match tag.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"')?,
        None => tag,
    };
    let canonical = !bare.is_empty()
        && bare.bytes().all(|b| b.is_ascii_digit())
        && (bare == "0" || !bare.starts_with('0'));
    canonical.then(|| bare.parse().ok()).flatten()
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    Any,
    /// The versions named (none when no tag names one).
    Versions(Vec<u64>),
}

impl IfMatch {
    /// Whether a configuration at `current` (0: nothing saved) satisfies the condition.
    pub fn allows(&self, current: u64) -> bool {
        match self {
            IfMatch::Any => current > 0,
            IfMatch::Versions(versions) => versions.contains(&current),
        }
    }
}

/// One query parameter (its first value), as the caller sent it.
pub fn query(request: &ApiGatewayV2httpRequest, name: &str) -> Option<String> {
    query_pairs(request)
        .into_iter()
        .find_map(|(k, v)| (k == name).then_some(v))
}

/// The query's parameters that have a value. One given empty (`cursor=`, as clients that
/// always send every parameter send an absent one) is not given.
pub fn query_pairs(request: &ApiGatewayV2httpRequest) -> Vec<(String, String)> {
    let mut pairs = every_query_pair(request);
    pairs.retain(|(_, value)| !value.is_empty());
    pairs
}

/// The query's parameters as the caller sent them. API Gateway joins a repeated parameter's
/// values with commas in `queryStringParameters`, and the Lambda event's deserializer splits
/// every value at its commas, which a search's text may hold: the raw query string keeps both.
/// An event made by hand may fill in only one of the two, or leave the other as AWS's example
/// has it: a parameter the raw query lacks is taken from the parameters, its values joined
/// back into the one value API Gateway gave.
fn every_query_pair(request: &ApiGatewayV2httpRequest) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = form_urlencoded::parse(
        request
            .raw_query_string
            .as_deref()
            .unwrap_or_default()
            .as_bytes(),
    )
    .into_owned()
    .collect();
    let raw = pairs.len();
    for (name, value) in request.query_string_parameters.iter() {
        if pairs[..raw].iter().any(|(given, _)| given == name) {
            continue;
        }
        match pairs[raw..].iter_mut().find(|(given, _)| given == name) {
            Some((_, joined)) => {
                joined.push(',');
                joined.push_str(value);
            }
            None => pairs.push((name.to_owned(), value.to_owned())),
        }
    }
    pairs
}

/// The listings' paging parameters, beside their filters (`audit_log::search::PARAMETERS`).
pub(crate) const PAGING: [&str; 4] = ["since", "until", "limit", "cursor"];

/// Refuses a parameter given twice, and one that looks like a misspelling of one the route
/// takes (`stauts`, `Limit`, `resourceType`): it must not pass for understood. Other
/// parameters mean nothing to the route and are left alone, as HTTP APIs leave them (a cache
/// buster, a tracking tag, what an event made after AWS's example still carries).
pub fn only_parameters(request: &ApiGatewayV2httpRequest, known: &[&str]) -> Result<(), ApiError> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in every_query_pair(request) {
        if !known.contains(&name.as_str()) {
            if let Some(meant) = misspelt(&name, known) {
                return Err(ApiError::bad_request(
                    "invalid_query",
                    format!(
                        "unknown query parameter `{}`: did you mean `{meant}`? This route takes {}",
                        name.chars()
                            .filter(|c| !c.is_control())
                            .take(64)
                            .collect::<String>(),
                        known.join(", ")
                    ),
                ));
            }
            continue;
        }
        if !seen.insert(name.clone()) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("`{name}` is given more than once"),
            ));
        }
    }
    Ok(())
}

/// A route whose input is a JSON body refuses a query parameter that names (or most likely
/// means) one of the body's fields: in the query it would be left out without a word, and an
/// export or replay asked with a filter would run without it.
pub fn fields_in_body(request: &ApiGatewayV2httpRequest, fields: &[&str]) -> Result<(), ApiError> {
    for (name, _) in every_query_pair(request) {
        if let Some(meant) = misspelt(&name, fields) {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!(
                    "`{meant}` goes in the request's JSON body, not its query: this route takes {}",
                    fields.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The parameter `name` was most likely meant to be, of those the route takes: the same but
/// for case, `_`, `-` or `[]` (`Limit`, `resourceType`, `q[]`), a name other APIs give it
/// (`next_cursor`, `search`, `from`), one containing it (`sinceTime`), or the nearest within
/// one edit (two for names over six letters: `stauts`, `resorce_type`). Names of fewer than
/// four letters are matched whole only: `q` is no guess for `x`.
fn misspelt<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let plain = |text: &str| -> String {
        text.chars()
            .filter(|c| !matches!(c, '_' | '-' | '[' | ']'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let given = plain(name);
    if given.is_empty() {
        return None;
    }
    let alias = ALIASES
        .iter()
        .find(|(other, _)| *other == given)
        .map(|(_, ours)| *ours);
    known
        .iter()
        .copied()
        .filter_map(|k| {
            let ours = plain(k);
            let distance = if ours == given || alias == Some(k) {
                0
            } else if ours.len() < 4 {
                return None;
            } else if given.contains(&ours) {
                1
            } else {
                strsim::damerau_levenshtein(&given, &ours)
            };
            let allowed = if ours.len() > 6 { 2 } else { 1 };
            (distance <= allowed).then_some((distance, k))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// What other APIs call the listing's parameters (lower case, without `_` or `-`).
const ALIASES: &[(&str, &str)] = &[
    ("nextcursor", "cursor"),
    ("pagetoken", "cursor"),
    ("nexttoken", "cursor"),
    ("pagesize", "limit"),
    ("perpage", "limit"),
    ("maxresults", "limit"),
    ("from", "since"),
    ("start", "since"),
    ("starttime", "since"),
    ("to", "until"),
    ("end", "until"),
    ("endtime", "until"),
    ("search", "q"),
    ("query", "q"),
    ("text", "q"),
    ("type", "resource_type"),
    ("id", "resource_id"),
];

#[cfg(test)]
mod tests {
    use super::*;

    /// AWS's example request as Lambda reads it, with this raw query and these parameters.
    fn with_query(raw: &str, parameters: serde_json::Value) -> ApiGatewayV2httpRequest {
        let mut event: serde_json::Value = serde_json::from_str(
            &audit_log::fixtures::lambda_event("apigw-http-api-request.json"),
        )
        .unwrap();
        event["rawQueryString"] = raw.into();
        event["queryStringParameters"] = parameters;
        serde_json::from_value(event).unwrap()
    }

    fn request(raw_path: &str, parameters: &[(&str, &str)]) -> ApiGatewayV2httpRequest {
        let mut request = ApiGatewayV2httpRequest::default();
        request.raw_path = Some(raw_path.into());
        request.request_context.http.method = Method::GET;
        request.path_parameters = parameters
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        request
    }

    #[test]
    fn misspelt_parameters_are_told_apart_from_foreign_ones() {
        // The listing's own.
        let known = [&PAGING[..], &audit_log::search::PARAMETERS[..]].concat();
        for (name, meant) in [
            ("stauts", Some("status")),
            ("Limit", Some("limit")),
            ("resourceType", Some("resource_type")),
            ("resource-type", Some("resource_type")),
            ("resorce_type", Some("resource_type")),
            ("curser", Some("cursor")),
            ("next_cursor", Some("cursor")),
            ("nextCursor", Some("cursor")),
            ("sinceTime", Some("since")),
            ("search", Some("q")),
            ("type", Some("resource_type")),
            ("Q", Some("q")),
            ("q[]", Some("q")),
            // The nearest, not the first within reach.
            ("acto", Some("actor")),
            ("x", None),
            ("_", None),
            ("parameter1", None),
            ("utm_source", None),
            ("colour", None),
            ("site", None),
            ("state", None),
            ("list", None),
            ("author", None),
        ] {
            assert_eq!(misspelt(name, &known), meant, "{name}");
        }
    }

    #[test]
    fn a_raw_query_and_parameters_that_disagree_both_count() {
        // As an event made after AWS's example may leave them: the example's raw query, the
        // caller's own parameters (or the other way round).
        let asked = with_query(
            "parameter1=value1&parameter1=value2&q=a%2Cb",
            serde_json::json!({"limit": "2", "q": "other"}),
        );
        assert_eq!(query(&asked, "limit").as_deref(), Some("2"));
        assert_eq!(query(&asked, "q").as_deref(), Some("a,b"));
        assert!(only_parameters(&asked, &["limit", "q"]).is_ok());
        assert!(only_parameters(&asked, &["limit", "q", "parameter"]).is_err());
    }

    #[test]
    fn a_query_given_only_as_parameters_keeps_the_commas_of_its_values() {
        // As Lambda reads it: the values split at their commas.
        let asked = with_query("", serde_json::json!({"q": "a,b,c", "limit": "5"}));
        assert_eq!(asked.query_string_parameters.all("q").unwrap().len(), 3);
        let mut pairs = query_pairs(&asked);
        pairs.sort();
        let expected = [("limit", "5"), ("q", "a,b,c")].map(|(k, v)| (k.into(), v.into()));
        assert_eq!(pairs, expected);
        assert!(only_parameters(&asked, &["q", "limit"]).is_ok());
    }

    #[test]
    fn if_match_takes_a_list_of_tags_and_a_tag_naming_no_version_matches_nothing() {
        let condition = |value: &str| {
            let mut asked = request("/", &[]);
            asked
                .headers
                .insert("if-match", http::HeaderValue::from_str(value).unwrap());
            if_match(&asked).unwrap()
        };
        assert!(if_match(&request("/", &[])).is_none());
        for (value, saved, allowed) in [
            ("*", 3, true),
            ("*", 0, false),
            ("3", 3, true),
            ("\"3\"", 3, true),
            ("W/\"3\"", 3, true),
            ("\"2\", \"3\"", 3, true),
            ("\"2\", \"4\"", 3, false),
            ("\"abc\"", 3, false),
            ("\"1,3\"", 3, false),
            ("\"03\"", 3, false),
            ("+3", 3, false),
            ("\"0\"", 0, true),
            ("", 0, false),
        ] {
            assert_eq!(
                condition(value).allows(saved),
                allowed,
                "{value} at {saved}"
            );
        }
    }

    #[test]
    fn the_catch_all_route_of_api_gateway_has_the_path_decoded_and_a_function_url_has_not() {
        let mut asked = request(
            "/v1/organizations/o/projects/p%41/audit-logs/streaming/",
            &[],
        );
        asked.route_key = Some("$default".into());
        asked.request_context.domain_name = Some("abc.execute-api.us-east-1.amazonaws.com".into());
        assert_eq!(route(&asked).unwrap().project_id, "p%41");
        asked.request_context.domain_name = Some("abc.lambda-url.us-east-1.on.aws".into());
        assert_eq!(route(&asked).unwrap().project_id, "pA");
    }

    #[test]
    fn ids_are_read_once_decoded_whoever_decoded_them() {
        // As API Gateway hands it over: the path and its parameters already decoded.
        let target = route(&request(
            "/v1/organizations/o%41/projects/p q/audit-logs/streaming/replays/r%2",
            &[
                ("organization_id", "o%41"),
                ("project_id", "p q"),
                ("replay_id", "r%2"),
            ],
        ))
        .unwrap();
        assert_eq!(
            (target.route, target.organization_id.as_str()),
            (Route::GetReplay, "o%41")
        );
        assert_eq!(target.project_id, "p q");
        assert_eq!(target.job_id.as_deref(), Some("r%2"));
        // As the URL has it (the local server, tests): decoded here.
        let target = route(&request(
            "/v1/organizations/o%2541/projects/p%20q/audit-logs",
            &[],
        ))
        .unwrap();
        assert_eq!(
            (target.route, target.organization_id.as_str()),
            (Route::ListEvents, "o%41")
        );
        assert_eq!(target.project_id, "p q");
        let target = route(&request(
            "/v1/organizations/o%41/audit-logs/projects",
            &[("organization_id", "o%41")],
        ))
        .unwrap();
        assert_eq!(
            (target.route, target.organization_id.as_str()),
            (Route::ListProjects, "o%41")
        );
    }

    #[test]
    fn ids_holding_a_slash_are_taken_whole_from_the_route_api_gateway_matched() {
        // `team%2Freg` in the URL: API Gateway's path is decoded, its parameter whole.
        let mut asked = request(
            "/v1/organizations/o/projects/team/reg/audit-logs/exports/e/1",
            &[
                ("organization_id", "o"),
                ("project_id", "team/reg"),
                ("export_id", "e/1"),
            ],
        );
        asked.route_key = Some(
            "GET /v1/organizations/{organization_id}/projects/{project_id}/audit-logs/exports/{export_id}"
                .into(),
        );
        let target = route(&asked).unwrap();
        assert_eq!(
            (target.route, target.project_id.as_str()),
            (Route::GetExport, "team/reg")
        );
        assert_eq!(target.job_id.as_deref(), Some("e/1"));
        // A route key that is no route of the service's is still none.
        asked.route_key = Some("GET /v1/organizations/{organization_id}/elsewhere".into());
        assert!(route(&asked).is_err());
    }
}
