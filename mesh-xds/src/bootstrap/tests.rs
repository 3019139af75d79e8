#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

const ISTIO_AGENT: &str = include_str!("../../tests/fixtures/istio-agent-bootstrap.json");

fn invalid(json: &str) -> (String, String) {
    match Bootstrap::from_json(json) {
        Err(BootstrapError::Invalid { field, message }) => (field, message),
        other => panic!("expected an invalid bootstrap, got {other:?}"),
    }
}

#[test]
fn the_bootstrap_istio_agent_writes_loads_as_is() {
    let b = Bootstrap::from_json(ISTIO_AGENT).unwrap();
    assert_eq!(b.xds_servers.len(), 1);
    assert_eq!(b.xds_servers[0].server_uri, "unix:///etc/istio/proxy/XDS");
    assert_eq!(b.xds_servers[0].channel_creds, ChannelCreds::Insecure);
    assert_eq!(b.xds_servers[0].server_features, ["xds_v3"]);
    assert!(b.node.id.starts_with("sidecar~10.244.0.36~reviews-v1"));
    assert_eq!(b.node.locality, Some(NodeLocality::default()));
    assert_eq!(b.node.metadata["GENERATOR"], "grpc");
    assert_eq!(
        b.certificate_providers["default"],
        CertificateProvider::FileWatcher(FileWatcherConfig {
            certificate_file: Some("/var/lib/istio/data/cert-chain.pem".into()),
            private_key_file: Some("/var/lib/istio/data/key.pem".into()),
            ca_certificate_file: Some("/var/lib/istio/data/root-cert.pem".into()),
            refresh_interval: Duration::from_secs(900),
        })
    );
    assert_eq!(
        b.server_listener_resource_name_template.as_deref(),
        Some("xds.istio.io/grpc/lds/inbound/%s")
    );
    assert_eq!(b.client_default_listener_resource_name_template, "%s");
    // `UserAgentVersionType: null` sits inside `node`, which gRPC parses leniently too.
    assert!(b.unsupported.is_empty(), "{:?}", b.unsupported);
    assert_eq!(
        b.client_listener_name("reviews.default.svc.cluster.local:9080"),
        "reviews.default.svc.cluster.local:9080"
    );
}

#[test]
fn node_metadata_is_sent_as_a_struct() {
    let b = Bootstrap::from_json(ISTIO_AGENT).unwrap();
    let node = b.node.to_proto();
    let md = node.metadata.unwrap();
    assert_eq!(
        md.fields["GENERATOR"].kind,
        Some(Kind::StringValue("grpc".into()))
    );
    assert_eq!(
        md.fields["ENVOY_STATUS_PORT"].kind,
        Some(Kind::NumberValue(15021.0))
    );
    let Some(Kind::StructValue(labels)) = &md.fields["LABELS"].kind else {
        panic!("LABELS is not a struct");
    };
    assert_eq!(
        labels.fields["version"].kind,
        Some(Kind::StringValue("v1".into()))
    );
    assert_eq!(node.user_agent_name, "mesh-xds");
}

#[test]
fn the_first_supported_channel_creds_wins() {
    let b = Bootstrap::from_json(
        r#"{"xds_servers": [
            {"server_uri": "a:1", "channel_creds": [{"type": "google_default"}, {"type": "tls"}, {"type": "insecure"}]},
            {"server_uri": "b:1", "channel_creds": [{"type": "insecure"}]}
        ]}"#,
    )
    .unwrap();
    assert_eq!(b.xds_servers[0].channel_creds, ChannelCreds::Tls);
    assert_eq!(b.xds_servers[1].channel_creds, ChannelCreds::Insecure);
    assert_eq!(b.node, Node::default());
}

#[test]
fn errors_name_the_field() {
    assert_eq!(invalid(r#"{"node": {}}"#).0, "xds_servers");
    assert_eq!(
        invalid(r#"{"xds_servers": [{"channel_creds": []}]}"#).0,
        "xds_servers[0]"
    );
    assert_eq!(
        invalid(r#"{"xds_servers": [{"server_uri": 5}]}"#).0,
        "xds_servers[0].server_uri"
    );
    let (field, message) = invalid(
        r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "google_default"}]}]}"#,
    );
    assert_eq!(field, "xds_servers[0].channel_creds");
    assert!(message.contains("google_default"), "{message}");
    assert_eq!(
        invalid(
            r#"{"xds_servers": [{"server_uri": "", "channel_creds": [{"type": "insecure"}]}]}"#
        )
        .0,
        "xds_servers[0].server_uri"
    );
    assert_eq!(
        invalid(r#"{"xds_servers": [], "node": {"id": 3}}"#).0,
        "node.id"
    );
    assert_eq!(invalid("[").0, "(root)");
}

