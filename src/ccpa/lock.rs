//! A lease on one S3 object, held in MongoDB (`ccpaLocks`), so two CCPA
//! requests never rewrite the same wave file at once: each reads the file,
//! drops its own user's rows and writes the rest back, so the second
//! writer would put back the rows the first one removed.
//!
//! The lease expires (epoch ms, renewed while the rewrite runs), so a
//! process that dies holding it blocks nobody for long: the next request
//! takes a lapsed lease over.

use std::time::{Duration, Instant};

use mongodb::bson::{doc, Document};
use mongodb::Collection;
use tokio_util::sync::CancellationToken;

use crate::queue::{is_duplicate_key, now_ms};
use crate::store::{Store, StoreError};
use crate::worker::Periodic;

/// How long a lease lasts without renewal.
const LEASE: Duration = Duration::from_secs(60);
/// How often a held lease is renewed: two renewals may fail before it lapses.
const RENEW_EVERY: Duration = Duration::from_secs(20);
/// How often a held lock is tried again while waiting for it.
const RETRY_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("it is being rewritten by another CCPA request")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A held lease on `bucket/key`.
#[derive(Clone)]
pub struct ObjectLock {
    coll: Collection<Document>,
    id: String,
    owner: String,
}

impl ObjectLock {
    /// Take the lease on `bucket/key` for `owner`, waiting up to `wait`
    /// while another live request holds it.
    pub async fn acquire(
        store: &Store,
        bucket: &str,
        key: &str,
        owner: &str,
        wait: Duration,
    ) -> Result<Self, LockError> {
        let lock = Self {
            coll: store.db().collection("ccpaLocks"),
            id: format!("{bucket}/{key}"),
            owner: owner.to_string(),
        };
        let t0 = Instant::now();
        loop {
            let expires = now_ms() + LEASE.as_millis() as i64;
            let fresh = doc! { "_id": &lock.id, "owner": owner, "expiresAtMs": expires };
            match lock.coll.insert_one(fresh).await {
                Ok(_) => return Ok(lock),
                Err(e) if is_duplicate_key(&e) => {}
                Err(e) => return Err(StoreError::from(e).into()),
            }
            // Held: taken over only once its holder stopped renewing.
            let taken = lock
                .coll
                .find_one_and_update(
                    doc! { "_id": &lock.id, "expiresAtMs": { "$lt": now_ms() } },
                    doc! { "$set": { "owner": owner, "expiresAtMs": expires } },
                )
                .await
                .map_err(StoreError::from)?;
            if taken.is_some() {
                tracing::warn!(
                    lock = %lock.id,
                    "CCPA: took over a wave-file lock whose holder stopped renewing it"
                );
                return Ok(lock);
            }
            if t0.elapsed() >= wait {
                return Err(LockError::Busy);
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
    }

    /// Extend the lease; `false` when it is no longer ours.
    async fn renew(&self) -> Result<bool, StoreError> {
        let r = self
            .coll
            .update_one(
                doc! { "_id": &self.id, "owner": &self.owner },
                doc! { "$set": { "expiresAtMs": now_ms() + LEASE.as_millis() as i64 } },
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Renew the lease in the background until stopped; `lost` is cancelled
    /// when another request took it over (the rewrite must then not commit).
    pub fn keep(&self, lost: CancellationToken) -> Periodic {
        let lock = self.clone();
        Periodic::spawn(RENEW_EVERY, move || {
            let (lock, lost) = (lock.clone(), lost.clone());
            async move {
                match lock.renew().await {
                    Ok(true) => true,
                    Ok(false) => {
                        lost.cancel();
                        false
                    }
                    // MongoDB unreachable: keep trying while the lease lasts.
                    Err(e) => {
                        tracing::warn!(error = %e, lock = %lock.id, "CCPA lock renewal failed");
                        true
                    }
                }
            }
        })
    }

    /// Give the lease up (only if still ours). A failure is logged: the
    /// lease then lapses on its own.
    pub async fn release(self) {
        let r = self
            .coll
            .delete_one(doc! { "_id": &self.id, "owner": &self.owner })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %StoreError::from(e), lock = %self.id, "CCPA lock release failed");
        }
    }
}
