//! Istio's `Sidecar` resource for the local workload: which services it sees, and what a call
//! to any other host gets.
//!
//! istiod picks one Sidecar per proxy (one whose `workloadSelector` matches the workload's
//! labels, else the selector-less one of its namespace, else the selector-less one of the root
//! namespace) and generates that proxy's listeners and routes only for the services its
//! `egress[].hosts` import; a VirtualService applies only when it is imported too. A host the
//! proxy does not know is then sent to Envoy's `PassthroughCluster` (`ALLOW_ANY`, the mesh
//! default) or `BlackHoleCluster` (`REGISTRY_ONLY`). A proxyless mesh learns its workload
//! after the configuration is loaded, so the loader keeps the Sidecars and what each listener
//! came from ([`Visibility`]), and [`MeshConfig::for_workload`](crate::MeshConfig::for_workload)
//! narrows the configuration when the workload is known.

use std::{collections::BTreeMap, fmt, sync::Arc};

use crate::{Labels, RouteTable, Workload};

mod rules;

pub use self::rules::{
    HostRules, RuleEntry, RuleIndex, choose_virtual_service, unnarrowed_virtual_service,
};

/// What a call to a host the workload does not know gets (`outboundTrafficPolicy.mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OutboundMode {
    /// Passed through to the host by DNS with no mesh policy (Envoy's `PassthroughCluster`).
    /// Istio's default.
    AllowAny,
    /// Refused (Envoy's `BlackHoleCluster`): gRPC `UNAVAILABLE`, HTTP 502.
    RegistryOnly,
}

/// The namespace part of an `egress[].hosts` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceImport {
    /// `*/`: every namespace.
    Any,
    /// `./`: the workload's own namespace (for a root-namespace Sidecar too, as istiod
    /// converts it for each namespace it applies to).
    Own,
    /// `~/`: no namespace; the entry imports nothing.
    Nothing,
    /// `name/`.
    Named(Arc<str>),
}

/// One `egress[].hosts` entry: `namespace/dnsName`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HostImport {
    /// Which namespaces' services and VirtualServices it imports.
    pub namespace: NamespaceImport,
    /// `*`, `*.example.com` (a wildcard in the left-most label) or an exact host.
    pub dns_name: Arc<str>,
}

/// One `egress[]` listener: the hosts it imports, on its port or on every port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EgressListener {
    /// `port.number`: the imports hold for this port only; `None` is every port.
    pub port: Option<u16>,
    /// The imported hosts.
    pub hosts: Arc<[HostImport]>,
}

/// One Sidecar resource, as far as a proxyless workload applies it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sidecar {
    /// `metadata.name`.
    pub name: Arc<str>,
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// `workloadSelector.labels`; `None` applies to the whole namespace.
    pub selector: Option<Labels>,
    /// `egress`; `None` (absent) imports every service, as istiod does.
    pub egress: Option<Arc<[EgressListener]>>,
    /// `outboundTrafficPolicy.mode`; `None` is the mesh default ([`OutboundMode::AllowAny`]).
    pub mode: Option<OutboundMode>,
    /// `outboundTrafficPolicy.egressProxy` host. Not supported: unknown hosts are then refused,
    /// since passing them through directly would bypass the egress proxy.
    pub egress_proxy: Option<Arc<str>>,
}

/// The namespaces a VirtualService, DestinationRule or service (ServiceEntry, Kubernetes
/// Service) is visible to (`exportTo`). A resource not exported to a workload's namespace does
/// not apply to it, as istiod leaves it out of that workload's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum ExportTo {
    /// `*`, or `exportTo` absent: every namespace (Istio's default, with MeshConfig's
    /// `defaultVirtualServiceExportTo` and friends left at `*`).
    #[default]
    All,
    /// These namespaces only (`.` stands for the resource's own); empty for `~`.
    Namespaces(Arc<[Arc<str>]>),
}

/// What one listener (`host:port`) came from: the service and the VirtualService routing it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ListenerOrigin {
    /// The service host.
    pub host: Arc<str>,
    /// The service port.
    pub port: u16,
    /// The namespace of the registry entry (Kubernetes Service or ServiceEntry), or of the
    /// policy that named the host for a host resolved through DNS.
    pub namespace: Arc<str>,
    /// Whether the host is in the service registry (not only resolved through DNS).
    pub registered: bool,
    /// The service's `exportTo` (a Kubernetes Service's `networking.istio.io/exportTo`
    /// annotation).
    pub export_to: ExportTo,
    /// The VirtualService whose routes the listener serves in the un-narrowed configuration,
    /// if any.
    pub routed_by: Option<RoutedBy>,
    /// Every VirtualService for the host with routes on the port, in load order: which one
    /// applies depends on the workload's namespace and Sidecar
    /// ([`choose_virtual_service`]).
    pub candidates: Arc<[RoutedBy]>,
}

