//! Projects with stored events. Capture notes a project in its organization's partition the
//! first time a container stores one of its events, so the organization's projects (deleted
//! registries included) are one query away, and no item is written per event. Events keep the
//! project's partition; the note only says where to look. A note lasts as long as the events
//! it was written for, and [`NOTE_AHEAD_SECONDS`] more, through the configuration table's TTL:
//! a project whose events have all expired leaves the listing's reads too. Notes written
//! before they had a TTL are kept for ever, until `audit-log-note-projects` gives them one.

use super::{
    ConfigError, ConfigTable, EXPIRES_AT, attr, is_condition_failure, organization_key, s,
    store_error,
};
use crate::store::sort_key_part;
use aws_sdk_dynamodb::types::AttributeValue;
use std::future::Future;

const PREFIX: &str = "events#";

/// Projects a note did not reach (by their places in the list noted), and why.
#[derive(Debug)]
pub struct Unnoted {
    pub projects: Vec<usize>,
    pub error: ConfigError,
}

/// How much longer than the events it was written for a project's note lasts: the container
/// that wrote it stores the project's later events without noting it again until one of them
/// would outlive it, which events dated now do not for this long.
pub const NOTE_AHEAD_SECONDS: i64 = 30 * 86_400;

/// A project to note, `(organization, project)`, and when its note may expire (epoch seconds,
/// no earlier than the events it is noted for; `None`: never).
pub type Note = ((String, String), Option<i64>);

/// The note of a project whose events expire by `expires_at`.
pub fn note_for(project: (String, String), expires_at: i64) -> Note {
    (project, Some(expires_at.saturating_add(NOTE_AHEAD_SECONDS)))
}

/// Where projects with stored events are noted.
pub trait ProjectIndex: Sync {
    /// Notes that these projects have stored events. Each is noted on its own: one
    /// organization's throttled partition leaves only its projects unnoted. A note already
    /// there that lasts longer stays as it is.
    fn note(&self, projects: &[Note]) -> impl Future<Output = Result<(), Unnoted>> + Send;

    /// The organization's noted project ids, in order, after the position `after`, leaving
    /// out notes past their TTL by `now` (epoch seconds); with the position to go on from.
    /// A position is the last note's project as its key holds it ([`sort_key_part`]): an id
    /// too long for the key is cut there, and only the key says where its note is.
    fn noted(
        &self,
        organization_id: &str,
        after: Option<&str>,
        limit: usize,
        now: i64,
    ) -> impl Future<Output = Result<(Vec<String>, Option<String>), ConfigError>> + Send;
}

/// Projects noted at once: a new container's first batch may name a thousand, and each
/// request at once is a connection of its own (and its TLS handshake) on a fraction of a CPU.
const NOTED_AT_ONCE: usize = 32;

/// Capture's notes: a note with a TTL is written where there is none or one that ends sooner.
/// A note without a TTL stays as it is (it may be for events capture cannot see, kept for
/// ever).
const LENGTHEN_ONLY: &str = "attribute_not_exists(#sk) OR #expires < :at";
/// The events table's scan, which sees every event: a note without a TTL takes one too.
const LENGTHEN_OR_GIVE_TTL: &str =
    "attribute_not_exists(#sk) OR attribute_not_exists(#expires) OR #expires < :at";

impl ConfigTable {
    /// Writes the notes, each on its own, a note with a TTL on `condition` (`:at` its TTL).
    async fn write_notes(&self, projects: &[Note], condition: &'static str) -> Result<(), Unnoted> {
        use futures::StreamExt;
        let puts: Vec<_> = projects
            .iter()
            .map(|((org, project), expires_at)| {
                let put = self
                    .client
                    .put_item()
                    .table_name(&self.name)
                    .set_item(Some(organization_key(
                        org,
                        format!("{PREFIX}{}", sort_key_part(project)),
                    )))
                    .item(attr::ORGANIZATION_ID, s(org))
                    .item(attr::PROJECT_ID, s(project));
                match expires_at {
                    // Never shortened: another container may have noted events that live
                    // longer (dated ahead), and a note kept for ever stays so but for the scan.
                    Some(at) => put
                        .item(EXPIRES_AT, AttributeValue::N(at.to_string()))
                        .condition_expression(condition)
                        .expression_attribute_names("#sk", attr::SORT_KEY)
                        .expression_attribute_names("#expires", EXPIRES_AT)
                        .expression_attribute_values(":at", AttributeValue::N(at.to_string())),
                    None => put,
                }
            })
            .collect();
        // Each answer with where its project is: one slow write holds up no other.
        let mut answers: Vec<_> = futures::stream::iter(puts.into_iter().enumerate())
            .map(|(i, put)| async move { (i, put.send().await) })
            .buffer_unordered(NOTED_AT_ONCE)
            .collect()
            .await;
        answers.sort_by_key(|(i, _)| *i);
        let mut unnoted = Vec::new();
        let mut error = None;
        for (i, answer) in answers {
            match answer {
                Err(e) if !is_condition_failure(&e) => {
                    unnoted.push(i);
                    error.get_or_insert_with(|| store_error(e));
                }
                // Written, or a note that lasts as long already.
                _ => {}
            }
        }
        match error {
            None => Ok(()),
            Some(error) => Err(Unnoted {
                projects: unnoted,
                error,
            }),
        }
    }

