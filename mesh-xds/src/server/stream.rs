//! One ADS stream: the subscriptions, nonces and versions of one client, as a state machine
//! fed with requests and snapshots, and the task that drives it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    pin::Pin,
    sync::Arc,
};

use envoy_types::pb::{
    envoy::service::discovery::v3::{
        DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
        aggregated_discovery_service_server::AggregatedDiscoveryService,
    },
    google::protobuf::Any,
};
use futures::Stream;
use tokio::sync::{mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use super::{Ack, ControlPlane, Nack, Snapshot};
use crate::encode::{self, CLUSTER_TYPE, LISTENER_TYPE, Workload};

/// Responses buffered per stream before the stream task waits for the client to read.
const RESPONSE_BUFFER: usize = 16;

/// The ADS service of a [`ControlPlane`].
#[derive(Debug)]
pub struct Ads {
    cp: ControlPlane,
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// What one stream knows about one type URL.
#[derive(Debug, Default)]
struct TypeState {
    /// The subscribed names; `None` is the wildcard.
    names: Option<BTreeSet<String>>,
    /// The nonce of the last response sent.
    nonce: String,
    /// The resources of the last response sent.
    sent: Option<BTreeMap<String, Any>>,
}

/// The protocol state of one stream.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    node: String,
    /// The node's workload (istio-agent's metadata `NAMESPACE` and `LABELS`), whose policy
    /// its inbound listeners carry.
    workload: Workload,
    types: HashMap<String, TypeState>,
    nonces: u64,
}

/// What a request meant.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Answer {
    Ack(Ack),
    Nack(Nack),
    /// A first request for its type, or one that changed the subscription.
    Subscribe,
    /// A request acknowledging a response that is no longer the latest.
    Stale,
}

// === impl Ads ===

impl Ads {
    pub(super) fn new(cp: ControlPlane) -> Self {
        Self { cp }
    }
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = ResponseStream<DiscoveryResponse>;
    type DeltaAggregatedResourcesStream = ResponseStream<DeltaDiscoveryResponse>;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamAggregatedResourcesStream>, Status> {
        let requests = request.into_inner();
        let (tx, rx) = mpsc::channel(RESPONSE_BUFFER);
        tokio::spawn(drive(self.cp.clone(), requests, tx));
        let out = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(out)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        Err(Status::unimplemented(
            "incremental xDS is not served; use state-of-the-world ADS",
        ))
    }
}

/// Runs one stream until the client goes away.
async fn drive(
    cp: ControlPlane,
    mut requests: Streaming<DiscoveryRequest>,
    tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
) {
    let mut snapshots: watch::Receiver<Arc<Snapshot>> = cp.snapshots();
    let mut state = StreamState::default();
    loop {
        let responses = tokio::select! {
            message = requests.message() => match message {
                Ok(Some(req)) => {
                    let snapshot = snapshots.borrow_and_update().clone();
                    let (answer, response) = state.on_request(&req, &snapshot);
                    cp.record(|log| {
                        log.requests += 1;
                        match &answer {
                            Answer::Ack(a) => log.acks.push(a.clone()),
                            Answer::Nack(n) => {
                                tracing::warn!(
                                    node = %n.node, type_url = %n.type_url, nonce = %n.nonce,
                                    error = %n.error, "client rejected a response (NACK)"
                                );
                                log.nacks.push(n.clone());
                            }
                            Answer::Subscribe | Answer::Stale => {}
                        }
                    });
                    response.into_iter().collect::<Vec<_>>()
                }
                Ok(None) => return,
                Err(status) => {
                    tracing::debug!(%status, "ADS stream ended");
                    return;
                }
            },
            changed = snapshots.changed() => {
                if changed.is_err() {
                    return;
                }
                let snapshot = snapshots.borrow_and_update().clone();
                state.on_snapshot(&snapshot)
            }
        };
        for r in responses {
            cp.record(|log| log.responses += 1);
            if tx.send(Ok(r)).await.is_err() {
                return;
            }
        }
    }
}

// === impl StreamState ===

