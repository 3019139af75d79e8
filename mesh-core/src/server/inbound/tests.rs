#![allow(clippy::unwrap_used)]

use std::{net::SocketAddr, sync::Arc};

use super::*;

fn chain(name: &str) -> InboundChain {
    InboundChain {
        name: name.into(),
        mtls: MtlsMode::Disable,
        rbac: Arc::from([]),
    }
}

fn nets(list: &[&str]) -> Arc<[IpNet]> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The name of the chain a connection from `remote` to `local` gets.
fn chosen(l: &InboundListener, local: &str, remote: &str) -> Option<String> {
    l.select(addr(local), addr(remote))
        .map(|c| c.name.to_string())
}

#[test]
fn one_chain_without_a_match_takes_every_connection() {
    let l = InboundListener::single("l", chain("only"));
    assert_eq!(
        chosen(&l, "10.0.0.1:80", "10.0.0.2:5000").as_deref(),
        Some("only")
    );
    assert_eq!(
        chosen(&l, "[::1]:80", "[::1]:5000").as_deref(),
        Some("only")
    );
    assert_eq!(
        l.chain_for_every_connection().unwrap().name.as_ref(),
        "only"
    );
}

#[test]
fn the_longest_destination_prefix_wins_then_the_default() {
    let l = InboundListener::new(
        "l",
        vec![
            (
                FilterChainMatch {
                    prefix_ranges: nets(&["10.0.0.0/8"]),
                    ..Default::default()
                },
                chain("wide"),
            ),
            (
                FilterChainMatch {
                    prefix_ranges: nets(&["10.1.0.0/16"]),
                    ..Default::default()
                },
                chain("narrow"),
            ),
        ],
        Some(chain("default")),
    )
    .unwrap();
    assert_eq!(
        chosen(&l, "10.1.2.3:80", "1.1.1.1:1").as_deref(),
        Some("narrow")
    );
    assert_eq!(
        chosen(&l, "10.2.2.3:80", "1.1.1.1:1").as_deref(),
        Some("wide")
    );
    assert_eq!(
        chosen(&l, "192.168.0.1:80", "1.1.1.1:1").as_deref(),
        Some("default")
    );
    assert!(l.chain_for_every_connection().is_none());
}