    /// Notes these projects as the events table holds them now (`audit-log-note-projects`):
    /// as [`ProjectIndex::note`] does, and a note without a TTL, written before notes had one,
    /// takes the TTL given.
    pub async fn note_from_events(&self, projects: &[Note]) -> Result<(), Unnoted> {
        self.write_notes(projects, LENGTHEN_OR_GIVE_TTL).await
    }
}

impl ProjectIndex for ConfigTable {
    async fn note(&self, projects: &[Note]) -> Result<(), Unnoted> {
        self.write_notes(projects, LENGTHEN_ONLY).await
    }

    async fn noted(
        &self,
        organization_id: &str,
        after: Option<&str>,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<String>, Option<String>), ConfigError> {
        let after = after.map(|position| format!("{PREFIX}{position}"));
        // A note past its TTL is gone, whether DynamoDB has deleted it yet (it takes days) or
        // not: its project's events are too.
        let query = self
            .prefix_query(organization_id, PREFIX)
            .filter_expression("attribute_not_exists(#expires) OR #expires > :now")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()));
        let (items, next) =
            Self::query_page(query, organization_id, limit, after.as_deref(), true).await?;
        let projects = items
            .iter()
            .map(|item| {
                item.get(attr::PROJECT_ID)
                    .and_then(|v| v.as_s().ok())
                    .cloned()
                    .ok_or(ConfigError::Corrupt("a noted project"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        // Go on after the last note read (a page may show none of them).
        let next = next
            .map(|sk| {
                sk.strip_prefix(PREFIX)
                    .map(str::to_owned)
                    .ok_or(ConfigError::Corrupt("a noted project"))
            })
            .transpose()?;
        Ok((projects, next))
    }
}

/// Notes every project with an item in the events table, in batches: for events stored
/// before capture noted projects, or noted them without a TTL (a one-off after updating such
/// a stack). Returns how many.
pub async fn note_stored_projects(
    events: &crate::store::EventTable,
    index: &ConfigTable,
) -> Result<usize, String> {
    // Twice: capture takes a note without a TTL for one that covers its event, so an event it
    // stores while the first pass writes may outlive the TTL that pass gives; the second pass
    // reads it and lengthens the note (capture's own notes lengthen it from then on).
    note_scanned(events, index).await?;
    note_scanned(events, index).await
}

async fn note_scanned(
    events: &crate::store::EventTable,
    index: &ConfigTable,
) -> Result<usize, String> {
    let projects = events.projects().await.map_err(|e| e.to_string())?;
    // Each kept as long as its last event, as capture notes them (a project with an event
    // without a TTL, for ever).
    let notes: Vec<Note> = projects
        .into_iter()
        .map(|(project, last)| match last {
            Some(at) => note_for(project, at),
            None => (project, None),
        })
        .collect();
    for batch in notes.chunks(25) {
        index
            .note_from_events(batch)
            .await
            .map_err(|e| e.error.to_string())?;
    }
    Ok(notes.len())
}

/// Every project the organization has noted, whose note lasts past `now`.
pub async fn noted_projects(
    index: &impl ProjectIndex,
    organization_id: &str,
    now: i64,
) -> Result<Vec<String>, ConfigError> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = index
            .noted(organization_id, after.as_deref(), 1_000, now)
            .await?;
        all.extend(page);
        match next {
            Some(n) => after = Some(n),
            None => return Ok(all),
        }
    }
}

