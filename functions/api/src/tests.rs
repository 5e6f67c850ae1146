//! The API's handlers against the library's in-memory doubles: the configuration table, the
//! secrets, the lanes' timers and the queues in memory, a clock that moves only when told. No
//! emulator; `tests/api/` drives the same handlers against one.

use super::*;
use audit_log::clock::ManualClock;
use audit_log::credentials::memory::MemorySecrets;
use audit_log::credentials::{Credentials, CredentialsError};
use audit_log::lane::memory::{MemoryLanes, MemoryTimers};
use audit_log::lane::{LaneKey, LaneState, LaneStore, Owed};
use audit_log::message::MemoryQueues;
use audit_log::settings::DEFAULT_LOG_GROUP_PREFIX;
use audit_log::store::StoredKey;
use audit_log::streaming::Exports;
use secrecy::ExposeSecret;
use serde_json::Value;
use time::macros::datetime;

struct Doubles;

impl Ports for Doubles {
    type Configs = MemoryLanes;
    type Secrets = MemorySecrets;
    type Timers = MemoryTimers;
    type Queues = MemoryQueues;
}

const ORG: &str = "org-a";
const PROJECT: &str = "registry-1";
const KEY: &str = "0123456789abcdef0123456789abcdef";
const EVENTS_QUEUE: &str = "https://sqs.local/events";
const REPLAY_QUEUE: &str = "https://sqs.local/replay";
const EXPORT_QUEUE: &str = "https://sqs.local/exports";

struct World {
    api: Api<Doubles>,
    clock: Arc<ManualClock>,
}

struct Reply {
    status: i64,
    body: Value,
    headers: http::HeaderMap,
}

fn settings() -> Settings {
    Settings {
        events_table: "events".into(),
        config_table: "config".into(),
        events_queue_url: EVENTS_QUEUE.into(),
        replay_queue_url: REPLAY_QUEUE.into(),
        lane_queue_url: "https://sqs.local/lanes".into(),
        export_queue_url: EXPORT_QUEUE.into(),
        export_bucket: "exports".into(),
        secret_prefix: "audit-log/streaming/".into(),
        log_group_prefix: DEFAULT_LOG_GROUP_PREFIX.into(),
        organization_claim: DEFAULT_ORGANIZATION_CLAIM.into(),
        // Named, so no STS call is made for it.
        service_account_id: Some("111122223333".into()),
        datadog_endpoint_override: None,
        console: crate::console::SignIn::Off,
        lanes: audit_log::lane::Policy::default(),
        retention: audit_log::Retention::default(),
    }
}

impl World {
    fn new() -> Self {
        // Only the events table and the destinations' clients come from here; no test below
        // reaches them.
        let aws = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .build();
        let clock = Arc::new(ManualClock::at(datetime!(2026-11-30 10:00:30 UTC)));
        let api = Api::<Doubles>::with_ports(
            &aws,
            MemoryLanes::default(),
            MemorySecrets::default(),
            MemoryTimers::default(),
            MemoryQueues::default(),
            settings(),
        )
        .with_clock(clock.clone());
        Self { api, clock }
    }

    async fn call(
        &self,
        method: &str,
        suffix: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        self.call_in(PROJECT, method, suffix, headers, body).await
    }

    /// A request to another project of the organization.
    async fn call_in(
        &self,
        project: &str,
        method: &str,
        suffix: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        let text = body.map(|b| b.to_string());
        self.call_with_text(project, method, suffix, headers, text)
            .await
    }

