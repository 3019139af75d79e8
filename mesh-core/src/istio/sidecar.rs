//! `Sidecar`: the workload selector, `egress[].hosts` (with `egress[].port`) and
//! `outboundTrafficPolicy.mode`, applied when the local workload is known
//! ([`crate::MeshConfig::for_workload`]).
//!
//! What only an Envoy sidecar has (`ingress`, `inboundConnectionPool`, `egress[].bind`,
//! `egress[].captureMode`: the proxy's own listeners and its capture of the application's
//! traffic) is reported as not supported. `outboundTrafficPolicy.egressProxy` is reported too,
//! and unknown hosts are then refused rather than passed through, since a direct call would
//! bypass the egress proxy it names.

use super::{Meta, cursor::Obj, service_entry::read_labels};
use crate::sidecar::{EgressListener, HostImport, OutboundMode, Sidecar};

/// Reads a Sidecar's `spec`; `None` when it has errors.
pub(super) fn read(meta: &Meta, mut spec: Obj<'_>) -> Option<Sidecar> {
    let cx = spec.cx();
    let errors = cx.error_count();
    let selector = match spec.obj("workloadSelector") {
        Some(mut ws) => read_labels(&mut ws, "labels"),
        None => None,
    };
    let egress = spec.node("egress").map(|n| {
        n.list()
            .into_iter()
            .filter_map(|n| read_egress(n.obj()?))
            .collect::<Vec<_>>()
            .into()
    });
    let mut mode = None;
    let mut egress_proxy = None;
    if let Some(mut otp) = spec.obj("outboundTrafficPolicy") {
        mode = otp
            .enumeration("mode", &["ALLOW_ANY", "REGISTRY_ONLY"])
            .map(|m| match m {
                "REGISTRY_ONLY" => OutboundMode::RegistryOnly,
                _ => OutboundMode::AllowAny,
            });
        if let Some(mut proxy) = otp.obj("egressProxy") {
            egress_proxy = proxy.req_str("host").map(Into::into);
            proxy.skip("subset");
            proxy.skip("port");
            otp.warn(
                "egressProxy",
                "is not supported: hosts this workload does not know are refused (as \
                 REGISTRY_ONLY) rather than sent directly, which would bypass the egress proxy",
            );
        }
    }
    for (key, why) in [
        (
            "ingress",
            "the mesh's servers are the application's own listeners",
        ),
        (
            "inboundConnectionPool",
            "the mesh's servers take no connection pool settings from a Sidecar",
        ),
    ] {
        if spec.node(key).is_some() {
            spec.warn(key, format!("is not supported, ignored: {why}"));
        }
    }
    if cx.error_count() > errors {
        return None;
    }
    Some(Sidecar {
        name: meta.name.clone(),
        namespace: meta.namespace.clone(),
        selector,
        egress,
        mode,
        egress_proxy,
    })
}

/// One `egress[]` listener.
fn read_egress(mut listener: Obj<'_>) -> Option<EgressListener> {
    let mut port = None;
    if let Some(mut p) = listener.obj("port") {
        port = p.port("number");
        // Naming and protocol describe the sidecar's listener; a proxyless channel speaks
        // HTTP/2 to every port.
        p.skip("name");
        p.skip("protocol");
        p.unsupported("targetPort");
    }
    for key in ["bind", "captureMode"] {
        if listener.node(key).is_some() {
            listener.warn(
                key,
                "is not supported, ignored: it configures the sidecar proxy's listener, and a \
                 proxyless workload's calls go out directly",
            );
        }
    }
    if !listener.has("hosts") {
        listener.skip("hosts");
        listener.error("hosts", "required field is missing");
        return None;
    }
    let mut hosts = Vec::new();
    for (path, entry) in listener.str_list("hosts") {
        match HostImport::parse(entry) {
            Ok(h) => hosts.push(h),
            Err(e) => listener.cx().error(&path, e),
        }
    }
    Some(EgressListener {
        port,
        hosts: hosts.into(),
    })
}
