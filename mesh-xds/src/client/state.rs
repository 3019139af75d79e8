//! The ADS state-of-the-world protocol as a pure state machine: no I/O, no clock reads.
//!
//! The transport feeds it events — a stream connected, a response arrived, the stream broke, a
//! deadline passed (`now` is always an argument) — and drains the requests it wants sent with
//! [`AdsState::poll_request`]. It keeps, per type URL, the subscribed names, the last ACKed
//! `version_info` and the last nonce; per resource, the last good value, its status and error.
//!
//! Semantics, after Envoy and gRPC (A27, A46, A53, A57):
//! - A response is ACKed when every resource in it decodes; otherwise it is NACKed with the
//!   previous version and an `error_detail` naming each failing resource and field. The valid
//!   resources of a partly invalid response are applied anyway; an invalid one keeps its last
//!   good value.
//! - LDS and CDS responses are complete sets: a subscribed resource absent from one is deleted
//!   (unless the server has the `ignore_resource_deletion` feature). RDS and EDS responses only
//!   say what is in them.
//! - A subscribed resource with no value gets a does-not-exist deadline once its subscription
//!   is actually sent on a stream; the deadline is dropped when the stream breaks (a server
//!   that is down says nothing about existence) and re-armed when the name is sent again.
//! - A broken stream is an ambient error: every cached resource stays.
//! - What is subscribed follows the graph: watched targets → Listeners → their
//!   RouteConfiguration → the clusters their routes name (weighted and mirrors) → the
//!   ClusterLoadAssignment of each EDS cluster. A name that drops out of the graph is
//!   unsubscribed and forgotten.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use envoy_types::pb::{
    envoy::{
        config::{
            cluster::v3::Cluster, endpoint::v3::ClusterLoadAssignment, listener::v3::Listener,
            route::v3::RouteConfiguration,
        },
        service::discovery::v3::{DiscoveryRequest, DiscoveryResponse},
    },
    google::{protobuf::Any, rpc},
};
use mesh_core::{Action, Endpoint, InboundListener, RouteTable};
use prost::Message;

use crate::decode::{
    DecodeError, DecodedCluster, EndpointSource, HttpFilters, Unsupported, decode_cluster,
    decode_inbound_listener, decode_load_assignment,
    listener::{DecodedListener, ListenerRoutes, decode_listener},
    route::decode_route_configuration,
};

/// The default does-not-exist timeout (gRPC's and Envoy's).
pub const DEFAULT_DOES_NOT_EXIST_TIMEOUT: Duration = Duration::from_secs(15);

/// The `google.rpc.Code` of a NACK.
const INVALID_ARGUMENT: i32 = 3;

/// The four resource types the client subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// LDS.
    Listener,
    /// RDS.
    RouteConfiguration,
    /// CDS.
    Cluster,
    /// EDS.
    ClusterLoadAssignment,
}

/// Where a resource stands, as in CSDS's `ClientResourceStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResourceStatus {
    /// Subscribed; nothing received yet.
    Requested,
    /// The server said (or its silence past the deadline says) it does not exist.
    DoesNotExist,
    /// The last update was accepted.
    Acked,
    /// The last update was rejected; the last good value (if any) is still used.
    Nacked,
}

/// A decoded resource value.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    /// A Listener for clients (an API listener).
    Listener(DecodedListener),
    /// A Listener for a server (a socket listener: an inbound listener, gRFC A36).
    Inbound(Arc<InboundListener>),
    /// A RouteConfiguration, decoded with the HTTP filters of the listener that references
    /// it (re-decoded at assembly for a listener with other filters).
    Route {
        /// The proto, kept to re-decode with other filters.
        proto: Box<RouteConfiguration>,
        /// The filters it was decoded with.
        filters: HttpFilters,
        /// The routes.
        table: RouteTable,
    },
    /// A Cluster.
    Cluster(Box<DecodedCluster>),
    /// The endpoints of a ClusterLoadAssignment.
    Endpoints(Vec<Endpoint>),
}

/// What the client knows of one resource.
#[derive(Clone, Debug)]
pub struct ResourceEntry {
    /// Status.
    pub status: ResourceStatus,
    /// The last good value.
    pub value: Option<Resource>,
    /// The last good value as received, for the config dump.
    pub raw: Option<Any>,
    /// The `version_info` of the response that carried the last good value.
    pub version: String,
    /// Why the last update was rejected, when it was.
    pub error: Option<String>,
    /// The `version_info` of the rejected update.
    pub error_version: Option<String>,
    /// When the last update (accepted or rejected) arrived.
    pub last_updated: Option<SystemTime>,
    /// Fields of the last good value the mesh does not act on.
    pub unsupported: Vec<Unsupported>,
    /// When the resource is declared missing unless it arrives first.
    does_not_exist_at: Option<Instant>,
}

