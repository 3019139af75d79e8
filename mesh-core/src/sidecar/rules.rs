//! Which DestinationRule and which VirtualService apply to a workload when several name one
//! host, as istiod decides (`pilot/pkg/model/push_context.go`, `destination_rule.go`,
//! `virtualservice.go`).
//!
//! **DestinationRules.** istiod indexes the rules of each namespace twice: *local* (the rules
//! visible in their own namespace: `exportTo` absent, `*`, `.` or naming it) and *exported*
//! (all but the private ones, those exported to their own namespace only), plus the private
//! rules of the root namespace. Rules of one namespace and host are consolidated while they
//! are indexed: a rule whose `exportTo` equals an earlier one's, or is a superset of a
//! non-default one, is merged into it (its new subsets appended, its `trafficPolicy` taken only
//! when the earlier has none), otherwise it stays a rule of its own. A workload then takes,
//! for a host, the local rules of its own namespace (the private root rules in the root
//! namespace), else the exported rules of the service's namespace, else the exported rules of
//! the root namespace, the last two only when exported to the workload's namespace; of the
//! consolidated rules found, the last applies (`SidecarScope.DestinationRule`'s catch-all).
//!
//! **VirtualServices.** A sidecar's VirtualServices come in three groups: those of its own
//! namespace exported to it by name or `.`, those of other namespaces exported to it by name,
//! then the public ones (`exportTo` absent or `*`), each group in creation order; for a host,
//! the first one visible and imported by the workload's Sidecar routes it and the others are
//! dropped as duplicate domains. istiod merges VirtualServices only for gateways.
//!
//! istiod orders by creation time; a file records none, so the loader's order (the order of
//! the sources, then of the documents in each) stands for it.

use std::sync::Arc;

use super::{ExportTo, RoutedBy};
use crate::Cluster;

/// Where istiod files a consolidated DestinationRule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuleIndex {
    /// Its namespace's local rules: the rules visible in their own namespace.
    Local,
    /// Its namespace's exported rules: every rule but the private ones.
    Exported,
    /// The private rules of the root namespace.
    RootLocal,
}

/// One consolidated DestinationRule of a host: one or more rules of one namespace merged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleEntry {
    /// The index it is filed in.
    pub index: RuleIndex,
    /// The rules' namespace.
    pub namespace: Arc<str>,
    /// `namespace/name` of the rules merged, the first (whose `exportTo` it has) first.
    pub names: Arc<[Arc<str>]>,
    /// The first rule's `exportTo`.
    pub export_to: ExportTo,
    /// The host's clusters shaped by it: one per port and one per subset and port.
    pub clusters: Arc<[(Arc<str>, Arc<Cluster>)]>,
}

/// The DestinationRules of one host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostRules {
    /// The namespace of the host's registry entry.
    pub service_namespace: Arc<str>,
    /// The host's clusters when no rule applies: one per port.
    pub base: Arc<[(Arc<str>, Arc<Cluster>)]>,
    /// Every consolidated rule, in load order within each index.
    pub entries: Arc<[RuleEntry]>,
}

// === impl RuleEntry ===

impl RuleEntry {
    /// `namespace/name`, with the rules merged into it after a `+`.
    pub fn id(&self) -> Arc<str> {
        let names: Vec<&str> = self.names.iter().map(|n| &**n).collect();
        names.join(" + ").into()
    }
}

// === impl HostRules ===

impl HostRules {
    /// The consolidated rule that applies to a workload in `own` namespace, if any.
    pub fn choose(&self, own: &str, root: &str) -> Option<&RuleEntry> {
        let last = |index: RuleIndex, namespace: &str, exported_to_own: bool| {
            self.entries
                .iter()
                .filter(|e| e.index == index && &*e.namespace == namespace)
                .rfind(|e| !exported_to_own || e.export_to.includes(own))
        };
        let local = if own == root {
            last(RuleIndex::RootLocal, root, false)
        } else {
            last(RuleIndex::Local, own, false)
        };
        local
            .or_else(|| last(RuleIndex::Exported, &self.service_namespace, true))
            .or_else(|| last(RuleIndex::Exported, root, true))
    }

    /// The rule the un-narrowed configuration applies: the one a workload of the service's
    /// own namespace gets, else the first one loaded (a rule that applies to no namespace the
    /// configuration is narrowed for still shows in the un-narrowed one, as a single rule
    /// always did).
    pub fn unnarrowed(&self, root: &str) -> Option<&RuleEntry> {
        self.choose(&self.service_namespace, root)
            .or_else(|| self.entries.first())
    }
}

/// The VirtualService that routes a host for a workload in `own` namespace: of the
/// `candidates` (in load order) exported to it and `imported` by its Sidecar, the first of its
/// namespace's private ones, else of those exported to it by name, else of the public ones.
pub fn choose_virtual_service<'a>(
    candidates: &'a [RoutedBy],
    own: &str,
    imported: impl Fn(&RoutedBy) -> bool,
) -> Option<&'a RoutedBy> {
    let group = |vs: &RoutedBy| match &vs.export_to {
        ExportTo::Namespaces(_) if &*vs.namespace == own => 0,
        ExportTo::Namespaces(_) => 1,
        ExportTo::All => 2,
    };
    candidates
        .iter()
        .filter(|vs| vs.export_to.includes(own) && imported(vs))
        .enumerate()
        .min_by_key(|(i, vs)| (group(vs), *i))
        .map(|(_, vs)| vs)
}

/// The VirtualService of the un-narrowed configuration: the one a workload of the service's
/// namespace gets with no Sidecar, else the first loaded.
pub fn unnarrowed_virtual_service<'a>(
    candidates: &'a [RoutedBy],
    service_namespace: &str,
) -> Option<&'a RoutedBy> {
    choose_virtual_service(candidates, service_namespace, |_| true).or_else(|| candidates.first())
}
