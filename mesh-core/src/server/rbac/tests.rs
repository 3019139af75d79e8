//! RBAC evaluation in the shapes istiod generates for proxyless servers.

use std::{net::IpAddr, sync::Arc};

use http::HeaderMap;

use super::*;
use crate::{
    matcher::{PathMatch, StringMatch},
    server::TrustDomains,
};

const REVIEWS: &str = "cluster.local/ns/default/sa/reviews";
const PRODUCTPAGE: &str = "cluster.local/ns/default/sa/productpage";

fn exact(s: &str) -> StringMatcher {
    StringMatcher::exact(s)
}

/// istiod's shape: `and_ids[or_ids[authenticated{principal_name}]]`.
fn from_principal(spiffe: &str) -> Principal {
    Principal::And(Arc::from([Principal::Or(Arc::from([
        Principal::Authenticated(Some(exact(spiffe))),
    ]))]))
}

/// istiod's shape for `to.operation.paths`: `and_rules[or_rules[url_path]]`.
fn to_path(path: &str) -> Permission {
    Permission::And(Arc::from([Permission::Or(Arc::from([
        Permission::UrlPath(PathMatcher::new(PathMatch::Exact(path.into()), false)),
    ]))]))
}

fn policy(name: &str, permissions: Vec<Permission>, principals: Vec<Principal>) -> RbacPolicy {
    RbacPolicy {
        name: name.into(),
        permissions: permissions.into(),
        principals: principals.into(),
    }
}

fn filter(action: RbacAction, policies: Vec<RbacPolicy>) -> RbacFilter {
    RbacFilter {
        name: "envoy.filters.http.rbac".into(),
        rules: Some(Rbac {
            action,
            policies: policies.into(),
            audit: AuditCondition::None,
        }),
        shadow_rules: None,
    }
}

struct Req {
    principal: Option<&'static str>,
    ip: Option<IpAddr>,
    path: &'static str,
    headers: HeaderMap,
}

impl Req {
    fn from(principal: Option<&'static str>, path: &'static str) -> Self {
        Self {
            principal,
            ip: Some([10, 0, 0, 7].into()),
            path,
            headers: HeaderMap::new(),
        }
    }

    fn judge(&self, filters: &[RbacFilter]) -> AuthzDecision {
        let principals: Vec<Arc<str>> = self.principal.into_iter().map(Arc::from).collect();
        authorize_rbac(
            filters,
            &AuthzRequest {
                principals: &principals,
                trust_domains: &TrustDomains::default(),
                source_namespace: None,
                source_ip: self.ip,
                destination_port: 9080,
                host: "ratings.default.svc.cluster.local:9080",
                method: "POST",
                path: self.path,
                headers: &self.headers,
            },
        )
    }
}

/// DENY productpage on /Ratings/Delete, then ALLOW reviews and productpage: istiod's pair.
fn deny_then_allow() -> Vec<RbacFilter> {
    vec![
        filter(
            RbacAction::Deny,
            vec![policy(
                "default-no-delete-0",
                vec![to_path("/ratings.Ratings/Delete")],
                vec![from_principal(&format!("spiffe://{PRODUCTPAGE}"))],
            )],
        ),
        filter(
            RbacAction::Allow,
            vec![policy(
                "default-callers-0",
                vec![Permission::And(Arc::from([Permission::Any]))],
                vec![Principal::Or(Arc::from([
                    from_principal(&format!("spiffe://{REVIEWS}")),
                    from_principal(&format!("spiffe://{PRODUCTPAGE}")),
                ]))],
            )],
        ),
    ]
}

