//! Several DestinationRules or VirtualServices for one host: consolidated and reported as
//! istiod does; which one a workload gets is decided when the workload is known
//! ([`crate::sidecar::HostRules::choose`], [`crate::sidecar::choose_virtual_service`]).
//!
//! istiod merges rules in creation order; a file has no timestamps, so load order (the
//! sources in the order given, the documents of each in file order) stands for it.

use std::{cell::RefCell, collections::BTreeSet, sync::Arc};

use super::{
    cursor::Diags,
    destination_rule::{DestinationRule, Subset, TrafficPolicy},
    virtual_service::VirtualService,
};
use crate::sidecar::{ExportTo, RuleIndex};

/// One consolidated DestinationRule: rules of one namespace and host, merged in load order.
#[derive(Debug)]
pub(super) struct Merged<'a> {
    pub(super) index: RuleIndex,
    /// The rules merged, the first (whose `exportTo` the entry has) first.
    pub(super) rules: Vec<&'a DestinationRule>,
}

// === impl Merged ===

impl Merged<'_> {
    fn first(&self) -> Option<&DestinationRule> {
        self.rules.first().copied()
    }

    /// The traffic policy: the first rule's that has one (istiod takes a later rule's only
    /// when the merged rule has none).
    pub(super) fn policy(&self) -> Option<&TrafficPolicy> {
        self.rules
            .iter()
            .find(|r| r.has_policy)
            .or(self.rules.first())
            .map(|r| &r.policy)
    }

    /// The subsets: each name once, from the first rule defining it.
    pub(super) fn subsets(&self) -> Vec<&Subset> {
        let mut out: Vec<&Subset> = Vec::new();
        for subset in self.rules.iter().flat_map(|r| &r.subsets) {
            if !out.iter().any(|s| s.name == subset.name) {
                out.push(subset);
            }
        }
        out
    }

    /// `namespace/name` of each rule.
    pub(super) fn names(&self) -> Arc<[Arc<str>]> {
        self.rules
            .iter()
            .map(|r| Arc::from(format!("{}/{}", r.meta.namespace, r.meta.name)))
            .collect()
    }

    pub(super) fn namespace(&self) -> Arc<str> {
        self.first()
            .map(|r| r.meta.namespace.clone())
            .unwrap_or_else(|| Arc::from(""))
    }

    pub(super) fn export_to(&self) -> ExportTo {
        self.first()
            .map(|r| r.export_to.clone())
            .unwrap_or_default()
    }
}

/// Files the rules of one host (in load order) into istiod's indexes, merging as
/// `mergeDestinationRule` does with `ENABLE_ENHANCED_DESTINATIONRULE_MERGE` (istiod's
/// default): a rule merges into an earlier one of its namespace and index whose `exportTo`
/// equals its own or is a non-default subset of it; otherwise it is a rule of its own.
/// Reports each merge, each subset a merge drops, and rules of one host in several
/// namespaces.
pub(super) fn consolidate<'a>(
    host: &str,
    rules: &[&'a DestinationRule],
    service_namespace: &str,
    root: &str,
    diags: &RefCell<Diags>,
) -> Vec<Merged<'a>> {
    let mut out: Vec<Merged<'a>> = Vec::new();
    let mut reported = BTreeSet::new();
    for dr in rules {
        let ns = &*dr.meta.namespace;
        let private_only = matches!(&dr.export_to, ExportTo::Namespaces(n) if n.len() == 1 && n.iter().all(|n| &**n == ns));
        let mut indexes = Vec::new();
        if dr.export_to.includes(ns) {
            indexes.push(RuleIndex::Local);
        }
        if !private_only {
            indexes.push(RuleIndex::Exported);
        } else if ns == root {
            indexes.push(RuleIndex::RootLocal);
        }
        for index in indexes {
            merge(&mut out, index, dr, &mut reported, diags);
        }
    }
    let namespaces: BTreeSet<&str> = rules.iter().map(|r| &*r.meta.namespace).collect();
    if namespaces.len() > 1
        && let Some(dr) = rules
            .iter()
            .find(|r| *r.meta.namespace != *rules[0].meta.namespace)
    {
        let list: Vec<&str> = namespaces.into_iter().collect();
        dr.meta.cx(diags).warn(
            "spec.host",
            format!(
                "host {host} has DestinationRules in namespaces {}: as istiod does, a workload gets the rule of its own namespace, else of the service's namespace ({service_namespace}), else of the root namespace ({root}), each only where exported to the workload's namespace",
                list.join(", ")
            ),
        );
    }
    out
}

fn merge<'a>(
    out: &mut Vec<Merged<'a>>,
    index: RuleIndex,
    dr: &'a DestinationRule,
    reported: &mut BTreeSet<(usize, String)>,
    diags: &RefCell<Diags>,
) {
    let mut append = true;
    for entry in out
        .iter_mut()
        .filter(|e| e.index == index && e.namespace() == dr.meta.namespace)
    {
        let existing = entry.export_to();
        if existing != dr.export_to && !is_superset(&dr.export_to, &existing) {
            append = true;
            continue;
        }
        append = false;
        let Some(first) = entry.first() else {
            continue;
        };
        let mut warn = |message: String| {
            if reported.insert((std::ptr::from_ref(dr) as usize, message.clone())) {
                dr.meta.cx(diags).warn("", message);
            }
        };
        warn(format!(
            "merged into DestinationRule {}/{} for host {}, as istiod merges the rules of one namespace: its new subsets are added{}",
            first.meta.namespace,
            first.meta.name,
            dr.host,
            if dr.has_policy && entry.rules.iter().any(|r| r.has_policy) {
                "; its trafficPolicy is ignored (the first rule's applies)"
            } else {
                ""
            }
        ));
        for subset in &dr.subsets {
            if let Some(owner) = entry
                .rules
                .iter()
                .find(|r| r.subsets.iter().any(|s| s.name == subset.name))
            {
                warn(format!(
                    "subset `{}` is already defined by DestinationRule {}/{}, which is kept",
                    subset.name, owner.meta.namespace, owner.meta.name
                ));
            }
        }
        entry.rules.push(dr);
    }
    if append {
        out.push(Merged {
            index,
            rules: vec![dr],
        });
    }
}

/// Whether `a` lists every namespace of a non-empty `b` (istiod's `SupersetOf` on the sets
/// of `exportTo` entries).
fn is_superset(a: &ExportTo, b: &ExportTo) -> bool {
    match (a, b) {
        (ExportTo::Namespaces(a), ExportTo::Namespaces(b)) => {
            !b.is_empty() && b.iter().all(|n| a.contains(n))
        }
        _ => false,
    }
}

/// Reports a host routed by several VirtualServices: which one applies is per workload.
pub(super) fn warn_virtual_services(
    host: &str,
    path: &str,
    services: &[Arc<VirtualService>],
    diags: &RefCell<Diags>,
) {
    let Some((first, later)) = services.split_first() else {
        return;
    };
    for vs in later {
        vs.meta.cx(diags).warn(
            path,
            format!(
                "host {host} also has VirtualService {}/{}: istiod does not merge them for sidecars; a workload gets the first (in file order) of those of its own namespace exported to it by name or `.`, else of those other namespaces export to it by name, else of the public ones",
                first.meta.namespace, first.meta.name
            ),
        );
    }
}
