//! The registry resources an audit event names (`seeds/audit-log-metadata.txt`): a bucket, a
//! version (and the version a channel held before), a build (alone, or among `builds` and
//! `previous_builds`), a channel, and the registry itself. Searched by id are those the
//! contract lists for `resource_id`: every one but the channel's previous version.

use serde_json::Value;
use strum::{Display, EnumString, IntoStaticStr, VariantNames};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, EnumString, IntoStaticStr, Display, VariantNames,
)]
#[strum(serialize_all = "lowercase")]
pub enum ResourceType {
    Bucket,
    Version,
    Build,
    Channel,
}

/// The event's fields that hold resources, and the type of each (the registry has none).
const FIELDS: [(&str, Option<ResourceType>); 8] = [
    ("bucket", Some(ResourceType::Bucket)),
    ("version", Some(ResourceType::Version)),
    (PREVIOUS_VERSION, Some(ResourceType::Version)),
    ("build", Some(ResourceType::Build)),
    ("builds", Some(ResourceType::Build)),
    ("previous_builds", Some(ResourceType::Build)),
    ("channel", Some(ResourceType::Channel)),
    ("registry", None),
];

/// The one resource field whose id `resource_id` does not match: CONTRACT.md lists the ids
/// searched (`bucket.id`, `version.id`, `build.id`, `channel.id`, `registry.id`, an id in
/// `builds` or `previous_builds`), and a version a channel no longer holds is not among them.
const PREVIOUS_VERSION: &str = "previous_version";

/// The event's fields that may hold resources.
pub(super) fn fields() -> impl Iterator<Item = &'static str> {
    FIELDS.iter().map(|(name, _)| *name)
}

impl ResourceType {
    /// Whether the event names a resource of this type.
    pub fn is_named_in(self, event: &Value) -> bool {
        FIELDS
            .iter()
            .filter(|(_, t)| *t == Some(self))
            .any(|(f, _)| objects(event, f).next().is_some())
    }
}

/// The resource an event is about: the most specific one it names (a channel's assignment is
/// about the channel, a build's update about the build, a revocation about the version, a
/// label about the bucket).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource<'a> {
    pub kind: ResourceType,
    pub id: &'a str,
    pub name: &'a str,
}

impl<'a> Resource<'a> {
    pub fn of(event: &'a Value) -> Option<Self> {
        let (kind, object) = [
            (ResourceType::Channel, "channel"),
            (ResourceType::Build, "build"),
            (ResourceType::Version, "version"),
            (ResourceType::Build, "builds"),
            (ResourceType::Bucket, "bucket"),
        ]
        .into_iter()
        .find_map(|(kind, field)| objects(event, field).next().map(|o| (kind, o)))?;
        Some(Self {
            kind,
            id: text(object, "id"),
            name: text(object, "name"),
        })
    }
}

/// The resources the event names, the registry included.
fn resources(event: &Value) -> impl Iterator<Item = &Value> {
    FIELDS.iter().flat_map(move |(f, _)| objects(event, f))
}

/// Ids of the resources the event names that `resource_id` matches.
pub fn ids(event: &Value) -> impl Iterator<Item = &str> {
    FIELDS
        .iter()
        .filter(|(f, _)| *f != PREVIOUS_VERSION)
        .flat_map(move |(f, _)| objects(event, f))
        .filter_map(|o| o.get("id").and_then(Value::as_str))
}

/// Names of the resources the event names (builds have none).
pub fn names(event: &Value) -> impl Iterator<Item = &str> {
    resources(event).filter_map(|o| o.get("name").and_then(Value::as_str))
}

/// The objects in one field: the object itself, or those of a list.
fn objects<'a>(event: &'a Value, field: &str) -> impl Iterator<Item = &'a Value> {
    let found: Box<dyn Iterator<Item = &'a Value>> = match event.get(field) {
        Some(Value::Array(list)) => Box::new(list.iter().filter(|v| v.is_object())),
        Some(v @ Value::Object(_)) => Box::new(std::iter::once(v)),
        _ => Box::new(std::iter::empty()),
    };
    found
}

fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get(field)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::SEED_EVENTS;

    fn seed(n: usize) -> Value {
        serde_json::from_str(SEED_EVENTS[n].1).unwrap()
    }

    #[test]
    fn each_seed_event_is_about_its_most_specific_resource() {
        let about: Vec<(ResourceType, String)> = (0..SEED_EVENTS.len())
            .map(|n| {
                let e = seed(n);
                let r = Resource::of(&e).unwrap();
                (r.kind, format!("{}/{}", r.id, r.name))
            })
            .collect();
        let kinds: Vec<ResourceType> = about.iter().map(|(k, _)| *k).collect();
        assert!(kinds.contains(&ResourceType::Channel), "{about:?}");
        assert!(kinds.contains(&ResourceType::Bucket), "{about:?}");
        assert!(kinds.contains(&ResourceType::Build), "{about:?}");
        assert!(kinds.contains(&ResourceType::Version), "{about:?}");
    }

    #[test]
    fn ids_include_builds_in_lists_and_the_registry() {
        let e = serde_json::json!({
            "registry": {"id": "r"}, "builds": [{"id": "b1"}, {"id": "b2"}, "junk"],
            "previous_builds": [{"id": "b0"}], "channel": {"id": "c", "name": "prod"},
            "version": null
        });
        let mut all: Vec<&str> = ids(&e).collect();
        all.sort_unstable();
        assert_eq!(all, ["b0", "b1", "b2", "c", "r"]);
        assert_eq!(names(&e).collect::<Vec<_>>(), ["prod"]);
        assert!(ResourceType::Build.is_named_in(&e));
        assert!(!ResourceType::Version.is_named_in(&e));
        assert!(!ResourceType::Bucket.is_named_in(&e));
    }

    #[test]
    fn a_channels_previous_version_is_a_version_named_but_not_an_id_searched() {
        // The seed's assignment of a version to a channel, which held another before.
        let e = (0..SEED_EVENTS.len())
            .map(seed)
            .find(|e| e.get("previous_version").is_some())
            .unwrap();
        let previous = e["previous_version"]["id"].as_str().unwrap();
        let version = e["version"]["id"].as_str().unwrap();
        assert!(ids(&e).any(|id| id == version));
        assert!(!ids(&e).any(|id| id == previous), "{previous}");
        assert!(names(&e).any(|n| n == e["previous_version"]["name"]));
        let alone = serde_json::json!({"previous_version": {"id": "v0"}});
        assert!(ResourceType::Version.is_named_in(&alone));
        assert_eq!(ids(&alone).count(), 0);
    }
}