#[test]
fn an_unset_prefix_is_less_specific_than_slash_zero_which_keeps_its_family() {
    let l = InboundListener::new(
        "l",
        vec![
            (FilterChainMatch::default(), chain("unset")),
            (
                FilterChainMatch {
                    prefix_ranges: nets(&["0.0.0.0/0"]),
                    ..Default::default()
                },
                chain("v4"),
            ),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        chosen(&l, "10.0.0.1:80", "10.0.0.2:1").as_deref(),
        Some("v4")
    );
    assert_eq!(
        chosen(&l, "[2001:db8::1]:80", "[2001:db8::2]:1").as_deref(),
        Some("unset")
    );
}

#[test]
fn later_stages_narrow_within_the_earlier_stage_and_fall_to_the_default() {
    // The destination stage keeps only `narrow`; its source port does not match, so the
    // default is chosen, not the less specific destination's chain.
    let l = InboundListener::new(
        "l",
        vec![
            (FilterChainMatch::default(), chain("any")),
            (
                FilterChainMatch {
                    prefix_ranges: nets(&["10.0.0.0/8"]),
                    source_ports: Arc::from([7]),
                    ..Default::default()
                },
                chain("narrow"),
            ),
        ],
        Some(chain("default")),
    )
    .unwrap();
    assert_eq!(
        chosen(&l, "10.0.0.1:80", "10.0.0.2:7").as_deref(),
        Some("narrow")
    );
    assert_eq!(
        chosen(&l, "10.0.0.1:80", "10.0.0.2:8").as_deref(),
        Some("default")
    );
    assert_eq!(
        chosen(&l, "11.0.0.1:80", "10.0.0.2:8").as_deref(),
        Some("any")
    );
}

#[test]
fn source_type_exact_before_any_and_loopback_or_same_ip_is_local() {
    let typed = |t| FilterChainMatch {
        source_type: t,
        ..Default::default()
    };
    let l = InboundListener::new(
        "l",
        vec![
            (typed(SourceType::Any), chain("any")),
            (typed(SourceType::SameIpOrLoopback), chain("local")),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        chosen(&l, "10.0.0.1:80", "127.0.0.1:1").as_deref(),
        Some("local")
    );
    assert_eq!(
        chosen(&l, "10.0.0.1:80", "10.0.0.1:1").as_deref(),
        Some("local")
    );
    assert_eq!(
        chosen(&l, "10.0.0.1:80", "10.0.0.2:1").as_deref(),
        Some("any")
    );

    let external =
        InboundListener::new("l", vec![(typed(SourceType::External), chain("ext"))], None).unwrap();
    assert_eq!(
        chosen(&external, "10.0.0.1:80", "10.0.0.2:1").as_deref(),
        Some("ext")
    );
    assert_eq!(
        chosen(&external, "10.0.0.1:80", "127.0.0.1:1"),
        None,
        "no default: closed"
    );
}

#[test]
fn the_longest_source_prefix_then_the_exact_source_port() {
    let l = InboundListener::new(
        "l",
        vec![
            (
                FilterChainMatch {
                    source_prefix_ranges: nets(&["10.0.0.0/8"]),
                    ..Default::default()
                },
                chain("wide"),
            ),
            (
                FilterChainMatch {
                    source_prefix_ranges: nets(&["10.9.0.0/16"]),
                    ..Default::default()
                },
                chain("narrow"),
            ),
            (
                FilterChainMatch {
                    source_prefix_ranges: nets(&["10.9.0.0/16"]),
                    source_ports: Arc::from([4000, 4001]),
                    ..Default::default()
                },
                chain("port"),
            ),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        chosen(&l, "1.1.1.1:80", "10.1.0.1:1").as_deref(),
        Some("wide")
    );
    assert_eq!(
        chosen(&l, "1.1.1.1:80", "10.9.0.1:1").as_deref(),
        Some("narrow")
    );
    assert_eq!(
        chosen(&l, "1.1.1.1:80", "10.9.0.1:4001").as_deref(),
        Some("port")
    );
    assert_eq!(chosen(&l, "1.1.1.1:80", "11.0.0.1:1"), None);
}

#[test]
fn raw_buffer_before_unset_and_other_protocols_and_tls_inspection_fields_never_match() {
    let l = InboundListener::new(
        "l",
        vec![
            (
                FilterChainMatch {
                    transport_protocol: "tls".into(),
                    ..Default::default()
                },
                chain("tls"),
            ),
            (FilterChainMatch::default(), chain("unset")),
            (
                FilterChainMatch {
                    transport_protocol: "raw_buffer".into(),
                    ..Default::default()
                },
                chain("raw"),
            ),
            (
                FilterChainMatch {
                    transport_protocol: "raw_buffer".into(),
                    server_names: Arc::from([Arc::from("example.com")]),
                    ..Default::default()
                },
                chain("sni"),
            ),
            (
                FilterChainMatch {
                    transport_protocol: "raw_buffer".into(),
                    destination_port: Some(80),
                    ..Default::default()
                },
                chain("port"),
            ),
        ],
        None,
    )
    .unwrap();
    assert_eq!(
        chosen(&l, "10.0.0.1:80", "10.0.0.2:1").as_deref(),
        Some("raw")
    );

    let never = InboundListener::new(
        "l",
        vec![(
            FilterChainMatch {
                application_protocols: Arc::from([Arc::from("h2")]),
                ..Default::default()
            },
            chain("alpn"),
        )],
        Some(chain("default")),
    )
    .unwrap();
    assert_eq!(
        chosen(&never, "10.0.0.1:80", "10.0.0.2:1").as_deref(),
        Some("default")
    );
    assert_eq!(
        never.chain_for_every_connection().unwrap().name.as_ref(),
        "default"
    );
}

#[test]
fn no_usable_chain_and_no_default_is_refused() {
    let e = InboundListener::new(
        "l",
        vec![(
            FilterChainMatch {
                transport_protocol: "tls".into(),
                ..Default::default()
            },
            chain("tls"),
        )],
        None,
    )
    .unwrap_err();
    assert!(e.message().contains("no filter chain"), "{e}");
}

#[test]
fn equal_matches_once_normalized_are_refused_even_where_they_never_match() {
    // 10.1.2.3/16 is 10.1.0.0/16; the second chain's product contains the first's match.
    let dup = InboundListener::new(
        "l",
        vec![
            (
                FilterChainMatch {
                    prefix_ranges: nets(&["10.1.0.0/16"]),
                    source_type: SourceType::External,
                    ..Default::default()
                },
                chain("a"),
            ),
            (
                FilterChainMatch {
                    prefix_ranges: nets(&["192.168.0.0/24", "10.1.2.3/16"]),
                    source_type: SourceType::External,
                    ..Default::default()
                },
                chain("b"),
            ),
        ],
        None,
    );
    assert!(dup.unwrap_err().message().contains("filter chain 1"));

    let tls = |name| {
        (
            FilterChainMatch {
                transport_protocol: "tls".into(),
                ..Default::default()
            },
            chain(name),
        )
    };
    assert!(
        InboundListener::new("l", vec![tls("a"), tls("b")], Some(chain("d"))).is_err(),
        "never-matching duplicates are still ambiguous (A36)"
    );
    let twice = FilterChainMatch {
        source_ports: Arc::from([9, 9]),
        ..Default::default()
    };
    assert!(InboundListener::new("l", vec![(twice, chain("a"))], None).is_err());
    // Different source types are different matches.
    let typed = |t| FilterChainMatch {
        source_type: t,
        ..Default::default()
    };
    assert!(
        InboundListener::new(
            "l",
            vec![
                (typed(SourceType::External), chain("a")),
                (typed(SourceType::SameIpOrLoopback), chain("b")),
            ],
            None
        )
        .is_ok()
    );
}

#[test]
fn ipv4_mapped_addresses_match_as_ipv4() {
    let l = InboundListener::new(
        "l",
        vec![(
            FilterChainMatch {
                source_prefix_ranges: nets(&["10.0.0.0/8"]),
                ..Default::default()
            },
            chain("v4"),
        )],
        None,
    )
    .unwrap();
    assert_eq!(
        chosen(&l, "[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.2]:1").as_deref(),
        Some("v4")
    );
}

#[test]
fn the_summary_mode_says_permissive_when_chains_differ() {
    let strict = InboundChain {
        mtls: MtlsMode::Strict,
        ..chain("mtls")
    };
    assert_eq!(
        InboundListener::single("l", strict.clone()).mtls_summary(),
        MtlsMode::Strict
    );
    let mixed = InboundListener::new(
        "l",
        vec![(
            FilterChainMatch {
                source_type: SourceType::SameIpOrLoopback,
                ..Default::default()
            },
            chain("plain"),
        )],
        Some(strict),
    )
    .unwrap();
    assert_eq!(mixed.mtls_summary(), MtlsMode::Permissive);
}
