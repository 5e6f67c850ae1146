//! Events a registry produces: seeded dice, projects, valid events and invalid bodies.

use super::*;

/// Random choices from a seed, so a run can be repeated exactly.
pub struct Dice(rand::rngs::StdRng);

impl Dice {
    pub fn new(seed: u64) -> Self {
        use rand::SeedableRng;
        Self(rand::rngs::StdRng::seed_from_u64(seed))
    }

    pub fn number(&mut self) -> u64 {
        rand::Rng::random(&mut self.0)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        rand::Rng::random_range(&mut self.0, 0..n)
    }

    /// A ULID-shaped id, as HCP Packer's.
    pub fn ulid(&mut self) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
        (0..26)
            .map(|_| ALPHABET[self.below(32) as usize] as char)
            .collect()
    }
}

/// An organization's project, as the generator and the runner see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Project {
    pub organization_id: String,
    pub project_id: String,
}

/// `n` events of a registry's everyday life (buckets, versions, builds, channels; users and
/// services; some failures), spread over `projects`, dated within the last hour.
pub fn generate(n: usize, projects: &[Project], dice: &mut Dice) -> Vec<Value> {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("zero is valid");
    (0..n)
        .map(|i| {
            let project = &projects[dice.below(projects.len() as u64) as usize];
            let when = now - Duration::from_secs(3600 - (i as u64 * 3600 / n.max(1) as u64));
            let actor = if dice.below(3) == 0 {
                json!({"principal_id": format!("packer-ci@{}", project.organization_id), "type": "TYPE_SERVICE",
                       "service": {"id": format!("packer-ci@{}", project.organization_id), "name": "packer-ci", "user_managed": true}})
            } else {
                let user = dice.ulid().to_lowercase();
                json!({"principal_id": user, "type": "TYPE_USER",
                       "user": {"id": user, "email": format!("{}@example.com", &user[..8]), "name": format!("{}@example.com", &user[..8])}})
            };
            let bucket = json!({"id": dice.ulid(), "name": format!("ubuntu-{}", dice.below(20))});
            let version = json!({"id": dice.ulid(), "fingerprint": format!("f{}", dice.below(1000)), "name": format!("v{}", dice.below(50))});
            let build = json!({"id": dice.ulid(), "platform": "aws", "component_type": "amazon-ebs.ubuntu",
                               "artifacts": [{"region": "us-west-2", "external_identifier": format!("ami-{:08x}", dice.number() as u32)}],
                               "labels": {"os": "ubuntu"}});
            let (action, description, extra) = match dice.below(8) {
                0 => ("create", "Created bucket", json!({"bucket": bucket})),
                1 => ("update", "Updated bucket labels", json!({"bucket": bucket})),
                2 => ("create", "Created version", json!({"bucket": bucket, "version": version})),
                3 => ("update", "Revoked version", json!({"bucket": bucket, "version": version, "builds": [build]})),
                4 => ("create", "Created build", json!({"bucket": bucket, "version": version, "build": build})),
                5 => ("update", "Updated build", json!({"bucket": bucket, "version": version, "build": build})),
                6 => ("update", "Assigned version to channel", json!({"bucket": bucket, "version": version, "builds": [build],
                        "channel": {"id": dice.ulid(), "name": "production", "managed": false, "restricted": true}})),
                _ => ("delete", "Deleted channel", json!({"bucket": bucket, "channel": {"id": dice.ulid(), "name": "staging"}})),
            };
            let failed = dice.below(20) == 0;
            let mut event = json!({
                "status": if failed { "FAILED" } else { "OK" },
                "action": action,
                "description": description,
                "organization_id": project.organization_id,
                "project_id": project.project_id,
                "registry": {"id": format!("reg-{}", project.project_id)},
                "timestamp": (when).format(&time::format_description::well_known::Rfc3339).expect("formats"),
                "actor": actor,
            });
            for (k, v) in extra.as_object().expect("object") {
                event[k] = v.clone();
            }
            if failed {
                event["error"] = json!("rpc error: code = FailedPrecondition desc = the operation was refused");
            }
            event
        })
        .collect()
}

/// Bodies capture must refuse, one of each kind.
pub fn invalid_bodies(n: usize, project: &Project) -> Vec<String> {
    let kinds = [
        "not json at all".to_owned(),
        "{\"status\": \"OK\",".to_owned(),
        json!({"status": "OK", "action": "create", "description": "no actor", "organization_id": project.organization_id,
               "project_id": project.project_id, "timestamp": "2026-01-01T00:00:00Z"}).to_string(),
        json!({"status": "MAYBE", "action": "create", "description": "bad status", "organization_id": project.organization_id,
               "project_id": project.project_id, "timestamp": "2026-01-01T00:00:00Z", "actor": {"principal_id": "p", "type": "TYPE_USER"}}).to_string(),
        json!({"status": "OK", "action": "create", "description": "bad time", "organization_id": project.organization_id,
               "project_id": project.project_id, "timestamp": "yesterday", "actor": {"principal_id": "p", "type": "TYPE_USER"}}).to_string(),
    ];
    (0..n).map(|i| kinds[i % kinds.len()].clone()).collect()
}
