//! One module per resource of the API, each an `impl Api` block with that resource's routes;
//! the request plumbing they share (routing, callers, bodies, errors, views) is beside them in
//! the crate's root.

mod connection_tests;
mod events;
mod exports;
mod failures;
mod lanes;
mod projects;
mod replays;
mod streaming;

pub use exports::DOWNLOAD_VALID;
pub use failures::MAX_FAILURE_PAGE;
pub use replays::MAX_REPLAY_DAYS;

/// A background job of the project (an export or a replay) its caller names: 404.
fn unknown_job(what: &str) -> crate::error::ApiError {
    crate::error::ApiError::not_found(format!("no {what} of this project has that id"))
}

/// A job id breaking the path's id rules is a 400, as every path id is; job ids are 32 hex
/// digits, so any other id names no job (and is no key).
fn job_id(id: &str, field: &'static str) -> Result<(), crate::error::ApiError> {
    audit_log::id::check(field, id)
        .map_err(|e| crate::error::ApiError::bad_request("invalid_path", e.to_string()))?;
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(unknown_job(field.trim_end_matches("_id")))
    }
}