    /// A request whose body is `text`, JSON or not.
    async fn call_with_text(
        &self,
        project: &str,
        method: &str,
        suffix: &str,
        headers: &[(&str, &str)],
        text: Option<String>,
    ) -> Reply {
        let fixture = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/lambda/apigw-http-api-request.json"
        ));
        let mut v: Value = serde_json::from_str(fixture).unwrap();
        let path = format!("/v1/organizations/{ORG}/projects/{project}/audit-logs{suffix}");
        v["rawPath"] = path.clone().into();
        v["routeKey"] = format!("{method} {path}").into();
        v["requestContext"]["http"]["method"] = method.into();
        v["requestContext"]["http"]["path"] = path.into();
        v["rawQueryString"] = "".into();
        v["queryStringParameters"] = serde_json::json!({});
        let mut all: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, val)| (k.to_string(), Value::from(*val)))
            .collect();
        all.insert("content-type".into(), "application/json".into());
        v["headers"] = all.into();
        v["isBase64Encoded"] = false.into();
        v["requestContext"]["authorizer"]["jwt"]["claims"] =
            serde_json::json!({"organization_id": ORG, "email": "ops@example.com"});
        match text {
            Some(text) => v["body"] = text.into(),
            None => {
                v.as_object_mut().unwrap().remove("body");
            }
        }
        let response = self.api.respond(&serde_json::from_value(v).unwrap()).await;
        let body = match response.body {
            Some(Body::Text(text)) => serde_json::from_str(&text).unwrap(),
            _ => Value::Null,
        };
        Reply {
            status: response.status_code,
            body,
            headers: response.headers,
        }
    }

    async fn put(&self, body: Value) -> Reply {
        self.call("PUT", "/streaming", &[], Some(body)).await
    }

    /// The audit events the API put on the events queue, as their actions and descriptions
    /// (each in its organization's message group, as producers put theirs).
    fn audited(&self) -> Vec<(String, String)> {
        self.api
            .queues
            .on(EVENTS_QUEUE)
            .iter()
            .map(|put| {
                let v: Value = serde_json::from_str(&put.body).unwrap();
                let organization = v["organization_id"].as_str().unwrap();
                assert_eq!(put.group, audit_log::message::group_of(organization));
                (
                    v["action"].as_str().unwrap().to_owned(),
                    v["description"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// A saved Datadog destination, paused, owed `events` events: its lane's key.
    async fn saved_paused_and_owed(&self, events: usize) -> LaneKey {
        self.put(datadog(Some(KEY))).await;
        self.call("POST", "/streaming/pause", &[], None).await;
        let key = LaneKey::new(ORG, PROJECT);
        let owed: Vec<Owed> = (0..events)
            .map(|i| Owed {
                event: StoredKey {
                    sort_key: format!("2026-11-30T10:00:0{i}Z#m-{i}"),
                    message_id: format!("m-{i}"),
                    expires_at: 0,
                },
                owed_at_ms: i as i64,
                bytes: 100,
            })
            .collect();
        let owing = self.api.configs.owe(&key, &owed, None).await.unwrap();
        assert_eq!(owing, audit_log::lane::Owing::Owed);
        key
    }

    async fn saved(&self) -> audit_log::streaming::StreamingConfig {
        let config = self.api.configs.configuration(ORG, PROJECT).await;
        config.unwrap().expect("a saved configuration")
    }

    async fn stored_key(&self) -> Option<String> {
        let credentials = match self.api.secrets.get(ORG, PROJECT, None, true).await {
            Ok(credentials) => credentials,
            Err(CredentialsError::NotFound) => return None,
            Err(e) => panic!("the stored key cannot be read: {e}"),
        };
        match &*credentials {
            Credentials::Datadog { api_key } => Some(api_key.expose_secret().to_owned()),
            Credentials::Cloudwatch { .. } => None,
        }
    }
}

fn datadog(key: Option<&str>) -> Value {
    let mut v = serde_json::json!({"provider": "datadog", "name": "dd-eu", "datadog": {"site": "datadoghq.eu"}});
    if let Some(key) = key {
        v["datadog"]["api_key"] = key.into();
    }
    v
}

#[tokio::test]
async fn a_first_save_keeps_the_key_as_the_current_secret_and_is_audited() {
    // GIVEN a project that streams nowhere
    let w = World::new();
    // WHEN its Datadog destination is saved
    let saved = w.put(datadog(Some(KEY))).await;
    // THEN it is version 1, shows the key's last four characters only, and names the secret
    // version that is now current
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["version"], 1);
    assert_eq!(saved.headers["etag"], "\"1\"");
    assert_eq!(
        saved.body["destination"]["datadog"]["api_key_last4"],
        "cdef"
    );
    assert!(!saved.body.to_string().contains(KEY));
    assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
    let config = w.saved().await;
    assert_eq!(config.secret_version, w.api.secrets.current(ORG, PROJECT));
    assert_eq!(config.updated_at, "2026-11-30T10:00:30Z");
    // AND the change is itself an audit event on the events queue
    assert_eq!(
        w.audited(),
        [(
            "create".to_owned(),
            "Created streaming configuration".to_owned()
        )]
    );
}

#[tokio::test]
async fn a_save_without_a_key_keeps_the_saved_key() {
    // GIVEN a saved Datadog destination
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    // WHEN it is saved again without `api_key` (a rename)
    let mut renamed = datadog(None);
    renamed["name"] = "dd-renamed".into();
    let saved = w.put(renamed).await;
    // THEN the key is kept and the version moves on
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["version"], 2);
    assert_eq!(saved.body["destination"]["name"], "dd-renamed");
    assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
}

#[tokio::test]
async fn saving_the_same_credentials_again_adds_no_secret_version() {
    // GIVEN a saved Datadog destination
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    let (first, versions) = (
        w.saved().await.secret_version,
        w.api.secrets.versions(ORG, PROJECT),
    );
    // WHEN it is saved again as it is, with its key and without, and renamed
    let mut renamed = datadog(None);
    renamed["name"] = "dd-renamed".into();
    for body in [datadog(Some(KEY)), datadog(None), renamed] {
        assert_eq!(w.put(body).await.status, 200);
    }
    // THEN the configuration still names the version saved first, and the secret holds no
    // other (Secrets Manager refuses new versions past about 100 a day)
    assert_eq!(w.saved().await.secret_version, first);
    assert_eq!(w.api.secrets.versions(ORG, PROJECT), versions);
    assert_eq!(w.api.secrets.current(ORG, PROJECT), first);
    // AND a new key is a new version, made current
    let other = "fedcba9876543210fedcba9876543210";
    assert_eq!(w.put(datadog(Some(other))).await.status, 200);
    assert_ne!(w.saved().await.secret_version, first);
    assert_eq!(w.api.secrets.versions(ORG, PROJECT), versions + 1);
    assert_eq!(w.stored_key().await.as_deref(), Some(other));
}

#[tokio::test]
async fn a_slow_promote_leaves_the_current_label_on_the_version_the_configuration_names() {
    // GIVEN a saved destination, and a save of a new key whose promote is slow
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    let release = w.api.secrets.hold_next_promote();
    let (second, third) = (
        "fedcba9876543210fedcba9876543210",
        "00112233445566778899aabbccddeeff",
    );
    let slow = w.put(datadog(Some(second)));
    // WHEN another save lands and promotes its key before the slow promote acts
    let newer = async {
        while w.saved().await.version < 2 {
            tokio::task::yield_now().await;
        }
        let newer = w.put(datadog(Some(third))).await;
        let _ = release.send(());
        newer
    };
    let (slow, newer) = tokio::join!(slow, newer);
    assert_eq!((slow.status, newer.status), (200, 200));
    // THEN the current key is the one the configuration names: the newest
    let config = w.saved().await;
    assert_eq!(config.version, 3);
    assert_eq!(w.api.secrets.current(ORG, PROJECT), config.secret_version);
    assert_eq!(w.stored_key().await.as_deref(), Some(third));
}

#[tokio::test]
async fn a_save_between_a_deletions_two_steps_is_told_to_come_back_and_then_keeps_its_key() {
    // GIVEN a saved destination whose deletion has removed the configuration, not yet the secret
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    let release = w.api.secrets.hold_next_delete();
    let deleting = w.call("DELETE", "/streaming", &[], None);
    let second = "fedcba9876543210fedcba9876543210";
    let saving = async {
        while w
            .api
            .configs
            .configuration(ORG, PROJECT)
            .await
            .unwrap()
            .is_some()
        {
            tokio::task::yield_now().await;
        }
        // WHEN a save comes in between
        let refused = w.put(datadog(Some(second))).await;
        let _ = release.send(());
        refused
    };
    let (deleted, refused) = tokio::join!(deleting, saving);
    // THEN it is told to come back, and nothing of it is saved
    assert_eq!(deleted.status, 204, "{}", deleted.body);
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "credentials_being_deleted");
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(
        w.api
            .configs
            .configuration(ORG, PROJECT)
            .await
            .unwrap()
            .is_none()
    );
    // AND, the deletion over, the same save lands with its key
    assert_eq!(w.put(datadog(Some(second))).await.status, 200);
    assert_eq!(w.stored_key().await.as_deref(), Some(second));
}

#[tokio::test]
async fn a_deletion_whose_secret_stays_holds_saves_back_until_its_mark_lapses() {
    // GIVEN a deletion that removed the configuration but whose secret delete failed (it may
    // still land)
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.api.secrets.set_down(Some(CredentialsError::Unavailable(
        audit_log::credentials::NO_ANSWER.into(),
    )));
    assert_eq!(w.call("DELETE", "/streaming", &[], None).await.status, 500);
    w.api.secrets.set_down(None);
    // WHEN saves come, THEN they are told to come back: soon while the deletion might still
    // be running, then when the mark lapses
    let refused = w.put(datadog(Some(KEY))).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.body["error"]["code"], "credentials_being_deleted");
    assert_eq!(refused.headers["retry-after"], "1");
    w.clock.advance(std::time::Duration::from_secs(40));
    let refused = w.put(datadog(Some(KEY))).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.headers["retry-after"], "20");
    w.clock.advance(std::time::Duration::from_secs(20));
    assert_eq!(w.put(datadog(Some(KEY))).await.status, 200);
    assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
}

