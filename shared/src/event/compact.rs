//! Whether a body is already the compact JSON that compacting it would write, so capture can
//! keep it as it came instead of writing it again (most producers send compact JSON).
//!
//! Compacting (`serde_transcode` into serde_json's compact writer) changes a valid document
//! only where this looks: whitespace between tokens, escapes in strings (written back in
//! serde_json's own form), and numbers that are not plain integers of either sign (fractions
//! and exponents written back by ryu, `-0` as `0`, integers past 64 bits as floats). A body
//! without any of those comes out of compacting byte for byte as it went in.

/// Digits a plain integer may have and still be read and written back exactly as a 64-bit one.
const EXACT_DIGITS: usize = 18;
/// Nesting this deep is left to compacting, which refuses what serde_json's recursion limit
/// (128) does; reading the required fields skips other fields without that limit.
const MAX_DEPTH: usize = 64;

/// Whether `json`, a valid JSON document, is its own compact form. `false` means only that it
/// must be compacted to know.
pub(super) fn is_compact(json: &str) -> bool {
    let bytes = json.as_bytes();
    let (mut at, mut depth) = (0, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return false;
                }
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            b'"' => {
                // A valid document closes every string; one with an escape is written back.
                match memchr::memchr2(b'"', b'\\', &bytes[at + 1..]) {
                    Some(end) if bytes[at + 1 + end] == b'"' => at += end + 2,
                    _ => return false,
                }
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                at += 1;
                while at < bytes.len() && bytes[at].is_ascii_digit() {
                    at += 1;
                }
                let number = &bytes[start..at];
                let digits = number.len() - usize::from(number[0] == b'-');
                if digits > EXACT_DIGITS
                    || number == b"-0"
                    || matches!(bytes.get(at), Some(b'.' | b'e' | b'E'))
                {
                    return false;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => return false,
            // Structure and the letters of `true`, `false` and `null`.
            _ => at += 1,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn compacted(json: &str) -> String {
        let mut out = Vec::new();
        serde_transcode::transcode(
            &mut serde_json::Deserializer::from_str(json),
            &mut serde_json::Serializer::new(&mut out),
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn what_compacting_would_change_is_never_taken_as_compact() {
        for changed in &[
            r#"{"a": 1}"#,
            "{\"a\":1}\n",
            r#"{"a":"\/"}"#,
            r#"{"a":"\u00e9"}"#,
            r#"{"a":"\n"}"#,
            r#"{"a":1.50}"#,
            r#"{"a":1e5}"#,
            r#"{"a":1E5}"#,
            r#"{"a":-0}"#,
            r#"{"a":18446744073709551616}"#,
            r#"{"a":[1,2.0]}"#,
            &format!(r#"{{"a":{}1{}}}"#, "[".repeat(64), "]".repeat(64)),
        ] {
            assert!(!is_compact(changed), "{changed}");
        }
        for kept in [
            r#"{"a":1,"b":-12,"c":0,"d":[true,false,null],"e":{"f":"g h"}}"#,
            r#"{"a":"é ☃","b":"x:y,z{}[]","c":123456789012345678,"d":-123456789012345678}"#,
            r#"{"a":1,"a":2}"#,
            "{}",
        ] {
            assert!(is_compact(kept), "{kept}");
            assert_eq!(compacted(kept), kept);
        }
    }

    /// JSON values of every kind: strings with characters that need escapes, numbers of every
    /// size and form.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[ -~\\t\\n\"\\\\/é\u{1}]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(("[a-z\"\\\\ ]{1,6}", inner), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    /// A number's text as a producer might write it, where serde_json would not.
    fn number_text() -> impl Strategy<Value = String> {
        prop_oneof![
            "-?[0-9]{1,22}",
            "-?[1-9][0-9]{0,3}\\.[0-9]{1,4}",
            "-?[1-9][0-9]{0,3}[eE][+-]?[0-9]{1,3}",
        ]
    }

    proptest! {
        #[test]
        fn a_body_taken_as_compact_is_exactly_what_compacting_writes(
            v in value(),
            pretty in any::<bool>(),
        ) {
            let json = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            if is_compact(&json) {
                prop_assert_eq!(compacted(&json), json);
            }
        }

        #[test]
        fn numbers_as_producers_write_them_are_compact_only_when_written_back_the_same(
            n in number_text(),
        ) {
            let json = format!(r#"{{"n":{n},"m":[{n}]}}"#);
            // Leading zeros are not JSON.
            prop_assume!(serde_json::from_str::<Value>(&json).is_ok());
            if is_compact(&json) {
                prop_assert_eq!(compacted(&json), json);
            }
        }

        #[test]
        fn compact_events_with_plain_values_are_taken_as_compact(
            fields in prop::collection::vec(
                ("[a-z_]{1,10}", prop_oneof![
                    "[ -!#-\\[\\]-~é]{0,30}".prop_map(Value::String),
                    (-999_999_999_999i64..999_999_999_999).prop_map(Value::from),
                    any::<bool>().prop_map(Value::Bool),
                ]),
                0..12,
            ),
        ) {
            let object: serde_json::Map<String, Value> = fields.into_iter().collect();
            prop_assert!(is_compact(&serde_json::to_string(&object).unwrap()));
        }
    }
}