#[test]
fn deny_is_decided_before_allow() {
    let filters = deny_then_allow();
    let denied = Req::from(Some(PRODUCTPAGE), "/ratings.Ratings/Delete").judge(&filters);
    assert!(!denied.allowed);
    assert_eq!(
        denied.reason,
        AuthzReason::Denied("default-no-delete-0".into())
    );
    let allowed = Req::from(Some(PRODUCTPAGE), "/ratings.Ratings/Get").judge(&filters);
    assert!(allowed.allowed);
    assert_eq!(
        allowed.reason,
        AuthzReason::Allowed("default-callers-0".into())
    );
    // Reviews may delete: the DENY names only productpage.
    assert!(
        Req::from(Some(REVIEWS), "/ratings.Ratings/Delete")
            .judge(&filters)
            .allowed
    );
}

#[test]
fn allow_denies_callers_no_policy_names_and_plaintext_peers() {
    let filters = deny_then_allow();
    let other = Req::from(Some("cluster.local/ns/default/sa/other"), "/x").judge(&filters);
    assert_eq!(
        (other.allowed, other.reason),
        (false, AuthzReason::NoAllowMatched)
    );
    assert!(!Req::from(None, "/x").judge(&filters).allowed, "plaintext");
}

#[test]
fn the_principal_is_matched_with_its_spiffe_scheme() {
    // istiod writes `spiffe://` into principal_name; a matcher without it must not match.
    let without_scheme = [filter(
        RbacAction::Allow,
        vec![policy(
            "p",
            vec![Permission::Any],
            vec![from_principal(REVIEWS)],
        )],
    )];
    assert!(
        !Req::from(Some(REVIEWS), "/x")
            .judge(&without_scheme)
            .allowed
    );
    // The peer may be given with or without the scheme.
    let with_scheme = [filter(
        RbacAction::Allow,
        vec![policy(
            "p",
            vec![Permission::Any],
            vec![from_principal(&format!("spiffe://{REVIEWS}"))],
        )],
    )];
    assert!(
        Req::from(Some("spiffe://cluster.local/ns/default/sa/reviews"), "/x")
            .judge(&with_scheme)
            .allowed
    );
}

#[test]
fn empty_rule_sets_follow_envoy() {
    let allow_nothing = [filter(RbacAction::Allow, vec![])];
    assert!(!Req::from(Some(REVIEWS), "/x").judge(&allow_nothing).allowed);
    let deny_nothing = [filter(RbacAction::Deny, vec![])];
    assert!(Req::from(Some(REVIEWS), "/x").judge(&deny_nothing).allowed);
    let no_rules = [RbacFilter {
        name: "f".into(),
        rules: None,
        shadow_rules: None,
    }];
    assert!(Req::from(None, "/x").judge(&no_rules).allowed);
}

#[test]
fn shadow_rules_report_but_never_deny() {
    let shadow = RbacFilter {
        name: "shadow-filter".into(),
        rules: None,
        shadow_rules: Some(Rbac {
            action: RbacAction::Deny,
            policies: Arc::from([policy(
                "default-dry-0",
                vec![Permission::Any],
                vec![Principal::Any],
            )]),
            audit: AuditCondition::None,
        }),
    };
    let decision = Req::from(None, "/x").judge(&[shadow]);
    assert!(decision.allowed);
    assert_eq!(decision.dry_run_denials, vec![Arc::from("default-dry-0")]);
    let shadow_allow = RbacFilter {
        name: "shadow-allow".into(),
        rules: None,
        shadow_rules: Some(Rbac {
            action: RbacAction::Allow,
            policies: Arc::from([]),
            audit: AuditCondition::None,
        }),
    };
    let decision = Req::from(None, "/x").judge(&[shadow_allow]);
    assert!(decision.allowed);
    assert_eq!(decision.dry_run_denials, vec![Arc::from("shadow-allow")]);
}

