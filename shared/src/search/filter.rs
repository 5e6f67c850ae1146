//! The filters of the events listing and of exports (`CONTRACT.md`, "Search and export").
//! They are checked here against each event's own JSON and never become DynamoDB expressions:
//! events are stored packed, and no caller text ever reaches a query.

use super::resource::{self, ResourceType};
use crate::event::{Action, RawFields, Status};
use serde_json::{Map, Value};
use strum::VariantNames;

/// The filters' names, as query parameters and as fields of an export's body.
pub const PARAMETERS: [&str; 6] = [
    "action",
    "status",
    "actor",
    "resource_type",
    "resource_id",
    "q",
];
/// Ids, e-mail addresses and search text are at most this long.
pub const MAX_TEXT_CHARS: usize = 255;

/// Which events a search keeps; the default keeps every one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub action: Option<Action>,
    pub status: Option<Status>,
    /// An actor's `principal_id` or `user.email`, exactly.
    pub actor: Option<String>,
    pub resource_type: Option<ResourceType>,
    /// The id of any resource the event names.
    pub resource_id: Option<String>,
    /// `q`, lowercased: text in the description or a resource's name, in any case.
    pub text: Option<String>,
}

/// A filter's value that cannot be used, with what to send instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{parameter}` {problem}")]
pub struct FilterError {
    pub parameter: String,
    pub problem: String,
}

impl Filter {
    /// The filter of these `(name, value)` pairs (a query's, an export's); names that are no
    /// filter are left to the caller to refuse or ignore.
    pub fn from_pairs<N: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Result<Self, FilterError> {
        let mut filter = Filter::default();
        for (name, value) in pairs {
            filter.set(name.as_ref(), value.as_ref())?;
        }
        Ok(filter)
    }

