//! Credentials kept in memory, version by version, for unit tests without an emulator: the
//! staging and promoting a save does, reads by version or of the current one, and a store that
//! fails when told to.

use super::{Credentials, CredentialsError, Secrets};
use secrecy::SecretString;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One project's secret. Versions stay readable by id until the secret is deleted; labels
/// move as Secrets Manager moves them.
#[derive(Debug, Default, Clone)]
struct Secret {
    versions: HashMap<String, Arc<Credentials>>,
    current: Option<String>,
    /// The version labelled pending (staged, not promoted nor discarded yet).
    pending: Option<String>,
}

#[derive(Debug, Default)]
pub struct MemorySecrets {
    secrets: Mutex<HashMap<(String, String), Secret>>,
    /// When set, every call fails so.
    down: Mutex<Option<CredentialsError>>,
    /// The next stage's secret is deleted right after it, as by a concurrent `DELETE`.
    deleted_after_stage: Mutex<bool>,
    /// The next promote waits for this before it acts, as a slow one does.
    held_promote: Held,
    /// So does the next delete.
    held_delete: Held,
    next: Mutex<u64>,
    service_key: std::sync::OnceLock<Arc<SecretString>>,
}

/// A call that waits, when told to, until the test lets it go on.
#[derive(Debug, Default)]
struct Held(Mutex<Option<futures::channel::oneshot::Receiver<()>>>);

impl Held {
    fn hold(&self) -> futures::channel::oneshot::Sender<()> {
        let (release, held) = futures::channel::oneshot::channel();
        *lock(&self.0) = Some(held);
        release
    }

    async fn wait(&self) {
        let held = lock(&self.0).take();
        if let Some(held) = held {
            let _ = held.await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn key(organization_id: &str, project_id: &str) -> (String, String) {
    (organization_id.to_owned(), project_id.to_owned())
}

impl MemorySecrets {
    pub fn set_down(&self, error: Option<CredentialsError>) {
        *lock(&self.down) = error;
    }

    /// A `DELETE` of the project removes its secret right after the next stage.
    pub fn delete_after_next_stage(&self) {
        *lock(&self.deleted_after_stage) = true;
    }

    /// The current version's id, if any.
    pub fn current(&self, organization_id: &str, project_id: &str) -> Option<String> {
        lock(&self.secrets)
            .get(&key(organization_id, project_id))
            .and_then(|s| s.current.clone())
    }

    /// The next promote waits until the returned sender is used (or dropped).
    pub fn hold_next_promote(&self) -> futures::channel::oneshot::Sender<()> {
        self.held_promote.hold()
    }

    /// The next delete waits until the returned sender is used (or dropped).
    pub fn hold_next_delete(&self) -> futures::channel::oneshot::Sender<()> {
        self.held_delete.hold()
    }

    /// How many versions the project's secret holds.
    pub fn versions(&self, organization_id: &str, project_id: &str) -> usize {
        lock(&self.secrets)
            .get(&key(organization_id, project_id))
            .map_or(0, |s| s.versions.len())
    }

    /// The staged version still labelled pending, if any.
    pub fn pending(&self, organization_id: &str, project_id: &str) -> Option<String> {
        lock(&self.secrets)
            .get(&key(organization_id, project_id))
            .and_then(|s| s.pending.clone())
    }

    fn check(&self) -> Result<(), CredentialsError> {
        lock(&self.down).clone().map_or(Ok(()), Err)
    }
}

impl Secrets for MemorySecrets {
    async fn get(
        &self,
        organization_id: &str,
        project_id: &str,
        version: Option<&str>,
        _refresh: bool,
    ) -> Result<Arc<Credentials>, CredentialsError> {
        self.check()?;
        let secrets = lock(&self.secrets);
        let secret = secrets
            .get(&key(organization_id, project_id))
            .ok_or(CredentialsError::NotFound)?;
        // Before its first promotion the secret's current value is a placeholder that no
        // provider reads as credentials.
        let version = version
            .map(str::to_owned)
            .or_else(|| secret.current.clone())
            .ok_or(CredentialsError::Unreadable)?;
        secret
            .versions
            .get(&version)
            .cloned()
            .ok_or(CredentialsError::NotFound)
    }

    async fn stage(
        &self,
        organization_id: &str,
        project_id: &str,
        credentials: &Credentials,
    ) -> Result<String, CredentialsError> {
        self.check()?;
        let version = {
            let mut next = lock(&self.next);
            *next += 1;
            format!("v{next}")
        };
        let mut secrets = lock(&self.secrets);
        let secret = secrets.entry(key(organization_id, project_id)).or_default();
        secret
            .versions
            .insert(version.clone(), Arc::new(credentials.clone()));
        secret.pending = Some(version.clone());
        if std::mem::take(&mut *lock(&self.deleted_after_stage)) {
            secrets.remove(&key(organization_id, project_id));
        }
        Ok(version)
    }

    async fn promote(
        &self,
        organization_id: &str,
        project_id: &str,
        version: &str,
    ) -> Result<(), CredentialsError> {
        self.held_promote.wait().await;
        self.check()?;
        let mut secrets = lock(&self.secrets);
        let secret = secrets
            .get_mut(&key(organization_id, project_id))
            .filter(|s| s.versions.contains_key(version))
            .ok_or(CredentialsError::NotFound)?;
        // The replaced version stays readable by its id, as in Secrets Manager until it
        // cleans up unlabelled versions.
        secret.current = Some(version.to_owned());
        if secret.pending.as_deref() == Some(version) {
            secret.pending = None;
        }
        Ok(())
    }

    async fn discard(&self, organization_id: &str, project_id: &str, version: &str) {
        let mut secrets = lock(&self.secrets);
        if let Some(secret) = secrets.get_mut(&key(organization_id, project_id))
            && secret.pending.as_deref() == Some(version)
        {
            secret.pending = None;
        }
    }

    async fn delete(
        &self,
        organization_id: &str,
        project_id: &str,
    ) -> Result<(), CredentialsError> {
        self.held_delete.wait().await;
        self.check()?;
        lock(&self.secrets).remove(&key(organization_id, project_id));
        Ok(())
    }

    async fn service_key(&self) -> Result<Arc<SecretString>, CredentialsError> {
        // As the real store: once read, the key is kept whatever Secrets Manager does.
        if let Some(key) = self.service_key.get() {
            return Ok(key.clone());
        }
        self.check()?;
        let key = self
            .service_key
            .get_or_init(|| Arc::new(SecretString::from(super::new_service_key())));
        Ok(key.clone())
    }
}
