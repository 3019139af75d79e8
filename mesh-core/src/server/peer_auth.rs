//! Peer authentication: which inbound mTLS mode applies to a workload's port.
//!
//! Istio composes `PeerAuthentication` policies by scope, narrowest wins:
//!
//! 1. a **workload** policy: a selector (non-empty) that matches the workload's labels, in the
//!    workload's own namespace. A selector policy in the root namespace is ignored, as istiod
//!    ignores it. If several match, Istio takes the oldest; the model has no creation time, so
//!    the first in slice order wins (the control plane sends them oldest first).
//! 2. a **namespace** policy: no (or an empty) selector, in the workload's namespace;
//! 3. a **mesh** policy: no (or an empty) selector, in the root namespace;
//! 4. the default, PERMISSIVE.
//!
//! Within each of the namespace and mesh scopes the first policy in slice order is the one
//! that counts. A policy whose mode is `None` (UNSET) inherits the mode of the next wider scope.
//! Port-level modes are honoured only on the workload policy, and override the workload mode
//! for that port.

use super::{MtlsMode, PeerAuthentication};
use crate::Labels;

/// The mTLS mode for inbound connections to `port` of the workload in `workload_namespace`
/// with `labels`, under `policies` (all the peer-authentication policies known; those that do
/// not apply are skipped). `root_namespace` is the mesh's root namespace, usually
/// [`DEFAULT_ROOT_NAMESPACE`](super::DEFAULT_ROOT_NAMESPACE).
///
/// See the module documentation for precedence.
pub fn mtls_mode(
    policies: &[PeerAuthentication],
    workload_namespace: &str,
    labels: &Labels,
    port: u16,
    root_namespace: &str,
) -> MtlsMode {
    let mut mesh = None;
    let mut namespace = None;
    let mut workload = None;
    for policy in policies {
        let scope = &policy.scope;
        let slot = if scope.is_namespace_wide() {
            if &*scope.namespace == root_namespace {
                &mut mesh
            } else if &*scope.namespace == workload_namespace {
                &mut namespace
            } else {
                continue;
            }
        } else if &*scope.namespace == workload_namespace
            && &*scope.namespace != root_namespace
            && scope
                .selector
                .as_ref()
                .is_some_and(|selector| labels.contains_all(selector))
        {
            &mut workload
        } else {
            continue;
        };
        if slot.is_none() {
            *slot = Some(policy);
        }
    }

    let inherited = [mesh, namespace, workload]
        .into_iter()
        .flatten()
        .filter_map(|policy| policy.mode)
        .next_back()
        .unwrap_or_default();
    workload
        .and_then(|policy| {
            policy
                .port_modes
                .iter()
                .find(|(p, _)| *p == port)
                .map(|&(_, mode)| mode)
        })
        .unwrap_or(inherited)
}

#[cfg(test)]
mod tests;
