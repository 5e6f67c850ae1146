//! Cursors: opaque to callers, and bound to the listing that made them. A cursor carries a
//! position and a digest of its scope (route, organization, project and the query that shapes
//! the listing), so a cursor of another project, another organization or another time range,
//! or one whose text was edited, is a 400 `invalid_cursor` and never reaches DynamoDB.

use crate::error::ApiError;
use base64::Engine;
use sha2::{Digest, Sha256};

/// What a cursor belongs to: one listing of one project with one query.
pub struct Scope(String);

impl Scope {
    pub fn new(
        route: &str,
        organization_id: &str,
        project_id: &str,
        query: &[Option<&str>],
    ) -> Self {
        // Lengths before parts: no two scopes concatenate to the same text.
        let mut text = String::new();
        for part in [Some(route), Some(organization_id), Some(project_id)]
            .into_iter()
            .chain(query.iter().copied())
        {
            match part {
                Some(p) => text.push_str(&format!("{}:{p};", p.len())),
                None => text.push_str("-;"),
            }
        }
        Self(text)
    }

    fn digest(&self, position: &str) -> String {
        let mut hash = Sha256::new();
        hash.update(self.0.as_bytes());
        hash.update([0]);
        hash.update(position.as_bytes());
        hash.finalize()[..12]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn encode(&self, position: &str) -> String {
        let text = format!("{position}\n{}", self.digest(position));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// The position a cursor names, if it was made for this scope.
    pub fn decode(&self, cursor: &str) -> Result<String, ApiError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (position, digest) = text.rsplit_once('\n').ok_or_else(invalid)?;
        if position.is_empty() || digest != self.digest(position) {
            return Err(invalid());
        }
        Ok(position.to_owned())
    }
}

/// Where a listing resumes: the sort key the request's `cursor` names, which must be in this
/// scope and between `since` and `until`; `None` without a cursor.
pub fn resume_after(
    scope: &Scope,
    cursor: Option<&str>,
    since: Option<time::OffsetDateTime>,
    until: Option<time::OffsetDateTime>,
) -> Result<Option<String>, ApiError> {
    let Some(cursor) = cursor else {
        return Ok(None);
    };
    let sort_key = scope.decode(cursor)?;
    if !audit_log::store::is_sort_key_within(&sort_key, since, until) {
        return Err(invalid());
    }
    Ok(Some(sort_key))
}

pub fn invalid() -> ApiError {
    ApiError::bad_request(
        "invalid_cursor",
        "`cursor` must be the `next_cursor` this listing returned, with the same query",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(project: &str, since: Option<&str>) -> Scope {
        Scope::new("events", "o", project, &[since, None])
    }

    #[test]
    fn a_cursor_comes_back_only_in_its_own_scope() {
        let sk = "2026-01-01T00:00:00.000000000Z#m-1";
        let cursor = scope("p", None).encode(sk);
        assert_eq!(scope("p", None).decode(&cursor).unwrap(), sk);
        for other in [scope("q", None), scope("p", Some("2026-01-01T00:00:00Z"))] {
            assert_eq!(other.decode(&cursor).unwrap_err().code, "invalid_cursor");
        }
        assert_ne!(
            Scope::new("events", "ab", "c", &[]).0,
            Scope::new("events", "a", "bc", &[]).0
        );
    }

    #[test]
    fn garbage_and_edited_cursors_are_refused() {
        let s = scope("p", None);
        for bad in ["", "!!!", "bm8gZGlnZXN0"] {
            assert_eq!(s.decode(bad).unwrap_err().code, "invalid_cursor", "{bad}");
        }
        let cursor = s.encode("2026-01-01T00:00:00.000000000Z#m-1");
        let text = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&cursor)
                .unwrap(),
        )
        .unwrap();
        let edited =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.replace("2026", "2025"));
        assert_eq!(s.decode(&edited).unwrap_err().code, "invalid_cursor");
    }
}
