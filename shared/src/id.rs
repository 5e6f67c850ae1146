//! The rule every organization and project id follows, in an event and in an API path alike:
//! not empty, no control characters, at most 255 characters. Any such id fits DynamoDB's keys
//! (2,048 bytes for a partition key, 1,024 for a sort key): inside keys, ids are percent-encoded,
//! or, when that would pass `MAX_ID_KEY_BYTES`, kept as UTF-8 with only the separators escaped
//! (at most 1,020 bytes: 255 characters of four), and inside sort keys, where the rest of the key
//! leaves an id less room, cut to fit with a digest (`store::sort_key_part`).

use crate::event::EventError;

pub const MAX_ID_CHARS: usize = 255;
/// Bytes of an id inside a sort key: the longest configuration-table sort key (a failure
/// record's: `failure#<project>#<event sort key>`) stays under 1,024. Ids whose percent-encoding
/// fits are kept that way everywhere, as they always were.
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
    if id.chars().count() > MAX_ID_CHARS {
        return Err(EventError::IdTooLong {
            field,
            max_chars: MAX_ID_CHARS,
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
    fn ids_of_255_characters_of_any_width_fit_every_key() {
        use crate::store::{key_part, partition_key, sort_key_part};
        // Percent-encoded, 255 `項` would take 2,295 bytes: over a partition key on their own.
        for wide in ["項".repeat(MAX_ID_CHARS), "é".repeat(MAX_ID_CHARS)] {
            assert_eq!(key_part(&wide), wide);
            assert_eq!(sort_key_part(&wide), wide);
        }
        assert_eq!(key_part(&"項#".repeat(100)), "項%23".repeat(100));
        let emoji = "😀".repeat(MAX_ID_CHARS);
        // The widest part an id had before: 880 bytes percent-encoded, kept as it was.
        let widest_before = "é".repeat(146) + "abcd";
        assert_eq!(key_part(&widest_before).len(), MAX_ID_KEY_BYTES);
        for widest in [
            emoji.clone(),
            "#".repeat(MAX_ID_CHARS),
            "項".repeat(MAX_ID_CHARS),
            widest_before,
        ] {
            assert_eq!(check("organization_id", &widest), Ok(()));
            let pk = partition_key(&widest, &widest);
            assert!(pk.len() <= 2_048, "{}", pk.len());
            // The longest sort key built whole: a failure record's (prefix, project, the
            // event's sort key: time and an SQS message id of at most 100 characters). An owed
            // event's is cut to fit (`streaming::lanes`).
            let part = sort_key_part(&widest);
            assert!(part.len() <= MAX_ID_KEY_BYTES, "{}", part.len());
            let sk = format!(
                "failure#{part}#2026-01-01T00:00:00.000000000Z#{}",
                "m".repeat(100)
            );
            assert!(sk.len() <= 1_024, "{}", sk.len());
        }
        // 1,020 bytes in a partition key, cut to fit sort keys: two such ids differ there.
        assert_eq!(key_part(&emoji), emoji);
        let other = "😀".repeat(MAX_ID_CHARS - 1) + "😁";
        assert_ne!(sort_key_part(&emoji), sort_key_part(&other));
        assert!(sort_key_part(&emoji).contains(crate::store::FITTED_MARKER));
        // Ids whose percent-encoding fits keep the parts they always had.
        let old = "é".repeat(MAX_ID_KEY_BYTES / 6);
        assert_eq!(sort_key_part(&old), key_part(&old));
        assert_eq!(key_part(&old), "%C3%A9".repeat(MAX_ID_KEY_BYTES / 6));
    }
}