#[test]
fn not_rules_and_unknown_addresses_fail_closed() {
    // istiod's `notPrincipals` shape inside a DENY: not_id(or_ids(...)).
    let deny_not_reviews = [filter(
        RbacAction::Deny,
        vec![policy(
            "d",
            vec![Permission::Any],
            vec![Principal::Not(Arc::new(from_principal(&format!(
                "spiffe://{REVIEWS}"
            ))))],
        )],
    )];
    assert!(
        Req::from(Some(REVIEWS), "/x")
            .judge(&deny_not_reviews)
            .allowed
    );
    assert!(!Req::from(None, "/x").judge(&deny_not_reviews).allowed);

    // An IP rule with no known peer address: DENY denies, ALLOW does not allow.
    let block: IpNet = "10.0.0.0/8".parse().unwrap();
    let mut unknown = Req::from(Some(REVIEWS), "/x");
    unknown.ip = None;
    let deny_ip = [filter(
        RbacAction::Deny,
        vec![policy(
            "d",
            vec![Permission::Any],
            vec![Principal::Not(Arc::new(Principal::RemoteIp(block)))],
        )],
    )];
    assert!(!unknown.judge(&deny_ip).allowed);
    assert!(Req::from(Some(REVIEWS), "/x").judge(&deny_ip).allowed);
    let allow_ip = [filter(
        RbacAction::Allow,
        vec![policy(
            "a",
            vec![Permission::Any],
            vec![Principal::RemoteIp(block)],
        )],
    )];
    assert!(!unknown.judge(&allow_ip).allowed);
    assert!(Req::from(Some(REVIEWS), "/x").judge(&allow_ip).allowed);
    // The local address is never known here: a destination_ip rule cannot allow.
    let allow_dest = [filter(
        RbacAction::Allow,
        vec![policy(
            "a",
            vec![Permission::DestinationIp(block)],
            vec![Principal::Any],
        )],
    )];
    assert!(!Req::from(Some(REVIEWS), "/x").judge(&allow_dest).allowed);
}

/// The peer's address is compared as IPv4 when it is IPv4-mapped, so an IPv4-mapped block is
/// the IPv4 block it names: else a DENY on `::ffff:10.0.0.0/104` would catch nobody.
#[test]
fn ipv4_mapped_blocks_hold_the_ipv4_peers_they_name() {
    let mapped: IpNet = "::ffff:10.0.0.0/104".parse().unwrap();
    let deny_mapped = [filter(
        RbacAction::Deny,
        vec![policy(
            "d",
            vec![Permission::Any],
            vec![Principal::RemoteIp(mapped)],
        )],
    )];
    assert!(!Req::from(Some(REVIEWS), "/x").judge(&deny_mapped).allowed);
    let mut mapped_peer = Req::from(Some(REVIEWS), "/x");
    mapped_peer.ip = Some("::ffff:10.0.0.7".parse().unwrap());
    assert!(!mapped_peer.judge(&deny_mapped).allowed);
    let mut elsewhere = Req::from(Some(REVIEWS), "/x");
    elsewhere.ip = Some([192, 168, 0, 1].into());
    assert!(elsewhere.judge(&deny_mapped).allowed);
}