/// Per type URL.
#[derive(Debug, Default)]
struct TypeState {
    /// Names the graph wants.
    subscribed: BTreeSet<String>,
    /// Names last sent on the current stream; `None` when nothing was sent on it yet.
    sent: Option<BTreeSet<String>>,
    /// The last ACKed version.
    version_info: String,
    /// The nonce of the last response on the current stream.
    nonce: String,
    /// An ACK or NACK is owed.
    owes_reply: bool,
    /// `error_detail` of the owed NACK.
    nack: Option<String>,
    /// What the client knows, by name (only subscribed names).
    resources: BTreeMap<String, ResourceEntry>,
}

/// Counts of what happened, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    /// Responses ACKed.
    pub updates_accepted: u64,
    /// Responses NACKed.
    pub updates_rejected: u64,
    /// Resources rejected (one NACK may reject several).
    pub resources_rejected: u64,
    /// Unsupported fields reported in accepted resources (counted once per new value).
    pub unsupported_fields: u64,
}

/// What a response did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponseOutcome {
    /// Whether it was ACKed.
    pub acked: bool,
    /// Whether any cached value or status changed (the snapshot must be reassembled).
    pub changed: bool,
    /// Errors of the rejected resources, when NACKed.
    pub errors: Vec<String>,
}

/// The ADS client state.
#[derive(Debug)]
pub struct AdsState {
    types: BTreeMap<ResourceType, TypeState>,
    /// Watched targets and the name of their Listener.
    targets: BTreeMap<String, String>,
    /// Served ports and the name of their inbound Listener.
    servers: BTreeMap<u16, String>,
    does_not_exist_timeout: Duration,
    /// Honour the server's `ignore_resource_deletion` feature.
    ignore_resource_deletion: bool,
    /// Whether the next request is the first on its stream (it carries the node).
    first_on_stream: bool,
    connected: bool,
    counters: Counters,
}

// === impl ResourceType ===

impl ResourceType {
    /// All four, in dependency order.
    pub const ALL: [ResourceType; 4] = [
        ResourceType::Listener,
        ResourceType::RouteConfiguration,
        ResourceType::Cluster,
        ResourceType::ClusterLoadAssignment,
    ];

    /// The type URL.
    pub fn type_url(self) -> &'static str {
        match self {
            Self::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            Self::RouteConfiguration => {
                "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
            }
            Self::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            Self::ClusterLoadAssignment => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
        }
    }

    /// The type of a type URL.
    pub fn from_type_url(url: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.type_url() == url)
    }

    /// Whether a response carries the complete set (LDS, CDS), so absence means deletion.
    pub fn is_complete_set(self) -> bool {
        matches!(self, Self::Listener | Self::Cluster)
    }

    /// Envoy's short name (`Listener`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::Listener => "Listener",
            Self::RouteConfiguration => "RouteConfiguration",
            Self::Cluster => "Cluster",
            Self::ClusterLoadAssignment => "ClusterLoadAssignment",
        }
    }
}

impl fmt::Display for ResourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

// === impl ResourceEntry ===

impl ResourceEntry {
    fn requested() -> Self {
        Self {
            status: ResourceStatus::Requested,
            value: None,
            raw: None,
            version: String::new(),
            error: None,
            error_version: None,
            last_updated: None,
            unsupported: Vec::new(),
            does_not_exist_at: None,
        }
    }
}

// === impl AdsState ===

impl Default for AdsState {
    fn default() -> Self {
        Self::new()
    }
}

impl AdsState {
    /// A client with nothing watched.
    pub fn new() -> Self {
        Self {
            types: ResourceType::ALL
                .into_iter()
                .map(|t| (t, TypeState::default()))
                .collect(),
            targets: BTreeMap::new(),
            servers: BTreeMap::new(),
            does_not_exist_timeout: DEFAULT_DOES_NOT_EXIST_TIMEOUT,
            ignore_resource_deletion: false,
            first_on_stream: true,
            connected: false,
            counters: Counters::default(),
        }
    }

