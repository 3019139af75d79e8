//! What the client holds, for people and tools: a serializable config dump and the CSDS
//! service (`envoy.service.status.v3.ClientStatusDiscoveryService`) that `istioctl`-style and
//! `grpcdebug` tools query.

use std::{pin::Pin, sync::Arc, time::SystemTime};

use envoy_types::pb::{
    envoy::{
        admin::v3::{ClientResourceStatus, UpdateFailureState},
        service::status::v3::{
            ClientConfig, ClientStatusRequest, ClientStatusResponse,
            client_config::GenericXdsConfig,
            client_status_discovery_service_server::{
                ClientStatusDiscoveryService, ClientStatusDiscoveryServiceServer,
            },
        },
    },
    google::protobuf::Timestamp,
};
use futures::{Stream, StreamExt};

use super::{
    Inner,
    state::{Counters, ResourceStatus, ResourceType},
};

/// Every resource the client holds.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConfigDump {
    /// The `server_uri` of the current stream's server, when connected.
    pub server: Option<String>,
    /// Watched targets and their Listener names.
    pub targets: Vec<(String, String)>,
    /// Resources, by type then name.
    pub resources: Vec<ResourceDump>,
    /// Counters.
    pub counters: Counters,
    /// Bootstrap fields the client does not act on.
    pub bootstrap_unsupported: Vec<String>,
    /// Set while the configuration in use was restored from the persisted file and no fresh
    /// response has arrived since: it is stale.
    pub stale: Option<StaleDump>,
}

/// A configuration restored from the persisted file.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StaleDump {
    /// Always `persisted`: where the configuration came from.
    pub source: &'static str,
    /// When it was saved (last known fresh), in seconds since the Unix epoch.
    pub saved_at: f64,
}

/// One resource.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ResourceDump {
    /// Type URL.
    pub type_url: &'static str,
    /// Name.
    pub name: String,
    /// Version of the value in use (empty when none).
    pub version: String,
    /// Status.
    pub status: ResourceStatus,
    /// Why the last update was rejected.
    pub error: Option<String>,
    /// The version that was rejected.
    pub error_version: Option<String>,
    /// When the last update arrived, in seconds since the Unix epoch.
    pub last_updated: Option<f64>,
    /// Fields of the value in use that the mesh does not act on.
    pub unsupported: Vec<String>,
}

pub(super) fn config_dump(inner: &Inner) -> ConfigDump {
    let shared = inner.lock();
    let state = &shared.state;
    let mut resources = Vec::new();
    for ty in ResourceType::ALL {
        for (name, e) in state.resources(ty) {
            resources.push(ResourceDump {
                type_url: ty.type_url(),
                name: name.clone(),
                version: e.version.clone(),
                status: e.status,
                error: e.error.clone(),
                error_version: e.error_version.clone(),
                last_updated: e.last_updated.and_then(|t| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs_f64())
                }),
                unsupported: e.unsupported.iter().map(ToString::to_string).collect(),
            });
        }
    }
    ConfigDump {
        server: shared
            .server
            .and_then(|i| inner.bootstrap.xds_servers.get(i))
            .map(|s| s.server_uri.clone()),
        targets: state
            .targets()
            .iter()
            .map(|(t, l)| (t.clone(), l.clone()))
            .collect(),
        resources,
        counters: state.counters(),
        bootstrap_unsupported: inner.bootstrap.unsupported.clone(),
        stale: shared.restored_from.map(|t| StaleDump {
            source: "persisted",
            saved_at: t
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }),
    }
}

fn client_status(inner: &Inner, with_contents: bool) -> ClientStatusResponse {
    let shared = inner.lock();
    let mut generic = Vec::new();
    for ty in ResourceType::ALL {
        for (name, e) in shared.state.resources(ty) {
            let status = match e.status {
                ResourceStatus::Requested => ClientResourceStatus::Requested,
                ResourceStatus::DoesNotExist => ClientResourceStatus::DoesNotExist,
                ResourceStatus::Acked => ClientResourceStatus::Acked,
                ResourceStatus::Nacked => ClientResourceStatus::Nacked,
            };
            generic.push(GenericXdsConfig {
                type_url: ty.type_url().into(),
                name: name.clone(),
                version_info: e.version.clone(),
                xds_config: if with_contents { e.raw.clone() } else { None },
                last_updated: e.last_updated.map(timestamp),
                client_status: status as i32,
                error_state: e.error.as_ref().map(|details| UpdateFailureState {
                    details: details.clone(),
                    version_info: e.error_version.clone().unwrap_or_default(),
                    last_update_attempt: e.last_updated.map(timestamp),
                    failed_configuration: None,
                }),
                ..GenericXdsConfig::default()
            });
        }
    }
    ClientStatusResponse {
        config: vec![ClientConfig {
            node: Some(inner.node.clone()),
            generic_xds_configs: generic,
            ..ClientConfig::default()
        }],
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// The CSDS service of one [`XdsClient`](super::XdsClient).
#[derive(Clone, Debug)]
pub struct CsdsService {
    inner: Arc<Inner>,
}

impl CsdsService {
    pub(super) fn new(inner: Arc<Inner>) -> Self {
        Self { inner }
    }

    /// The tonic server wrapper, ready for `Server::builder().add_service(..)`.
    pub fn into_server(self) -> ClientStatusDiscoveryServiceServer<Self> {
        ClientStatusDiscoveryServiceServer::new(self)
    }
}

type StatusStream =
    Pin<Box<dyn Stream<Item = Result<ClientStatusResponse, tonic::Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ClientStatusDiscoveryService for CsdsService {
    type StreamClientStatusStream = StatusStream;

    async fn stream_client_status(
        &self,
        request: tonic::Request<tonic::Streaming<ClientStatusRequest>>,
    ) -> Result<tonic::Response<StatusStream>, tonic::Status> {
        let inner = self.inner.clone();
        let replies = request
            .into_inner()
            .map(move |r| r.map(|r| client_status(&inner, !r.exclude_resource_contents)));
        Ok(tonic::Response::new(Box::pin(replies)))
    }

    async fn fetch_client_status(
        &self,
        request: tonic::Request<ClientStatusRequest>,
    ) -> Result<tonic::Response<ClientStatusResponse>, tonic::Status> {
        let with_contents = !request.get_ref().exclude_resource_contents;
        Ok(tonic::Response::new(client_status(
            &self.inner,
            with_contents,
        )))
    }
}
