//! How whole policies apply: workload scope, dry run, audit, failing closed, naming the
//! deciding policy, and namespaces read from SPIFFE ids.

use super::*;

#[test]
fn only_policies_for_this_workload_apply() {
    check(vec![
        (
            "a selector for other labels does not apply",
            vec![
                allow("ratings-only", vec![to(methods(&["POST"]))]).selector(&[("app", "ratings")]),
            ],
            req(),
            ALLOWED,
        ),
        (
            "a matching selector applies",
            vec![
                allow("reviews-only", vec![to(methods(&["POST"]))]).selector(&[("app", "reviews")]),
            ],
            req(),
            DENIED,
        ),
        (
            "another namespace's policy does not apply",
            vec![deny("deny-all", vec![any_request()]).in_namespace("prod")],
            req(),
            ALLOWED,
        ),
        (
            "the root namespace is mesh-wide",
            vec![deny("deny-all", vec![any_request()]).in_namespace(DEFAULT_ROOT_NAMESPACE)],
            req(),
            DENIED,
        ),
        (
            "a root-namespace selector applies to matching workloads everywhere",
            vec![
                deny("deny-v1", vec![any_request()])
                    .in_namespace(DEFAULT_ROOT_NAMESPACE)
                    .selector(&[("version", "v1")]),
            ],
            req(),
            DENIED,
        ),
        (
            "an ALLOW policy of another workload does not make this one allow-listed",
            vec![
                allow("ratings", vec![to(methods(&["POST"]))]).selector(&[("app", "ratings")]),
                deny("deny-admin", vec![to(paths(&["/admin"]))]),
            ],
            req(),
            ALLOWED,
        ),
    ]);
}

#[test]
fn dry_run_policies_are_recorded_but_not_enforced() {
    check(vec![
        (
            "dry-run DENY that matches",
            vec![deny("deny-get", vec![to(methods(&["GET"]))]).dry_run()],
            req(),
            Expect {
                allowed: true,
                dry_run_denials: &["deny-get"],
                audit: false,
            },
        ),
        (
            "dry-run DENY that does not match",
            vec![deny("deny-post", vec![to(methods(&["POST"]))]).dry_run()],
            req(),
            ALLOWED,
        ),
        (
            "dry-run DENY is recorded even when an enforced DENY already denies",
            vec![
                deny("enforced", vec![any_request()]),
                deny("shadow", vec![any_request()]).dry_run(),
            ],
            req(),
            Expect {
                allowed: false,
                dry_run_denials: &["shadow"],
                audit: false,
            },
        ),
        (
            "dry-run ALLOW that does not match, no enforced ALLOW",
            vec![allow("allow-post", vec![to(methods(&["POST"]))]).dry_run()],
            req(),
            Expect {
                allowed: true,
                dry_run_denials: &["allow-post"],
                audit: false,
            },
        ),
        (
            "dry-run ALLOW alone does not make the workload allow-listed",
            vec![
                allow("allow-post", vec![to(methods(&["POST"]))]).dry_run(),
                deny("deny-admin", vec![to(paths(&["/admin"]))]),
            ],
            req(),
            Expect {
                allowed: true,
                dry_run_denials: &["allow-post"],
                audit: false,
            },
        ),
        (
            "dry-run ALLOW that matches",
            vec![allow("allow-get", vec![to(methods(&["GET"]))]).dry_run()],
            req(),
            ALLOWED,
        ),
        (
            "dry-run ALLOW that misses, but an enforced ALLOW matches: would still allow",
            vec![
                allow("allow-get", vec![to(methods(&["GET"]))]),
                allow("allow-post", vec![to(methods(&["POST"]))]).dry_run(),
            ],
            req(),
            ALLOWED,
        ),
        (
            "dry-run ALLOW policies are judged one by one",
            vec![
                allow("allow-get", vec![to(methods(&["GET"]))]).dry_run(),
                allow("allow-post", vec![to(methods(&["POST"]))]).dry_run(),
            ],
            req(),
            Expect {
                allowed: true,
                dry_run_denials: &["allow-post"],
                audit: false,
            },
        ),
        (
            "denials are listed in policy order",
            vec![
                allow("a-allow-post", vec![to(methods(&["POST"]))]).dry_run(),
                deny("b-deny-get", vec![to(methods(&["GET"]))]).dry_run(),
                allow("c-enforced-post", vec![to(methods(&["POST"]))]),
            ],
            req(),
            Expect {
                allowed: false,
                dry_run_denials: &["a-allow-post", "b-deny-get"],
                audit: false,
            },
        ),
        (
            "dry-run policies of other workloads are not evaluated",
            vec![
                deny("deny-all", vec![any_request()])
                    .dry_run()
                    .in_namespace("prod"),
            ],
            req(),
            ALLOWED,
        ),
    ]);
}

