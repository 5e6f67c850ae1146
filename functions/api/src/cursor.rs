//! Cursors: opaque to callers, and bound to the listing that made them. A cursor carries a
//! position and a MAC of it and its scope (route, organization, project and the query that
//! shapes the listing) under the service's own key, so a cursor of another project, another
//! organization or another time range, or one whose text was edited (its MAC made again
//! included: the key is the service's alone), is a 400 `invalid_cursor` and never reaches
//! DynamoDB.

use crate::error::ApiError;
use base64::Engine;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// What a cursor belongs to: one listing of one project with one query. The service's key is
/// asked for only where a cursor is read or made: a first page needs no secret.
pub struct Scope {
    text: String,
}

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
        Self { text }
    }

    fn digest(&self, key: &SecretString, position: &str) -> String {
        // HMAC takes a key of any length: this never fails.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.expose_secret().as_bytes()) else {
            return String::new();
        };
        mac.update(self.text.as_bytes());
        mac.update(&[0]);
        mac.update(position.as_bytes());
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    pub fn encode(&self, key: &SecretString, position: &str) -> String {
        let text = format!("{position}\n{}", self.digest(key, position));
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// The position a cursor names, if it was made for this scope.
    pub fn decode(&self, key: &SecretString, cursor: &str) -> Result<String, ApiError> {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| invalid())?;
        let text = String::from_utf8(bytes).map_err(|_| invalid())?;
        let (position, digest) = text.rsplit_once('\n').ok_or_else(invalid)?;
        let expected = self.digest(key, position);
        // Compared in constant time: how long a refusal takes says nothing of the signature.
        let same: bool =
            subtle::ConstantTimeEq::ct_eq(digest.as_bytes(), expected.as_bytes()).into();
        if position.is_empty() || expected.is_empty() || !same {
            return Err(invalid());
        }
        Ok(position.to_owned())
    }
}

/// Where a listing resumes: the position `cursor` names (a sort key, and the partition of an
/// organization's page), which must be in this scope, its sort key between `since` and `until`.
pub fn resume_after(
    scope: &Scope,
    key: &SecretString,
    cursor: &str,
    since: Option<time::OffsetDateTime>,
    until: Option<time::OffsetDateTime>,
) -> Result<String, ApiError> {
    let position = scope.decode(key, cursor)?;
    let sort_key = audit_log::store::pages::sort_key_of(&position);
    if !audit_log::store::is_sort_key_within(sort_key, since, until) {
        return Err(invalid());
    }
    Ok(position)
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

    fn key(text: &str) -> SecretString {
        SecretString::from(text.repeat(64))
    }

    fn scope(project: &str, since: Option<&str>) -> Scope {
        Scope::new("events", "o", project, &[since, None])
    }

    #[test]
    fn a_cursor_comes_back_only_in_its_own_scope() {
        let sk = "2026-01-01T00:00:00.000000000Z#m-1";
        let cursor = scope("p", None).encode(&key("k"), sk);
        assert_eq!(scope("p", None).decode(&key("k"), &cursor).unwrap(), sk);
        for other in [scope("q", None), scope("p", Some("2026-01-01T00:00:00Z"))] {
            assert_eq!(
                other.decode(&key("k"), &cursor).unwrap_err().code,
                "invalid_cursor"
            );
        }
        assert_ne!(
            Scope::new("events", "ab", "c", &[]).text,
            Scope::new("events", "a", "bc", &[]).text
        );
    }

    #[test]
    fn garbage_and_edited_cursors_are_refused() {
        let s = scope("p", None);
        for bad in ["", "!!!", "bm8gZGlnZXN0"] {
            assert_eq!(
                s.decode(&key("k"), bad).unwrap_err().code,
                "invalid_cursor",
                "{bad}"
            );
        }
        let cursor = s.encode(&key("k"), "2026-01-01T00:00:00.000000000Z#m-1");
        let text = String::from_utf8(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(&cursor)
                .unwrap(),
        )
        .unwrap();
        let edited =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text.replace("2026", "2025"));
        assert_eq!(
            s.decode(&key("k"), &edited).unwrap_err().code,
            "invalid_cursor"
        );
    }

    #[test]
    fn a_cursor_edited_with_its_mac_made_again_without_the_key_is_refused() {
        let s = scope("p", None);
        let position = "2025-01-01T00:00:00.000000000Z#m-1";
        // Whoever knows the scope but not the service's key signs the edited position.
        let forged = Scope::new("events", "o", "p", &[None, None]).encode(&key("x"), position);
        assert_eq!(
            s.decode(&key("k"), &forged).unwrap_err().code,
            "invalid_cursor"
        );
        // The same position under the service's key is taken.
        assert_eq!(
            s.decode(&key("k"), &s.encode(&key("k"), position)).unwrap(),
            position
        );
    }
}
