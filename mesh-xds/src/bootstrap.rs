//! gRPC's xDS bootstrap: which management servers to talk to, who this node is, and where
//! certificates come from.
//!
//! The format is gRPC's (`grpc/proposal` A27, A29, A47, A71), so the file istio-agent writes for
//! proxyless gRPC — and any bootstrap written for grpc-go, grpc-java or C-core — loads unchanged.
//! It is read from `GRPC_XDS_BOOTSTRAP` (a path), else `GRPC_XDS_BOOTSTRAP_CONFIG` (the JSON
//! itself), or given in code with [`Bootstrap::from_json`]. Every error names the JSON path of the
//! field at fault. Fields this client does not act on (`authorities`, unknown top-level keys)
//! are kept as [`Bootstrap::unsupported`] notes and logged, never silently dropped.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use envoy_types::pb::{
    envoy::config::core::v3 as core,
    google::protobuf::{self as pbany, value::Kind},
};
use serde::Deserialize;

#[cfg(test)]
mod tests;

/// The environment variable holding the path of the bootstrap file.
pub const BOOTSTRAP_PATH_ENV: &str = "GRPC_XDS_BOOTSTRAP";
/// The environment variable holding the bootstrap JSON itself.
pub const BOOTSTRAP_CONFIG_ENV: &str = "GRPC_XDS_BOOTSTRAP_CONFIG";

/// gRPC's default `refresh_interval` of the `file_watcher` certificate provider.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(600);

/// A parsed bootstrap.
#[derive(Clone, Debug, PartialEq)]
pub struct Bootstrap {
    /// Management servers, in order of preference: the first is the primary, the others are
    /// fallbacks (gRPC A71).
    pub xds_servers: Vec<XdsServer>,
    /// This client's identity, sent in the first request of every stream.
    pub node: Node,
    /// Certificate provider instances by name (referenced from `UpstreamTlsContext`).
    pub certificate_providers: BTreeMap<String, CertificateProvider>,
    /// The LDS resource name of a client target; `%s` is replaced by the target. Default `%s`.
    pub client_default_listener_resource_name_template: String,
    /// The LDS resource name of a server listener (`%s` is `ip:port`), when set.
    pub server_listener_resource_name_template: Option<String>,
    /// Fields present in the file that this client does not act on, one note each.
    pub unsupported: Vec<String>,
}

/// One management server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct XdsServer {
    /// gRPC target of the server, e.g. `dns:///istiod.istio-system.svc:15010`,
    /// `unix:///etc/istio/proxy/XDS` or `127.0.0.1:18000`.
    pub server_uri: String,
    /// The first channel credential type this client supports.
    pub channel_creds: ChannelCreds,
    /// Server features, e.g. `xds_v3`, `ignore_resource_deletion`.
    pub server_features: Vec<String>,
}

/// How to secure the channel to a management server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChannelCreds {
    /// Plaintext.
    Insecure,
    /// TLS with the system's trust roots.
    Tls,
}

/// The node identity.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Node {
    /// Node id, e.g. `sidecar~10.0.0.1~pod.ns~ns.svc.cluster.local`.
    pub id: String,
    /// Node cluster.
    pub cluster: String,
    /// Where this node runs.
    pub locality: Option<NodeLocality>,
    /// Opaque metadata for the management server (istiod reads `GENERATOR`, `NAMESPACE`, ...).
    pub metadata: serde_json::Map<String, serde_json::Value>,
}

/// Region / zone / sub-zone of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct NodeLocality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
    /// Sub-zone.
    pub sub_zone: String,
}

/// A certificate provider instance.
#[derive(Clone, Debug, PartialEq)]
pub enum CertificateProvider {
    /// Certificates in PEM files, re-read every `refresh_interval`.
    FileWatcher(FileWatcherConfig),
    /// A plugin this client does not implement; resources referencing it are rejected when
    /// decoded for use.
    Unsupported {
        /// The `plugin_name`.
        plugin_name: String,
    },
}

/// The `file_watcher` plugin's configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWatcherConfig {
    /// Identity certificate chain (PEM), with `private_key_file`.
    pub certificate_file: Option<PathBuf>,
    /// Identity private key (PEM), with `certificate_file`.
    pub private_key_file: Option<PathBuf>,
    /// Trust bundle (PEM).
    pub ca_certificate_file: Option<PathBuf>,
    /// How often the files are re-read. Default is 600 s.
    pub refresh_interval: Duration,
}

