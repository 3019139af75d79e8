//! The mesh handle: breaker slots and what each publish keeps and replaces.

use std::sync::Arc;

use super::*;

#[test]
fn slots_admit_up_to_their_limit_and_free_on_drop() {
    let state = Arc::new(ClusterState::default());
    let a = state.try_admit_pending(2).expect("first");
    let _b = state.try_admit_pending(2).expect("second");
    assert!(
        state.try_admit_pending(2).is_none(),
        "over max_pending_requests"
    );
    assert_eq!(state.overflows.load(Ordering::Relaxed), 1);
    drop(a);
    assert!(
        state.try_admit_pending(2).is_some(),
        "a dropped slot is free again"
    );
    // Kinds are counted apart.
    assert!(state.try_admit_request(1).is_some());
}

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
fn retries_are_admitted_by_the_budget_when_there_is_one() {
    let state = Arc::new(ClusterState::default());
    let breakers = CircuitBreakers {
        max_retries: 1,
        ..CircuitBreakers::default()
    };
    let first = state.try_admit_retry(&breakers).expect("one retry");
    assert!(state.try_admit_retry(&breakers).is_none(), "max_retries 1");
    drop(first);
    let budgeted = CircuitBreakers {
        retry_budget: Some(mesh_core::RetryBudget::default()),
        ..breakers
    };
    let held: Vec<_> = (0..3)
        .map_while(|_| state.try_admit_retry(&budgeted))
        .collect();
    assert_eq!(
        held.len(),
        3,
        "the budget's floor of 3 replaces max_retries"
    );
}