/// What one cluster came from: its service, and the DestinationRule that shaped it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClusterOrigin {
    /// The service host: the cluster exists for a workload only while that host is visible
    /// to it (one of its listeners is), as istiod builds clusters only for the services in a
    /// proxy's scope.
    pub host: Arc<str>,
    /// The namespace of the service's registry entry.
    pub service_namespace: Arc<str>,
}

/// The VirtualService of a listener, and the routes the listener has without it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RoutedBy {
    /// `metadata.name`.
    pub name: Arc<str>,
    /// `metadata.namespace`.
    pub namespace: Arc<str>,
    /// Its `hosts`, fully qualified.
    pub hosts: Arc<[Arc<str>]>,
    /// Its `exportTo`.
    pub export_to: ExportTo,
    /// The listener's routes when the VirtualService is not imported (Istio's default route).
    pub default_routes: Arc<RouteTable>,
    /// The listener's routes with this VirtualService.
    pub routes: Arc<RouteTable>,
}

/// The Sidecars of a configuration and the origin of each of its listeners: what
/// [`MeshConfig::for_workload`](crate::MeshConfig::for_workload) needs to narrow it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Visibility {
    /// Every Sidecar, in load order.
    pub sidecars: Arc<[Sidecar]>,
    /// Each listener's origin, by target.
    pub origins: BTreeMap<Arc<str>, ListenerOrigin>,
    /// Each cluster's origin, by name.
    pub clusters: BTreeMap<Arc<str>, ClusterOrigin>,
    /// The DestinationRules of each host that has any, by host: the clusters of the host are
    /// those of the rule that applies to the workload ([`HostRules::choose`]).
    pub rules: BTreeMap<Arc<str>, HostRules>,
    /// The root namespace, whose selector-less Sidecar is every namespace's default.
    pub root_namespace: Arc<str>,
}

/// A host or listener, and the resource chosen for it (`namespace/name`), or `None`.
pub type Chosen = (Arc<str>, Option<Arc<str>>);

/// The outbound policy a narrowed configuration serves: what the data plane does with a
/// target it has no listener for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutboundScope {
    /// The namespace of the workload it was narrowed for.
    pub namespace: Arc<str>,
    /// The Sidecar applied (`namespace/name`), if any.
    pub sidecar: Option<Arc<str>>,
    /// The effective mode. With an egress proxy (not supported) it is
    /// [`OutboundMode::RegistryOnly`].
    pub mode: OutboundMode,
    /// Listeners hidden because no egress host imports them, because their service is not
    /// exported to the namespace (`exportTo`), or, under `REGISTRY_ONLY`, because their host
    /// is only resolved through DNS.
    pub hidden: Arc<[Arc<str>]>,
    /// Listeners that serve Istio's default route because their VirtualService is not
    /// imported (or not exported to the namespace), with the VirtualService (`namespace/name`).
    pub unrouted: Arc<[(Arc<str>, Arc<str>)]>,
    /// Clusters removed because their service is not visible: a route to one answers as a
    /// missing cluster (`NC`).
    pub hidden_clusters: Arc<[Arc<str>]>,
    /// Clusters served without their DestinationRule (`namespace/name`), which does not apply
    /// to the workload's namespace; a subset's cluster is then removed.
    pub unshaped: Arc<[(Arc<str>, Arc<str>)]>,
    /// For each visible host with DestinationRules, the consolidated rule that applies to the
    /// workload ([`RuleEntry::id`]), or `None` when none does.
    pub rules: Arc<[Chosen]>,
    /// For each visible listener whose host has several VirtualServices, the one that routes
    /// it for the workload (`namespace/name`), or `None` for Istio's default route.
    pub routed: Arc<[Chosen]>,
}

// === impl ExportTo ===