    /// Sets the does-not-exist timeout. Default is 15 s.
    pub fn set_does_not_exist_timeout(&mut self, timeout: Duration) {
        self.does_not_exist_timeout = timeout;
    }

    /// Keeps LDS/CDS resources a response leaves out (the server's `ignore_resource_deletion`
    /// feature). Default is off.
    pub fn set_ignore_resource_deletion(&mut self, ignore: bool) {
        self.ignore_resource_deletion = ignore;
    }

    /// Watches `target` (`host:port`) through the Listener `listener_name` (see
    /// [`Bootstrap::client_listener_name`](crate::bootstrap::Bootstrap::client_listener_name)).
    /// Returns whether it is new.
    pub fn watch(&mut self, target: &str, listener_name: &str) -> bool {
        if self.targets.contains_key(target) {
            return false;
        }
        self.targets
            .insert(target.to_owned(), listener_name.to_owned());
        self.resubscribe();
        true
    }

    /// Watched targets and their Listener names.
    pub fn targets(&self) -> &BTreeMap<String, String> {
        &self.targets
    }

    /// Serves `port` through the inbound Listener `listener_name` (see
    /// [`Bootstrap::server_listener_name`](crate::bootstrap::Bootstrap::server_listener_name)).
    /// Returns whether it is new.
    pub fn watch_server(&mut self, port: u16, listener_name: &str) -> bool {
        if self.servers.contains_key(&port) {
            return false;
        }
        self.servers.insert(port, listener_name.to_owned());
        self.resubscribe();
        true
    }

    /// Served ports and their inbound Listener names.
    pub fn servers(&self) -> &BTreeMap<u16, String> {
        &self.servers
    }

    /// A stream is up: every subscription is sent again, with the known versions.
    pub fn on_connected(&mut self) {
        self.connected = true;
        self.first_on_stream = true;
        for ts in self.types.values_mut() {
            ts.sent = None;
            ts.nonce.clear();
            ts.owes_reply = false;
            ts.nack = None;
        }
    }

    /// The stream broke or could not be made: an ambient error. The cache stays; pending
    /// does-not-exist deadlines are dropped (they re-arm when the names are sent again).
    pub fn on_disconnected(&mut self) {
        self.connected = false;
        for ts in self.types.values_mut() {
            ts.sent = None;
            ts.owes_reply = false;
            ts.nack = None;
            for entry in ts.resources.values_mut() {
                entry.does_not_exist_at = None;
            }
        }
    }

    /// Whether a stream is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// Whether some subscribed resource has never been received (neither a value nor known
    /// not to exist): the condition under which a fallback server is worth trying.
    pub fn has_uncached(&self) -> bool {
        self.types.values().any(|ts| {
            ts.resources
                .values()
                .any(|e| e.value.is_none() && e.status != ResourceStatus::DoesNotExist)
        })
    }

    /// The next request to send, if any; `now` arms the does-not-exist deadlines of the
    /// names it carries.
    pub fn poll_request(
        &mut self,
        now: Instant,
        node: &envoy_types::pb::envoy::config::core::v3::Node,
    ) -> Option<DiscoveryRequest> {
        if !self.connected {
            return None;
        }
        let timeout = self.does_not_exist_timeout;
        for (ty, ts) in &mut self.types {
            let names_changed = ts.sent.as_ref() != Some(&ts.subscribed);
            // Never send a first, empty request: in SotW it would mean "everything" for LDS/CDS.
            let nothing_to_say = ts.sent.is_none() && ts.subscribed.is_empty();
            if !(names_changed || ts.owes_reply) || nothing_to_say {
                continue;
            }
            for name in &ts.subscribed {
                let newly_sent = !ts.sent.as_ref().is_some_and(|s| s.contains(name));
                if let Some(entry) = ts.resources.get_mut(name)
                    && newly_sent
                    && entry.value.is_none()
                    && entry.status == ResourceStatus::Requested
                {
                    entry.does_not_exist_at = Some(now + timeout);
                }
            }
            ts.sent = Some(ts.subscribed.clone());
            ts.owes_reply = false;
            let error_detail = ts.nack.take().map(|message| rpc::Status {
                code: INVALID_ARGUMENT,
                message,
                details: Vec::new(),
            });
            let request = DiscoveryRequest {
                version_info: ts.version_info.clone(),
                node: self.first_on_stream.then(|| node.clone()),
                resource_names: ts.subscribed.iter().cloned().collect(),
                type_url: ty.type_url().to_owned(),
                response_nonce: ts.nonce.clone(),
                error_detail,
                ..DiscoveryRequest::default()
            };
            self.first_on_stream = false;
            return Some(request);
        }
        None
    }

