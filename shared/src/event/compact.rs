//! A body as it is stored: the producer's JSON without the whitespace between its tokens.
//! Strings (their escapes included) and numbers stay exactly as the producer wrote them, as the
//! contract keeps fields verbatim: writing the body again through serde_json would read a
//! 23-digit integer as a float and write back `1.2345678901234568e22`.

use std::borrow::Cow;

/// Digits a plain integer may have and still be read by serde_json as a 64-bit one.
const EXACT_DIGITS: usize = 18;
/// The deepest nesting serde_json reads (its recursion limit, 128, refuses the 128th level):
/// anything deeper is left to the parsed path, which refuses it, as every later reader of the
/// event would; reading the required fields skips other fields without that limit.
const MAX_DEPTH: usize = 127;

/// `json`, a valid JSON document, without whitespace between its tokens: borrowed when it has
/// none (most producers send compact JSON). `None` for a document the event's later readers
/// could not read (nested too deep, or a number out of a double's range, which serde_json
/// refuses): the parsed path names the problem.
pub(super) fn minified(json: &str) -> Option<Cow<'_, str>> {
    let bytes = json.as_bytes();
    let mut kept: Option<Vec<u8>> = None;
    let (mut at, mut copied, mut depth) = (0, 0, 0usize);
    while at < bytes.len() {
        match bytes[at] {
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return None;
                }
                at += 1;
            }
            b'}' | b']' => {
                depth = depth.saturating_sub(1);
                at += 1;
            }
            b'"' => {
                let (end, escaped) = string_end(bytes, at + 1)?;
                // Reading the required fields passes over other strings' escapes without
                // decoding them; serde_json refuses some (a lone surrogate such as `\ud800`).
                if escaped && serde_json::from_str::<Cow<str>>(&json[at..end]).is_err() {
                    return None;
                }
                at = end;
            }
            b'-' | b'0'..=b'9' => {
                let start = at;
                at += 1;
                while at < bytes.len()
                    && matches!(bytes[at], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    at += 1;
                }
                if !fits_a_double(&json[start..at]) {
                    return None;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' => {
                let start = at;
                while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'\n' | b'\r') {
                    at += 1;
                }
                let kept = kept.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                kept.extend_from_slice(&bytes[copied..start]);
                copied = at;
            }
            // Structure and the letters of `true`, `false` and `null`.
            _ => at += 1,
        }
    }
    match kept {
        None => Some(Cow::Borrowed(json)),
        Some(mut kept) => {
            kept.extend_from_slice(&bytes[copied..]);
            // Only ASCII whitespace was left out, between tokens: still UTF-8.
            String::from_utf8(kept).ok().map(Cow::Owned)
        }
    }
}

/// Where the string whose text starts at `from` ends (just past its closing quote), and
/// whether it has escapes.
fn string_end(bytes: &[u8], mut from: usize) -> Option<(usize, bool)> {
    let mut escaped = false;
    loop {
        let found = from + memchr::memchr2(b'"', b'\\', &bytes[from..])?;
        if bytes[found] == b'"' {
            return Some((found + 1, escaped));
        }
        escaped = true;
        // A backslash and the character it escapes.
        from = found + 2;
        if from > bytes.len() {
            return None;
        }
    }
}

