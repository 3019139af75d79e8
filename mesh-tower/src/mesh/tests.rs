//! The mesh handle: what each publish keeps and replaces.

use std::sync::Arc;

use mesh_core::Cluster;

use super::*;

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
