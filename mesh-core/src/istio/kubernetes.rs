//! Kubernetes `Service`, `EndpointSlice` and `Endpoints` manifests as the service registry.
//!
//! Every VirtualService and DestinationRule in Istio's documentation names Kubernetes Services
//! (`reviews`, `customers.default.svc.cluster.local`), not ServiceEntries: in a cluster the
//! registry is Kubernetes. A `Service` here becomes the same registry entry a ServiceEntry
//! would: host `<name>.<namespace>.svc.cluster.local`, its ports, and the addresses of the
//! `EndpointSlice`s (label `kubernetes.io/service-name`) or the `Endpoints` object of the same
//! name. Without either, the host name itself is resolved through DNS, as a plain gRPC channel
//! would (cluster DNS answers with the Service's cluster IP). Neither object carries pod
//! labels, so DestinationRule subsets of such a service select no endpoint; that is reported
//! as a warning.
//!
//! Only the fields that decide routing are read; the rest of these objects (cluster IPs,
//! conditions, owner references, status) is Kubernetes bookkeeping and is skipped silently.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc};

use super::{
    Meta,
    cursor::Obj,
    service_entry::{Origin, RawEndpoint, Resolution, ServiceEntry, ServicePort},
};
use crate::{Labels, Locality, sidecar::ExportTo};

/// The annotation that sets a Service's `exportTo`, as on a ServiceEntry.
const EXPORT_TO_ANNOTATION: &str = "networking.istio.io/exportTo";

/// A Kubernetes Service, before its endpoints are joined.
#[derive(Debug)]
pub(super) struct KubeService {
    pub(super) meta: Meta,
    pub(super) ports: Vec<ServicePort>,
    /// The `networking.istio.io/exportTo` annotation (comma-separated, as istiod reads it).
    pub(super) export_to: ExportTo,
}

/// The addresses of one EndpointSlice or Endpoints object, with the service they belong to.
#[derive(Debug)]
pub(super) struct KubeEndpoints {
    pub(super) namespace: String,
    pub(super) service: String,
    pub(super) endpoints: Vec<RawEndpoint>,
}

/// Reads a `Service` `spec`.
pub(super) fn read_service(meta: Meta, mut spec: Obj<'_>) -> Option<KubeService> {
    let errors = spec.cx().error_count();
    let mut ports = Vec::new();
    for n in spec.list("ports") {
        let Some(mut p) = n.obj() else { continue };
        let number = p.port("port");
        if number.is_none() && !p.has("port") {
            p.error("port", "required field is missing");
        }
        let name = p.str("name").unwrap_or_default().to_string();
        // A named targetPort refers to a container port; only EndpointSlices know its number.
        let target_port = match p.node("targetPort") {
            Some(n) if matches!(n.value, yaml_serde::Value::Number(_)) => p.port("targetPort"),
            _ => None,
        };
        p.ignore_rest();
        if let Some(number) = number {
            ports.push(ServicePort {
                number,
                name,
                target_port,
            });
        }
    }
    spec.ignore_rest();
    let export_to = match meta
        .annotations
        .iter()
        .find(|(k, _)| k == EXPORT_TO_ANNOTATION)
    {
        Some((_, v)) => {
            let entries: Vec<&str> = v.split(',').map(str::trim).collect();
            ExportTo::parse(&entries, &meta.namespace, true).unwrap_or_else(|e| {
                spec.cx().error(
                    "metadata.annotations",
                    format!("{EXPORT_TO_ANNOTATION}: {e}"),
                );
                ExportTo::Namespaces(Arc::from([]))
            })
        }
        None => ExportTo::All,
    };
    if spec.cx().error_count() != errors {
        return None;
    }
    if ports.is_empty() {
        spec.warn("ports", "a Service without ports cannot be routed, ignored");
        return None;
    }
    Some(KubeService {
        meta,
        ports,
        export_to,
    })
}

