//! Searching the stored events: which events a listing or an export asks for (`filter`), and
//! what an event is about (`resource`), for filters and for CSV rows alike.

mod filter;
mod resource;

pub use filter::{Filter, FilterError, MAX_TEXT_CHARS, PARAMETERS};
pub use resource::{Resource, ResourceType};