#[test]
fn file_watcher_errors_name_the_field() {
    let with = |config: &str| {
        format!(
            r#"{{"xds_servers": [{{"server_uri": "a:1", "channel_creds": [{{"type": "insecure"}}]}}],
                "certificate_providers": {{"default": {{"plugin_name": "file_watcher", "config": {config}}}}}}}"#
        )
    };
    let (field, message) = invalid(&with(
        r#"{"ca_certificate_file": "/ca", "refresh_interval": "15m"}"#,
    ));
    assert_eq!(
        field,
        "certificate_providers.default.config.refresh_interval"
    );
    assert!(message.contains("15m"), "{message}");
    assert_eq!(
        invalid(&with(r#"{"certificate_file": "/c"}"#)).0,
        "certificate_providers.default.config"
    );
    assert_eq!(
        invalid(&with("{}")).0,
        "certificate_providers.default.config"
    );
    assert_eq!(
        invalid(&with(r#"{"ca_certificate_file": 7}"#)).0,
        "certificate_providers.default.config.ca_certificate_file"
    );
    let b = Bootstrap::from_json(&with(
        r#"{"ca_certificate_file": "/ca", "refresh_interval": "1.5s"}"#,
    ))
    .unwrap();
    let CertificateProvider::FileWatcher(fw) = &b.certificate_providers["default"] else {
        panic!("not a file watcher");
    };
    assert_eq!(fw.refresh_interval, Duration::from_millis(1500));
    let b = Bootstrap::from_json(&with(r#"{"ca_certificate_file": "/ca"}"#)).unwrap();
    let CertificateProvider::FileWatcher(fw) = &b.certificate_providers["default"] else {
        panic!("not a file watcher");
    };
    assert_eq!(fw.refresh_interval, DEFAULT_REFRESH_INTERVAL);
}

#[test]
fn unknown_plugins_and_authorities_are_reported_not_dropped() {
    let b = Bootstrap::from_json(
        r#"{"xds_servers": [{"server_uri": "a:1", "channel_creds": [{"type": "insecure"}]}],
            "certificate_providers": {"mesh_ca": {"plugin_name": "meshca", "config": {}}},
            "authorities": {"example.com": {}},
            "surprise": true}"#,
    )
    .unwrap();
    assert_eq!(
        b.certificate_providers["mesh_ca"],
        CertificateProvider::Unsupported {
            plugin_name: "meshca".into()
        }
    );
    assert_eq!(b.unsupported.len(), 2, "{:?}", b.unsupported);
    assert!(b.unsupported[0].starts_with("authorities"));
    assert!(b.unsupported[1].starts_with("surprise"));
}

#[test]
fn listener_names_follow_the_template() {
    let mut b = Bootstrap::insecure("127.0.0.1:1", "n");
    b.client_default_listener_resource_name_template = "prefix/%s".into();
    assert_eq!(b.client_listener_name("a:80"), "prefix/a:80");
    b.client_default_listener_resource_name_template =
        "xdstp://authority/envoy.config.listener.v3.Listener/%s".into();
    assert_eq!(
        b.client_listener_name("a b:80"),
        "xdstp://authority/envoy.config.listener.v3.Listener/a%20b:80"
    );
}

#[test]
fn from_file_reports_the_path() {
    let err = Bootstrap::from_file("/nonexistent/bootstrap.json").unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/bootstrap.json"),
        "{err}"
    );
    let dir = std::env::temp_dir().join(format!("mesh-xds-bootstrap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bootstrap.json");
    std::fs::write(&path, ISTIO_AGENT).unwrap();
    assert!(Bootstrap::from_file(&path).is_ok());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_durations() {
    assert_eq!(parse_json_duration("900s"), Some(Duration::from_secs(900)));
    assert_eq!(
        parse_json_duration("0.000000001s"),
        Some(Duration::from_nanos(1))
    );
    for bad in ["", "s", "1", "1.s0", "-1s", "1.0000000001s", "1e3s", ".5s"] {
        assert_eq!(parse_json_duration(bad), None, "{bad}");
    }
}

#[test]
fn the_path_variable_wins_over_the_inline_json() {
    let inline =
        r#"{"xds_servers": [{"server_uri": "inline:1", "channel_creds": [{"type": "insecure"}]}]}"#;
    let b = Bootstrap::from_sources(None, Some(inline.into())).unwrap();
    assert_eq!(b.xds_servers[0].server_uri, "inline:1");
    let b = Bootstrap::from_sources(Some("".into()), Some(inline.into())).unwrap();
    assert_eq!(
        b.xds_servers[0].server_uri, "inline:1",
        "an empty path counts as unset"
    );
    let err = Bootstrap::from_sources(Some("/nonexistent/b.json".into()), Some(inline.into()))
        .unwrap_err();
    assert!(matches!(err, BootstrapError::Read { .. }), "{err}");
    let err = Bootstrap::from_sources(None, Some(String::new())).unwrap_err();
    assert!(matches!(err, BootstrapError::NotConfigured), "{err}");
    assert!(err.to_string().contains("GRPC_XDS_BOOTSTRAP"));
}

#[test]
fn the_workload_namespace_and_labels_come_from_node_metadata() {
    let b = Bootstrap::from_json(ISTIO_AGENT).unwrap();
    assert_eq!(b.node.workload_namespace(), Some("default"));
    let labels = b.node.workload_labels();
    assert_eq!(labels.get("version"), Some("v1"));
    assert_eq!(labels.get("app"), Some("reviews"));
    assert!(Node::default().workload_labels().is_empty());
    assert_eq!(Node::default().workload_namespace(), None);
    assert_eq!(
        b.node.workload_address(),
        Some("10.244.0.36".parse().unwrap())
    );
    // istio-agent writes an empty locality when the node has none.
    assert_eq!(b.node.workload_locality(), None);
    let placed = Node {
        locality: Some(NodeLocality {
            region: "eu-west1".into(),
            zone: "eu-west1-a".into(),
            sub_zone: String::new(),
        }),
        ..Node::default()
    };
    assert_eq!(
        placed.workload_locality().map(|l| l.zone),
        Some("eu-west1-a".into())
    );
}