/// A bootstrap that cannot be used: where, and why.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Neither environment variable is set.
    #[error("no xDS bootstrap: set {BOOTSTRAP_PATH_ENV} (a file) or {BOOTSTRAP_CONFIG_ENV} (JSON)")]
    NotConfigured,
    /// The file could not be read.
    #[error("reading bootstrap {path}: {source}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A field is missing, malformed, or has a value the client cannot use.
    #[error("bootstrap: {field}: {message}")]
    Invalid {
        /// JSON path of the field, e.g. `xds_servers[0].channel_creds`.
        field: String,
        /// Why, in lower case.
        message: String,
    },
}

// === raw JSON shapes ===

#[derive(Deserialize)]
struct RawBootstrap {
    #[serde(default)]
    xds_servers: Vec<RawServer>,
    #[serde(default)]
    node: Option<RawNode>,
    #[serde(default)]
    certificate_providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    client_default_listener_resource_name_template: Option<String>,
    #[serde(default)]
    server_listener_resource_name_template: Option<String>,
    #[serde(default)]
    authorities: Option<serde_json::Value>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawServer {
    server_uri: String,
    #[serde(default)]
    channel_creds: Vec<RawCreds>,
    #[serde(default)]
    server_features: Vec<String>,
}

#[derive(Deserialize)]
struct RawCreds {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct RawNode {
    #[serde(default)]
    id: String,
    #[serde(default)]
    cluster: String,
    #[serde(default)]
    locality: Option<NodeLocality>,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Deserialize)]
struct RawProvider {
    plugin_name: String,
    #[serde(default)]
    config: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFileWatcher {
    #[serde(default)]
    certificate_file: Option<PathBuf>,
    #[serde(default)]
    private_key_file: Option<PathBuf>,
    #[serde(default)]
    ca_certificate_file: Option<PathBuf>,
    #[serde(default)]
    refresh_interval: Option<String>,
}

// === impl Bootstrap ===

impl Bootstrap {
    /// Reads the bootstrap named by `GRPC_XDS_BOOTSTRAP`, else the JSON in
    /// `GRPC_XDS_BOOTSTRAP_CONFIG` (gRPC's precedence).
    pub fn from_env() -> Result<Self, BootstrapError> {
        Self::from_sources(
            std::env::var_os(BOOTSTRAP_PATH_ENV),
            std::env::var(BOOTSTRAP_CONFIG_ENV).ok(),
        )
    }

    /// The bootstrap from the values of the two variables: the path wins over the inline JSON;
    /// an empty value counts as unset.
    fn from_sources(
        path: Option<std::ffi::OsString>,
        json: Option<String>,
    ) -> Result<Self, BootstrapError> {
        if let Some(path) = path.filter(|p| !p.is_empty()) {
            return Self::from_file(path);
        }
        match json {
            Some(json) if !json.is_empty() => Self::from_json(&json),
            _ => Err(BootstrapError::NotConfigured),
        }
    }

    /// Reads a bootstrap file.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Self, BootstrapError> {
        let path = path.into();
        let json = std::fs::read_to_string(&path)
            .map_err(|source| BootstrapError::Read { path, source })?;
        Self::from_json(&json)
    }

