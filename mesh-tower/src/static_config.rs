//! Istio YAML files as the mesh's configuration, reloaded when they change.
//!
//! [`Mesh::from_istio_yaml`] loads the files once (all errors reported, with file, document,
//! resource and field) and starts a task that reads them every interval and compares a hash of
//! their content. A change that loads cleanly is published; one that does not is logged with
//! every diagnostic and recorded in the [`ConfigWatch`] status, while the last good
//! configuration keeps serving. Reading is cheap for configuration-sized files, needs no
//! platform file-notification API, and — unlike size and modification-time checks, which miss
//! same-size edits within the file system's timestamp granularity — never misses a change. It
//! copes with editors that replace files and with Kubernetes ConfigMap symlink swaps.
//!
//! Reading and parsing run on tokio's blocking pool, never on the runtime that serves
//! requests: a broken or hostile edit (the loader refuses the known slow shapes quickly, see
//! [`istio::MAX_SOURCE_BYTES`]) must not stall a current-thread runtime. A parse that takes
//! longer than [`PARSE_TIME_BUDGET`] is refused; the watcher waits for its thread to end before
//! it looks at the files again, so at most one parse runs at a time.

use std::{
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use mesh_core::istio::{self, Diagnostic, LoadError, Source};

use crate::{Mesh, MeshBuilder, tls::TlsError};

/// Why the files could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum StaticConfigError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The YAML did not load; every diagnostic is included.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    /// Parsing took longer than its budget and was refused.
    #[error("parsing the configuration took longer than {budget:?}: refused")]
    TooSlow {
        /// The budget.
        budget: Duration,
    },
    /// The workload identity given to the [`MeshBuilder`] did not load.
    #[error("loading the workload identity: {0}")]
    Identity(#[from] TlsError),
    /// The blocking task that read or parsed the files ended without an answer.
    #[error("the configuration task failed: {0}")]
    Task(String),
}

/// The longest a reload's parse may take before it is refused. Files within the loader's
/// limits parse in well under a second; this bounds what the limits do not foresee.
pub const PARSE_TIME_BUDGET: Duration = Duration::from_secs(10);

/// Watches the configuration files of a mesh; dropping it stops the watching, and with it hot
/// reload: keep it for as long as the mesh serves (e.g. bind it to a named variable in `main`,
/// not to `_`, which drops it at once).
#[derive(Debug)]
#[must_use = "dropping the watcher stops hot reload: keep it alive as long as the mesh"]
pub struct ConfigWatch {
    status: Arc<Mutex<WatchStatus>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the watcher last did.
#[derive(Clone, Debug, Default)]
pub struct WatchStatus {
    /// Version of the configuration being served.
    pub version: String,
    /// Warnings of the configuration being served.
    pub warnings: Vec<String>,
    /// The last failed reload, cleared by the next successful one.
    pub last_error: Option<String>,
    /// Successful reloads since the start.
    pub reloads: u64,
    /// Failed reloads since the start.
    pub rejected: u64,
}

// === impl Mesh ===

impl Mesh {
    /// A mesh configured by Istio YAML `files`, reloaded when they change (checked every
    /// `poll_interval`). Must be called within a tokio runtime.
    ///
    /// Reloading lasts as long as the returned [`ConfigWatch`]: dropping it (e.g. with
    /// `let (mesh, _) = ..`) stops hot reload, and the mesh keeps the configuration loaded
    /// now. Warnings of the loaded files and rejected reloads are logged through `tracing`
    /// (and kept in [`ConfigWatch::status`]).
    ///
    /// # Example
    ///
    /// ```no_run
    /// use std::time::Duration;
    ///
    /// use mesh_tower::Mesh;
    ///
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// // Every error is reported with file, document, resource and field, e.g. `mesh.yaml:
    /// // document 3 (VirtualService reviews): spec.http[0].route[1].weight: weights sum to 110,
    /// // must be 100`.
    /// let (mesh, watch) = Mesh::from_istio_yaml(&["mesh.yaml"], Duration::from_secs(1))?;
    /// let reviews = mesh.channel("reviews.default.svc.cluster.local:9080");
    /// # let _ = reviews;
    /// // ... serve; `watch` lives until the end of `main`, so edits keep being picked up.
    /// println!("serving configuration {}", watch.status().version);
    /// # Ok(()) }
    /// ```
    #[must_use = "dropping the returned ConfigWatch stops hot reload"]
    pub fn from_istio_yaml<P: AsRef<Path>>(
        files: &[P],
        poll_interval: Duration,
    ) -> Result<(Self, ConfigWatch), StaticConfigError> {
        Self::builder().build_from_istio_yaml(files, poll_interval)
    }
}

// === impl MeshBuilder ===

impl MeshBuilder {
    /// The mesh, configured by Istio YAML `files` and reloaded when they change, as
    /// [`Mesh::from_istio_yaml`] makes it, with this builder's settings. Must be called within
    /// a tokio runtime.
    #[must_use = "dropping the returned ConfigWatch stops hot reload"]
    pub fn build_from_istio_yaml<P: AsRef<Path>>(
        self,
        files: &[P],
        poll_interval: Duration,
    ) -> Result<(Mesh, ConfigWatch), StaticConfigError> {
        let paths: Vec<PathBuf> = files.iter().map(|p| p.as_ref().to_path_buf()).collect();
        let texts = read(&paths)?;
        let (config, warnings) = parse(&paths, &texts)?;
        // The baseline is what was loaded, so a change made before the task first runs counts.
        let loaded_hash = content_hash(&texts);
        let status = Arc::new(Mutex::new(WatchStatus {
            version: config.version().to_owned(),
            warnings: warnings.iter().map(ToString::to_string).collect(),
            ..WatchStatus::default()
        }));
        for w in &warnings {
            tracing::warn!(%w, "configuration warning");
        }
        let mesh = self.build(config)?;
        let task = tokio::spawn(watch(
            mesh.clone(),
            paths,
            loaded_hash,
            poll_interval,
            status.clone(),
        ));
        Ok((mesh, ConfigWatch { status, task }))
    }
}

// === impl ConfigWatch ===

impl ConfigWatch {
    /// What the watcher last did.
    pub fn status(&self) -> WatchStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for ConfigWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn watch(
    mesh: Mesh,
    paths: Vec<PathBuf>,
    loaded_hash: u64,
    interval: Duration,
    status: Arc<Mutex<WatchStatus>>,
) {
    watch_with_budget(
        mesh,
        paths,
        loaded_hash,
        interval,
        status,
        PARSE_TIME_BUDGET,
    )
    .await;
}

async fn watch_with_budget(
    mesh: Mesh,
    paths: Vec<PathBuf>,
    loaded_hash: u64,
    interval: Duration,
    status: Arc<Mutex<WatchStatus>>,
    parse_budget: Duration,
) {
    let paths: Arc<[PathBuf]> = paths.into();
    let mut seen = Some(loaded_hash);
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let reading = paths.clone();
        let read_result = tokio::task::spawn_blocking(move || read(&reading))
            .await
            .unwrap_or_else(|e| Err(StaticConfigError::Task(e.to_string())));
        let result = match read_result {
            // A read failure is reported once; the files are loaded again when readable.
            Err(_) if seen.is_none() => Ok(None),
            Err(error) => {
                seen = None;
                Err(error)
            }
            Ok(texts) => {
                let hash = content_hash(&texts);
                if seen == Some(hash) {
                    Ok(None)
                } else {
                    seen = Some(hash);
                    let parsing = paths.clone();
                    let mut task = tokio::task::spawn_blocking(move || parse(&parsing, &texts));
                    match tokio::time::timeout(parse_budget, &mut task).await {
                        Ok(joined) => joined
                            .unwrap_or_else(|e| Err(StaticConfigError::Task(e.to_string())))
                            .map(Some),
                        Err(_) => {
                            report(
                                &mesh,
                                &status,
                                Err(StaticConfigError::TooSlow {
                                    budget: parse_budget,
                                }),
                            );
                            // One parse at a time: its thread cannot be stopped, only awaited.
                            let _ = task.await;
                            continue;
                        }
                    }
                }
            }
        };
        report(&mesh, &status, result);
    }
}

/// Publishes a new configuration or records why the files were refused.
fn report(
    mesh: &Mesh,
    status: &Mutex<WatchStatus>,
    result: Result<Option<(mesh_core::MeshConfig, Vec<Diagnostic>)>, StaticConfigError>,
) {
    let mut s = status.lock().unwrap_or_else(|p| p.into_inner());
    match result {
        Ok(None) => {}
        Ok(Some((config, _))) if config.version() == s.version => {}
        Ok(Some((config, warnings))) => {
            tracing::info!(version = config.version(), "configuration reloaded");
            // Every reload repeats its warnings: an operator reading the log after an edit
            // must see what the new files ignore.
            for w in &warnings {
                tracing::warn!(%w, "configuration warning");
            }
            s.version = config.version().to_owned();
            s.warnings = warnings.iter().map(ToString::to_string).collect();
            s.last_error = None;
            s.reloads += 1;
            mesh.publish(Arc::new(config));
        }
        Err(error) => {
            tracing::error!(%error, "configuration rejected; the last good configuration keeps serving");
            s.last_error = Some(error.to_string());
            s.rejected += 1;
        }
    }
}

fn content_hash(texts: &[String]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    texts.hash(&mut h);
    h.finish()
}

fn read(paths: &[PathBuf]) -> Result<Vec<String>, StaticConfigError> {
    paths
        .iter()
        .map(|path| {
            std::fs::read_to_string(path).map_err(|source| StaticConfigError::Read {
                path: path.clone(),
                source,
            })
        })
        .collect()
}

fn parse(
    paths: &[PathBuf],
    texts: &[String],
) -> Result<(mesh_core::MeshConfig, Vec<Diagnostic>), StaticConfigError> {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let sources: Vec<Source<'_>> = names
        .iter()
        .zip(texts)
        .map(|(name, text)| Source { name, text })
        .collect();
    let loaded = istio::load(&sources)?;
    Ok((loaded.config, loaded.warnings))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn service_entry(port: u16) -> String {
        format!(
            "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: echo}}
spec:
  hosts: [echo.default.svc.cluster.local]
  resolution: STATIC
  ports: [{{number: {port}, name: grpc, protocol: GRPC}}]
  endpoints: [{{address: 127.0.0.1}}]
"
        )
    }

    fn write(path: &Path, text: &str) {
        // Write then rename, as editors and ConfigMap updates do: the watcher must see it.
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_is_published_and_a_bad_edit_keeps_the_last_good_config() {
        let dir = std::env::temp_dir().join(format!("mesh-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.yaml");
        write(&path, &service_entry(9080));

        let (mesh, watch) = Mesh::from_istio_yaml(&[&path], Duration::from_secs(1)).unwrap();
        assert!(
            mesh.config()
                .listener("echo.default.svc.cluster.local:9080")
                .is_some()
        );

        write(&path, &service_entry(9090));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(
            mesh.config()
                .listener("echo.default.svc.cluster.local:9090")
                .is_some()
        );
        assert_eq!(watch.status().reloads, 1);

        write(
            &path,
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: echo}\nspec: {hosts: [7]}\n",
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let status = watch.status();
        assert_eq!(status.rejected, 1);
        assert!(
            status
                .last_error
                .as_deref()
                .unwrap_or("")
                .contains("mesh.yaml: document 1 (ServiceEntry echo)"),
            "{status:?}"
        );
        assert!(
            mesh.config()
                .listener("echo.default.svc.cluster.local:9090")
                .is_some(),
            "the last good configuration keeps serving"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A valid file of about 3 MiB: slow to parse, though within the loader's limits.
    pub(crate) fn large_config(port: u16) -> String {
        let mut text = service_entry(port);
        text.push_str("---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: filler}\ndata:\n");
        for i in 0..60_000 {
            text.push_str(&format!("  k{i}: [a, b, {{c: d}}, e, f]\n"));
        }
        text
    }

    #[tokio::test]
    async fn a_parse_over_its_time_budget_is_refused() {
        let dir = std::env::temp_dir().join(format!("mesh-static-slow-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("mesh.yaml");
        write(&path, &service_entry(9080));
        let (mesh, first) = Mesh::from_istio_yaml(&[&path], Duration::from_secs(3600)).unwrap();
        drop(first);
        let status = Arc::new(Mutex::new(WatchStatus::default()));
        let watcher = tokio::spawn(watch_with_budget(
            mesh.clone(),
            vec![path.clone()],
            0,
            Duration::from_millis(10),
            status.clone(),
            Duration::from_millis(1),
        ));
        write(&path, &large_config(9090));
        let mut rejected = None;
        for _ in 0..1_000 {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let s = status.lock().unwrap().clone();
            if s.rejected > 0 {
                rejected = s.last_error;
                break;
            }
        }
        watcher.abort();
        let error = rejected.expect("the slow parse is refused");
        assert!(error.contains("took longer than 1ms"), "{error}");
        assert!(
            mesh.config()
                .listener("echo.default.svc.cluster.local:9080")
                .is_some()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_invalid_file_at_start_is_an_error_naming_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let missing =
            Mesh::from_istio_yaml(&["/nonexistent/mesh.yaml"], Duration::from_secs(1)).unwrap_err();
        assert!(matches!(missing, StaticConfigError::Read { .. }));
        assert!(missing.to_string().contains("/nonexistent/mesh.yaml"));
    }
}