#[tokio::test]
async fn a_deletion_whose_secret_delete_was_answered_holds_no_save_back() {
    for answer in [
        CredentialsError::Refused("AccessDeniedException".into()),
        CredentialsError::Unavailable("ThrottlingException".into()),
    ] {
        // GIVEN a deletion whose secret delete Secrets Manager answered with an error (so it
        // never lands)
        let w = World::new();
        w.put(datadog(Some(KEY))).await;
        w.api.secrets.set_down(Some(answer.clone()));
        assert_eq!(w.call("DELETE", "/streaming", &[], None).await.status, 500);
        w.api.secrets.set_down(None);
        // WHEN a save comes, THEN it lands, keeping the secret that stayed
        assert_eq!(w.put(datadog(Some(KEY))).await.status, 200, "{answer}");
        assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
    }
}

#[tokio::test]
async fn a_deletion_cut_short_holds_the_next_one_back_no_longer_than_itself() {
    // GIVEN a deletion cut short, its mark lapsed
    let w = World::new();
    let key = LaneKey::new(ORG, PROJECT);
    w.api
        .configs
        .begin_deletion(ORG, PROJECT, w.clock.now())
        .await
        .unwrap();
    w.clock.advance(std::time::Duration::from_secs(61));
    // WHEN another deletion runs to its end
    assert_eq!(w.call("DELETE", "/streaming", &[], None).await.status, 204);
    // THEN no mark is left, and a save lands at once
    assert_eq!(w.api.configs.deleting(&key, w.clock.now()), None);
    assert_eq!(w.put(datadog(Some(KEY))).await.status, 200);
}

#[tokio::test]
async fn a_delete_if_nothing_is_saved_meeting_a_save_since_is_a_412_that_holds_nothing_back() {
    // GIVEN a delete conditional on nothing being saved, and a save that lands after its read
    let w = World::new();
    let key = LaneKey::new(ORG, PROJECT);
    w.api.configs.race_next_delete(&key);
    // WHEN it deletes, THEN it is refused, and the save stays
    let stale = w
        .call("DELETE", "/streaming", &[("if-match", "\"0\"")], None)
        .await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(w.saved().await.version, 1);
    // AND it leaves no mark behind to hold saves back
    assert_eq!(w.api.configs.deleting(&key, w.clock.now()), None);
}

#[tokio::test]
async fn a_save_that_landed_is_answered_as_saved_when_the_table_fails_right_after() {
    // GIVEN a saved destination, paused, owed an event, and a new key's save whose promote is
    // slow
    let w = World::new();
    let key = w.saved_paused_and_owed(1).await;
    let release = w.api.secrets.hold_next_promote();
    let second = "fedcba9876543210fedcba9876543210";
    let saving = w.put(datadog(Some(second)));
    // WHEN the table fails for the project once the save landed
    let failing = async {
        while w.saved().await.version < 2 {
            tokio::task::yield_now().await;
        }
        w.api.configs.set_unreadable(&key, true);
        let _ = release.send(());
    };
    let (saved, ()) = tokio::join!(saving, failing);
    // THEN the answer is the saved configuration (the External ID it shows read before the
    // save), not a 500 that would have the caller save again (or, with If-Match, meet a 412
    // for its own save)
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["version"], 2);
    assert_eq!(saved.headers["etag"], "\"2\"");
    assert_eq!(saved.body["health"]["pending"], 1);
    assert_eq!(w.call("GET", "/streaming", &[], None).await.status, 500);
    w.api.configs.set_unreadable(&key, false);
    assert_eq!(w.stored_key().await.as_deref(), Some(second));
}

#[tokio::test]
async fn credentials_changed_too_often_for_secrets_manager_are_a_429_for_an_hour() {
    let w = World::new();
    w.api
        .secrets
        .set_down(Some(CredentialsError::TooManyVersions));
    let reply = w.put(datadog(Some(KEY))).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "credentials_changed_too_often");
    assert_eq!(reply.headers["retry-after"], "3600");
}

#[tokio::test]
async fn a_delete_whose_secret_cannot_be_deleted_yet_is_told_once_and_its_retry_deletes_it() {
    // GIVEN a saved destination whose secret Secrets Manager will not delete right now
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.api
        .secrets
        .set_down(Some(CredentialsError::Unavailable("throttled".into())));
    // WHEN it is deleted, THEN the request fails, but the deletion is already told
    let failed = w.call("DELETE", "/streaming", &[], None).await;
    assert_eq!(failed.status, 500, "{}", failed.body);
    let told = |w: &World| {
        w.audited()
            .into_iter()
            .filter(|(action, _)| action == "delete")
            .count()
    };
    assert_eq!(told(&w), 1);
    // AND its retry deletes the secret, and tells it no second time
    w.api.secrets.set_down(None);
    assert_eq!(w.call("DELETE", "/streaming", &[], None).await.status, 204);
    assert_eq!(w.stored_key().await, None);
    assert_eq!(told(&w), 1);
}