    /// Parses bootstrap JSON.
    pub fn from_json(json: &str) -> Result<Self, BootstrapError> {
        let de = &mut serde_json::Deserializer::from_str(json);
        let raw: RawBootstrap = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            BootstrapError::Invalid {
                field: if field == "." { "(root)".into() } else { field },
                message: e.into_inner().to_string(),
            }
        })?;
        let bootstrap = Self::from_raw(raw)?;
        for note in &bootstrap.unsupported {
            tracing::warn!(%note, "xDS bootstrap field not supported");
        }
        Ok(bootstrap)
    }

    /// A bootstrap for one plaintext management server at `server_uri`, with node id `node_id`
    /// (handy in tests and for the development control plane).
    pub fn insecure(server_uri: impl Into<String>, node_id: impl Into<String>) -> Self {
        Self {
            xds_servers: vec![XdsServer {
                server_uri: server_uri.into(),
                channel_creds: ChannelCreds::Insecure,
                server_features: vec!["xds_v3".into()],
            }],
            node: Node {
                id: node_id.into(),
                ..Node::default()
            },
            certificate_providers: BTreeMap::new(),
            client_default_listener_resource_name_template: "%s".into(),
            server_listener_resource_name_template: None,
            unsupported: Vec::new(),
        }
    }

    /// The LDS resource name of the client target `target` (`host:port`).
    pub fn client_listener_name(&self, target: &str) -> String {
        let template = &self.client_default_listener_resource_name_template;
        if template.starts_with("xdstp:") {
            // A47: in xdstp names the target is percent-encoded (keeping `/` and `:`).
            template.replace("%s", &percent_encode(target))
        } else {
            template.replace("%s", target)
        }
    }

    /// The LDS resource name of the inbound listener of a server listening on `address`
    /// (gRFC A36: `%s` in `server_listener_resource_name_template` becomes `ip:port`, IPv6 in
    /// brackets; istiod's template is `xds.istio.io/grpc/lds/inbound/%s`). `None` when the
    /// bootstrap has no template: then xDS cannot serve.
    pub fn server_listener_name(&self, address: std::net::SocketAddr) -> Option<String> {
        let template = self.server_listener_resource_name_template.as_ref()?;
        let address = address.to_string();
        Some(if template.starts_with("xdstp:") {
            template.replace("%s", &percent_encode(&address))
        } else {
            template.replace("%s", &address)
        })
    }

    fn from_raw(raw: RawBootstrap) -> Result<Self, BootstrapError> {
        let invalid = |field: String, message: &str| BootstrapError::Invalid {
            field,
            message: message.into(),
        };
        if raw.xds_servers.is_empty() {
            return Err(invalid(
                "xds_servers".into(),
                "at least one server is required",
            ));
        }
        let mut xds_servers = Vec::with_capacity(raw.xds_servers.len());
        for (i, s) in raw.xds_servers.into_iter().enumerate() {
            if s.server_uri.is_empty() {
                return Err(invalid(format!("xds_servers[{i}].server_uri"), "is empty"));
            }
            // gRPC uses the first type it supports and ignores the others.
            let creds = s.channel_creds.iter().find_map(|c| match c.kind.as_str() {
                "insecure" => Some(ChannelCreds::Insecure),
                "tls" => Some(ChannelCreds::Tls),
                _ => None,
            });
            let Some(channel_creds) = creds else {
                let kinds: Vec<_> = s.channel_creds.iter().map(|c| c.kind.as_str()).collect();
                return Err(BootstrapError::Invalid {
                    field: format!("xds_servers[{i}].channel_creds"),
                    message: format!(
                        "no supported type among {kinds:?} (supported: insecure, tls)"
                    ),
                });
            };
            xds_servers.push(XdsServer {
                server_uri: s.server_uri,
                channel_creds,
                server_features: s.server_features,
            });
        }
        let node = raw
            .node
            .map(|n| Node {
                id: n.id,
                cluster: n.cluster,
                locality: n.locality,
                metadata: n.metadata.unwrap_or_default(),
            })
            .unwrap_or_default();
        let mut certificate_providers = BTreeMap::new();
        for (name, p) in raw.certificate_providers {
            let provider = certificate_provider(&name, p)?;
            certificate_providers.insert(name, provider);
        }
        let mut unsupported = Vec::new();
        if let Some(authorities) = raw.authorities
            && authorities.as_object().is_none_or(|a| !a.is_empty())
        {
            unsupported.push(
                "authorities: federation (xdstp:// resource names) is not supported; only the \
                 top-level xds_servers are used"
                    .to_owned(),
            );
        }
        for key in raw.other.keys() {
            unsupported.push(format!("{key}: unknown field, ignored"));
        }
        let client_default_listener_resource_name_template = raw
            .client_default_listener_resource_name_template
            .unwrap_or_else(|| "%s".into());
        Ok(Self {
            xds_servers,
            node,
            certificate_providers,
            client_default_listener_resource_name_template,
            server_listener_resource_name_template: raw.server_listener_resource_name_template,
            unsupported,
        })
    }
}