impl ExportTo {
    /// Parses `exportTo` of a resource in `namespace` as Istio validates it: `*`, `.`, or
    /// namespace names, each once; `*` alone; `~` (no namespace) alone and only where
    /// `allow_none` (services: a ServiceEntry or Kubernetes Service may be visible to no one).
    /// An empty list is every namespace.
    pub fn parse(entries: &[&str], namespace: &str, allow_none: bool) -> Result<Self, String> {
        if entries.is_empty() {
            return Ok(Self::All);
        }
        let mut names: Vec<Arc<str>> = Vec::new();
        for entry in entries {
            let name = match *entry {
                "*" | "~" if entries.len() > 1 => {
                    return Err(format!(
                        "`{entry}` cannot be combined with other entries ({})",
                        entries.join(", ")
                    ));
                }
                "*" => return Ok(Self::All),
                "~" if allow_none => return Ok(Self::Namespaces(Arc::from([]))),
                "~" => {
                    return Err(
                        "`~` (no namespace) is only allowed for services (ServiceEntry)".into(),
                    );
                }
                "." => namespace,
                name if is_dns_label(name) => name,
                name => {
                    return Err(format!("`{name}` is not `*`, `.`, `~` or a namespace name"));
                }
            };
            if names.iter().any(|n| &**n == name) {
                return Err(format!(
                    "namespace `{name}` is listed twice (`.` is `{namespace}`)"
                ));
            }
            names.push(name.into());
        }
        Ok(Self::Namespaces(names.into()))
    }

    /// Whether a workload in `namespace` sees the resource.
    pub fn includes(&self, namespace: &str) -> bool {
        match self {
            Self::All => true,
            Self::Namespaces(names) => names.iter().any(|n| &**n == namespace),
        }
    }
}

/// Whether `name` is a Kubernetes namespace name (an RFC 1123 label).
fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=63).contains(&bytes.len())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

// === impl OutboundMode ===

impl fmt::Display for OutboundMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AllowAny => "ALLOW_ANY",
            Self::RegistryOnly => "REGISTRY_ONLY",
        })
    }
}

// === impl OutboundScope ===

impl OutboundScope {
    /// The hidden listener the workload means by `target`: exactly, or through Kubernetes'
    /// DNS search list (`greeter:50051`), as listeners are looked up.
    pub fn hidden_listener(&self, target: &str) -> Option<&Arc<str>> {
        let search = crate::config::dns_search(target, &self.namespace);
        let names = std::iter::once(target).chain(search.iter().flatten().map(String::as_str));
        names
            .into_iter()
            .find_map(|name| self.hidden.iter().find(|h| &***h == name))
    }
}

// === impl RoutedBy ===

impl RoutedBy {
    /// `namespace/name`.
    pub fn id(&self) -> Arc<str> {
        format!("{}/{}", self.namespace, self.name).into()
    }
}

// === impl HostImport ===

impl HostImport {
    /// Parses `namespace/dnsName`; the namespace part is required, as in Istio.
    pub fn parse(entry: &str) -> Result<Self, String> {
        let Some((namespace, dns_name)) = entry.split_once('/') else {
            return Err(format!(
                "`{entry}` is not `namespace/dnsName` (use `*/{entry}` for every namespace, `./{entry}` for the workload's own)"
            ));
        };
        if dns_name.is_empty() || dns_name.contains('/') {
            return Err(format!("`{entry}`: `{dns_name}` is not a DNS name"));
        }
        if dns_name.get(1..).is_some_and(|rest| rest.contains('*'))
            || (dns_name.starts_with('*') && dns_name != "*" && !dns_name.starts_with("*."))
        {
            return Err(format!(
                "`{entry}`: a wildcard is only allowed as the whole name or the left-most label (`*.example.com`)"
            ));
        }
        let namespace = match namespace {
            "*" => NamespaceImport::Any,
            "." => NamespaceImport::Own,
            "~" => NamespaceImport::Nothing,
            "" => return Err(format!("`{entry}`: the namespace is empty")),
            ns => NamespaceImport::Named(ns.into()),
        };
        Ok(Self {
            namespace,
            dns_name: dns_name.to_ascii_lowercase().into(),
        })
    }

    /// Whether a host of `namespace` is imported, for a workload in `own_namespace`.
    pub fn imports(&self, namespace: &str, host: &str, own_namespace: &str) -> bool {
        self.namespace_matches(namespace, own_namespace) && host_matches(&self.dns_name, host)
    }