#[tokio::test]
async fn a_delete_stopped_while_its_secret_goes_has_already_told_the_deletion() {
    // GIVEN a saved destination whose secret's delete does not answer
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    let _held = w.api.secrets.hold_next_delete();
    let told = |w: &World| {
        w.audited()
            .into_iter()
            .filter(|(action, _)| action == "delete")
            .count()
    };
    // WHEN the request is stopped there (as Lambda stops a function at its timeout)
    tokio::select! {
        reply = w.call("DELETE", "/streaming", &[], None) => {
            panic!("the held delete answered: {}", reply.body)
        }
        () = async {
            while w.api.configs.configuration(ORG, PROJECT).await.unwrap().is_some() {
                tokio::task::yield_now().await;
            }
            // The configuration is gone; the request goes on until it waits on the secret.
            for _ in 0..100 {
                tokio::task::yield_now().await;
            }
        } => {}
    }
    // THEN the deletion was told before then, once
    assert_eq!(told(&w), 1);
    assert!(w.stored_key().await.is_some(), "the secret is still there");
    // AND its retry, which finds no configuration, deletes the secret and tells nothing more
    assert_eq!(w.call("DELETE", "/streaming", &[], None).await.status, 204);
    assert_eq!(w.stored_key().await, None);
    assert_eq!(told(&w), 1);
}

#[tokio::test]
async fn an_organization_has_at_most_a_thousand_destinations_saved() {
    use audit_log::streaming::MAX_DESTINATIONS;
    // GIVEN an organization one destination short of the limit
    let w = World::new();
    for i in 1..MAX_DESTINATIONS {
        w.api
            .configs
            .configure(&LaneKey::new(ORG, format!("other-{i}")));
    }
    // WHEN it saves one more, THEN that one is saved
    assert_eq!(w.put(datadog(Some(KEY))).await.status, 200);
    // AND the next project's first save is refused, saying what to do, with nothing kept
    let next = "registry-2";
    let refused = w
        .call_in(next, "PUT", "/streaming", &[], Some(datadog(Some(KEY))))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(refused.body["error"]["code"], "too_many_destinations");
    let message = refused.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("1000") && message.contains("delete"),
        "{message}"
    );
    assert_eq!(w.api.secrets.versions(ORG, next), 0, "no secret made");
    let created = |w: &World| w.audited().iter().filter(|(a, _)| a == "create").count();
    assert_eq!(created(&w), 1, "the refused save is not audited");
    // AND refused saves count against the organization's rate of changes, as saves do
    let mut statuses = Vec::new();
    for _ in 0..60 {
        let reply = w
            .call_in(next, "PUT", "/streaming", &[], Some(datadog(Some(KEY))))
            .await;
        statuses.push(reply.status);
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    w.clock.advance(std::time::Duration::from_secs(60));
    // AND a saved destination is still changed
    let changed = w
        .put(datadog(Some("fedcba9876543210fedcba9876543210")))
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    // AND once one is deleted, another project is configured
    assert_eq!(w.call("DELETE", "/streaming", &[], None).await.status, 204);
    let saved = w
        .call_in(next, "PUT", "/streaming", &[], Some(datadog(Some(KEY))))
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(created(&w), 2);
}

#[tokio::test]
async fn versions_count_on_across_a_delete_as_in_the_table() {
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    assert_eq!(w.put(datadog(Some(KEY))).await.body["version"], 2);
    assert_eq!(w.call("DELETE", "/streaming", &[], None).await.status, 204);
    let saved = w.put(datadog(Some(KEY))).await;
    assert_eq!(saved.body["version"], 3, "{}", saved.body);
    let stale = save_new_key_having_read_version_1(&w).await;
    assert_eq!(stale.status, 412, "{}", stale.body);
}

#[tokio::test]
async fn a_save_whose_staged_key_a_delete_removed_saves_again_with_credentials_that_exist() {
    // GIVEN a DELETE of the project removes its secret between a save's stage and its write
    let w = World::new();
    w.api.secrets.delete_after_next_stage();
    // WHEN the save goes on
    let saved = w.put(datadog(Some(KEY))).await;
    // THEN it answers with a configuration whose credentials can be read, at the version named
    assert_eq!(saved.status, 200, "{}", saved.body);
    let config = w
        .api
        .configs
        .configuration(ORG, PROJECT)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(saved.body["version"], config.version);
    let named = w
        .api
        .secrets
        .get(ORG, PROJECT, config.secret_version.as_deref(), true)
        .await
        .unwrap();
    assert!(matches!(&*named, Credentials::Datadog { api_key } if api_key.expose_secret() == KEY));
    assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
}

/// A caller who read version 1 saves a new key.
async fn save_new_key_having_read_version_1(w: &World) -> Reply {
    let other = "fedcba9876543210fedcba9876543210";
    w.call(
        "PUT",
        "/streaming",
        &[("if-match", "\"1\"")],
        Some(datadog(Some(other))),
    )
    .await
}

/// The save lost to version 2: told so, the stored key unchanged, and its own staged key
/// neither current nor labelled for anyone to pick up.
async fn assert_lost_to_version_2(w: &World, reply: &Reply) {
    assert_eq!(reply.status, 412, "{}", reply.body);
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("version 2"), "{message}");
    assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
    assert_eq!(
        w.api.secrets.pending(ORG, PROJECT),
        None,
        "a staged key left"
    );
    assert_eq!(w.saved().await.version, 2);
}

#[tokio::test]
async fn a_save_at_a_version_no_longer_stored_is_412_and_changes_nothing() {
    // GIVEN a destination saved twice (version 2)
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.put(datadog(None)).await;
    // WHEN a caller who read version 1 saves a new key
    let stale = save_new_key_having_read_version_1(&w).await;
    // THEN it is told the current version, and nothing changed
    assert_lost_to_version_2(&w, &stale).await;
}

#[tokio::test]
async fn a_save_that_loses_its_race_after_staging_its_key_leaves_no_staged_key() {
    // GIVEN a destination at version 1, and another save that lands while this one is under way
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.api.configs.race_next_save(&LaneKey::new(ORG, PROJECT));
    // WHEN a caller who read version 1 saves a new key
    let lost = save_new_key_having_read_version_1(&w).await;
    // THEN it is 412 with the version that won, and its staged key was discarded
    assert_lost_to_version_2(&w, &lost).await;
}

#[tokio::test]
async fn a_save_whose_answer_was_lost_is_answered_as_saved_not_as_its_own_lost_race() {
    // GIVEN a destination at version 1, and a table whose answer to the next save is lost
    // (the SDK's retry of it then meets the write it made: a version mismatch)
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.api
        .configs
        .lose_next_save_answer(&LaneKey::new(ORG, PROJECT));
    // WHEN a caller who read version 1 saves a new key
    let saved = save_new_key_having_read_version_1(&w).await;
    // THEN its save stands and is answered so: not 412 for a save of its own, and the key it
    // staged is current, not discarded under the configuration that names it
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["version"], 2);
    let other = "fedcba9876543210fedcba9876543210";
    assert_eq!(w.stored_key().await.as_deref(), Some(other));
    assert_eq!(w.api.secrets.pending(ORG, PROJECT), None);
    assert_eq!(w.saved().await.version, 2);
}