#[test]
fn audit_marks_without_deciding() {
    let audited = Expect {
        allowed: true,
        dry_run_denials: &[],
        audit: true,
    };
    check(vec![
        (
            "matching AUDIT",
            vec![audit("audit-get", vec![to(methods(&["GET"]))])],
            req(),
            audited,
        ),
        (
            "AUDIT does not count as an ALLOW policy",
            vec![audit("audit-post", vec![to(methods(&["POST"]))])],
            req(),
            ALLOWED,
        ),
        (
            "AUDIT on a denied request",
            vec![
                audit("audit-all", vec![any_request()]),
                deny("deny-all", vec![any_request()]),
            ],
            req(),
            Expect {
                allowed: false,
                dry_run_denials: &[],
                audit: true,
            },
        ),
        (
            "dry-run AUDIT is ignored",
            vec![audit("audit-all", vec![any_request()]).dry_run()],
            req(),
            ALLOWED,
        ),
    ]);
}

#[test]
fn what_cannot_be_evaluated_fails_closed() {
    check(vec![
        (
            "unknown source IP under a DENY ipBlocks: deny",
            vec![deny("deny-range", vec![from(ip_blocks(&["10.0.0.0/8"]))])],
            req().ip(None),
            DENIED,
        ),
        (
            "unknown source IP under a DENY notIpBlocks: deny",
            vec![deny(
                "deny-outside",
                vec![from(not_ip_blocks(&["10.0.0.0/8"]))],
            )],
            req().ip(None),
            DENIED,
        ),
        (
            "unknown source IP under an ALLOW ipBlocks: no allow",
            vec![allow("allow-range", vec![from(ip_blocks(&["10.0.0.0/8"]))])],
            req().ip(None),
            DENIED,
        ),
        (
            "unknown source IP under an ALLOW notIpBlocks: no allow",
            vec![allow(
                "allow-outside",
                vec![from(not_ip_blocks(&["192.168.0.0/16"]))],
            )],
            req().ip(None),
            DENIED,
        ),
        (
            "another condition that decides still decides",
            vec![deny(
                "deny-admin-from-range",
                vec![AuthzRule {
                    from: Arc::from([ip_blocks(&["10.0.0.0/8"])]),
                    to: Arc::from([paths(&["/admin"])]),
                    when: Arc::default(),
                }],
            )],
            req().ip(None),
            ALLOWED,
        ),
        (
            "a malformed source.ip value in a DENY: deny",
            vec![deny(
                "deny",
                vec![when(ConditionKey::SourceIp, &["not-an-ip"], &[])],
            )],
            req(),
            DENIED,
        ),
        (
            "a malformed destination.port value in an ALLOW: no allow",
            vec![allow(
                "allow",
                vec![when(ConditionKey::DestinationPort, &["http"], &[])],
            )],
            req(),
            DENIED,
        ),
        (
            "a condition without values in a DENY: deny",
            vec![deny("deny", vec![when(header("x-user"), &[], &[])])],
            req(),
            DENIED,
        ),
        (
            "an indeterminate dry-run DENY is recorded",
            vec![deny("deny-range", vec![from(ip_blocks(&["10.0.0.0/8"]))]).dry_run()],
            req().ip(None),
            Expect {
                allowed: true,
                dry_run_denials: &["deny-range"],
                audit: false,
            },
        ),
    ]);
}

