//! ServiceEntry and WorkloadEntry: the services, their ports and their endpoints.
//!
//! Without Kubernetes, ServiceEntries are the service registry: every host × port of a
//! ServiceEntry becomes a cluster and a listener. Endpoints come from the entry's `endpoints`,
//! from the WorkloadEntries its `workloadSelector` selects, or, for `resolution: DNS` with
//! neither, from the host name itself (as Istio does).

use std::{net::IpAddr, num::NonZeroU32, sync::Arc};

use super::{
    Meta,
    cursor::{Node, Obj},
};
use crate::{EndpointAddress, Labels, Locality, sidecar::ExportTo};

/// A parsed ServiceEntry.
#[derive(Debug)]
pub(super) struct ServiceEntry {
    pub(super) meta: Meta,
    /// Where the entry came from: a ServiceEntry, a Kubernetes Service, or a host that only
    /// policies name (resolved through DNS).
    pub(super) origin: Origin,
    /// Fully qualified hosts, each with the path it was read from.
    pub(super) hosts: Vec<(String, String)>,
    pub(super) ports: Vec<ServicePort>,
    pub(super) resolution: Resolution,
    pub(super) endpoints: Vec<RawEndpoint>,
    pub(super) selector: Option<Labels>,
    /// `exportTo` (a Kubernetes Service's `networking.istio.io/exportTo` annotation).
    pub(super) export_to: ExportTo,
}

/// One port of a service.
#[derive(Clone, Debug)]
pub(super) struct ServicePort {
    pub(super) number: u16,
    pub(super) name: String,
    pub(super) target_port: Option<u16>,
}

/// The source of a registry entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Origin {
    ServiceEntry,
    KubernetesService,
    Dns,
}

/// How endpoints are addressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Resolution {
    None,
    Static,
    Dns,
}

/// An endpoint before its port is known.
#[derive(Clone, Debug)]
pub(super) struct RawEndpoint {
    pub(super) address: Arc<str>,
    pub(super) ip: Option<IpAddr>,
    /// Port overrides by service port name.
    pub(super) ports: Vec<(String, u16)>,
    pub(super) labels: Labels,
    pub(super) weight: NonZeroU32,
    pub(super) locality: Locality,
}

/// A parsed WorkloadEntry.
#[derive(Debug)]
pub(super) struct WorkloadEntry {
    pub(super) meta: Meta,
    pub(super) endpoint: RawEndpoint,
}