#[tokio::test]
async fn a_rename_whose_answer_was_lost_is_answered_as_saved_under_its_condition() {
    // GIVEN a destination at version 1, and a table whose answer to the next save is lost
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.api
        .configs
        .lose_next_save_answer(&LaneKey::new(ORG, PROJECT));
    // WHEN a caller who read version 1 renames it (its credentials kept), on that condition
    let mut renamed = datadog(None);
    renamed["name"] = "dd-renamed".into();
    let saved = w
        .call("PUT", "/streaming", &[("if-match", "\"1\"")], Some(renamed))
        .await;
    // THEN the rename stands and is answered so, once: not 412 for a write of its own
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(saved.body["version"], 2);
    assert_eq!(saved.body["destination"]["name"], "dd-renamed");
    assert_eq!(w.saved().await.version, 2);
    assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
    let updates = w.audited().into_iter().filter(|(a, _)| a == "update");
    assert_eq!(updates.count(), 1);
}

#[tokio::test]
async fn a_save_cut_short_keeps_the_key_it_staged_as_its_write_may_still_land() {
    // GIVEN a destination at version 1, and a table that does not answer the next save
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.api
        .configs
        .cut_next_save_short(&LaneKey::new(ORG, PROJECT));
    // WHEN a new key is saved
    let failed = save_new_key_having_read_version_1(&w).await;
    // THEN the caller hears of the failure, the saved key is unchanged, and the staged one is
    // kept: the write may land after the look, naming it
    assert_eq!(failed.status, 500, "{}", failed.body);
    assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
    assert!(w.api.secrets.pending(ORG, PROJECT).is_some());
}

#[tokio::test]
async fn a_save_without_a_condition_that_keeps_losing_races_is_asked_to_retry_not_412() {
    // GIVEN a destination at version 1, and more saves landing in between than a PUT retries
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.api
        .configs
        .race_next_saves(&LaneKey::new(ORG, PROJECT), 100);
    // WHEN a caller saves without `If-Match`
    let reply = w
        .put(datadog(Some("fedcba9876543210fedcba9876543210")))
        .await;
    // THEN it is told to retry (a 412 answers only a condition), and its key was not kept
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "busy");
    assert_eq!(reply.headers["retry-after"], "1");
    assert_eq!(
        w.api.secrets.pending(ORG, PROJECT),
        None,
        "a staged key left"
    );
    assert_eq!(w.stored_key().await.as_deref(), Some(KEY));
}

#[tokio::test]
async fn a_delete_removes_the_destination_and_its_key() {
    // GIVEN a saved destination, paused, that is owed events
    let w = World::new();
    let key = w.saved_paused_and_owed(3).await;
    assert_eq!(w.api.configs.get(&key).owed.len(), 3);
    // WHEN it is deleted
    let deleted = w.call("DELETE", "/streaming", &[], None).await;
    // THEN nothing streams, the key no longer exists, nothing is owed any more, and the
    // deletion is audited
    assert_eq!(deleted.status, 204);
    let shown = w.call("GET", "/streaming", &[], None).await;
    assert_eq!(shown.body["destination"], Value::Null);
    assert_eq!(w.stored_key().await, None);
    assert!(w.api.configs.get(&key).owed.is_empty());
    assert_eq!(w.audited().last().unwrap().0, "delete");
}

#[tokio::test]
async fn a_paused_destination_shows_paused_until_resumed() {
    // GIVEN a saved destination
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    // WHEN it is paused
    let paused = w.call("POST", "/streaming/pause", &[], None).await;
    // THEN its lane keeps what arrives instead of sending it, and the view says so
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!(paused.body["health"]["state"], "paused");
    let key = LaneKey::new(ORG, PROJECT);
    assert_eq!(w.api.configs.get(&key).lane.state, LaneState::Paused);
    // AND pausing it again (a retry whose first answer was lost) is answered alike, and
    // audited once
    let again = w.call("POST", "/streaming/pause", &[], None).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["health"]["state"], "paused");
    let pauses = w
        .audited()
        .into_iter()
        .filter(|(_, d)| d == "Paused log streaming");
    assert_eq!(pauses.count(), 1);
    // AND resuming hands it back to delivery
    let resumed = w.call("POST", "/streaming/resume", &[], None).await;
    assert_eq!(resumed.status, 200, "{}", resumed.body);
    assert_ne!(w.api.configs.get(&key).lane.state, LaneState::Paused);
    let actions: Vec<String> = w.audited().into_iter().map(|(_, d)| d).collect();
    assert!(actions.contains(&"Paused log streaming".to_owned()));
}

#[tokio::test]
async fn requests_that_take_no_body_leave_one_alone_but_an_external_id() {
    // GIVEN a saved destination
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    let key = LaneKey::new(ORG, PROJECT);
    for (method, suffix) in [
        ("POST", "/streaming/pause"),
        ("POST", "/streaming/resume"),
        ("DELETE", "/streaming"),
    ] {
        let before = w.api.configs.get(&key).lane.state;
        // WHEN one is sent with an External ID, whatever comes before it
        for body in [
            json!({"external_id": "mine"}),
            json!({"paused": true, "external_id": "mine"}),
        ] {
            let refused = w.call(method, suffix, &[], Some(body)).await;
            // THEN it is refused, saying what to fix, and changes nothing
            assert_eq!(refused.status, 400, "{method} {suffix}: {}", refused.body);
            assert_eq!(refused.body["error"]["code"], "external_id_not_settable");
        }
        assert_eq!(w.api.configs.get(&key).lane.state, before);
        // AND any other body means nothing: what clients that always send JSON send for
        // nothing, and what events made after AWS's examples carry
        for nothing in [
            "{}",
            "null",
            "[1]",
            r#"{"test":"body"}"#,
            "Hello from Lambda",
            " ",
        ] {
            let reply = w
                .call_with_text(PROJECT, method, suffix, &[], Some(nothing.into()))
                .await;
            assert!(reply.status < 300, "{method} {suffix}: {}", reply.body);
            if method == "DELETE" {
                w.put(datadog(Some(KEY))).await;
            }
        }
    }
    assert_eq!(w.audited().iter().filter(|(a, _)| a == "delete").count(), 6);
}

