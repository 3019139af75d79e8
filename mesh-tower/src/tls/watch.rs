//! Rotation: certificate files polled on an interval, reloaded atomically.
//!
//! A [`CertificateWatcher`] keeps the current [`Material`] behind an `ArcSwap`. Resolvers and
//! verifiers built on it load the material per handshake, so a rotation reaches the next
//! handshake without rebuilding a TLS configuration or touching an open connection.
//!
//! Polling compares file contents, not modification times: certificate files are small, and
//! Kubernetes' atomic-symlink secret updates or a `cp` within one mtime tick would fool an mtime
//! check. A change is applied only when every file parses, the key matches the leaf
//! certificate, the leaf is inside its validity window (with
//! [`DEFAULT_CLOCK_SKEW`](super::DEFAULT_CLOCK_SKEW) for its `notBefore`) and chains to the
//! trust bundle of the same files (`Material::check_rotation`); otherwise the previous material
//! keeps serving, the failure is logged with the file and the reason, counted, and kept as
//! [`CertificateWatcher::last_error`]. A writer that replaces the chain and the key in two
//! steps thus causes one reported failure, then a successful reload on the next poll. The same
//! broken contents are reported once, not on every poll. The initial load is not held to the
//! validity window: there is nothing older to keep, and the handshake reports an expired
//! certificate precisely.

use std::{
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;

use super::{CertificateFiles, DEFAULT_CLOCK_SKEW, Material, TlsError};

/// Default interval between two polls of the files: gRPC's `file_watcher` default is 10 min,
/// Istio rotates workload certificates every 12 h by default; 5 s notices a rotation quickly at
/// the cost of reading a few kilobytes.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Certificate material loaded from files and kept current. Cheap to clone; the polling task
/// (when started) ends when the last clone is dropped.
#[derive(Clone, Debug)]
pub struct CertificateWatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: CertificateFiles,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<Material>,
    /// The contents last parsed (good or bad) and how that went, so unchanged files cost no
    /// parse and a bad rotation is reported once.
    seen: Mutex<Seen>,
    last_error: Mutex<Option<TlsError>>,
    reloads: AtomicU64,
    failures: AtomicU64,
    /// Set by the first [`CertificateWatcher::watch`]: one polling task per watcher.
    watching: AtomicBool,
}

#[derive(Debug)]
struct Seen {
    contents: Vec<Vec<u8>>,
    outcome: Result<(), TlsError>,
}

// === impl CertificateWatcher ===

impl CertificateWatcher {
    /// Loads `files` now; fails when the initial material is unusable (there is nothing older
    /// to fall back on). Reads the files synchronously: they are small.
    pub fn load(files: CertificateFiles) -> Result<Self, TlsError> {
        Self::load_with_provider(files, super::crypto_provider())
    }

    pub(crate) fn load_with_provider(
        files: CertificateFiles,
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        let contents = read_all(&files)?;
        let material = Material::parse(&files, &contents, &provider)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                provider,
                current: ArcSwap::from_pointee(material),
                seen: Mutex::new(Seen {
                    contents,
                    outcome: Ok(()),
                }),
                last_error: Mutex::new(None),
                reloads: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                watching: AtomicBool::new(false),
            }),
        })
    }

    /// Polls the files every `interval` on the current tokio runtime until the last clone of
    /// this watcher is dropped. Only the first call starts a task. Without a runtime, nothing is
    /// polled (a warning says so); [`reload`](Self::reload) still works.
    pub fn watch(&self, interval: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(files = %self.inner.files, "no tokio runtime: certificate files are not watched for rotation");
            return;
        };
        if self.inner.watching.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                // Errors are reported inside; the loop keeps polling.
                let _ = CertificateWatcher { inner }.reload();
            }
        });
    }

    /// Reads the files now and swaps in their material when it changed and is valid. Returns
    /// whether new material was installed. On failure the previous material keeps serving and
    /// the error is logged, counted ([`failures`](Self::failures)) and kept
    /// ([`last_error`](Self::last_error)).
    pub fn reload(&self) -> Result<bool, TlsError> {
        let inner = &self.inner;
        let mut seen = inner.seen.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = match read_all(&inner.files) {
            Err(error) => Err(error),
            // Unchanged: whatever these contents gave last time still holds.
            Ok(contents) if contents == seen.contents => seen.outcome.clone().map(|()| false),
            Ok(contents) => {
                let parsed = Material::parse(&inner.files, &contents, &inner.provider).and_then(
                    |material| {
                        material.check_rotation(
                            &inner.files,
                            SystemTime::now(),
                            DEFAULT_CLOCK_SKEW,
                        )?;
                        Ok(material)
                    },
                );
                seen.contents = contents;
                match parsed {
                    Ok(material) => {
                        inner.current.store(Arc::new(material));
                        inner.reloads.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(files = %inner.files, "TLS certificate material reloaded");
                        seen.outcome = Ok(());
                        Ok(true)
                    }
                    Err(error) => {
                        seen.outcome = Err(error.clone());
                        Err(error)
                    }
                }
            }
        };
        drop(seen);
        let mut last = inner.last_error.lock().unwrap_or_else(|p| p.into_inner());
        match &outcome {
            Ok(_) => *last = None,
            // The same failure is reported once, however many polls see it.
            Err(error) if last.as_ref() != Some(error) => {
                inner.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(files = %inner.files, %error, "TLS certificate reload failed; the previous material keeps serving");
                *last = Some(error.clone());
            }
            Err(_) => {}
        }
        outcome
    }

    /// The material currently served.
    pub fn current(&self) -> Arc<Material> {
        self.inner.current.load_full()
    }

    /// Borrow of the current material, for the per-handshake path.
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&Material) -> R) -> R {
        f(&self.inner.current.load())
    }

    /// The files watched.
    pub fn files(&self) -> &CertificateFiles {
        &self.inner.files
    }

    /// Successful reloads since loading (the initial load not counted).
    pub fn reloads(&self) -> u64 {
        self.inner.reloads.load(Ordering::Relaxed)
    }

    /// Failed reloads since loading; each distinct failure counts once.
    pub fn failures(&self) -> u64 {
        self.inner.failures.load(Ordering::Relaxed)
    }

    /// Why the last reload failed, until one succeeds again; `None` when the files on disk are
    /// what is served.
    pub fn last_error(&self) -> Option<TlsError> {
        self.inner
            .last_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.inner.provider
    }
}

fn read_all(files: &CertificateFiles) -> Result<Vec<Vec<u8>>, TlsError> {
    files
        .paths()
        .into_iter()
        .map(|path| std::fs::read(path).map_err(|e| TlsError::read(path, e)))
        .collect()
}