impl StreamState {
    /// Handles a request; returns what it meant and the response to send, if any.
    pub(super) fn on_request(
        &mut self,
        req: &DiscoveryRequest,
        snapshot: &Snapshot,
    ) -> (Answer, Option<DiscoveryResponse>) {
        if let Some(node) = &req.node
            && self.node.is_empty()
        {
            self.node = node.id.clone();
            self.workload = workload_of(node);
        }
        let wildcard_type = req.type_url == LISTENER_TYPE || req.type_url == CLUSTER_TYPE;
        let names: Option<BTreeSet<String>> = {
            let set: BTreeSet<String> = req.resource_names.iter().cloned().collect();
            let wildcard = (set.is_empty() && wildcard_type) || set.contains("*");
            (!wildcard).then_some(set)
        };
        let last_nonce = self.types.get(&req.type_url).map(|t| t.nonce.as_str());
        if !req.response_nonce.is_empty() && last_nonce != Some(req.response_nonce.as_str()) {
            // Not the answer to the latest response of its type (or of no response at all).
            return (Answer::Stale, None);
        }
        let node = self.node.clone();
        let entry = self.types.entry(req.type_url.clone()).or_default();
        let answer = if req.response_nonce.is_empty() {
            Answer::Subscribe
        } else if let Some(status) = &req.error_detail {
            Answer::Nack(Nack {
                node,
                type_url: req.type_url.clone(),
                kept_version: req.version_info.clone(),
                nonce: req.response_nonce.clone(),
                error: status.message.clone(),
            })
        } else {
            Answer::Ack(Ack {
                node,
                type_url: req.type_url.clone(),
                version: req.version_info.clone(),
                nonce: req.response_nonce.clone(),
            })
        };
        let changed = entry.names != names || entry.sent.is_none();
        entry.names = names;
        // A first request is always answered, even with nothing; an ACK or NACK only when the
        // subscription changed with it.
        let respond = matches!(answer, Answer::Subscribe) || changed;
        let response = respond.then(|| self.respond(&req.type_url, snapshot));
        (answer, response)
    }

    /// Handles a new snapshot: a response for every subscribed type whose resources changed.
    pub(super) fn on_snapshot(&mut self, snapshot: &Snapshot) -> Vec<DiscoveryResponse> {
        let mut types: Vec<String> = self.types.keys().cloned().collect();
        types.sort();
        types.retain(|t| {
            self.types.get(t).is_some_and(|state| {
                state.sent.as_ref()
                    != Some(&select(snapshot, t, state.names.as_ref(), &self.workload))
            })
        });
        types
            .into_iter()
            .map(|t| self.respond(&t, snapshot))
            .collect()
    }

    fn respond(&mut self, type_url: &str, snapshot: &Snapshot) -> DiscoveryResponse {
        self.nonces += 1;
        let nonce = self.nonces.to_string();
        let state = self.types.entry(type_url.to_string()).or_default();
        let resources = select(snapshot, type_url, state.names.as_ref(), &self.workload);
        state.nonce = nonce.clone();
        let response = DiscoveryResponse {
            version_info: snapshot.version.clone(),
            resources: resources.values().cloned().collect(),
            type_url: type_url.to_string(),
            nonce,
            ..DiscoveryResponse::default()
        };
        state.sent = Some(resources);
        response
    }
}

/// The resources of `type_url` that `names` subscribes to (`None`: all). A listener named
/// like istiod's inbound listeners (`xds.istio.io/grpc/lds/inbound/<ip>:<port>`) is built
/// for `workload` from the snapshot's server policy; a wildcard does not include them (a
/// gRPC server subscribes to its listener by name).
fn select(
    snapshot: &Snapshot,
    type_url: &str,
    names: Option<&BTreeSet<String>>,
    workload: &Workload,
) -> BTreeMap<String, Any> {
    let empty = BTreeMap::new();
    let all = snapshot.resources.get(type_url).unwrap_or(&empty);
    match names {
        None => all.clone(),
        Some(names) => names
            .iter()
            .filter_map(|n| {
                let found = all.get(n).cloned().or_else(|| {
                    (type_url == LISTENER_TYPE)
                        .then(|| encode::encode_inbound(n, snapshot.config.server(), workload))
                        .flatten()
                        .map(|l| encode::any(&l))
                });
                found.map(|r| (n.clone(), r))
            })
            .collect(),
    }
}

