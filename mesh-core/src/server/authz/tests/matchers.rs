//! Each rule field against the request head, the peer and the conditions: principals,
//! namespaces, IP blocks, hosts, ports, methods, paths, headers and `when` keys.

use super::*;

#[test]
fn sources_match_identities_and_addresses() {
    let allow_from = |source| vec![allow("allow", vec![from(source)])];
    check(vec![
        (
            "principal exact",
            allow_from(principals(&[PRODUCTPAGE])),
            req(),
            ALLOWED,
        ),
        (
            "principal exact, other caller",
            allow_from(principals(&["cluster.local/ns/default/sa/ratings"])),
            req(),
            DENIED,
        ),
        (
            "principal prefix",
            allow_from(principals(&["cluster.local/ns/default/*"])),
            req(),
            ALLOWED,
        ),
        (
            "principal suffix",
            allow_from(principals(&["*/sa/productpage"])),
            req(),
            ALLOWED,
        ),
        (
            "principal `*` needs an identity",
            allow_from(principals(&["*"])),
            req().principal(None),
            DENIED,
        ),
        (
            "principal `*` with mTLS",
            allow_from(principals(&["*"])),
            req(),
            ALLOWED,
        ),
        (
            "a spiffe:// prefix on the peer identity is tolerated",
            allow_from(principals(&[PRODUCTPAGE])),
            req().principal(Some("spiffe://cluster.local/ns/default/sa/productpage")),
            ALLOWED,
        ),
        (
            "namespace derived from the principal",
            allow_from(namespaces(&["default"])),
            req(),
            ALLOWED,
        ),
        (
            "namespace given explicitly",
            allow_from(namespaces(&["prod"])),
            req().namespace("prod"),
            ALLOWED,
        ),
        (
            "namespace of another caller",
            allow_from(namespaces(&["prod"])),
            req(),
            DENIED,
        ),
        (
            "a namespace without a principal is not trusted",
            allow_from(namespaces(&["default"])),
            req().principal(None).namespace("default"),
            DENIED,
        ),
        (
            "notNamespaces excludes",
            allow_from(not_namespaces(&["default"])),
            req(),
            DENIED,
        ),
        (
            "notPrincipals excludes",
            allow_from(not_principals(&["*/sa/productpage"])),
            req(),
            DENIED,
        ),
        (
            "notPrincipals lets other callers in",
            allow_from(not_principals(&["*/sa/ratings"])),
            req(),
            ALLOWED,
        ),
        (
            "plaintext is not in any notPrincipals list (ALLOW)",
            allow_from(not_principals(&["*/sa/ratings"])),
            req().principal(None),
            ALLOWED,
        ),
        (
            "DENY notPrincipals [*] rejects plaintext",
            vec![deny("require-mtls", vec![from(not_principals(&["*"]))])],
            req().principal(None),
            DENIED,
        ),
        (
            "DENY notPrincipals [*] lets mTLS through",
            vec![deny("require-mtls", vec![from(not_principals(&["*"]))])],
            req(),
            ALLOWED,
        ),
        (
            "ipBlocks contains",
            allow_from(ip_blocks(&["10.0.0.0/8"])),
            req(),
            ALLOWED,
        ),
        (
            "ipBlocks single address",
            allow_from(ip_blocks(&["10.0.0.6/32"])),
            req(),
            DENIED,
        ),
        (
            "ipBlocks compares IPv4-mapped IPv6 peers as IPv4",
            allow_from(ip_blocks(&["10.0.0.0/8"])),
            req().ip(Some(ip("::ffff:10.0.0.5"))),
            ALLOWED,
        ),
        (
            "an IPv4-mapped block in DENY ipBlocks catches the IPv4 peer it names",
            vec![deny(
                "no-ten",
                vec![from(ip_blocks(&["::ffff:10.0.0.0/104"]))],
            )],
            req(),
            DENIED,
        ),
        (
            "an IPv4-mapped block in notIpBlocks excludes the IPv4 peer it names",
            allow_from(not_ip_blocks(&["::ffff:10.0.0.5/128"])),
            req(),
            DENIED,
        ),
        (
            "notIpBlocks excludes",
            allow_from(not_ip_blocks(&["10.0.0.0/24"])),
            req(),
            DENIED,
        ),
        (
            "notIpBlocks lets others in",
            allow_from(not_ip_blocks(&["192.168.0.0/16"])),
            req(),
            ALLOWED,
        ),
        (
            "a source needs all of its fields",
            allow_from(AuthzSource {
                principals: strings(&[PRODUCTPAGE]),
                ip_blocks: nets(&["192.168.0.0/16"]),
                ..AuthzSource::default()
            }),
            req(),
            DENIED,
        ),
        (
            "a from list needs any of its sources",
            vec![allow(
                "allow",
                vec![AuthzRule {
                    from: Arc::from([ip_blocks(&["192.168.0.0/16"]), principals(&["*"])]),
                    ..AuthzRule::default()
                }],
            )],
            req(),
            ALLOWED,
        ),
    ]);
}

