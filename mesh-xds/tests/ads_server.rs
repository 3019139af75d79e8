//! The development control plane speaks ADS as Envoy's protocol says, checked with a raw
//! tonic client over 127.0.0.1: subscriptions, ACK, NACK with its detail, pushes with a new
//! version and nonce, and only subscribed resources.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeSet, net::SocketAddr, time::Duration};

use envoy_types::pb::{
    envoy::{
        config::{core::v3::Node, listener::v3::Listener, route::v3::RouteConfiguration},
        service::discovery::v3::{
            DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
            aggregated_discovery_service_client::AggregatedDiscoveryServiceClient,
        },
    },
    google::rpc::Status as RpcStatus,
};
use mesh_core::{
    MeshConfig,
    istio::{Source, load},
};
use mesh_xds::{
    encode::{CLUSTER_TYPE, ENDPOINT_TYPE, LISTENER_TYPE, ROUTE_TYPE, route_config_name},
    server::ControlPlane,
};
use prost::Message;
use tokio::sync::mpsc;
use tonic::Streaming;

const SERVICES: &str = include_str!("../../mesh-core/tests/fixtures/bookinfo-services.yaml");

/// The VirtualService splitting reviews `v1`/`v2` by `weights`.
fn split_yaml(weights: (u32, u32)) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: reviews}}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
      weight: {}
    - destination: {{host: reviews, subset: v2}}
      weight: {}
",
        weights.0, weights.1
    )
}

/// The Bookinfo services with reviews split by `weights`.
fn config(weights: (u32, u32)) -> MeshConfig {
    let split = split_yaml(weights);
    let sources = [
        Source {
            name: "services.yaml",
            text: SERVICES,
        },
        Source {
            name: "split.yaml",
            text: &split,
        },
    ];
    load(&sources).unwrap_or_else(|e| panic!("{e}")).config
}

/// `config` with every cluster's request limit (`http2MaxRequests`, which istiod sends gRPC
/// clients) set to `limit`: a change to every cluster resource.
fn with_max_requests(config: MeshConfig, limit: u32) -> MeshConfig {
    let clusters = config
        .clusters()
        .iter()
        .map(|(n, c)| {
            let mut c = (**c).clone();
            c.breaker.max_requests = limit;
            (n.clone(), std::sync::Arc::new(c))
        })
        .collect();
    MeshConfig::new(
        "changed",
        config.listeners().clone(),
        clusters,
        Default::default(),
    )
    .unwrap()
}

async fn start(config: MeshConfig) -> (ControlPlane, SocketAddr) {
    let cp = ControlPlane::new(config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = cp.clone();
    tokio::spawn(async move { server.serve(listener).await });
    (cp, addr)
}

/// One ADS stream, driven by hand.
struct Client {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let requests =
            futures::stream::unfold(rx, |mut rx: mpsc::Receiver<DiscoveryRequest>| async move {
                rx.recv().await.map(|r| (r, rx))
            });
        let rx = client
            .stream_aggregated_resources(requests)
            .await
            .unwrap()
            .into_inner();
        Self { tx, rx }
    }

    async fn request(&self, type_url: &str, names: &[&str], version: &str, nonce: &str) {
        self.send(type_url, names, version, nonce, None).await;
    }

    async fn send(
        &self,
        type_url: &str,
        names: &[&str],
        version: &str,
        nonce: &str,
        error: Option<&str>,
    ) {
        let req = DiscoveryRequest {
            version_info: version.into(),
            node: Some(Node {
                id: "test-node".into(),
                ..Node::default()
            }),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            type_url: type_url.into(),
            response_nonce: nonce.into(),
            error_detail: error.map(|message| RpcStatus {
                code: 3,
                message: message.into(),
                details: Vec::new(),
            }),
            ..DiscoveryRequest::default()
        };
        self.tx.send(req).await.unwrap();
    }

    /// The next response; a bound on a hang, not a wait for something to happen.
    async fn recv(&mut self) -> DiscoveryResponse {
        tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("no response within 10 s")
            .unwrap()
            .expect("stream ended")
    }
}

fn names<M: Message + Default>(
    r: &DiscoveryResponse,
    name: impl Fn(&M) -> String,
) -> BTreeSet<String> {
    r.resources
        .iter()
        .map(|a| name(&M::decode(a.value.as_slice()).unwrap()))
        .collect()
}

fn all_names(cp: &ControlPlane, type_url: &str) -> Vec<String> {
    cp.snapshot().resources[type_url].keys().cloned().collect()
}