#[tokio::test]
async fn a_resume_whose_answer_cannot_be_read_is_still_audited() {
    // GIVEN a saved destination, paused
    let w = World::new();
    w.put(datadog(Some(KEY))).await;
    w.call("POST", "/streaming/pause", &[], None).await;
    let key = LaneKey::new(ORG, PROJECT);
    // WHEN it is resumed, and the table fails after the resume's first read
    w.api.configs.unreadable_after(&key, 1);
    let resumed = w.call("POST", "/streaming/resume", &[], None).await;
    // THEN the caller hears of the failure, the lane is resumed, and the resume is audited
    // (a retry would find it resumed and audit nothing)
    assert_eq!(resumed.status, 500, "{}", resumed.body);
    w.api.configs.set_unreadable(&key, false);
    assert_ne!(w.api.configs.get(&key).lane.state, LaneState::Paused);
    let resumes = w
        .audited()
        .into_iter()
        .filter(|(_, d)| d == "Resumed log streaming");
    assert_eq!(resumes.count(), 1);
    let retried = w.call("POST", "/streaming/resume", &[], None).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    let resumes = w
        .audited()
        .into_iter()
        .filter(|(_, d)| d == "Resumed log streaming");
    assert_eq!(resumes.count(), 1);
}

#[tokio::test]
async fn a_save_while_the_deleted_destinations_secret_is_still_going_is_a_429_to_retry() {
    let w = World::new();
    w.api
        .secrets
        .set_down(Some(audit_log::credentials::CredentialsError::Deleting));
    let reply = w.put(datadog(Some(KEY))).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.body["error"]["code"], "credentials_being_deleted");
    assert_eq!(reply.headers["retry-after"], "10");
}

#[tokio::test]
async fn a_save_without_the_key_when_the_saved_one_is_gone_asks_for_the_key() {
    let w = World::new();
    assert_eq!(w.put(datadog(Some(KEY))).await.status, 200);
    for gone in [
        audit_log::credentials::CredentialsError::NotFound,
        audit_log::credentials::CredentialsError::Unreadable,
    ] {
        w.api.secrets.set_down(Some(gone));
        let reply = w.put(datadog(None)).await;
        assert_eq!(reply.status, 400, "{}", reply.body);
        assert_eq!(reply.body["error"]["code"], "missing_field");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("send `datadog.api_key` again"),
            "{message}"
        );
    }
}

#[tokio::test]
async fn a_path_id_that_is_not_utf8_once_decoded_is_a_400_not_another_project() {
    let w = World::new();
    for project in ["%FF", "%FE"] {
        let reply = w.call_in(project, "GET", "/streaming", &[], None).await;
        assert_eq!(reply.status, 400, "{project}: {}", reply.body);
        assert_eq!(reply.body["error"]["code"], "invalid_path");
    }
}

#[tokio::test]
async fn replays_are_queued_one_at_a_time_and_limited_per_hour_by_the_clock() {
    // GIVEN destinations saved in eleven projects of the organization
    let w = World::new();
    let projects: Vec<String> = std::iter::once(PROJECT.to_owned())
        .chain((1..11).map(|i| format!("{PROJECT}-{i}")))
        .collect();
    for project in &projects {
        let saved = w
            .call_in(project, "PUT", "/streaming", &[], Some(datadog(Some(KEY))))
            .await;
        assert_eq!(saved.status, 200, "{}", saved.body);
    }
    let range =
        serde_json::json!({"since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00Z"});
    let replay = async |project: &str| {
        w.call_in(
            project,
            "POST",
            "/streaming/replay",
            &[],
            Some(range.clone()),
        )
        .await
    };
    // WHEN a replay is asked for
    let started = replay(PROJECT).await;
    // THEN it is running and its first part is on the replay queue
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["replay_id"].as_str().unwrap().to_owned();
    let queued = w.api.queues.bodies(REPLAY_QUEUE);
    assert_eq!(queued.len(), 1);
    assert!(queued[0].contains(&id));
    let shown = w
        .call("GET", &format!("/streaming/replays/{id}"), &[], None)
        .await;
    assert_eq!(shown.body["state"], "running");
    // AND asking again while it runs is refused as such, as often as a client retries, and
    // costs none of the organization's ten an hour
    for _ in 0..20 {
        let again = replay(PROJECT).await;
        assert_eq!(again.status, 429);
        assert_eq!(again.body["error"]["code"], "replay_running");
        assert_eq!(again.headers["retry-after"], "60");
    }
    // AND a second project may start its replay beside it, but no third while two run, which
    // costs none of the ten either
    let finish = async |project: &str, started: &Value| {
        let configs = &w.api.configs;
        let id = started["replay_id"].as_str().unwrap();
        let mut ended = configs.replay(ORG, project, id).await.unwrap().unwrap();
        ended.state = audit_log::streaming::ReplayState::Completed;
        configs
            .save_replay(&mut ended, w.clock.now())
            .await
            .unwrap();
    };
    let second = replay(&projects[1]).await;
    assert_eq!(second.status, 202, "{}", second.body);
    for _ in 0..20 {
        let third = replay(&projects[2]).await;
        assert_eq!(third.status, 429);
        assert_eq!(third.body["error"]["code"], "replays_running");
        assert_eq!(third.headers["retry-after"], "60");
    }
    // AND as each ends another may start, nine beside the first, after which the organization
    // is told when to come back
    finish(&projects[1], &second.body).await;
    for project in &projects[2..10] {
        let started = replay(project).await;
        assert_eq!(started.status, 202, "{project}: {}", started.body);
        finish(project, &started.body).await;
    }
    let limited = replay(&projects[10]).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["error"]["code"], "rate_limited");
    assert_eq!(limited.headers["retry-after"], "3570");
    // AND in the next hour it may ask again; the first replay, without progress for an hour,
    // still runs (its part may be waiting behind others), says so, and has left its lock to be
    // taken over by a new one
    w.clock.advance(std::time::Duration::from_secs(3570));
    let stalled = w
        .call("GET", &format!("/streaming/replays/{id}"), &[], None)
        .await;
    assert_eq!(stalled.body["state"], "running", "{}", stalled.body);
    assert_eq!(stalled.body["finished_at"], Value::Null);
    assert!(
        stalled.body["last_error"]
            .as_str()
            .unwrap()
            .contains("a new replay of the project replaces it"),
        "{}",
        stalled.body
    );
    let later = replay(PROJECT).await;
    assert_eq!(later.status, 202, "{}", later.body);
    // AND from then on the first shows as replaced, failed, also once the new one has ended
    // and released the project's lock (the first's part, dead-lettered, never came)
    let shown = async || {
        w.call("GET", &format!("/streaming/replays/{id}"), &[], None)
            .await
            .body
    };
    let newer_id = later.body["replay_id"].as_str().unwrap();
    for newer_ended in [false, true] {
        if newer_ended {
            let configs = &w.api.configs;
            let mut newer = configs
                .replay(ORG, PROJECT, newer_id)
                .await
                .unwrap()
                .unwrap();
            newer.state = audit_log::streaming::ReplayState::Completed;
            configs
                .save_replay(&mut newer, w.clock.now())
                .await
                .unwrap();
        }
        let replaced = shown().await;
        assert_eq!(replaced["state"], "failed", "{replaced}");
        assert_eq!(
            replaced["last_error"],
            audit_log::streaming::REPLAY_SUPERSEDED
        );
    }
}