fn certificate_provider(
    name: &str,
    raw: RawProvider,
) -> Result<CertificateProvider, BootstrapError> {
    let field = |f: &str| format!("certificate_providers.{name}.{f}");
    if raw.plugin_name != "file_watcher" {
        tracing::warn!(
            provider = name,
            plugin = %raw.plugin_name,
            "certificate provider plugin not supported; resources using it will be rejected"
        );
        return Ok(CertificateProvider::Unsupported {
            plugin_name: raw.plugin_name,
        });
    }
    let config = raw
        .config
        .unwrap_or(serde_json::Value::Object(Default::default()));
    let fw: RawFileWatcher =
        serde_path_to_error::deserialize(config).map_err(|e| BootstrapError::Invalid {
            field: field(&format!("config.{}", e.path())),
            message: e.into_inner().to_string(),
        })?;
    if fw.certificate_file.is_some() != fw.private_key_file.is_some() {
        return Err(BootstrapError::Invalid {
            field: field("config"),
            message: "certificate_file and private_key_file must be set together".into(),
        });
    }
    if fw.certificate_file.is_none() && fw.ca_certificate_file.is_none() {
        return Err(BootstrapError::Invalid {
            field: field("config"),
            message: "needs certificate_file and private_key_file, or ca_certificate_file".into(),
        });
    }
    let refresh_interval = match fw.refresh_interval {
        None => DEFAULT_REFRESH_INTERVAL,
        Some(text) => match parse_json_duration(&text) {
            Some(d) if !d.is_zero() => d,
            _ => {
                return Err(BootstrapError::Invalid {
                    field: field("config.refresh_interval"),
                    message: format!(
                        "`{text}` is not a positive protobuf JSON duration such as `900s`"
                    ),
                });
            }
        },
    };
    Ok(CertificateProvider::FileWatcher(FileWatcherConfig {
        certificate_file: fw.certificate_file,
        private_key_file: fw.private_key_file,
        ca_certificate_file: fw.ca_certificate_file,
        refresh_interval,
    }))
}

/// A protobuf JSON duration: decimal seconds with an `s` suffix (`900s`, `1.5s`).
fn parse_json_duration(text: &str) -> Option<Duration> {
    let secs = text.strip_suffix('s')?;
    let (whole, frac) = secs.split_once('.').unwrap_or((secs, ""));
    if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) || frac.len() > 9 {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}").parse().ok()?
    };
    Some(Duration::new(whole, nanos))
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

// === impl Node ===

impl Node {
    /// The workload's Kubernetes namespace, as istio-agent writes it (metadata `NAMESPACE`).
    pub fn workload_namespace(&self) -> Option<&str> {
        self.metadata
            .get("NAMESPACE")
            .and_then(serde_json::Value::as_str)
            .filter(|ns| !ns.is_empty())
    }

    /// The workload's IP address: the first of istio-agent's metadata `INSTANCE_IPS` (a
    /// comma-separated list) that parses.
    pub fn workload_address(&self) -> Option<std::net::IpAddr> {
        self.metadata
            .get("INSTANCE_IPS")
            .and_then(serde_json::Value::as_str)?
            .split(',')
            .find_map(|ip| ip.trim().parse().ok())
    }

    /// Where the workload runs (the node's `locality`), for locality load balancing; `None`
    /// when absent or empty.
    pub fn workload_locality(&self) -> Option<mesh_core::Locality> {
        self.locality
            .as_ref()
            .filter(|l| !(l.region.is_empty() && l.zone.is_empty() && l.sub_zone.is_empty()))
            .map(|l| mesh_core::Locality {
                region: l.region.as_str().into(),
                zone: l.zone.as_str().into(),
                sub_zone: l.sub_zone.as_str().into(),
            })
    }

    /// The workload's pod labels, as istio-agent writes them (metadata `LABELS`, an object of
    /// strings); entries whose value is not a string are skipped. Empty when absent.
    pub fn workload_labels(&self) -> mesh_core::Labels {
        let Some(labels) = self
            .metadata
            .get("LABELS")
            .and_then(serde_json::Value::as_object)
        else {
            return mesh_core::Labels::default();
        };
        let pairs = labels
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)));
        // JSON object keys are unique, so the labels are valid.
        mesh_core::Labels::new(pairs).unwrap_or_default()
    }

    /// The `Node` proto sent to management servers.
    pub fn to_proto(&self) -> core::Node {
        core::Node {
            id: self.id.clone(),
            cluster: self.cluster.clone(),
            metadata: (!self.metadata.is_empty()).then(|| json_struct(&self.metadata)),
            locality: self.locality.as_ref().map(|l| core::Locality {
                region: l.region.clone(),
                zone: l.zone.clone(),
                sub_zone: l.sub_zone.clone(),
            }),
            user_agent_name: "mesh-xds".into(),
            user_agent_version_type: Some(core::node::UserAgentVersionType::UserAgentVersion(
                env!("CARGO_PKG_VERSION").into(),
            )),
            client_features: vec!["envoy.lb.does_not_support_overprovisioning".into()],
            ..core::Node::default()
        }
    }
}

fn json_struct(map: &serde_json::Map<String, serde_json::Value>) -> pbany::Struct {
    pbany::Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_value(v)))
            .collect(),
    }
}

fn json_value(v: &serde_json::Value) -> pbany::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(*b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s.clone()),
        J::Array(a) => Kind::ListValue(pbany::ListValue {
            values: a.iter().map(json_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(json_struct(o)),
    };
    pbany::Value { kind: Some(kind) }
}