/// Reads an `EndpointSlice` (the whole document: its fields are not under `spec`).
pub(super) fn read_endpoint_slice(
    meta: &Meta,
    labels: Option<&str>,
    doc: &mut Obj<'_>,
) -> Option<KubeEndpoints> {
    let Some(service) = labels else {
        doc.ignore_rest();
        doc.cx().warn(
            "metadata.labels",
            "an EndpointSlice without the label kubernetes.io/service-name belongs to no Service, ignored",
        );
        return None;
    };
    let ports = named_ports(doc, "ports");
    let mut endpoints = Vec::new();
    for n in doc.list("endpoints") {
        let Some(mut e) = n.obj() else { continue };
        // Kubernetes: a missing `ready` condition means ready.
        let ready = e
            .obj("conditions")
            .map(|mut c| {
                let ready = c.bool("ready");
                c.ignore_rest();
                ready
            })
            .unwrap_or(None)
            .unwrap_or(true);
        let zone = e.str("zone").unwrap_or_default();
        let addresses = e.str_list("addresses");
        e.ignore_rest();
        if !ready {
            continue;
        }
        for (path, address) in addresses {
            if let Some(ep) = raw_endpoint(&e, &path, address, &ports, zone) {
                endpoints.push(ep);
            }
        }
    }
    doc.ignore_rest();
    Some(KubeEndpoints {
        namespace: meta.namespace.to_string(),
        service: service.to_string(),
        endpoints,
    })
}

/// Reads an `Endpoints` object (named like its Service).
pub(super) fn read_endpoints(meta: &Meta, doc: &mut Obj<'_>) -> KubeEndpoints {
    let mut endpoints = Vec::new();
    for n in doc.list("subsets") {
        let Some(mut s) = n.obj() else { continue };
        let ports = named_ports(&mut s, "ports");
        let mut addresses = Vec::new();
        for a in s.list("addresses") {
            let Some(mut a) = a.obj() else { continue };
            if let Some(ip) = a
                .node("ip")
                .and_then(|n| n.str().map(|s| (n.path.clone(), s)))
            {
                addresses.push(ip);
            }
            a.ignore_rest();
        }
        for (path, address) in addresses {
            if let Some(ep) = raw_endpoint(&s, &path, address, &ports, "") {
                endpoints.push(ep);
            }
        }
        s.ignore_rest();
    }
    doc.ignore_rest();
    KubeEndpoints {
        namespace: meta.namespace.to_string(),
        service: meta.name.to_string(),
        endpoints,
    }
}

/// `ports: [{name, port}]` of an EndpointSlice or an Endpoints subset.
fn named_ports(o: &mut Obj<'_>, key: &'static str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for n in o.list(key) {
        let Some(mut p) = n.obj() else { continue };
        let name = p.str("name").unwrap_or_default().to_string();
        let port = p.port("port");
        p.ignore_rest();
        if let Some(port) = port {
            out.push((name, port));
        }
    }
    out
}

fn raw_endpoint(
    o: &Obj<'_>,
    path: &str,
    address: &str,
    ports: &[(String, u16)],
    zone: &str,
) -> Option<RawEndpoint> {
    let Ok(ip) = address.parse::<IpAddr>() else {
        o.cx()
            .error(path, format!("`{address}` is not an IP address"));
        return None;
    };
    Some(RawEndpoint {
        address: address.into(),
        ip: Some(ip),
        ports: ports.to_vec(),
        labels: Labels::default(),
        weight: NonZeroU32::MIN,
        locality: Locality {
            zone: zone.into(),
            ..Locality::default()
        },
    })
}

/// The registry entry of a Service: its endpoints, else its host name through DNS.
pub(super) fn to_service_entry(svc: KubeService, endpoints: &[KubeEndpoints]) -> ServiceEntry {
    let mine: Vec<RawEndpoint> = endpoints
        .iter()
        .filter(|e| e.namespace == *svc.meta.namespace && e.service == *svc.meta.name)
        .flat_map(|e| e.endpoints.iter().cloned())
        .collect();
    let host = format!("{}.{}.svc.cluster.local", svc.meta.name, svc.meta.namespace);
    let known = endpoints
        .iter()
        .any(|e| e.namespace == *svc.meta.namespace && e.service == *svc.meta.name);
    ServiceEntry {
        meta: svc.meta,
        origin: Origin::KubernetesService,
        hosts: vec![(host, "metadata.name".to_string())],
        ports: svc.ports,
        resolution: if known {
            Resolution::Static
        } else {
            Resolution::Dns
        },
        endpoints: mine,
        selector: None,
        export_to: svc.export_to,
    }
}