#[tokio::test]
async fn subscribes_by_name_and_wildcard_and_records_acks() {
    let (cp, addr) = start(config((90, 10))).await;
    let listeners = all_names(&cp, LISTENER_TYPE);
    assert!(listeners.len() >= 2, "{listeners:?}");
    let mut c = Client::connect(addr).await;

    // LDS by name: exactly that listener.
    c.request(LISTENER_TYPE, &[&listeners[0]], "", "").await;
    let lds = c.recv().await;
    assert_eq!(lds.type_url, LISTENER_TYPE);
    assert_eq!(lds.version_info, "1");
    assert!(!lds.nonce.is_empty());
    assert_eq!(
        names::<Listener>(&lds, |l| l.name.clone()),
        BTreeSet::from([listeners[0].clone()])
    );

    // ACK: recorded with the node, version and nonce.
    c.request(LISTENER_TYPE, &[&listeners[0]], "1", &lds.nonce)
        .await;
    let mut log = cp.log();
    log.wait_for(|l| !l.acks.is_empty()).await.unwrap();
    let ack = &cp.acks()[0];
    assert_eq!(
        (
            ack.node.as_str(),
            ack.type_url.as_str(),
            ack.version.as_str(),
            ack.nonce.as_str()
        ),
        ("test-node", LISTENER_TYPE, "1", lds.nonce.as_str())
    );

    // RDS by the name the listener gives, istiod's `outbound|port||host`.
    let routes = route_config_name(&listeners[0]);
    c.request(ROUTE_TYPE, &[&routes], "", "").await;
    let rds = c.recv().await;
    assert_eq!(rds.type_url, ROUTE_TYPE);
    assert_ne!(rds.nonce, lds.nonce, "nonces are unique on a stream");
    assert_eq!(
        names::<RouteConfiguration>(&rds, |r| r.name.clone()),
        BTreeSet::from([routes])
    );

    // CDS with no names: the wildcard, every cluster.
    c.request(CLUSTER_TYPE, &[], "", "").await;
    let cds = c.recv().await;
    assert_eq!(cds.resources.len(), all_names(&cp, CLUSTER_TYPE).len());

    // EDS: only what was asked for; an unknown name is simply absent.
    let clusters = all_names(&cp, ENDPOINT_TYPE);
    c.request(
        ENDPOINT_TYPE,
        &[&clusters[0], "outbound|1|x|nowhere"],
        "",
        "",
    )
    .await;
    let eds = c.recv().await;
    assert_eq!(eds.resources.len(), 1);
    assert!(cp.nacks().is_empty());
}

#[tokio::test]
async fn a_nack_is_recorded_with_its_detail_and_answered_with_nothing() {
    let (cp, addr) = start(config((90, 10))).await;
    let mut c = Client::connect(addr).await;
    c.request(CLUSTER_TYPE, &[], "", "").await;
    let cds = c.recv().await;
    let detail = "Cluster outbound|9080|v1|reviews: outlier_detection.interval: must be positive";
    c.send(CLUSTER_TYPE, &[], "", &cds.nonce, Some(detail))
        .await;
    cp.log().wait_for(|l| !l.nacks.is_empty()).await.unwrap();
    let nack = &cp.nacks()[0];
    assert_eq!(nack.error, detail);
    assert_eq!(nack.type_url, CLUSTER_TYPE);
    assert_eq!(nack.nonce, cds.nonce);
    assert_eq!(nack.kept_version, "");
    assert_eq!(nack.node, "test-node");
    assert!(cp.acks().is_empty());

    // Nothing was sent for the NACK: the next response is the push of a new version.
    let changed = with_max_requests(config((90, 10)), 100);
    assert_eq!(cp.set_config(changed), "2");
    let push = c.recv().await;
    assert_eq!(
        (push.type_url.as_str(), push.version_info.as_str()),
        (CLUSTER_TYPE, "2")
    );
}

#[tokio::test]
async fn a_change_is_pushed_with_a_new_version_and_nonce_only_where_resources_changed() {
    let (cp, addr) = start(config((90, 10))).await;
    let listeners = all_names(&cp, LISTENER_TYPE);
    let routes: Vec<String> = listeners.iter().map(|l| route_config_name(l)).collect();
    let all: Vec<&str> = routes.iter().map(String::as_str).collect();
    let mut c = Client::connect(addr).await;
    c.request(LISTENER_TYPE, &[], "", "").await;
    let lds = c.recv().await;
    c.request(LISTENER_TYPE, &[], "1", &lds.nonce).await;
    c.request(ROUTE_TYPE, &all, "", "").await;
    let rds = c.recv().await;
    c.request(ROUTE_TYPE, &all, "1", &rds.nonce).await;
    cp.log().wait_for(|l| l.acks.len() == 2).await.unwrap();

    // A new split changes the routes, not the listeners: one RDS push, version 2.
    assert_eq!(cp.set_config(config((50, 50))), "2");
    let push = c.recv().await;
    assert_eq!(push.type_url, ROUTE_TYPE);
    assert_eq!(push.version_info, "2");
    assert!(push.nonce != rds.nonce && push.nonce != lds.nonce);
    assert_eq!(push.resources.len(), listeners.len());
    let changed = push
        .resources
        .iter()
        .map(|a| RouteConfiguration::decode(a.value.as_slice()).unwrap())
        .any(|rc| format!("{rc:?}").contains("value: 50"));
    assert!(changed, "the pushed routes carry the new weights");

    // An ACK of the push; a stale ACK (old nonce) is not recorded.
    c.request(ROUTE_TYPE, &all, "1", &rds.nonce).await;
    c.request(ROUTE_TYPE, &all, "2", &push.nonce).await;
    cp.log().wait_for(|l| l.acks.len() == 3).await.unwrap();
    let acks = cp.acks();
    assert_eq!(
        (acks[2].version.as_str(), acks[2].nonce.as_str()),
        ("2", push.nonce.as_str())
    );
    assert_eq!(cp.log().borrow().requests, 6);
}