#[test]
fn the_decision_names_the_deciding_policy() {
    let policies = [
        allow("allow-get", vec![to(methods(&["GET"]))]),
        deny("deny-admin", vec![to(paths(&["/admin*"]))]),
        deny("deny-admin-too", vec![to(paths(&["/admin*"]))]),
    ];
    assert_eq!(
        decide(&policies, &req()).reason,
        AuthzReason::Allowed("allow-get".into())
    );
    assert_eq!(
        decide(&policies, &req().path("/admin/users")).reason,
        AuthzReason::Denied("deny-admin".into())
    );
    assert_eq!(
        decide(&policies, &req().method("PUT")).reason,
        AuthzReason::NoAllowMatched
    );
    assert_eq!(
        decide(&policies[1..], &req()).reason,
        AuthzReason::NoAllowPolicies
    );
}

#[test]
fn namespaces_are_read_from_spiffe_paths_of_the_mesh_trust_domains() {
    let trusted = TrustDomains::new("cluster.local", ["td", "ns"]).unwrap();
    let namespace_of = |p| namespace_of(p, &trusted);
    assert_eq!(
        namespace_of("cluster.local/ns/default/sa/reviews"),
        Some("default")
    );
    assert_eq!(namespace_of("td/ns//sa/x"), None);
    assert_eq!(namespace_of("cluster.local/sa/reviews"), None);
    assert_eq!(namespace_of("ns"), None);
    assert_eq!(namespace_of("ns/ns/prod/sa/x"), Some("prod"));
    assert_eq!(namespace_of("td/sa/x/ns/prod"), None);
    // A foreign trust domain vouches for no namespace of this mesh.
    assert_eq!(namespace_of("evil.example.org/ns/prod/sa/x"), None);
    // Only Istio's identity shape `<td>/ns/<ns>/sa/<sa>` names a namespace.
    assert_eq!(namespace_of("cluster.local/ns/prod"), None);
    assert_eq!(namespace_of("cluster.local/ns/prod/sa"), None);
    assert_eq!(namespace_of("cluster.local/ns/prod/x/y"), None);
    assert_eq!(namespace_of("cluster.local/ns/prod/sa/x/y"), None);
    let allow_prod = [one_source(AuthzAction::Allow, namespaces(&["prod"]))];
    let mesh = TrustDomains::default();
    assert!(!decide_for(&allow_prod, &["cluster.local/ns/prod"], &mesh));
    assert!(decide_for(
        &allow_prod,
        &["cluster.local/ns/prod/sa/x"],
        &mesh
    ));
}

/// Decides for a peer with `principals` (every SPIFFE SAN) under `trust_domains`.
fn decide_for(
    policies: &[AuthorizationPolicy],
    principals: &[&str],
    trust_domains: &TrustDomains,
) -> bool {
    let principals: Vec<Arc<str>> = principals.iter().map(|p| Arc::from(*p)).collect();
    let headers = HeaderMap::new();
    let r = req();
    let request = AuthzRequest {
        principals: &principals,
        trust_domains,
        source_namespace: None,
        source_ip: r.ip,
        destination_port: r.port,
        host: r.host,
        method: r.method,
        path: r.path,
        headers: &headers,
    };
    authorize(
        policies,
        "default",
        &reviews_labels(),
        DEFAULT_ROOT_NAMESPACE,
        &request,
    )
    .allowed
}

fn one_source(action: AuthzAction, source: AuthzSource) -> AuthorizationPolicy {
    policy(
        "p",
        action,
        vec![AuthzRule {
            from: Arc::from([source]),
            ..AuthzRule::default()
        }],
    )
}

#[test]
fn every_san_counts_for_principals_and_their_negation() {
    let td = TrustDomains::default();
    let good = "cluster.local/ns/default/sa/good";
    let bad = "spiffe://cluster.local/ns/default/sa/bad";
    let deny = [one_source(
        AuthzAction::Deny,
        principals(&["cluster.local/ns/default/sa/bad"]),
    )];
    assert!(decide_for(&deny, &[good], &td));
    assert!(
        !decide_for(&deny, &[good, bad], &td),
        "DENY on the second SAN"
    );
    let allow_not = [one_source(
        AuthzAction::Allow,
        not_principals(&["cluster.local/ns/default/sa/bad"]),
    )];
    assert!(decide_for(&allow_not, &[good], &td));
    assert!(
        !decide_for(&allow_not, &[good, bad], &td),
        "an innocent first SAN"
    );
    let deny_not = [one_source(AuthzAction::Deny, not_principals(&[good]))];
    assert!(
        decide_for(&deny_not, &[bad, good], &td),
        "any SAN is in the list"
    );
}