#[tokio::test]
async fn a_replay_whose_part_outlived_the_queues_shows_failed() {
    // GIVEN a replay whose part never came (dead-lettered, and not redriven)
    let w = World::new();
    let saved = w
        .call("PUT", "/streaming", &[], Some(datadog(Some(KEY))))
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    let range =
        serde_json::json!({"since": "2026-11-01T00:00:00Z", "until": "2026-11-02T00:00:00Z"});
    let started = w.call("POST", "/streaming/replay", &[], Some(range)).await;
    assert_eq!(started.status, 202, "{}", started.body);
    let path = format!(
        "/streaming/replays/{}",
        started.body["replay_id"].as_str().unwrap()
    );
    // THEN while the queues may still hold its part it runs, stalled
    let kept = audit_log::streaming::REPLAY_PART_KEPT_SECONDS as u64;
    w.clock.advance(std::time::Duration::from_secs(kept - 60));
    let waiting = w.call("GET", &path, &[], None).await.body;
    assert_eq!(waiting["state"], "running", "{waiting}");
    assert_eq!(waiting["last_error"], audit_log::streaming::REPLAY_STALLED);
    // AND past their retention it is failed, saying to start it again
    w.clock.advance(std::time::Duration::from_secs(120));
    let lost = w.call("GET", &path, &[], None).await.body;
    assert_eq!(lost["state"], "failed", "{lost}");
    assert_eq!(lost["last_error"], audit_log::streaming::REPLAY_LOST);
}

#[tokio::test]
async fn an_export_is_started_with_its_filters_queued_and_shown_running() {
    let w = World::new();
    // WHEN a CSV export of failed revocations in a range is asked for
    let body = serde_json::json!({
        "format": "csv", "since": "2026-01-01T00:00:00+01:00", "action": "update",
        "status": "FAILED", "q": "Revoked"
    });
    let started = w.call("POST", "/exports", &[], Some(body)).await;
    // THEN it is running, its range ends now, and its first step is on the export queue
    assert_eq!(started.status, 202, "{}", started.body);
    let id = started.body["id"].as_str().unwrap().to_owned();
    assert_eq!(started.headers["location"], format!("exports/{id}"));
    assert_eq!(started.body["state"], "running");
    assert_eq!(started.body["format"], "csv");
    assert_eq!(started.body["since"], "2025-12-31T23:00:00Z");
    assert_eq!(started.body["until"], "2026-11-30T10:00:30Z");
    assert_eq!(started.body["filters"]["q"], "Revoked");
    assert_eq!(started.body["download_url"], Value::Null);
    let queued = w.api.queues.bodies(EXPORT_QUEUE);
    assert_eq!(queued.len(), 1);
    let step: audit_log::message::ExportStep = serde_json::from_str(&queued[0]).unwrap();
    assert_eq!(
        (step.organization_id.as_str(), step.project_id.as_str()),
        (ORG, PROJECT)
    );
    assert_eq!(step.export_id, id);
    let shown = w.call("GET", &format!("/exports/{id}"), &[], None).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["state"], "running");
    assert_eq!(shown.body["events"], 0);
}