/// Istio's host resolution: a short name is a Kubernetes service of the resource's namespace.
pub(super) fn fqdn(host: &str, namespace: &str) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains('.') || host == "*" {
        host
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

/// Reads a ServiceEntry `spec`.
pub(super) fn read_service_entry(meta: Meta, mut spec: Obj<'_>) -> Option<ServiceEntry> {
    let errors = spec.cx().error_count();
    let mut hosts = Vec::new();
    for (path, h) in spec.str_list("hosts") {
        if h.is_empty() {
            spec.cx().error(&path, "host must not be empty");
            continue;
        }
        if crate::route::Domain::parse(h).is_err() {
            spec.cx().error(&path, format!("`{h}` is not a valid host"));
            continue;
        }
        // Istio takes ServiceEntry hosts literally: only VirtualService and DestinationRule
        // short names are expanded with the resource's namespace.
        let host = h.to_ascii_lowercase();
        if !host.contains('.') && host != "*" {
            spec.cx().warn(
                &path,
                format!(
                    "host `{host}` is taken literally, as Istio does: a VirtualService or DestinationRule naming `{host}` means `{}`, not this host",
                    fqdn(&host, &meta.namespace)
                ),
            );
        }
        hosts.push((host, path));
    }
    if hosts.is_empty() && spec.cx().error_count() == errors {
        spec.error("hosts", "at least one host is required");
    }
    let mut ports = Vec::new();
    for n in spec.list("ports") {
        let Some(mut p) = n.obj() else { continue };
        let number = p.port("number");
        if number.is_none() && !p.has("number") {
            p.error("number", "required field is missing");
        }
        let name = p.str("name").unwrap_or_default().to_string();
        let target_port = p.port("targetPort");
        p.skip("protocol");
        if let Some(number) = number {
            if ports.iter().any(|q: &ServicePort| q.number == number) {
                p.error("number", format!("port {number} is listed twice"));
                continue;
            }
            ports.push(ServicePort {
                number,
                name,
                target_port,
            });
        }
    }
    if ports.is_empty() && spec.cx().error_count() == errors {
        spec.error("ports", "at least one port is required");
    }
    let resolution =
        match spec.enumeration("resolution", &["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"]) {
            Some("STATIC") => Resolution::Static,
            Some("DNS" | "DNS_ROUND_ROBIN") => Resolution::Dns,
            _ => Resolution::None,
        };
    spec.skip("location");
    spec.unsupported("addresses");
    let export_to = super::read_export_to(&mut spec, &meta.namespace, true);
    spec.unsupported("subjectAltNames");
    let mut endpoints = Vec::new();
    for n in spec.list("endpoints") {
        if let Some(ep) = read_endpoint(&n, resolution) {
            endpoints.push(ep);
        }
    }
    let selector = spec
        .obj("workloadSelector")
        .and_then(|mut ws| read_labels(&mut ws, "labels"));
    if selector.is_some() && !endpoints.is_empty() {
        spec.error(
            "workloadSelector",
            "endpoints and workloadSelector are mutually exclusive",
        );
    }
    if spec.cx().error_count() != errors {
        return None;
    }
    Some(ServiceEntry {
        meta,
        origin: Origin::ServiceEntry,
        hosts,
        ports,
        resolution,
        endpoints,
        selector,
        export_to,
    })
}

/// Reads a WorkloadEntry `spec`.
pub(super) fn read_workload_entry(meta: Meta, spec: Obj<'_>) -> Option<WorkloadEntry> {
    let cx = spec.cx();
    let errors = cx.error_count();
    let endpoint = read_endpoint_obj(spec, Resolution::Dns);
    if cx.error_count() != errors {
        return None;
    }
    Some(WorkloadEntry {
        meta,
        endpoint: endpoint?,
    })
}

/// Reads labels `{k: v}` at `key`; repeated keys are reported.
pub(super) fn read_labels(obj: &mut Obj<'_>, key: &'static str) -> Option<Labels> {
    if !obj.has(key) {
        obj.skip(key);
        return None;
    }
    let pairs = obj.str_map(key);
    match Labels::new(pairs) {
        Ok(l) => Some(l),
        Err(e) => {
            obj.error(key, e.message());
            None
        }
    }
}

fn read_endpoint(n: &Node<'_>, resolution: Resolution) -> Option<RawEndpoint> {
    read_endpoint_obj(n.obj()?, resolution)
}

/// Reads a `WorkloadEntry`-shaped mapping (ServiceEntry endpoints share the shape).
fn read_endpoint_obj(mut o: Obj<'_>, resolution: Resolution) -> Option<RawEndpoint> {
    let cx = o.cx();
    let errors = cx.error_count();
    let address = o.req_str("address");
    let ip = address.and_then(|a| a.parse::<IpAddr>().ok());
    if let Some(a) = address {
        if a.starts_with("unix://") {
            o.error("address", "unix domain socket endpoints are not supported");
        } else if a.is_empty() {
            o.error("address", "must not be empty");
        } else if ip.is_none() && resolution == Resolution::Static {
            o.error(
                "address",
                format!("`{a}` is not an IP address, as resolution STATIC requires"),
            );
        }
    }
    let mut ports = Vec::new();
    if let Some(mut pm) = o.obj("ports") {
        for (name, v) in pm.entries() {
            match v
                .uint(u64::from(u16::MAX))
                .and_then(|p| u16::try_from(p).ok())
            {
                Some(0) => v.error("port 0 is not a valid port"),
                Some(p) => ports.push((name.to_string(), p)),
                None => {}
            }
        }
    }
    let labels = read_labels(&mut o, "labels").unwrap_or_default();
    // Istio treats weight 0 as unset: the default weight 1.
    let weight = o
        .u32("weight")
        .and_then(NonZeroU32::new)
        .unwrap_or(NonZeroU32::MIN);
    let locality = o.str("locality").map(parse_locality).unwrap_or_default();
    o.unsupported("network");
    o.unsupported("serviceAccount");
    drop(o);
    if cx.error_count() != errors {
        return None;
    }
    Some(RawEndpoint {
        address: address?.into(),
        ip,
        ports,
        labels,
        weight,
        locality,
    })
}

/// `region/zone/subzone`, any suffix optional.
fn parse_locality(s: &str) -> Locality {
    let mut parts = s.splitn(3, '/');
    let mut next = || -> Arc<str> { parts.next().unwrap_or_default().into() };
    Locality {
        region: next(),
        zone: next(),
        sub_zone: next(),
    }
}

// === impl RawEndpoint ===

impl RawEndpoint {
    /// The endpoint's address on a service port: the endpoint's override for the port's name,
    /// else the port's `targetPort`, else the port number.
    pub(super) fn address_for(&self, port: &ServicePort) -> EndpointAddress {
        let p = self
            .ports
            .iter()
            // By name; an unnamed port matches the unnamed port of a single-port Kubernetes
            // EndpointSlice.
            .find(|(name, _)| *name == port.name)
            .map(|(_, p)| *p)
            .or(port.target_port)
            .unwrap_or(port.number);
        match self.ip {
            Some(ip) => EndpointAddress::Socket(std::net::SocketAddr::new(ip, p)),
            None => EndpointAddress::Dns {
                host: self.address.clone(),
                port: p,
            },
        }
    }
}
