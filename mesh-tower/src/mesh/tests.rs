//! The mesh handle: what each publish keeps and replaces.

use std::sync::Arc;

use mesh_core::Cluster;

use super::*;
use crate::tls::CertificateFiles;

fn client_config(version: &str, clusters: &[&str]) -> Arc<MeshConfig> {
    let clusters = clusters
        .iter()
        .map(|n| (Arc::from(*n), Arc::new(Cluster::new(*n, vec![]))))
        .collect();
    Arc::new(
        MeshConfig::new(
            version,
            Default::default(),
            clusters,
            mesh_core::ServerPolicy::default(),
        )
        .unwrap(),
    )
}

fn rate_limited() -> Arc<mesh_core::ServerPolicy> {
    Arc::new(mesh_core::ServerPolicy {
        rate_limit: Some(
            mesh_core::LocalRateLimit::new(1, 1, std::time::Duration::from_secs(1)).unwrap(),
        ),
        ..mesh_core::ServerPolicy::default()
    })
}

#[test]
fn a_server_publish_keeps_the_client_half_and_its_cluster_state() {
    let mesh = Mesh::new((*client_config("xds-1", &["a"])).clone());
    let before = mesh.snapshot();
    let server = rate_limited();
    mesh.publish_server(server.clone());
    let after = mesh.snapshot();
    assert!(Arc::ptr_eq(after.config.server(), &server));
    assert_eq!(after.config.version(), "xds-1");
    assert!(after.config.cluster("a").is_some());
    assert!(
        Arc::ptr_eq(&before.clusters["a"].state, &after.clusters["a"].state)
            && Arc::ptr_eq(
                &before.clusters["a"].balancer,
                &after.clusters["a"].balancer
            ),
        "the cluster's balancer and state are the same objects"
    );
}

#[test]
fn a_client_publish_keeps_the_server_half() {
    let mesh = Mesh::new(MeshConfig::empty());
    let server = rate_limited();
    mesh.publish_server(server.clone());
    mesh.publish_client(client_config("xds-2", &["b"]));
    let config = mesh.config();
    assert!(Arc::ptr_eq(config.server(), &server), "server half kept");
    assert_eq!(config.version(), "xds-2");
    assert!(config.cluster("b").is_some());
    // A whole publish still replaces both halves, and keeps the xDS server side.
    let inbound = Arc::new(mesh_core::InboundListeners::new(
        [(9080, mesh_core::InboundState::NotServing("waiting".into()))].into(),
    ));
    mesh.publish_inbound(inbound.clone());
    mesh.publish(client_config("yaml", &[]));
    assert_eq!(**mesh.config().server(), mesh_core::ServerPolicy::default());
    assert!(Arc::ptr_eq(mesh.config().inbound(), &inbound));
    mesh.publish_client(client_config("xds-3", &[]));
    mesh.publish_server(rate_limited());
    assert!(Arc::ptr_eq(mesh.config().inbound(), &inbound));
}

#[test]
fn a_setting_set_again_is_refused_with_the_value_handed_back() {
    let mesh = Mesh::new(MeshConfig::empty());
    assert!(mesh.set_local_namespace("prod").is_ok());
    let refused = mesh.set_local_namespace("staging").unwrap_err();
    assert_eq!(refused.setting(), "local namespace");
    assert_eq!(&*refused.into_inner(), "staging");
    assert_eq!(&*mesh.local_namespace(), "prod", "the first value is kept");

    let address: IpAddr = "10.0.0.1".parse().unwrap();
    assert!(mesh.set_local_address(address).is_ok());
    let refused = mesh
        .set_local_address("10.0.0.2".parse().unwrap())
        .unwrap_err();
    assert_eq!(
        refused.to_string(),
        "the mesh's local address was already set"
    );
    assert_eq!(mesh.local_workload().address, Some(address));
}

#[test]
fn a_builder_sets_every_setting_before_the_first_publish() {
    let labels = Labels::new([("app", "web")]).unwrap();
    let locality = Locality {
        region: "eu-west1".into(),
        zone: "eu-west1-a".into(),
        sub_zone: "".into(),
    };
    let mesh = Mesh::builder()
        .local_namespace("prod")
        .local_labels(labels.clone())
        .local_locality(locality.clone())
        .local_address("10.0.0.1".parse().unwrap())
        .request_controls(RequestControls::default().trust_override_headers(true))
        .access_log(AccessLog::new())
        .build((*client_config("v1", &["a"])).clone())
        .unwrap();
    assert_eq!(&*mesh.local_namespace(), "prod");
    assert_eq!(mesh.local_workload().labels, labels);
    assert_eq!(mesh.local_locality(), Some(&locality));
    assert!(mesh.access_log().is_some());
    assert_eq!(mesh.config().version(), "v1");
    // Set by the builder, so set once: a late setter is refused.
    assert!(mesh.set_local_labels(Labels::default()).is_err());
    assert!(mesh.set_access_log(AccessLog::new()).is_err());
    // Left out, so still free for late binding.
    assert!(mesh.set_tracing(Tracing::new()).is_ok());
}

