//! Peer-authentication precedence: a `reviews` workload in `default`, under mesh-, namespace-
//! and workload-scoped policies.

use std::sync::Arc;

use super::*;
use crate::WorkloadScope;

const ROOT: &str = "istio-system";

fn policy(
    name: &str,
    namespace: &str,
    selector: Option<&[(&str, &str)]>,
    mode: Option<MtlsMode>,
    ports: &[(u16, MtlsMode)],
) -> PeerAuthentication {
    PeerAuthentication {
        name: name.into(),
        scope: WorkloadScope {
            namespace: namespace.into(),
            selector: selector.map(|s| Labels::new(s.iter().copied()).unwrap()),
        },
        mode,
        port_modes: Arc::from(ports),
    }
}

fn reviews() -> Labels {
    Labels::new([("app", "reviews"), ("version", "v1")]).unwrap()
}

fn mode(policies: &[PeerAuthentication], port: u16) -> MtlsMode {
    mtls_mode(policies, "default", &reviews(), port, ROOT)
}

#[test]
fn without_policies_the_mesh_is_permissive() {
    assert_eq!(mode(&[], 8080), MtlsMode::Permissive);
}

#[test]
fn narrower_scopes_win() {
    let mesh = policy("mesh", ROOT, None, Some(MtlsMode::Strict), &[]);
    let ns = policy("ns", "default", None, Some(MtlsMode::Disable), &[]);
    let wl = policy(
        "wl",
        "default",
        Some(&[("app", "reviews")]),
        Some(MtlsMode::Permissive),
        &[],
    );
    assert_eq!(mode(std::slice::from_ref(&mesh), 1), MtlsMode::Strict);
    assert_eq!(mode(&[mesh.clone(), ns.clone()], 1), MtlsMode::Disable);
    // Order in the slice does not matter across scopes.
    assert_eq!(mode(&[wl, ns, mesh], 1), MtlsMode::Permissive);
}

#[test]
fn policies_elsewhere_do_not_apply() {
    let other_ns = policy("other", "prod", None, Some(MtlsMode::Disable), &[]);
    let other_app = policy(
        "ratings",
        "default",
        Some(&[("app", "ratings")]),
        Some(MtlsMode::Disable),
        &[],
    );
    // A selector policy in the root namespace is not a workload policy (istiod drops it).
    let root_selector = policy(
        "root-sel",
        ROOT,
        Some(&[("app", "reviews")]),
        Some(MtlsMode::Disable),
        &[],
    );
    let mesh = policy("mesh", ROOT, None, Some(MtlsMode::Strict), &[]);
    assert_eq!(
        mode(&[other_ns, other_app, root_selector, mesh], 1),
        MtlsMode::Strict
    );
}

#[test]
fn an_empty_selector_is_namespace_wide() {
    let ns = policy("ns", "default", Some(&[]), Some(MtlsMode::Disable), &[]);
    let mesh = policy("mesh", ROOT, Some(&[]), Some(MtlsMode::Strict), &[]);
    assert_eq!(mode(std::slice::from_ref(&mesh), 1), MtlsMode::Strict);
    assert_eq!(mode(&[mesh, ns], 1), MtlsMode::Disable);
}

#[test]
fn unset_inherits_from_the_next_wider_scope() {
    let mesh = policy("mesh", ROOT, None, Some(MtlsMode::Strict), &[]);
    let ns_unset = policy("ns", "default", None, None, &[]);
    let wl_unset = policy("wl", "default", Some(&[("app", "reviews")]), None, &[]);
    assert_eq!(
        mode(&[mesh.clone(), ns_unset.clone(), wl_unset.clone()], 1),
        MtlsMode::Strict
    );
    let ns_disable = policy("ns", "default", None, Some(MtlsMode::Disable), &[]);
    assert_eq!(
        mode(&[mesh, ns_disable, wl_unset.clone()], 1),
        MtlsMode::Disable
    );
    // UNSET all the way up is Istio's default.
    assert_eq!(mode(&[ns_unset, wl_unset], 1), MtlsMode::Permissive);
}

#[test]
fn port_level_modes_override_the_workload_mode_for_their_port_only() {
    let ns = policy("ns", "default", None, Some(MtlsMode::Strict), &[]);
    let wl = policy(
        "wl",
        "default",
        Some(&[("app", "reviews")]),
        None,
        &[(9090, MtlsMode::Disable)],
    );
    assert_eq!(mode(&[ns.clone(), wl.clone()], 9090), MtlsMode::Disable);
    assert_eq!(mode(&[ns, wl], 8080), MtlsMode::Strict);
}

#[test]
fn port_level_modes_without_a_selector_are_ignored() {
    let ns = policy(
        "ns",
        "default",
        None,
        Some(MtlsMode::Strict),
        &[(9090, MtlsMode::Disable)],
    );
    assert_eq!(mode(&[ns], 9090), MtlsMode::Strict);
}

#[test]
fn the_first_of_several_policies_in_one_scope_wins() {
    let first = policy(
        "a",
        "default",
        Some(&[("app", "reviews")]),
        Some(MtlsMode::Strict),
        &[],
    );
    let second = policy(
        "b",
        "default",
        Some(&[("version", "v1")]),
        Some(MtlsMode::Disable),
        &[(1, MtlsMode::Disable)],
    );
    assert_eq!(mode(&[first.clone(), second.clone()], 1), MtlsMode::Strict);
    assert_eq!(mode(&[second, first], 2), MtlsMode::Disable);
}