#[tokio::test]
async fn export_bodies_that_cannot_be_used_are_400s_that_name_the_field() {
    let w = World::new();
    for (body, field) in [
        (serde_json::json!({"format": "xml"}), "format"),
        (serde_json::json!({"action": "revoke"}), "action"),
        (
            serde_json::json!({"resource_type": "registry"}),
            "resource_type",
        ),
        (serde_json::json!({"actor": 7}), "actor"),
        (serde_json::json!({"q": " "}), "q"),
        (serde_json::json!({"since": "yesterday"}), "since"),
        (
            serde_json::json!({"since": "2026-02-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}),
            "until",
        ),
        (serde_json::json!({"limit": 5}), "limit"),
    ] {
        let refused = w.call("POST", "/exports", &[], Some(body.clone())).await;
        assert_eq!(refused.status, 400, "{body}");
        let message = refused.body["error"]["message"].as_str().unwrap();
        let named = [format!("`{field}`"), format!("\"{field}\"")];
        assert!(
            named.iter().any(|n| message.contains(n)),
            "{body}: {message}"
        );
    }
    assert!(w.api.queues.bodies(EXPORT_QUEUE).is_empty());
}

#[tokio::test]
async fn a_few_exports_run_at_once_per_organization_and_one_more_waits() {
    use audit_log::streaming::RUNNING_EXPORTS;
    let w = &World::new();
    let start = |n: usize| async move {
        w.call_in(&format!("registry-{n}"), "POST", "/exports", &[], None)
            .await
    };
    let first = start(1).await;
    assert_eq!(first.status, 202, "{}", first.body);
    for n in 2..=RUNNING_EXPORTS {
        assert_eq!(start(n).await.status, 202, "export {n}");
    }
    // WHEN one more is asked for while they all run
    let more = start(RUNNING_EXPORTS + 1).await;
    // THEN it is turned away with when to ask again
    assert_eq!(more.status, 429, "{}", more.body);
    assert_eq!(more.body["error"]["code"], "exports_running");
    assert_eq!(more.headers["retry-after"], "60");
    // AND once one has finished, another may start
    let id = first.body["id"].as_str().unwrap();
    let now = w.clock.now();
    let mut taken = w
        .api
        .configs
        .take_export(
            ORG,
            "registry-1",
            id,
            now,
            now + std::time::Duration::from_secs(60),
        )
        .await
        .unwrap()
        .expect("the running export can be taken");
    taken.state = audit_log::streaming::ExportState::Completed;
    assert!(w.api.configs.save_export(&taken, now, false).await.unwrap());
    assert_eq!(start(RUNNING_EXPORTS + 1).await.status, 202);
    assert_eq!(start(RUNNING_EXPORTS + 2).await.status, 429);
    // AND an export without a step for half an hour may only wait its turn behind others:
    // shown running, saying so, its slot kept
    w.clock.advance(std::time::Duration::from_secs(31 * 60));
    let second = w.api.queues.bodies(EXPORT_QUEUE)[1].clone();
    let step: audit_log::message::ExportStep = serde_json::from_str(&second).unwrap();
    let shown = async || {
        w.call_in(
            &step.project_id,
            "GET",
            &format!("/exports/{}", step.export_id),
            &[],
            None,
        )
        .await
    };
    let waiting = shown().await;
    assert_eq!(waiting.body["state"], "running");
    assert_eq!(
        waiting.body["error"],
        audit_log::streaming::EXPORT_STALLED,
        "{}",
        waiting.body
    );
    assert_eq!(start(RUNNING_EXPORTS + 2).await.status, 429);
    // AND one that stopped moving for two hours (its steps dead-lettered) shows as failed and
    // frees its slot
    w.clock.advance(std::time::Duration::from_secs(90 * 60));
    let stopped = shown().await;
    assert_eq!(stopped.body["state"], "failed");
    // (its step, come at last, is dropped rather than revive it beside the slot's new holder)
    let now = w.clock.now();
    let late = w
        .api
        .configs
        .take_export(
            ORG,
            &step.project_id,
            &step.export_id,
            now,
            now + std::time::Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert!(late.is_none(), "a dead export was taken again");
    assert!(
        stopped.body["error"]
            .as_str()
            .unwrap()
            .contains("start it again")
    );
    assert_eq!(start(RUNNING_EXPORTS + 2).await.status, 202);
}

#[tokio::test]
async fn an_export_id_resolves_only_in_its_own_project() {
    let w = World::new();
    let started = w.call("POST", "/exports", &[], None).await;
    let id = started.body["id"].as_str().unwrap();
    let elsewhere = w
        .call_in("registry-2", "GET", &format!("/exports/{id}"), &[], None)
        .await;
    assert_eq!(elsewhere.status, 404);
    for bad in [
        "x",
        "../streaming",
        &id.to_uppercase().replace(|c: char| c.is_ascii_digit(), "g"),
    ] {
        let shown = w.call("GET", &format!("/exports/{bad}"), &[], None).await;
        assert_eq!(shown.status, 404, "{bad}");
    }
}

#[tokio::test]
async fn the_console_is_served_to_a_caller_without_claims_and_the_api_is_not() {
    let w = World::new();
    let fixture = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/lambda/apigw-http-api-request.json"
    ));
    let request = |path: &str| {
        let mut v: Value = serde_json::from_str(fixture).unwrap();
        v["rawPath"] = path.into();
        v["routeKey"] = format!("GET {path}").into();
        v["requestContext"]["http"]["method"] = "GET".into();
        v["requestContext"]["http"]["path"] = path.into();
        v["requestContext"]
            .as_object_mut()
            .unwrap()
            .remove("authorizer");
        serde_json::from_value::<ApiGatewayV2httpRequest>(v).unwrap()
    };
    let page = w.api.respond(&request("/console/")).await;
    assert_eq!(page.status_code, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let config = w.api.respond(&request("/console/config.json")).await;
    let Some(Body::Text(text)) = config.body else {
        panic!("a JSON body")
    };
    let config: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(config["sign_in"]["mode"], "off");
    assert_eq!(config["log_group_prefix"], "/hashicorp");
    let api = w
        .api
        .respond(&request(&format!(
            "/v1/organizations/{ORG}/projects/{PROJECT}/audit-logs/streaming"
        )))
        .await;
    assert_eq!(api.status_code, 401);
}

/// Saves and deletes write to Secrets Manager, whose request rates and number of secrets every
/// organization shares: an organization may make 60 a minute, whatever its projects, and is
/// then told when to come back; what it reads, a save that keeps the saved credentials, a
/// refused condition and a Datadog save without a key where none is saved are not counted.
#[tokio::test]
async fn saves_and_deletes_are_limited_per_organization() {
    // GIVEN an organization that saves and deletes destinations of made-up projects
    let w = World::new();
    let save = async |project: &str| {
        w.call_in(project, "PUT", "/streaming", &[], Some(datadog(Some(KEY))))
            .await
    };
    for n in 0..60 {
        let project = format!("made-up-{n}");
        // Neither counted: a condition that does not hold, a save as it was.
        let stale = w
            .call_in(
                &project,
                "PUT",
                "/streaming",
                &[("if-match", "\"7\"")],
                Some(datadog(Some(KEY))),
            )
            .await;
        assert_eq!(stale.status, 412, "{}", stale.body);
        let keyless = w
            .call_in(&project, "PUT", "/streaming", &[], Some(datadog(None)))
            .await;
        assert_eq!(keyless.status, 400, "{}", keyless.body);
        assert_eq!(keyless.body["error"]["code"], "missing_field");
        if n > 0 {
            assert_eq!(save("made-up-0").await.status, 200);
        }
        let reply = if n % 2 == 0 {
            save(&project).await
        } else {
            w.call_in(&project, "DELETE", "/streaming", &[], None).await
        };
        assert!(matches!(reply.status, 200 | 204), "{n}: {}", reply.body);
    }
    // WHEN it goes on within the minute
    let limited = save("made-up-60").await;
    let deleting = w
        .call_in("made-up-0", "DELETE", "/streaming", &[], None)
        .await;
    // THEN both are refused, saying when to come back, and nothing changed
    for reply in [&limited, &deleting] {
        assert_eq!(reply.status, 429, "{}", reply.body);
        assert_eq!(reply.body["error"]["code"], "rate_limited");
    }
    let wait: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    for (project, saved) in [("made-up-60", false), ("made-up-0", true)] {
        let shown = w.call_in(project, "GET", "/streaming", &[], None).await;
        assert_eq!(shown.status, 200);
        assert_eq!(!shown.body["destination"].is_null(), saved, "{project}");
    }
    assert_eq!(save("made-up-0").await.status, 200, "saved as it was");
    // AND once the wait is over it may save again
    w.clock.advance(std::time::Duration::from_secs(wait));
    let later = save("made-up-60").await;
    assert_eq!(later.status, 200, "{}", later.body);
}