#[test]
fn a_builder_whose_identity_does_not_load_fails() {
    let missing = CertificateFiles::identity("/nonexistent/chain.pem", "/nonexistent/key.pem");
    assert!(
        Mesh::builder()
            .workload_identity(missing)
            .build(MeshConfig::empty())
            .is_err()
    );
}

fn cluster(name: &str, hosts: std::ops::Range<u8>, lb: mesh_core::LbPolicy) -> Arc<Cluster> {
    let endpoints = hosts
        .map(|i| {
            let address = format!("10.0.0.{i}:80").parse().unwrap();
            mesh_core::Endpoint::new(mesh_core::EndpointAddress::Socket(address))
        })
        .collect();
    let mut c = Cluster::new(name, endpoints);
    c.lb = lb;
    Arc::new(c)
}

fn config_of(clusters: &[&Arc<Cluster>]) -> Arc<MeshConfig> {
    let clusters = clusters
        .iter()
        .map(|c| (c.name.clone(), Arc::clone(c)))
        .collect();
    let policy = mesh_core::ServerPolicy::default();
    Arc::new(MeshConfig::new("v", Default::default(), clusters, policy).unwrap())
}

fn pick(mesh: &Mesh, cluster: &str) -> usize {
    mesh.snapshot().clusters[cluster].pick(None, &[]).unwrap()
}

#[test]
fn a_publish_keeps_the_entry_of_an_unchanged_cluster_as_it_is() {
    let a = cluster("a", 1..4, mesh_core::LbPolicy::RoundRobin);
    let b = cluster("b", 1..4, mesh_core::LbPolicy::RoundRobin);
    let mesh = Mesh::new((*config_of(&[&a, &b])).clone());
    assert_eq!((pick(&mesh, "a"), pick(&mesh, "a")), (0, 1));
    let before = mesh.snapshot();
    // Another cluster's endpoints change.
    mesh.publish(config_of(&[
        &a,
        &cluster("b", 2..6, mesh_core::LbPolicy::RoundRobin),
    ]));
    let after = mesh.snapshot();
    let (was, is) = (&before.clusters["a"], &after.clusters["a"]);
    assert!(Arc::ptr_eq(&was.balancer, &is.balancer), "balancer rebuilt");
    assert!(Arc::ptr_eq(&was.connections, &is.connections));
    // The rotation goes on where it was.
    assert_eq!(pick(&mesh, "a"), 2);
    // An equal policy in a new configuration (a reloaded file, a new xDS version) too.
    let reloaded = cluster("a", 1..4, mesh_core::LbPolicy::RoundRobin);
    mesh.publish(config_of(&[&reloaded]));
    let again = mesh.snapshot();
    assert!(Arc::ptr_eq(&is.balancer, &again.clusters["a"].balancer));
    assert!(Arc::ptr_eq(&again.clusters["a"].policy, &reloaded));
    assert_eq!(pick(&mesh, "a"), 0);
}

#[test]
fn a_changed_cluster_keeps_its_rotation_and_its_hash_ring_mapping() {
    let rr = cluster("rr", 1..4, mesh_core::LbPolicy::RoundRobin);
    let ring = cluster("ring", 1..11, mesh_core::LbPolicy::default_ring_hash());
    let mesh = Mesh::new((*config_of(&[&rr, &ring])).clone());
    assert_eq!((pick(&mesh, "rr"), pick(&mesh, "rr")), (0, 1));
    let keys: Vec<u64> = (0..200u64)
        .map(|k| k.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .collect();
    let owner = |mesh: &Mesh, k: u64| {
        let snapshot = mesh.snapshot();
        let entry = &snapshot.clusters["ring"];
        let i = entry.pick(Some(k), &[]).unwrap();
        entry.policy.endpoints[i].address.clone()
    };
    let owners: Vec<_> = keys.iter().map(|&k| owner(&mesh, k)).collect();
    // A new endpoint for `rr`; a breaker change for `ring` (its endpoints are the same).
    let mut limited = (*ring).clone();
    limited.breaker.max_requests = 7;
    mesh.publish(config_of(&[
        &cluster("rr", 1..5, mesh_core::LbPolicy::RoundRobin),
        &Arc::new(limited),
    ]));
    // The third host's turn, then the new one joins.
    assert_eq!(pick(&mesh, "rr"), 2);
    let next: Vec<_> = (0..4).map(|_| pick(&mesh, "rr")).collect();
    assert!(next.contains(&3), "{next:?}");
    assert!(
        keys.iter()
            .zip(&owners)
            .all(|(&k, o)| owner(&mesh, k) == *o)
    );
}