    /// The earliest does-not-exist deadline.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.types
            .values()
            .flat_map(|ts| ts.resources.values())
            .filter_map(|e| e.does_not_exist_at)
            .min()
    }

    /// Declares missing every resource whose deadline is at or before `now`. Returns whether
    /// anything changed.
    pub fn handle_timeout(&mut self, now: Instant) -> bool {
        let mut changed = false;
        for (ty, ts) in &mut self.types {
            for (name, entry) in &mut ts.resources {
                if entry.does_not_exist_at.is_some_and(|at| at <= now) {
                    entry.does_not_exist_at = None;
                    entry.status = ResourceStatus::DoesNotExist;
                    tracing::warn!(%ty, %name, "xDS resource does not exist (no answer before the deadline)");
                    changed = true;
                }
            }
        }
        if changed {
            self.resubscribe();
        }
        changed
    }

    /// Handles a response; the ACK or NACK is then available from [`poll_request`](Self::poll_request).
    pub fn on_response(
        &mut self,
        response: &DiscoveryResponse,
        wall: SystemTime,
    ) -> ResponseOutcome {
        let mut outcome = ResponseOutcome::default();
        let Some(ty) = ResourceType::from_type_url(&response.type_url) else {
            // Not ours: nothing to ACK against; ignore, as gRPC does.
            tracing::warn!(type_url = %response.type_url, "xDS response for a type not subscribed");
            return outcome;
        };
        // Decode everything first, so this is one pass over the cache afterwards.
        let mut decoded: Vec<(String, Any, Decoded)> = Vec::new();
        let mut errors: Vec<(Option<String>, String)> = Vec::new();
        for (i, any) in response.resources.iter().enumerate() {
            match self.decode_one(ty, any) {
                Ok((name, value)) => decoded.push((name, any.clone(), value)),
                Err(DecodeFailure { name, message }) => {
                    let message = match &name {
                        Some(_) => message,
                        None => format!("{ty} resources[{i}]: {message}"),
                    };
                    errors.push((name, message));
                }
            }
        }
        let version = &response.version_info;
        let ts = self.types.entry(ty).or_default();
        ts.nonce = response.nonce.clone();
        ts.owes_reply = true;
        let mut present: BTreeSet<String> = BTreeSet::new();
        for (name, raw, value) in decoded {
            present.insert(name.clone());
            let Some(entry) = ts.resources.get_mut(&name) else {
                continue; // Not subscribed (any more): ignored.
            };
            let same =
                entry.value.as_ref() == Some(&value.value) && entry.status == ResourceStatus::Acked;
            // Reported once per new value, not on every identical re-send (reconnects).
            if !same {
                for u in &value.unsupported {
                    tracing::warn!(%u, "xDS field not supported");
                }
                self.counters.unsupported_fields += value.unsupported.len() as u64;
            }
            entry.status = ResourceStatus::Acked;
            entry.value = Some(value.value);
            entry.raw = Some(raw);
            entry.version = version.clone();
            entry.error = None;
            entry.error_version = None;
            entry.last_updated = Some(wall);
            entry.unsupported = value.unsupported;
            entry.does_not_exist_at = None;
            outcome.changed |= !same;
        }
        for (name, message) in &errors {
            tracing::warn!(%ty, version = %version, error = %message, "xDS resource rejected");
            let Some(name) = name else { continue };
            present.insert(name.clone());
            if let Some(entry) = ts.resources.get_mut(name) {
                entry.status = ResourceStatus::Nacked;
                entry.error = Some(message.clone());
                entry.error_version = Some(version.clone());
                entry.last_updated = Some(wall);
                entry.does_not_exist_at = None;
                outcome.changed = true;
            }
        }
        if ty.is_complete_set() && !self.ignore_resource_deletion {
            for (name, entry) in &mut ts.resources {
                if !present.contains(name) && entry.status != ResourceStatus::DoesNotExist {
                    tracing::info!(%ty, %name, "xDS resource deleted by the server");
                    *entry = ResourceEntry {
                        status: ResourceStatus::DoesNotExist,
                        last_updated: Some(wall),
                        version: version.clone(),
                        ..ResourceEntry::requested()
                    };
                    outcome.changed = true;
                }
            }
        }
        if errors.is_empty() {
            ts.version_info = version.clone();
            self.counters.updates_accepted += 1;
            outcome.acked = true;
        } else {
            let detail: Vec<&str> = errors.iter().map(|(_, m)| m.as_str()).collect();
            ts.nack = Some(detail.join("; "));
            self.counters.updates_rejected += 1;
            self.counters.resources_rejected += errors.len() as u64;
            outcome.errors = errors.into_iter().map(|(_, m)| m).collect();
        }
        if outcome.changed {
            self.resubscribe();
        }
        outcome
    }

    /// Counters.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// A cached resource.
    pub fn resource(&self, ty: ResourceType, name: &str) -> Option<&ResourceEntry> {
        self.types.get(&ty)?.resources.get(name)
    }

    /// Every cached resource of a type, by name.
    pub fn resources(&self, ty: ResourceType) -> impl Iterator<Item = (&String, &ResourceEntry)> {
        self.types
            .get(&ty)
            .into_iter()
            .flat_map(|ts| ts.resources.iter())
    }

    /// The last ACKed version of a type.
    pub fn version_info(&self, ty: ResourceType) -> &str {
        self.types
            .get(&ty)
            .map_or("", |ts| ts.version_info.as_str())
    }

    /// The names subscribed for a type.
    pub fn subscribed(&self, ty: ResourceType) -> impl Iterator<Item = &String> {
        self.types
            .get(&ty)
            .into_iter()
            .flat_map(|ts| ts.subscribed.iter())
    }

    /// Decodes one resource of a response.
    fn decode_one(&self, ty: ResourceType, any: &Any) -> Result<(String, Decoded), DecodeFailure> {
        // A resource may come wrapped in an `envoy.service.discovery.v3.Resource`.
        let unwrapped;
        let any = if any.type_url == RESOURCE_WRAPPER {
            let wrapper = envoy_types::pb::envoy::service::discovery::v3::Resource::decode(
                any.value.as_slice(),
            )
            .map_err(|e| DecodeFailure::unnamed(format!("malformed Resource wrapper: {e}")))?;
            unwrapped = wrapper
                .resource
                .ok_or_else(|| DecodeFailure::unnamed("Resource wrapper without a resource"))?;
            &unwrapped
        } else {
            any
        };
        if any.type_url != ty.type_url() {
            return Err(DecodeFailure::unnamed(format!(
                "type_url `{}` in a {ty} response",
                any.type_url
            )));
        }
        let bytes = any.value.as_slice();
        let malformed =
            |e: prost::DecodeError| DecodeFailure::unnamed(format!("malformed {ty}: {e}"));
        match ty {
            ResourceType::Listener => {
                let l = Listener::decode(bytes).map_err(malformed)?;
                // A client listener is an API listener; a server's is a socket listener.
                if l.api_listener.is_none() {
                    let d = decode_inbound_listener(&l).map_err(DecodeFailure::from)?;
                    return Ok((l.name, d.map(|l| Resource::Inbound(Arc::new(l)))));
                }
                let d = decode_listener(&l).map_err(DecodeFailure::from)?;
                Ok((l.name, d.map(Resource::Listener)))
            }
            ResourceType::RouteConfiguration => {
                let rc = RouteConfiguration::decode(bytes).map_err(malformed)?;
                let filters = self.route_filters(&rc.name);
                let mut first: Option<crate::decode::Decoded<RouteTable>> = None;
                for f in &filters {
                    let d = decode_route_configuration(&rc, f).map_err(DecodeFailure::from)?;
                    first.get_or_insert(d);
                }
                let (filters, d) = match (filters.into_iter().next(), first) {
                    (Some(f), Some(d)) => (f, d),
                    _ => {
                        let f = HttpFilters::default();
                        let d = decode_route_configuration(&rc, &f).map_err(DecodeFailure::from)?;
                        (f, d)
                    }
                };
                let name = rc.name.clone();
                Ok((
                    name,
                    d.map(|table| Resource::Route {
                        proto: Box::new(rc),
                        filters,
                        table,
                    }),
                ))
            }
            ResourceType::Cluster => {
                let c = Cluster::decode(bytes).map_err(malformed)?;
                let d = decode_cluster(&c).map_err(DecodeFailure::from)?;
                Ok((c.name, d.map(|c| Resource::Cluster(Box::new(c)))))
            }
            ResourceType::ClusterLoadAssignment => {
                let cla = ClusterLoadAssignment::decode(bytes).map_err(malformed)?;
                let d = decode_load_assignment(&cla).map_err(DecodeFailure::from)?;
                Ok((cla.cluster_name, d.map(Resource::Endpoints)))
            }
        }
    }

    /// The HTTP filters of every cached listener that names RouteConfiguration `name`.
    fn route_filters(&self, name: &str) -> Vec<HttpFilters> {
        let mut out: Vec<HttpFilters> = Vec::new();
        for (_, entry) in self.resources(ResourceType::Listener) {
            if let Some(Resource::Listener(l)) = &entry.value
                && matches!(&l.routes, ListenerRoutes::Rds { route_config_name } if route_config_name == name)
                && !out.contains(&l.filters)
            {
                out.push(l.filters.clone());
            }
        }
        out
    }

    /// Recomputes what is subscribed from the watched targets and the cache.
    fn resubscribe(&mut self) {
        let mut want: BTreeMap<ResourceType, BTreeSet<String>> = BTreeMap::new();
        let listeners: BTreeSet<String> = self
            .targets
            .values()
            .chain(self.servers.values())
            .cloned()
            .collect();
        let mut routes = BTreeSet::new();
        let mut clusters = BTreeSet::new();
        for name in &listeners {
            match self.value(ResourceType::Listener, name) {
                Some(Resource::Listener(l)) => match &l.routes {
                    ListenerRoutes::Rds { route_config_name } => {
                        routes.insert(route_config_name.clone());
                    }
                    ListenerRoutes::Inline(table) => clusters.extend(route_clusters(table)),
                },
                _ => continue,
            }
        }
        for name in &routes {
            if let Some(Resource::Route { table, .. }) =
                self.value(ResourceType::RouteConfiguration, name)
            {
                clusters.extend(route_clusters(table));
            }
        }
        let mut endpoints = BTreeSet::new();
        for name in &clusters {
            if let Some(Resource::Cluster(c)) = self.value(ResourceType::Cluster, name)
                && let EndpointSource::Eds { service_name } = &c.endpoints
            {
                endpoints.insert(service_name.clone());
            }
        }
        want.insert(ResourceType::Listener, listeners);
        want.insert(ResourceType::RouteConfiguration, routes);
        want.insert(ResourceType::Cluster, clusters);
        want.insert(ResourceType::ClusterLoadAssignment, endpoints);
        // One walk suffices: each level reads only values cached at the level before it, and
        // a newly subscribed name has no value yet.
        for (ty, names) in want {
            let ts = self.types.entry(ty).or_default();
            ts.resources.retain(|n, _| names.contains(n));
            for n in &names {
                ts.resources
                    .entry(n.clone())
                    .or_insert_with(ResourceEntry::requested);
            }
            ts.subscribed = names;
        }
    }

    fn value(&self, ty: ResourceType, name: &str) -> Option<&Resource> {
        self.resource(ty, name)?.value.as_ref()
    }
}