    /// Sets the filter `name` names from `value`; `Ok(false)` when `name` is no filter.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, FilterError> {
        let wrong = |problem: String| FilterError {
            parameter: name.to_owned(),
            problem,
        };
        let one_of = |allowed: &[&str]| wrong(format!("must be one of {}", allowed.join(", ")));
        match name {
            "action" => self.action = Some(value.parse().map_err(|_| one_of(Action::VARIANTS))?),
            "status" => self.status = Some(value.parse().map_err(|_| one_of(Status::VARIANTS))?),
            "resource_type" => {
                self.resource_type =
                    Some(value.parse().map_err(|_| one_of(ResourceType::VARIANTS))?)
            }
            "actor" | "resource_id" | "q" => {
                if value.trim().is_empty()
                    || value.chars().any(char::is_control)
                    || value.chars().count() > MAX_TEXT_CHARS
                {
                    return Err(wrong(format!(
                        "must be non-blank text of at most {MAX_TEXT_CHARS} characters, without control characters"
                    )));
                }
                let value = value.to_owned();
                match name {
                    "actor" => self.actor = Some(value),
                    "resource_id" => self.resource_id = Some(value),
                    _ => self.text = Some(value.to_lowercase()),
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// The filters set, by name, in `PARAMETERS` order: what shapes a listing, for its cursors.
    pub fn named(&self) -> [Option<String>; 6] {
        [
            self.action.map(|a| a.to_string()),
            self.status.map(|s| s.to_string()),
            self.actor.clone(),
            self.resource_type.map(|r| r.to_string()),
            self.resource_id.clone(),
            self.text.clone(),
        ]
    }

    /// Whether the event, as its JSON text, passes every filter set. Only the fields the
    /// filters read are parsed: the rest of the event is passed over as text, which is most of
    /// what a search of many stored events costs.
    pub fn matches_json(&self, json: &str) -> serde_json::Result<bool> {
        let Ok(fields) = serde_json::from_str::<RawFields>(json) else {
            // Not an object (a stored event always is): read whole, as `matches` reads it.
            return serde_json::from_str(json).map(|event| self.matches(&event));
        };
        let mut read = Map::new();
        for name in self.fields_read() {
            if let Some(value) = fields.get(name) {
                read.insert(name.to_owned(), serde_json::from_str(value.get())?);
            }
        }
        Ok(self.matches(&Value::Object(read)))
    }

    /// The event's top-level fields the filters set read.
    fn fields_read(&self) -> impl Iterator<Item = &'static str> {
        let resources =
            self.resource_type.is_some() || self.resource_id.is_some() || self.text.is_some();
        [
            self.action.map(|_| "action"),
            self.status.map(|_| "status"),
            self.actor.as_ref().map(|_| "actor"),
            self.text.as_ref().map(|_| "description"),
        ]
        .into_iter()
        .flatten()
        .chain(resource::fields().filter(move |_| resources))
    }

    /// Whether the event (its original JSON) passes every filter set.
    pub fn matches(&self, event: &Value) -> bool {
        let field = |name: &str| event.get(name).and_then(Value::as_str);
        self.action
            .is_none_or(|a| field("action") == Some(<&str>::from(a)))
            && self
                .status
                .is_none_or(|s| field("status") == Some(<&str>::from(s)))
            && self.actor.as_deref().is_none_or(|who| {
                let actor = event.get("actor");
                let at = |path: &[&str]| {
                    path.iter()
                        .try_fold(actor?, |v, k| v.get(k))
                        .and_then(Value::as_str)
                };
                at(&["principal_id"])
                    .into_iter()
                    .chain(at(&["user", "email"]))
                    .any(|id| same_actor(id, who))
            })
            && self.resource_type.is_none_or(|t| t.is_named_in(event))
            && self
                .resource_id
                .as_deref()
                .is_none_or(|id| resource::ids(event).any(|i| i == id))
            && self.text.as_deref().is_none_or(|text| {
                field("description")
                    .into_iter()
                    .chain(resource::names(event))
                    .any(|t| t.to_lowercase().contains(text))
            })
    }
}

/// Whether an actor's id or e-mail address is the one asked for, a space asked matching a `+`
/// too: a hand-made URL's unencoded `+` (`?actor=ops+ci@example.com`) comes as a space, which
/// form decoding makes of it, and ids and addresses hold `+` far more often than spaces.
fn same_actor(id: &str, asked: &str) -> bool {
    id.len() == asked.len()
        && id
            .bytes()
            .zip(asked.bytes())
            .all(|(i, a)| i == a || (a == b' ' && i == b'+'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::SEED_EVENTS;
    use proptest::prelude::*;
    use serde_json::json;

    fn filter(pairs: &[(&str, &str)]) -> Filter {
        let mut f = Filter::default();
        for (name, value) in pairs {
            assert!(f.set(name, value).unwrap(), "{name}");
        }
        f
    }

    fn matching(pairs: &[(&str, &str)]) -> Vec<String> {
        let f = filter(pairs);
        SEED_EVENTS
            .iter()
            .filter(|(_, body)| f.matches(&serde_json::from_str(body).unwrap()))
            .map(|(_, body)| {
                serde_json::from_str::<Value>(body).unwrap()["description"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn pairs_make_the_same_filter_and_a_bad_value_is_named() {
        let pairs = [("status", "FAILED"), ("limit", "5"), ("q", "Build")];
        let made = Filter::from_pairs(pairs).unwrap();
        assert_eq!(made, filter(&[("status", "FAILED"), ("q", "Build")]));
        let bad = Filter::from_pairs([("action", "create"), ("status", "ok")]).unwrap_err();
        assert_eq!(bad.parameter, "status");
    }

    #[test]
    fn an_actor_asked_with_a_space_finds_the_one_with_a_plus_a_url_sent_unencoded() {
        let event = |email: &str| json!({"actor": {"user": {"email": email}}});
        let asked = filter(&[("actor", "ops ci@example.com")]);
        assert!(asked.matches(&event("ops+ci@example.com")));
        assert!(asked.matches(&event("ops ci@example.com")));
        assert!(!asked.matches(&event("opsxci@example.com")));
        assert!(!asked.matches(&event("ops+ci@example.co")));
        // A `+` asked is a `+` only.
        let plus = filter(&[("actor", "ops+ci@example.com")]);
        assert!(plus.matches(&event("ops+ci@example.com")));
        assert!(!plus.matches(&event("ops ci@example.com")));
    }

    #[test]
    fn each_filter_keeps_exactly_the_seed_events_it_names() {
        assert_eq!(matching(&[]).len(), SEED_EVENTS.len());
        assert_eq!(matching(&[("status", "FAILED")]), ["Created build"]);
        assert_eq!(
            matching(&[("action", "create")]),
            ["Added bucket labels", "Created build"]
        );
        assert_eq!(
            matching(&[("actor", "test.user@hashicorp.com")]),
            ["Revoked version", "Assigned version to channel"]
        );
        assert_eq!(
            matching(&[("actor", "6f212631-5bcc-48a2-9082-37d752904032")]),
            ["Revoked version", "Assigned version to channel"]
        );
        assert_eq!(
            matching(&[("resource_type", "channel")]),
            ["Assigned version to channel"]
        );
        // A build inside `previous_builds` counts.
        assert_eq!(
            matching(&[("resource_id", "01H5APPBYYF4D0NMVZCRKR85E7")]),
            [
                "Revoked version",
                "Updated build",
                "Assigned version to channel"
            ]
        );
        assert_eq!(
            matching(&[("q", "REVOKED")]),
            ["Revoked version"],
            "case-insensitive"
        );
        assert_eq!(
            matching(&[("q", "fgtj")]),
            ["Assigned version to channel"],
            "a channel's name"
        );
        assert_eq!(
            matching(&[("action", "update"), ("resource_type", "build")]),
            [
                "Revoked version",
                "Updated build",
                "Assigned version to channel"
            ]
        );
        assert!(matching(&[("action", "delete")]).is_empty());
    }

    /// Values the filters below look for, in every place and shape an event may hold them.
    fn arb_value() -> impl Strategy<Value = Value> {
        let text = prop::sample::select(vec!["FAILED", "create", "b1", "a@b.c", "Prod", "x"]);
        let leaf = prop_oneof![
            text.clone().prop_map(Value::from),
            Just(Value::Null),
            Just(json!(7)),
        ];
        leaf.prop_recursive(3, 16, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop::sample::select(vec!["id", "name", "email", "principal_id", "user"]),
                    inner,
                    0..3,
                )
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.into(), v)).collect())),
            ]
        })
    }

    proptest! {
        /// Reading only the fields a filter needs decides as parsing the whole event does,
        /// whatever those fields hold, and with keys escaped or given twice.
        #[test]
        fn the_lean_read_keeps_what_the_whole_event_keeps(
            seed in 0..SEED_EVENTS.len(),
            changes in prop::collection::vec((
                prop::sample::select(vec![
                    "action", "status", "actor", "description", "bucket", "version",
                    "previous_version", "build", "builds", "previous_builds", "channel", "registry",
                ]),
                arb_value(),
            ), 0..4),
            twice in prop::option::of((
                prop::sample::select(vec!["action", "status", "actor", "description", "bucket", "builds", "channel"]),
                arb_value(),
            )),
            escaped in any::<bool>(),
            pairs in prop::collection::vec((
                prop::sample::select(PARAMETERS.to_vec()),
                prop::sample::select(vec!["FAILED", "create", "b1", "a@b.c", "prod", "bucket", "build"]),
            ), 1..3),
        ) {
            let Ok(filter) = Filter::from_pairs(pairs) else { return Ok(()) };
            let mut event: Map<String, Value> = serde_json::from_str(SEED_EVENTS[seed].1).unwrap();
            for (field, value) in changes {
                event.insert(field.into(), value);
            }
            let mut json = Value::Object(event).to_string();
            if escaped {
                json = json.replacen("\"status\"", "\"st\\u0061tus\"", 1);
            }
            if let Some((field, first)) = twice {
                // The field given twice, another value first: the last one is the event's.
                json.insert_str(1, &format!("{}:{first},", Value::from(field)));
            }
            let whole: Value = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(filter.matches_json(&json).unwrap(), filter.matches(&whole), "{}", json);
        }
    }

    #[test]
    fn an_event_that_is_no_object_matches_no_filter_and_bad_json_is_an_error() {
        let failed = filter(&[("status", "FAILED")]);
        assert!(!failed.matches_json("[1, 2]").unwrap());
        assert!(failed.matches_json(r#"{"status": "FAILED""#).is_err());
        assert!(
            failed
                .matches_json(r#"{"status": "FAILED", "x": [}"#)
                .is_err()
        );
    }

    #[test]
    fn bad_values_name_the_parameter_and_unknown_names_are_not_taken() {
        let mut f = Filter::default();
        for (name, value) in [
            ("action", "destroy"),
            ("status", "ok"),
            ("resource_type", "registry"),
            ("actor", " "),
            ("q", "a\u{7}b"),
            ("resource_id", &"x".repeat(MAX_TEXT_CHARS + 1)),
        ] {
            let e = f.set(name, value).unwrap_err();
            assert_eq!(e.parameter, name);
            assert!(e.to_string().starts_with(&format!("`{name}` must")), "{e}");
        }
        assert!(
            f.set("action", "destroy")
                .unwrap_err()
                .to_string()
                .contains("create, update, delete, read")
        );
        assert!(!f.set("colour", "red").unwrap());
        assert!(f.is_empty());
    }
}