/// Projects noted in memory, for unit tests.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Default)]
pub struct MemoryProjects {
    /// Each noted project, with when its note may expire (`None`: never).
    noted: std::sync::Mutex<std::collections::BTreeMap<(String, String), Option<i64>>>,
    /// Notes calls made, and whether the next one fails.
    pub calls: std::sync::atomic::AtomicUsize,
    pub fail: std::sync::atomic::AtomicBool,
    /// Organizations whose projects are never noted (their partition throttled).
    pub unreachable: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Organizations a call naming any of whose projects never answers.
    pub hung: std::sync::Mutex<std::collections::BTreeSet<String>>,
}

#[cfg(any(test, feature = "test-util"))]
impl ProjectIndex for MemoryProjects {
    async fn note(&self, projects: &[Note]) -> Result<(), Unnoted> {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        let hangs = {
            let hung = self.hung.lock().unwrap_or_else(|e| e.into_inner());
            projects.iter().any(|((org, _), _)| hung.contains(org))
        };
        if hangs {
            std::future::pending::<()>().await;
        }
        let fail = self.fail.load(Ordering::SeqCst);
        let unreachable = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        let mut unnoted = Vec::new();
        for (i, (project, expires_at)) in projects.iter().enumerate() {
            if fail || unreachable.contains(&project.0) {
                unnoted.push(i);
                continue;
            }
            let kept = noted.entry(project.clone()).or_insert(*expires_at);
            // As the table keeps them: never shortened, and for ever (a note without a TTL,
            // written without condition) stays so.
            *kept = crate::store::later_expiry(*kept, *expires_at);
        }
        if unnoted.is_empty() {
            return Ok(());
        }
        Err(Unnoted {
            projects: unnoted,
            error: ConfigError::Store("the table is unreachable".into()),
        })
    }

    async fn noted(
        &self,
        organization_id: &str,
        after: Option<&str>,
        limit: usize,
        now: i64,
    ) -> Result<(Vec<String>, Option<String>), ConfigError> {
        let noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        // In the table's order, by position.
        let mut mine: Vec<(String, String)> = noted
            .iter()
            .filter(|((o, _), until)| o == organization_id && until.is_none_or(|u| u > now))
            .map(|((_, p), _)| (sort_key_part(p), p.clone()))
            .filter(|(position, _)| after.is_none_or(|a| position.as_str() > a))
            .collect();
        mine.sort();
        let more = mine.len() > limit;
        mine.truncate(limit);
        let next = more
            .then(|| mine.last().map(|(at, _)| at.clone()))
            .flatten();
        Ok((mine.into_iter().map(|(_, p)| p).collect(), next))
    }
}

#[cfg(any(test, feature = "test-util"))]
impl MemoryProjects {
    /// When the project's note may expire: `None` if it was not noted, `Some(None)` never.
    pub fn note_of(&self, organization_id: &str, project_id: &str) -> Option<Option<i64>> {
        let noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        noted
            .get(&(organization_id.to_owned(), project_id.to_owned()))
            .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::Client;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::put_item::{PutItemError, PutItemOutput};
    use aws_smithy_mocks::{RuleMode, mock, mock_client};

    #[tokio::test]
    async fn projects_not_noted_are_told_by_their_places_however_many_are_noted_at_once() {
        // More projects than are noted at once; two organizations' writes refused.
        let refused = |org: &'static str| {
            mock!(Client::put_item)
                .match_requests(move |r| r.item().unwrap()[attr::ORGANIZATION_ID] == s(org))
                .then_error(|| {
                    PutItemError::generic(
                        ErrorMetadata::builder()
                            .code("ValidationException")
                            .message("refused")
                            .build(),
                    )
                })
        };
        let (five, thirty_seven) = (refused("org-5"), refused("org-37"));
        let noted = mock!(Client::put_item).then_output(|| PutItemOutput::builder().build());
        let table = ConfigTable::new(
            mock_client!(
                aws_sdk_dynamodb,
                RuleMode::MatchAny,
                [&five, &thirty_seven, &noted]
            ),
            "config",
        );
        let projects: Vec<Note> = (0..NOTED_AT_ONCE + 8)
            .map(|i| ((format!("org-{i}"), "p".to_owned()), Some(1)))
            .collect();
        let unnoted = table.note(&projects).await.unwrap_err();
        assert_eq!(unnoted.projects, [5, 37]);
        assert_eq!(noted.num_calls(), NOTED_AT_ONCE + 6);
    }
}