/// Whether serde_json reads the number: a plain integer of up to 18 digits always does; any
/// other is read as a double, and refused past a double's range (`1e400`). Asked of serde_json
/// itself, as it is built: without its `float_roundtrip` feature (the functions) it rounds
/// otherwise than Rust's own parser, and a number at the edge of the range differs.
fn fits_a_double(number: &str) -> bool {
    let digits = number.strip_prefix('-').unwrap_or(number);
    (digits.len() <= EXACT_DIGITS && digits.bytes().all(|b| b.is_ascii_digit()))
        || serde_json::from_str::<f64>(number).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::Value;

    fn stored(json: &str) -> String {
        minified(json).expect("readable").into_owned()
    }

    #[test]
    fn only_the_whitespace_between_tokens_is_left_out() {
        for (body, kept) in [
            ("{ \"a\" : 1 }\n", r#"{"a":1}"#),
            ("{\"a b\":\t[1, 2 ,\r\n3]}", r#"{"a b":[1,2,3]}"#),
            (r#"{"a":"\" x ", "b" : "\\"}"#, r#"{"a":"\" x ","b":"\\"}"#),
        ] {
            assert_eq!(stored(body), kept, "{body}");
        }
        // Strings and numbers exactly as written, where serde_json would write them otherwise.
        for verbatim in [
            r#"{"a":"\/","b":"\u00e9","c":"\n"}"#,
            r#"{"a":1.50,"b":1e5,"c":1E+5,"d":-0,"e":0.1e-3}"#,
            r#"{"a":12345678901234567890123,"b":-18446744073709551616}"#,
            r#"{"a":1,"a":2}"#,
            "{}",
        ] {
            assert!(
                matches!(minified(verbatim), Some(Cow::Borrowed(_))),
                "{verbatim}"
            );
        }
    }

    #[test]
    fn what_later_readers_refuse_is_left_to_the_parsed_path() {
        for unread in [
            r#"{"a":1e400}"#.to_owned(),
            r#"{"a":-1e309}"#.to_owned(),
            format!(r#"{{"a":1{}}}"#, "0".repeat(400)),
            format!(r#"{{"a":{}1{}}}"#, "[".repeat(127), "]".repeat(127)),
            r#"{"a":"\ud800"}"#.to_owned(),
            r#"{"a":"x\udc00y"}"#.to_owned(),
        ] {
            assert!(minified(&unread).is_none(), "{unread}");
            assert!(serde_json::from_str::<Value>(&unread).is_err(), "{unread}");
        }
        // As deep as serde_json reads: kept.
        let deep = format!(r#"{{"a":{}1{}}}"#, "[".repeat(126), "]".repeat(126));
        assert_eq!(minified(&deep).as_deref(), Some(deep.as_str()));
        assert!(serde_json::from_str::<Value>(&deep).is_ok());
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
            "-?[0-9]{1,30}",
            "-?[1-9][0-9]{0,3}\\.[0-9]{1,4}",
            "-?[1-9][0-9]{0,3}[eE][+-]?[0-9]{1,3}",
        ]
    }

    proptest! {
        #[test]
        fn a_pretty_body_is_stored_as_serde_json_writes_it_compact(v in value()) {
            let pretty = serde_json::to_string_pretty(&v).unwrap();
            let compact = serde_json::to_string(&v).unwrap();
            prop_assert_eq!(stored(&pretty), compact.clone());
            prop_assert_eq!(stored(&compact), compact);
        }

        #[test]
        fn numbers_as_producers_write_them_are_stored_as_written(
            n in number_text(),
            space in "[ \t\n\r]{0,3}",
        ) {
            let body = format!(r#"{{"n":{space}{n}{space},"m":[{n}]}}"#);
            let readable = serde_json::from_str::<Value>(&body);
            match minified(&body) {
                // Leading zeros are not JSON: such bodies never come this far.
                Some(kept) => {
                    prop_assert_eq!(kept.as_ref(), format!(r#"{{"n":{n},"m":[{n}]}}"#));
                    prop_assert!(readable.is_ok() || n.trim_start_matches('-').starts_with('0'));
                }
                None => prop_assert!(readable.is_err()),
            }
        }

        #[test]
        fn what_is_stored_reads_as_the_same_value(v in value(), pretty in any::<bool>()) {
            let body = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            // As serde_json reads the body itself (its float parsing may be a unit off `v`).
            let read: Value = serde_json::from_str(&body).unwrap();
            prop_assert_eq!(serde_json::from_str::<Value>(&stored(&body)).unwrap(), read);
        }
    }
}