#[tokio::test]
async fn unsubscribed_resources_are_not_sent_and_a_subscription_can_change() {
    let (cp, addr) = start(config((90, 10))).await;
    let clusters = all_names(&cp, ENDPOINT_TYPE);
    let (a, b) = (&clusters[0], &clusters[1]);
    let mut c = Client::connect(addr).await;
    c.request(ENDPOINT_TYPE, &[a], "", "").await;
    let first = c.recv().await;
    assert_eq!(first.resources.len(), 1);

    // Changing the subscription with the ACK is answered with the new set.
    c.request(ENDPOINT_TYPE, &[a, b], "1", &first.nonce).await;
    let both = c.recv().await;
    assert_eq!(both.resources.len(), 2);
    c.request(ENDPOINT_TYPE, &[b], "1", &both.nonce).await;
    let only_b = c.recv().await;
    assert_eq!(only_b.resources.len(), 1);
    assert_eq!(cp.acks().len(), 2);

    // A change to `a` only is not sent to a stream subscribed to `b`; the next response is
    // the one for a change to `b`.
    let edit = |cfg: &MeshConfig, name: &str, secs: u64| {
        let clusters = cfg
            .clusters()
            .iter()
            .map(|(n, c)| {
                let mut c = (**c).clone();
                if &**n == name {
                    c.endpoints = c
                        .endpoints
                        .iter()
                        .take(0)
                        .cloned()
                        .collect::<Vec<_>>()
                        .into();
                    c.connect_timeout = Duration::from_secs(secs);
                }
                (n.clone(), std::sync::Arc::new(c))
            })
            .collect();
        MeshConfig::new("x", cfg.listeners().clone(), clusters, Default::default()).unwrap()
    };
    let base = config((90, 10));
    let v2 = edit(&base, a, 1);
    cp.set_config(v2.clone());
    cp.set_config(edit(&v2, b, 2));
    let push = c.recv().await;
    assert_eq!(
        (push.type_url.as_str(), push.version_info.as_str()),
        (ENDPOINT_TYPE, "3")
    );
    assert_eq!(push.resources.len(), 1);
}

#[tokio::test]
async fn incremental_xds_is_refused() {
    let (_cp, addr) = start(config((90, 10))).await;
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let status = client
        .delta_aggregated_resources(futures::stream::iter(
            vec![DeltaDiscoveryRequest::default()],
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented);
}

#[tokio::test(start_paused = true)]
async fn file_edits_are_pushed_and_a_bad_edit_keeps_the_last_good_config() {
    let dir = std::env::temp_dir().join(format!("mesh-xds-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mesh.yaml");
    let write = |text: &str| {
        // Write then rename, as editors do.
        let tmp = dir.join("mesh.yaml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    };
    let split = |a: u32, b: u32| format!("{SERVICES}\n---\n{}", split_yaml((a, b)));
    write(&split(90, 10));
    let poll = Duration::from_millis(100);
    let (cp, watch) = ControlPlane::from_istio_yaml(&[&path], poll).unwrap();
    assert_eq!(cp.snapshot().version, "1");
    let served = cp.snapshot().config.clone();

    // A bad edit: the weights sum to 0. Served config unchanged, reason kept.
    write(&split(0, 0));
    tokio::time::sleep(poll * 3).await;
    assert_eq!(cp.snapshot().version, "1");
    assert_eq!(cp.snapshot().config, served);
    let error = watch.status().last_error.expect("the bad edit is reported");
    assert!(error.contains("weight"), "{error}");

    // A good edit is pushed.
    let snapshots = cp.snapshots();
    write(&split(50, 50));
    tokio::time::sleep(poll * 3).await;
    assert!(snapshots.has_changed().unwrap());
    assert_eq!(cp.snapshot().version, "2");
    assert_ne!(cp.snapshot().config, served);
    assert!(watch.status().last_error.is_none());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn a_change_is_pushed_to_every_open_stream() {
    let (cp, addr) = start(config((90, 10))).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(addr).await;
        c.request(CLUSTER_TYPE, &[], "", "").await;
        let first = c.recv().await;
        assert_eq!(first.version_info, "1");
        clients.push(c);
    }
    let changed = with_max_requests(config((90, 10)), 200);
    cp.set_config(changed);
    for c in &mut clients {
        let push = c.recv().await;
        assert_eq!(
            (push.type_url.as_str(), push.version_info.as_str()),
            (CLUSTER_TYPE, "2")
        );
    }
}