    /// Whether a VirtualService of `namespace` with `hosts` is imported: its namespace
    /// matches and one of its hosts matches the DNS name (either way round, since both may be
    /// wildcards), as istiod selects them.
    pub fn imports_virtual_service(
        &self,
        namespace: &str,
        hosts: &[Arc<str>],
        own_namespace: &str,
    ) -> bool {
        self.namespace_matches(namespace, own_namespace)
            && hosts
                .iter()
                .any(|h| host_matches(&self.dns_name, h) || host_matches(h, &self.dns_name))
    }

    fn namespace_matches(&self, namespace: &str, own_namespace: &str) -> bool {
        match &self.namespace {
            NamespaceImport::Any => true,
            NamespaceImport::Own => namespace == own_namespace,
            NamespaceImport::Nothing => false,
            NamespaceImport::Named(ns) => &**ns == namespace,
        }
    }
}

/// Whether `pattern` (`*`, `*.suffix` or exact, lower case) matches `host`. `*.example.com`
/// matches any name ending in `.example.com`, as Istio's host wildcards do.
fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_prefix('*') {
        Some(suffix) => host.len() > suffix.len() && ends_with_ignore_case(host, suffix),
        None => pattern.eq_ignore_ascii_case(host),
    }
}

fn ends_with_ignore_case(s: &str, suffix: &str) -> bool {
    s.len() >= suffix.len()
        && s.as_bytes()[s.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

// === impl Sidecar ===

impl Sidecar {
    /// `namespace/name`.
    pub fn id(&self) -> Arc<str> {
        format!("{}/{}", self.namespace, self.name).into()
    }

    /// The effective mode: [`OutboundMode::RegistryOnly`] when an egress proxy is named
    /// (not supported, and passing through would bypass it).
    pub fn mode(&self) -> OutboundMode {
        if self.egress_proxy.is_some() {
            return OutboundMode::RegistryOnly;
        }
        self.mode.unwrap_or(OutboundMode::AllowAny)
    }

    /// Whether the listener of `origin` is visible to a workload in `own_namespace`.
    pub fn imports(&self, origin: &ListenerOrigin, own_namespace: &str) -> bool {
        let Some(egress) = &self.egress else {
            return true;
        };
        listeners_for(egress, origin.port).any(|l| {
            l.hosts
                .iter()
                .any(|h| h.imports(&origin.namespace, &origin.host, own_namespace))
        })
    }

    /// Whether the VirtualService of a listener on `port` is imported.
    pub fn imports_virtual_service(
        &self,
        routed_by: &RoutedBy,
        port: u16,
        own_namespace: &str,
    ) -> bool {
        let Some(egress) = &self.egress else {
            return true;
        };
        listeners_for(egress, port).any(|l| {
            l.hosts.iter().any(|h| {
                h.imports_virtual_service(&routed_by.namespace, &routed_by.hosts, own_namespace)
            })
        })
    }
}

/// The egress listeners that serve `port`: those bound to it, else the port-less ones (a
/// port-specific listener takes that port's traffic, as in Envoy).
fn listeners_for(egress: &[EgressListener], port: u16) -> impl Iterator<Item = &EgressListener> {
    let bound = egress.iter().any(|l| l.port == Some(port));
    egress.iter().filter(move |l| {
        if bound {
            l.port == Some(port)
        } else {
            l.port.is_none()
        }
    })
}

/// The Sidecar istiod applies to `workload`: one in its namespace whose `workloadSelector`
/// matches its labels (the first by name when several do: Istio leaves that undefined and
/// picks the oldest, which a file does not record), else its namespace's selector-less one,
/// else the root namespace's selector-less one.
pub fn select<'a>(
    sidecars: &'a [Sidecar],
    workload: &Workload,
    root_namespace: &str,
) -> Option<&'a Sidecar> {
    let own = |s: &&Sidecar| s.namespace == workload.namespace;
    let selected = sidecars
        .iter()
        .filter(own)
        .filter(|s| {
            s.selector
                .as_ref()
                .is_some_and(|sel| workload.labels.contains_all(sel))
        })
        .min_by(|a, b| a.name.cmp(&b.name));
    selected
        .or_else(|| sidecars.iter().filter(own).find(|s| s.selector.is_none()))
        .or_else(|| {
            sidecars
                .iter()
                .find(|s| &*s.namespace == root_namespace && s.selector.is_none())
        })
}

#[cfg(test)]
mod tests;