#[test]
fn foreign_trust_domains_are_no_namespace_unless_aliased() {
    let evil = "evil.example.org/ns/prod/sa/x";
    let allow_prod = [one_source(AuthzAction::Allow, namespaces(&["prod"]))];
    assert!(!decide_for(&allow_prod, &[evil], &TrustDomains::default()));
    assert!(decide_for(
        &allow_prod,
        &["cluster.local/ns/prod/sa/x"],
        &TrustDomains::default()
    ));
    let aliased = TrustDomains::new("cluster.local", ["evil.example.org"]).unwrap();
    assert!(decide_for(&allow_prod, &[evil], &aliased));
    let deny_not_prod = [one_source(AuthzAction::Deny, not_namespaces(&["prod"]))];
    assert!(!decide_for(
        &deny_not_prod,
        &[evil],
        &TrustDomains::default()
    ));
}

#[test]
fn principals_of_aliased_trust_domains_are_one() {
    // Istio's trust-domain migration: the policy names the old domain.
    let allow = [one_source(
        AuthzAction::Allow,
        principals(&["old-td/ns/default/sa/sleep"]),
    )];
    let migrated = TrustDomains::new("new-td", ["old-td"]).unwrap();
    let caller = ["new-td/ns/default/sa/sleep"];
    assert!(decide_for(&allow, &caller, &migrated));
    assert!(!decide_for(
        &allow,
        &caller,
        &TrustDomains::new("new-td", Vec::<&str>::new()).unwrap()
    ));
    // An alias does not make a foreign domain equal to the mesh's.
    assert!(!decide_for(
        &allow,
        &["other-td/ns/default/sa/sleep"],
        &migrated
    ));
    assert!(TrustDomains::new("a/b", Vec::<&str>::new()).is_err());
    assert!(TrustDomains::new("", Vec::<&str>::new()).is_err());
}

/// Istio: `cluster.local` as the trust domain of a policy principal points to the mesh's trust
/// domain and its aliases, whatever they are (istiod rewrites it so; the trust-domain migration
/// task recommends writing policies that way). A caller whose certificate literally says
/// `cluster.local` is then from a foreign trust domain.
#[test]
fn cluster_local_in_a_policy_principal_is_the_mesh_trust_domain() {
    let mesh = TrustDomains::new("new-td", Vec::<&str>::new()).unwrap();
    let deny = [one_source(
        AuthzAction::Deny,
        principals(&["cluster.local/ns/default/sa/sleep"]),
    )];
    assert!(
        !decide_for(&deny, &["new-td/ns/default/sa/sleep"], &mesh),
        "the mesh's own caller is denied"
    );
    let allow = [one_source(
        AuthzAction::Allow,
        principals(&["cluster.local/ns/default/*"]),
    )];
    assert!(decide_for(&allow, &["new-td/ns/default/sa/sleep"], &mesh));
    assert!(
        !decide_for(&allow, &["cluster.local/ns/default/sa/sleep"], &mesh),
        "a foreign `cluster.local` caller is not the mesh's"
    );
    // With aliases, every one of them.
    let migrated = TrustDomains::new("new-td", ["old-td"]).unwrap();
    assert!(decide_for(&allow, &["old-td/ns/default/sa/x"], &migrated));
    assert!(!decide_for(
        &allow,
        &["cluster.local/ns/default/sa/x"],
        &migrated
    ));
    // When `cluster.local` is the mesh's (or an alias), it is itself.
    let default = TrustDomains::default();
    assert!(decide_for(
        &allow,
        &["cluster.local/ns/default/sa/x"],
        &default
    ));
    assert!(!decide_for(&allow, &["new-td/ns/default/sa/x"], &default));
    // `notPrincipals` and `source.principal` read principals the same way.
    let deny_others = [one_source(
        AuthzAction::Deny,
        not_principals(&["cluster.local/ns/default/sa/sleep"]),
    )];
    assert!(decide_for(
        &deny_others,
        &["new-td/ns/default/sa/sleep"],
        &mesh
    ));
    assert!(!decide_for(
        &deny_others,
        &["cluster.local/ns/default/sa/sleep"],
        &mesh
    ));
}
