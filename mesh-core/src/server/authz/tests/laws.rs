//! Laws over random policy sets and requests drawn from a small vocabulary, so that matches
//! and misses are both common.

use proptest::{collection::vec, option, prelude::*, sample::select};

use super::*;

fn istio_strings(vocab: &'static [&'static str]) -> impl Strategy<Value = Arc<[IstioString]>> {
    vec(select(vocab), 0..3).prop_map(|v| strings(&v))
}

fn ip_nets() -> impl Strategy<Value = Arc<[IpNet]>> {
    vec(
        select(&["10.0.0.0/8", "10.0.0.5/32", "192.168.0.0/16"][..]),
        0..2,
    )
    .prop_map(|v| nets(&v))
}

fn source() -> impl Strategy<Value = AuthzSource> {
    const PRINCIPALS: &[&str] = &["*", PRODUCTPAGE, "*/sa/ratings", "cluster.local/ns/prod/*"];
    const NAMESPACES: &[&str] = &["default", "prod", "*"];
    (
        istio_strings(PRINCIPALS),
        istio_strings(PRINCIPALS),
        istio_strings(NAMESPACES),
        istio_strings(NAMESPACES),
        ip_nets(),
        ip_nets(),
    )
        .prop_map(|(p, np, n, nn, ips, nips)| AuthzSource {
            principals: p,
            not_principals: np,
            namespaces: n,
            not_namespaces: nn,
            ip_blocks: ips,
            not_ip_blocks: nips,
        })
}

fn operation() -> impl Strategy<Value = AuthzOperation> {
    const METHODS: &[&str] = &["GET", "POST"];
    const PATHS: &[&str] = &["/a", "/b/*", "*/c"];
    let ports = || vec(select(&[80u16, 9080][..]), 0..2).prop_map(Arc::from);
    (
        istio_strings(METHODS),
        istio_strings(METHODS),
        istio_strings(PATHS),
        istio_strings(PATHS),
        ports(),
        ports(),
    )
        .prop_map(|(m, nm, p, np, po, npo)| AuthzOperation {
            methods: m,
            not_methods: nm,
            paths: p,
            not_paths: np,
            ports: po,
            not_ports: npo,
            ..AuthzOperation::default()
        })
}

fn condition() -> impl Strategy<Value = AuthzCondition> {
    let key = select(vec![
        header("x-user"),
        ConditionKey::SourceIp,
        ConditionKey::SourcePrincipal,
        ConditionKey::DestinationPort,
    ]);
    const VALUES: &[&str] = &["alice", "10.0.0.0/8", "9080", "*", PRODUCTPAGE];
    (key, istio_strings(VALUES), istio_strings(VALUES)).prop_map(|(key, values, not_values)| {
        AuthzCondition {
            key,
            values,
            not_values,
        }
    })
}

fn rule() -> impl Strategy<Value = AuthzRule> {
    (
        vec(source(), 0..2),
        vec(operation(), 0..2),
        vec(condition(), 0..2),
    )
        .prop_map(|(from, to, when)| AuthzRule {
            from: from.into(),
            to: to.into(),
            when: when.into(),
        })
}

fn any_policy() -> impl Strategy<Value = AuthorizationPolicy> {
    let action = select(&[AuthzAction::Allow, AuthzAction::Deny, AuthzAction::Audit][..]);
    let namespace = select(&["default", "prod", DEFAULT_ROOT_NAMESPACE][..]);
    let selector = option::of(select(&["reviews", "ratings"][..]));
    (
        action,
        namespace,
        selector,
        vec(rule(), 0..3),
        proptest::bool::ANY,
    )
        .prop_map(|(action, namespace, selector, rules, dry_run)| {
            let p = policy("p", action, rules).in_namespace(namespace);
            let p = match selector {
                Some(app) => p.selector(&[("app", app)]),
                None => p,
            };
            if dry_run { p.dry_run() } else { p }
        })
}

/// Policies with distinct names, so dry-run denials can be traced back.
fn policies() -> impl Strategy<Value = Vec<AuthorizationPolicy>> {
    vec(any_policy(), 0..5).prop_map(|ps| {
        ps.into_iter()
            .enumerate()
            .map(|(i, mut p)| {
                p.name = format!("p{i}").into();
                p
            })
            .collect()
    })
}

fn request() -> impl Strategy<Value = Req> {
    (
        select(
            &[
                Some(PRODUCTPAGE),
                Some("cluster.local/ns/prod/sa/ratings"),
                None,
            ][..],
        ),
        option::of(select(&["10.0.0.5", "192.168.1.1"][..])),
        select(&["GET", "POST"][..]),
        select(&["/a", "/b/c", "/d"][..]),
        select(&[80u16, 9080][..]),
        option::of(select(&["alice", "bob"][..])),
    )
        .prop_map(|(principal, source_ip, method, path, port, user)| {
            let r = req()
                .principal(principal)
                .ip(source_ip.map(ip))
                .method(method)
                .path(path)
                .port(port);
            match user {
                Some(user) => r.header("x-user", user),
                None => r,
            }
        })
}

proptest! {
    /// Dry-run policies never change the verdict.
    #[test]
    fn dry_run_policies_never_decide(ps in policies(), r in request()) {
        let enforced: Vec<_> = ps.iter().filter(|p| !p.dry_run).cloned().collect();
        prop_assert_eq!(decide(&ps, &r).allowed, decide(&enforced, &r).allowed);
    }

    /// A recorded dry-run policy denies once enforced; an unrecorded one, once enforced,
    /// never denies a request that was allowed.
    #[test]
    fn dry_run_denials_predict_enforcement(ps in policies(), r in request()) {
        let decision = decide(&ps, &r);
        for (i, p) in ps.iter().enumerate().filter(|(_, p)| p.dry_run) {
            let mut enforced = ps.clone();
            enforced[i].dry_run = false;
            let after = decide(&enforced, &r).allowed;
            if decision.dry_run_denials.contains(&p.name) {
                prop_assert!(!after, "{} was recorded but allows once enforced", p.name);
            } else if p.action != AuthzAction::Audit {
                prop_assert!(!decision.allowed || after, "{} denies once enforced", p.name);
            }
        }
    }

    /// Not knowing the source IP never lets through what some known IP would not:
    /// indeterminate conditions fail closed.
    #[test]
    fn an_unknown_source_ip_fails_closed(ps in policies(), r in request()) {
        if decide(&ps, &r.clone().ip(None)).allowed {
            for known in ["10.0.0.5", "192.168.1.1"] {
                prop_assert!(decide(&ps, &r.clone().ip(Some(ip(known)))).allowed);
            }
        }
    }

    /// A DENY policy that matches every request of the workload always denies.
    #[test]
    fn a_deny_all_policy_always_denies(ps in policies(), r in request()) {
        let mut ps = ps;
        ps.push(deny("deny-all", vec![any_request()]));
        prop_assert!(!decide(&ps, &r).allowed);
    }
}
