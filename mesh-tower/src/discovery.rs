//! Configuration discovered on demand: how an `xds:///` target reaches the xDS client.
//!
//! A channel for `xds:///reviews.default.svc.cluster.local:9080` asks the mesh's [`Discovery`]
//! to watch `reviews.default.svc.cluster.local:9080`; the discovery source (the xDS client in
//! `mesh-xds`) subscribes, and publishes a snapshot containing that target once everything it
//! references has arrived. Until then the target is *pending*: the route layer holds requests for
//! it (as a gRPC channel queues RPCs while its resolver has not answered) instead of failing them.

use std::fmt;

/// The scheme of targets resolved through the mesh's discovery source.
pub const XDS_SCHEME: &str = "xds:///";

/// A source of configuration for targets that are asked for at run time.
pub trait Discovery: Send + Sync + fmt::Debug + 'static {
    /// A channel wants `target` (without the `xds:///` scheme). Called once per channel made;
    /// repeated calls for the same target must be cheap.
    fn watch(&self, target: &str);

    /// Whether configuration for `target` may still arrive: subscribed but neither received nor
    /// known not to exist. Requests for a pending target wait for the next publish.
    fn is_pending(&self, target: &str) -> bool;

    /// The watched targets that have no complete configuration yet (neither fresh nor
    /// persisted), each with why: the admin endpoint's `/ready` answers 503 while any is left.
    /// Default is none (a source without targets of its own is ready once the mesh has a
    /// configuration, which it always has).
    fn unready_targets(&self) -> Vec<UnreadyTarget> {
        Vec::new()
    }
}

/// A watched target without a complete configuration, as `/ready` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadyTarget {
    /// The target, without the `xds:///` scheme.
    pub target: String,
    /// Why it is not ready, e.g. `waiting for Cluster outbound|9080||reviews...`.
    pub reason: String,
}

/// `target` without the `xds:///` scheme, when it has it.
pub(crate) fn strip_scheme(target: &str) -> Option<&str> {
    target.strip_prefix(XDS_SCHEME)
}