#[test]
fn headers_pseudo_headers_ports_and_metadata() {
    let header = |name: &str, value: &str| {
        RbacHeader::new(
            name,
            HeaderMatch::String(StringMatcher::new(StringMatch::Exact(value.into()), false)),
            false,
            false,
        )
        .unwrap()
    };
    let allow = |p: Permission| {
        [filter(
            RbacAction::Allow,
            vec![policy("a", vec![p], vec![Principal::Any])],
        )]
    };
    let req = {
        let mut r = Req::from(Some(REVIEWS), "/ratings.Ratings/Get?x=1");
        r.headers.insert("x-user", "alice".parse().unwrap());
        r.headers.append("x-multi", "a".parse().unwrap());
        r.headers.append("x-multi", "b".parse().unwrap());
        r.headers.insert("te", "trailers".parse().unwrap());
        r
    };
    for (p, expected) in [
        (Permission::Header(header(":method", "POST")), true),
        (Permission::Header(header(":method", "GET")), false),
        (
            Permission::Header(header("host", "ratings.default.svc.cluster.local:9080")),
            true,
        ),
        (
            Permission::Header(header(":path", "/ratings.Ratings/Get")),
            true,
        ),
        (Permission::Header(header("x-user", "alice")), true),
        (Permission::Header(header("x-multi", "a,b")), true),
        (Permission::Header(header("te", "trailers")), false),
        (
            Permission::DestinationPort {
                start: 9080,
                end: 9081,
            },
            true,
        ),
        (Permission::DestinationPort { start: 80, end: 81 }, false),
        (Permission::Metadata, false),
        (Permission::Not(Arc::new(Permission::Metadata)), true),
        (Permission::RequestedServerName(exact("")), true),
        (Permission::RequestedServerName(exact("ratings")), false),
    ] {
        assert_eq!(req.judge(&allow(p.clone())).allowed, expected, "{p:?}");
    }
    assert!(RbacHeader::new(":scheme", HeaderMatch::Present(true), false, false).is_err());
    assert!(RbacHeader::new("grpc-timeout", HeaderMatch::Present(true), false, false).is_err());
    // A missing header matches only "absent".
    let absent = RbacHeader::new("x-none", HeaderMatch::Present(true), true, false).unwrap();
    assert!(req.judge(&allow(Permission::Header(absent))).allowed);
}

#[test]
fn authenticated_without_a_name_is_any_mtls_peer() {
    let allow = [filter(
        RbacAction::Allow,
        vec![policy(
            "a",
            vec![Permission::Any],
            vec![Principal::Authenticated(None)],
        )],
    )];
    assert!(Req::from(Some(REVIEWS), "/x").judge(&allow).allowed);
    assert!(!Req::from(None, "/x").judge(&allow).allowed);
}

/// gRFC A59's table for a DENY then an ALLOW RBAC audited "on deny and allow": the DENY RBAC
/// logs its denials, the ALLOW RBAC both; each request is logged once, by the RBAC that
/// decided it.
#[test]
fn audit_conditions_log_each_rbacs_own_decision() {
    let audited = |action, policies, audit| RbacFilter {
        name: format!("{action:?}").into(),
        rules: Some(Rbac {
            action,
            policies: Arc::from(policies),
            audit,
        }),
        shadow_rules: None,
    };
    let filters = [
        audited(
            RbacAction::Deny,
            vec![policy(
                "no-delete",
                vec![to_path("/Delete")],
                vec![Principal::Any],
            )],
            AuditCondition::OnDeny,
        ),
        audited(
            RbacAction::Allow,
            vec![policy(
                "only-get",
                vec![to_path("/Get")],
                vec![Principal::Any],
            )],
            AuditCondition::OnDenyAndAllow,
        ),
    ];
    let audits = |p| Req::from(None, p).judge(&filters).rbac_audits;
    let entry = |filter: &str, rule: Option<&str>, authorized| RbacAudit {
        filter: filter.into(),
        matched_rule: rule.map(Arc::from),
        authorized,
    };
    assert_eq!(audits("/Delete"), [entry("Deny", Some("no-delete"), false)]);
    assert_eq!(audits("/Get"), [entry("Allow", Some("only-get"), true)]);
    assert_eq!(audits("/Put"), [entry("Allow", None, false)]);

    // ON_ALLOW on a DENY RBAC logs what passes it, matched by nothing.
    let deny_on_allow = [audited(
        RbacAction::Deny,
        vec![policy(
            "no-delete",
            vec![to_path("/Delete")],
            vec![Principal::Any],
        )],
        AuditCondition::OnAllow,
    )];
    let decision = Req::from(None, "/Get").judge(&deny_on_allow);
    assert_eq!(decision.rbac_audits, [entry("Deny", None, true)]);
    assert!(
        Req::from(None, "/Delete")
            .judge(&deny_on_allow)
            .rbac_audits
            .is_empty()
    );
}