#[test]
fn operations_match_the_request_head() {
    let allow_to = |operation| vec![allow("allow", vec![to(operation)])];
    check(vec![
        (
            "method",
            allow_to(methods(&["GET", "HEAD"])),
            req(),
            ALLOWED,
        ),
        (
            "methods are case-sensitive",
            allow_to(methods(&["get"])),
            req(),
            DENIED,
        ),
        ("notMethods", allow_to(not_methods(&["GET"])), req(), DENIED),
        (
            "path exact",
            allow_to(paths(&["/api/v1/reviews"])),
            req(),
            ALLOWED,
        ),
        ("path prefix", allow_to(paths(&["/api/*"])), req(), ALLOWED),
        (
            "path suffix",
            allow_to(paths(&["*/reviews"])),
            req(),
            ALLOWED,
        ),
        ("path other", allow_to(paths(&["/admin"])), req(), DENIED),
        (
            "notPaths",
            allow_to(not_paths(&["/api/v1/*"])),
            req(),
            DENIED,
        ),
        (
            "a query string cannot dodge a path rule",
            vec![deny("deny-admin", vec![to(paths(&["/admin"]))])],
            req().path("/admin?debug=1"),
            DENIED,
        ),
        (
            "gRPC method by path",
            allow_to(AuthzOperation {
                methods: strings(&["POST"]),
                paths: strings(&["/reviews.v1.Reviews/Get*"]),
                ..AuthzOperation::default()
            }),
            req().grpc("/reviews.v1.Reviews/GetReview"),
            ALLOWED,
        ),
        (
            "gRPC whole service by prefix, other service",
            allow_to(paths(&["/reviews.v1.Reviews/*"])),
            req().grpc("/ratings.v1.Ratings/Rate"),
            DENIED,
        ),
        ("port", allow_to(ports(&[9080])), req(), ALLOWED),
        (
            "port other",
            allow_to(ports(&[8080])),
            req().port(9090),
            DENIED,
        ),
        ("notPorts", allow_to(not_ports(&[9080])), req(), DENIED),
        (
            "notPorts other",
            allow_to(not_ports(&[15090])),
            req(),
            ALLOWED,
        ),
        (
            "host exact, any case",
            allow_to(hosts(&["Reviews.default.svc.cluster.local"])),
            req(),
            ALLOWED,
        ),
        (
            "host suffix",
            allow_to(hosts(&["*.svc.cluster.local"])),
            req(),
            ALLOWED,
        ),
        (
            "host prefix",
            allow_to(hosts(&["REVIEWS.*"])),
            req(),
            ALLOWED,
        ),
        ("host other", allow_to(hosts(&["ratings.*"])), req(), DENIED),
        (
            "notHosts",
            allow_to(not_hosts(&["reviews*"])),
            req(),
            DENIED,
        ),
        (
            "notHosts other",
            allow_to(not_hosts(&["ratings*"])),
            req().host("Reviews"),
            ALLOWED,
        ),
        (
            "an operation needs all of its fields",
            allow_to(AuthzOperation {
                methods: strings(&["GET"]),
                not_paths: strings(&["/api/*"]),
                ..AuthzOperation::default()
            }),
            req(),
            DENIED,
        ),
    ]);
}

