//! The rule every organization and project id follows, in an event and in an API path alike:
//! not empty, no control characters, at most 255 characters, and short enough once escaped into
//! a key. DynamoDB caps a partition key at 2,048 bytes and a sort key at 1,024. Inside keys, ids
//! are percent-encoded, or, when that would pass 880 bytes, kept as UTF-8 with only the
//! separators escaped (`store::key_part`): 255 `é` or `項` fit, and only an id with more than 115
//! four-byte characters (emoji and the like) can be too wide.

use crate::event::EventError;
use crate::store::key_part;

pub const MAX_ID_CHARS: usize = 255;
/// Bytes of an id once escaped into a key (UTF-8, `#` and `%` taking three). Two ids and a separator stay under the partition
/// key's 2,048 bytes; the longest configuration-table sort key (a failure record's:
/// `failure#<project>#<event sort key>`) stays under 1,024.
pub const MAX_ID_KEY_BYTES: usize = 880;

/// Checks one id; `field` names it in the error (never its value).
pub fn check(field: &'static str, id: &str) -> Result<(), EventError> {
    // The contract asks for non-empty ids: one of spaces is an id like any other.
    if id.is_empty() {
        return Err(EventError::Empty(field));
    }
    if id.chars().any(char::is_control) {
        return Err(EventError::ControlCharacters(field));
    }
    if id.chars().count() > MAX_ID_CHARS || key_part(id).len() > MAX_ID_KEY_BYTES {
        return Err(EventError::IdTooLong {
            field,
            max_chars: MAX_ID_CHARS,
            max_bytes: MAX_ID_KEY_BYTES,
        });
    }
    Ok(())
}

/// `escaped` (an id escaped into a name) when it is at most `max` bytes; otherwise its start,
/// then `marker`, then a digest of the whole id. Names outside DynamoDB (a secret's, a log
/// stream's) are shorter than keys may be, and a name that does not fit would refuse the
/// project for good. `marker` must be text the escaping never writes, so that such a name is
/// no other id's, and two long ids that start alike differ by their digests.
pub fn fitted(escaped: String, id: &str, max: usize, marker: &str) -> String {
    use sha2::{Digest, Sha256};
    if escaped.len() <= max {
        return escaped;
    }
    let digest: String = Sha256::digest(id.as_bytes())[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut keep = max.saturating_sub(marker.len() + digest.len());
    while !escaped.is_char_boundary(keep) {
        keep -= 1;
    }
    format!("{}{marker}{digest}", &escaped[..keep])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_that_does_not_fit_keeps_its_start_and_a_digest_of_the_whole_id() {
        let short = fitted("abc".into(), "abc", 10, "~~");
        assert_eq!(short, "abc");
        let long_a = fitted("a".repeat(40), &"a".repeat(40), 40, "~~");
        assert_eq!(long_a, "a".repeat(40));
        let (one, two) = ("x".repeat(41) + "1", "x".repeat(41) + "2");
        let (one, two) = (
            fitted(one.clone(), &one, 40, "~~"),
            fitted(two.clone(), &two, 40, "~~"),
        );
        assert_eq!((one.len(), two.len()), (40, 40));
        assert_ne!(one, two);
        assert!(one.starts_with("xxxxxx~~"), "{one}");
        // Multi-byte text is cut where a character ends.
        let wide = "é".repeat(30);
        assert!(fitted(wide.clone(), &wide, 41, "~~").len() <= 41);
    }

    #[test]
    fn empty_control_and_oversized_ids_are_refused_by_name() {
        assert_eq!(
            check("project_id", ""),
            Err(EventError::Empty("project_id"))
        );
        assert_eq!(check("project_id", "   "), Ok(()));
        assert_eq!(
            check("project_id", "a\u{0}b"),
            Err(EventError::ControlCharacters("project_id"))
        );
        assert_eq!(
            check("project_id", "a\u{85}b"),
            Err(EventError::ControlCharacters("project_id"))
        );
        let too_many = "x".repeat(MAX_ID_CHARS + 1);
        assert!(matches!(
            check("organization_id", &too_many),
            Err(EventError::IdTooLong {
                field: "organization_id",
                ..
            })
        ));
    }

    #[test]
    fn non_ascii_ids_of_255_characters_fit_unless_they_are_four_bytes_wide() {
        // Percent-encoded, 255 `項` would take 2,295 bytes: over a partition key on their own.
        for wide in ["項".repeat(MAX_ID_CHARS), "é".repeat(MAX_ID_CHARS)] {
            assert_eq!(key_part(&wide), wide);
            assert_eq!(check("organization_id", &wide), Ok(()));
        }
        assert_eq!(key_part(&"項#".repeat(100)), "項%23".repeat(100));
        // Four bytes each: 220 fit, 221 do not.
        let emoji = "😀".repeat(MAX_ID_KEY_BYTES / 4);
        assert_eq!(check("organization_id", &emoji), Ok(()));
        assert!(matches!(
            check("organization_id", &(emoji + "😀")),
            Err(EventError::IdTooLong { .. })
        ));
        // The widest ASCII id (every character escaped) still passes.
        assert_eq!(check("organization_id", &"#".repeat(MAX_ID_CHARS)), Ok(()));
        assert_eq!(check("organization_id", &"x".repeat(MAX_ID_CHARS)), Ok(()));
    }

    #[test]
    fn two_of_the_widest_ids_fit_every_key() {
        let widest = "😀".repeat(MAX_ID_KEY_BYTES / 4);
        assert_eq!(key_part(&widest).len(), MAX_ID_KEY_BYTES);
        assert_eq!(check("organization_id", &widest), Ok(()));
        let pk = crate::store::partition_key(&widest, &widest);
        assert!(pk.len() <= 2_048, "{}", pk.len());
        // A failure record's sort key: prefix, project, the event's sort key (time and an SQS
        // message id of at most 100 characters).
        let sk = format!(
            "failure#{}#{}#{}",
            key_part(&widest),
            "2026-01-01T00:00:00.000000000Z",
            "m".repeat(100)
        );
        assert!(sk.len() <= 1_024, "{}", sk.len());
    }
}