/// The workload of `node` from istio-agent's metadata: `NAMESPACE` (`default` when absent)
/// and `LABELS` (string values; others skipped).
fn workload_of(node: &envoy_types::pb::envoy::config::core::v3::Node) -> Workload {
    use envoy_types::pb::google::protobuf::value::Kind;
    let field = |key: &str| node.metadata.as_ref()?.fields.get(key)?.kind.as_ref();
    let namespace = match field("NAMESPACE") {
        Some(Kind::StringValue(ns)) if !ns.is_empty() => ns.clone(),
        _ => "default".to_string(),
    };
    let labels = match field("LABELS") {
        Some(Kind::StructValue(s)) => {
            let pairs = s.fields.iter().filter_map(|(k, v)| match &v.kind {
                Some(Kind::StringValue(v)) => Some((k.as_str(), v.as_str())),
                _ => None,
            });
            // Struct keys are unique, so the labels are valid.
            mesh_core::Labels::new(pairs).unwrap_or_default()
        }
        _ => mesh_core::Labels::default(),
    };
    Workload { namespace, labels }
}

#[cfg(test)]
mod tests {
    use mesh_core::istio::load_str;

    use super::*;
    use crate::encode::{ENDPOINT_TYPE, ROUTE_TYPE, Shape};

    fn snapshot(version: &str) -> Snapshot {
        let yaml = "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: a}
spec:
  hosts: [a.default.svc.cluster.local, b.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
";
        let config = load_str("a.yaml", yaml).unwrap().config;
        Snapshot::new(version.into(), config, Shape::Istiod)
    }

    fn request(type_url: &str, names: &[&str], nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            type_url: type_url.into(),
            resource_names: names.iter().map(|n| n.to_string()).collect(),
            response_nonce: nonce.into(),
            ..DiscoveryRequest::default()
        }
    }

    #[test]
    fn empty_names_are_a_wildcard_only_for_listeners_and_clusters() {
        let s = snapshot("1");
        let mut state = StreamState::default();
        for (type_url, want) in [
            (LISTENER_TYPE, 2),
            (CLUSTER_TYPE, 2),
            (ROUTE_TYPE, 0),
            (ENDPOINT_TYPE, 0),
        ] {
            let (answer, response) = state.on_request(&request(type_url, &[], ""), &s);
            assert_eq!(answer, Answer::Subscribe);
            assert_eq!(response.unwrap().resources.len(), want, "{type_url}");
        }
        let (_, response) = state.on_request(&request(ROUTE_TYPE, &["*"], ""), &s);
        assert_eq!(
            response.unwrap().resources.len(),
            2,
            "`*` is a wildcard everywhere"
        );
    }

    #[test]
    fn a_nonce_that_is_not_the_latest_is_stale_and_changes_nothing() {
        let s = snapshot("1");
        let mut state = StreamState::default();
        // A nonce for a type never sent: stale, and it does not subscribe.
        let (answer, response) = state.on_request(&request(CLUSTER_TYPE, &[], "7"), &s);
        assert_eq!((answer, response), (Answer::Stale, None));
        assert!(state.on_snapshot(&snapshot("2")).is_empty());

        let (_, first) = state.on_request(&request(CLUSTER_TYPE, &[], ""), &s);
        let first = first.unwrap();
        let (_, second) = state.on_request(&request(CLUSTER_TYPE, &["x"], ""), &s);
        let second = second.unwrap();
        assert_ne!(first.nonce, second.nonce);
        let (answer, _) = state.on_request(&request(CLUSTER_TYPE, &["y"], &first.nonce), &s);
        assert_eq!(answer, Answer::Stale);
        let (answer, response) =
            state.on_request(&request(CLUSTER_TYPE, &["x"], &second.nonce), &s);
        assert!(matches!(answer, Answer::Ack(_)), "{answer:?}");
        assert_eq!(
            response, None,
            "an ACK with the same subscription is not answered"
        );
    }

    #[test]
    fn a_snapshot_is_sent_only_for_types_whose_resources_changed() {
        let mut state = StreamState::default();
        let s = snapshot("1");
        state.on_request(&request(LISTENER_TYPE, &[], ""), &s);
        state.on_request(&request(ENDPOINT_TYPE, &["nothing"], ""), &s);
        // Same resources, new version: nothing to send.
        assert!(state.on_snapshot(&snapshot("2")).is_empty());
    }
}
