//! DestinationRule fields the mesh parses but does not enforce are reported, each naming the
//! field and why, never silently dropped; the connection-pool fields it enforces reach the
//! cluster unreported.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mesh_core::istio::load_str;

const RULE: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.default.svc.cluster.local]
  ports:
  - number: 9080
    name: http
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 10
        connectTimeout: 1s
        tcpKeepalive: {time: 7200s}
      http:
        maxRequestsPerConnection: 5
        idleTimeout: 30s
        h2UpgradePolicy: UPGRADE
    loadBalancer:
      consistentHash:
        httpCookie: {name: user, ttl: 60s}
      localityLbSetting:
        enabled: true
        failover: [{from: eu, to: us}]
        distribute: [{from: eu/*, to: {\"eu/*\": 100}}]
        failoverPriority: [topology.kubernetes.io/region]
";

#[test]
fn unenforced_fields_are_reported_by_name_with_the_reason() {
    let loaded = match load_str("mesh.yaml", RULE) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    for field in [
        "connectionPool.http.h2UpgradePolicy",
        "localityLbSetting.failover",
        "localityLbSetting.distribute",
        "localityLbSetting.failoverPriority",
    ] {
        let warning = warnings
            .iter()
            .find(|w| w.contains(field))
            .unwrap_or_else(|| panic!("no warning for {field}: {warnings:#?}"));
        assert!(
            warning.contains("not enforced")
                || warning.contains("not applied")
                || warning.contains("no effect")
                || warning.contains("not supported"),
            "{warning}"
        );
    }
    for enforced in [
        "connectTimeout",
        "maxConnections",
        "tcpKeepalive",
        "maxRequestsPerConnection",
        "idleTimeout",
    ] {
        assert!(
            !warnings.iter().any(|w| w.contains(enforced)),
            "{enforced} is enforced: {warnings:#?}"
        );
    }
    assert!(
        !warnings.iter().any(|w| w.contains("ttl")),
        "httpCookie.ttl generates the cookie: {warnings:#?}"
    );
}

#[test]
fn enforced_pool_fields_reach_the_cluster() {
    let loaded = match load_str("mesh.yaml", RULE) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    let cluster = loaded
        .config
        .clusters()
        .values()
        .find(|c| c.name.contains("reviews"))
        .expect("the reviews cluster");
    assert_eq!(cluster.breaker.max_connections, 10);
    assert_eq!(cluster.connect_timeout, std::time::Duration::from_secs(1));
    assert_eq!(cluster.max_requests_per_connection, Some(5));
    assert_eq!(
        cluster.idle_timeout,
        Some(std::time::Duration::from_secs(30))
    );
    assert_eq!(
        cluster.tcp_keepalive,
        Some(mesh_core::TcpKeepalive {
            time: Some(std::time::Duration::from_secs(7200)),
            interval: None,
            probes: None,
        })
    );
}

#[test]
fn an_unset_idle_timeout_is_istios_hour() {
    let services_only = RULE.split("---").next().unwrap();
    let loaded = match load_str("mesh.yaml", services_only) {
        Ok(l) => l,
        Err(e) => panic!("{e}"),
    };
    for cluster in loaded.config.clusters().values() {
        assert_eq!(
            cluster.idle_timeout,
            Some(std::time::Duration::from_secs(3600)),
            "{}",
            cluster.name
        );
        assert_eq!(cluster.tcp_keepalive, None, "off unless asked for");
    }
}
