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