#[test]
fn conditions_all_must_hold() {
    let allow_when = |rule| vec![allow("allow", vec![rule])];
    let v1_and_internal = AuthzRule {
        when: Arc::from([
            AuthzCondition {
                key: header("x-version"),
                values: strings(&["v1"]),
                not_values: Arc::default(),
            },
            AuthzCondition {
                key: ConditionKey::SourceIp,
                values: strings(&["10.0.0.0/8"]),
                not_values: Arc::default(),
            },
        ]),
        ..AuthzRule::default()
    };
    check(vec![
        (
            "header value",
            allow_when(when(header("x-user"), &["alice"], &[])),
            req().header("x-user", "alice"),
            ALLOWED,
        ),
        (
            "header names are case-insensitive",
            allow_when(when(
                ConditionKey::RequestHeader(HeaderName::from_bytes(b"X-User").unwrap()),
                &["alice"],
                &[],
            )),
            req().header("x-user", "alice"),
            ALLOWED,
        ),
        (
            "header value prefix",
            allow_when(when(header("x-user"), &["al*"], &[])),
            req().header("x-user", "alice"),
            ALLOWED,
        ),
        (
            "missing header does not match values",
            allow_when(when(header("x-user"), &["*"], &[])),
            req(),
            DENIED,
        ),
        (
            "`*` means present, even with an empty value",
            allow_when(when(header("x-user"), &["*"], &[])),
            req().header("x-user", ""),
            ALLOWED,
        ),
        (
            "missing header is not in notValues",
            allow_when(when(header("x-user"), &[], &["mallory"])),
            req(),
            ALLOWED,
        ),
        (
            "header notValues",
            allow_when(when(header("x-user"), &[], &["mallory"])),
            req().header("x-user", "mallory"),
            DENIED,
        ),
        (
            "repeated header values are joined with commas",
            allow_when(when(header("x-user"), &["alice,bob"], &[])),
            req().header("x-user", "alice").header("x-user", "bob"),
            ALLOWED,
        ),
        (
            "source.ip CIDR",
            allow_when(when(ConditionKey::SourceIp, &["10.0.0.0/16"], &[])),
            req(),
            ALLOWED,
        ),
        (
            "source.ip single address",
            allow_when(when(ConditionKey::SourceIp, &["10.0.0.5"], &[])),
            req(),
            ALLOWED,
        ),
        (
            "source.ip notValues",
            allow_when(when(ConditionKey::SourceIp, &[], &["10.0.0.5"])),
            req(),
            DENIED,
        ),
        (
            "source.principal and source.namespace",
            allow_when(AuthzRule {
                when: Arc::from([
                    AuthzCondition {
                        key: ConditionKey::SourcePrincipal,
                        values: strings(&["*/sa/productpage"]),
                        not_values: Arc::default(),
                    },
                    AuthzCondition {
                        key: ConditionKey::SourceNamespace,
                        values: strings(&["default"]),
                        not_values: Arc::default(),
                    },
                ]),
                ..AuthzRule::default()
            }),
            req(),
            ALLOWED,
        ),
        (
            "destination.port numerically",
            allow_when(when(ConditionKey::DestinationPort, &["9080"], &[])),
            req(),
            ALLOWED,
        ),
        (
            "all conditions: both hold",
            allow_when(v1_and_internal.clone()),
            req().header("x-version", "v1"),
            ALLOWED,
        ),
        (
            "all conditions: one fails",
            allow_when(v1_and_internal),
            req().header("x-version", "v1").ip(Some(ip("192.168.1.1"))),
            DENIED,
        ),
    ]);
}