/// The type URL of `envoy.service.discovery.v3.Resource`, which may wrap resources.
const RESOURCE_WRAPPER: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

type Decoded = crate::decode::Decoded<Resource>;

/// Every cluster a route table sends to: weighted clusters and mirrors.
pub fn route_clusters(table: &RouteTable) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for vh in table.virtual_hosts() {
        for route in vh.routes() {
            if let Action::Forward(fwd) = &route.action {
                for c in fwd.clusters.clusters() {
                    out.insert(c.name.to_string());
                }
                for m in fwd.mirrors.iter() {
                    out.insert(m.cluster.to_string());
                }
            }
        }
    }
    out
}

/// Why one resource of a response was rejected.
#[derive(Debug)]
struct DecodeFailure {
    /// Its name, when it could be read.
    name: Option<String>,
    message: String,
}

impl DecodeFailure {
    fn unnamed(message: impl Into<String>) -> Self {
        Self {
            name: None,
            message: message.into(),
        }
    }
}

impl From<DecodeError> for DecodeFailure {
    fn from(e: DecodeError) -> Self {
        Self {
            name: (!e.name.is_empty()).then(|| e.name.clone()),
            message: e.to_string(),
        }
    }
}

impl<T> crate::decode::Decoded<T> {
    /// Maps the value, keeping the reports.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> crate::decode::Decoded<U> {
        crate::decode::Decoded {
            value: f(self.value),
            unsupported: self.unsupported,
        }
    }
}
