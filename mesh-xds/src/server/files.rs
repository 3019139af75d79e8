//! Istio YAML files served by the control plane, pushed when they change.
//!
//! The loading, diagnostics and change detection are mesh-tower's
//! ([`mesh_tower::Mesh::from_istio_yaml`]): it publishes each configuration that loads
//! cleanly into a [`Mesh`] and keeps the last good one otherwise. The control plane follows
//! that mesh: every `poll_interval` it pushes the mesh's configuration if it is a new one —
//! as published, not as the control plane's own workload would see it through a Sidecar.
//!
//! Sidecars are not applied to what it serves: every node gets the same resources (istiod
//! narrows them per proxy from its node metadata). Each configuration with a Sidecar is
//! logged with that warning.

use std::{path::Path, sync::Arc, time::Duration};

use mesh_tower::{ConfigWatch, Mesh, StaticConfigError, WatchStatus};

use super::ControlPlane;

/// Watches the files of a control plane; dropping it stops the watching.
#[derive(Debug)]
pub struct FileWatch {
    files: ConfigWatch,
    task: tokio::task::JoinHandle<()>,
}

// === impl FileWatch ===

impl FileWatch {
    /// What the file watcher last did: the version served, the warnings of that version, and
    /// the last rejected edit with every diagnostic (cleared by the next good one).
    pub fn status(&self) -> WatchStatus {
        self.files.status()
    }
}

impl Drop for FileWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(super) fn watch<P: AsRef<Path>>(
    files: &[P],
    poll_interval: Duration,
    shape: crate::encode::Shape,
) -> Result<(ControlPlane, FileWatch), StaticConfigError> {
    let (mesh, watch) = Mesh::from_istio_yaml(files, poll_interval)?;
    let first = mesh.published_config();
    warn_unscoped(&first);
    let cp = ControlPlane::with_shape((*first).clone(), shape);
    let task = tokio::spawn(follow(mesh, first, cp.clone(), poll_interval));
    Ok((cp, FileWatch { files: watch, task }))
}

async fn follow(
    mesh: Mesh,
    mut served: Arc<mesh_core::MeshConfig>,
    cp: ControlPlane,
    interval: Duration,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let current = mesh.published_config();
        if !Arc::ptr_eq(&current, &served) {
            warn_unscoped(&current);
            cp.set_config((*current).clone());
            served = current;
        }
    }
}

/// Says that the Sidecars of `config` do not narrow what is served.
fn warn_unscoped(config: &mesh_core::MeshConfig) {
    let sidecars = config
        .visibility()
        .map(|v| &v.sidecars[..])
        .unwrap_or_default();
    for sidecar in sidecars {
        tracing::warn!(
            sidecar = %sidecar.id(),
            "Sidecar is not applied to xDS clients: this control plane serves every node the \
             same resources (no per-node scoping); a mesh loading the YAML itself applies it"
        );
    }
}
