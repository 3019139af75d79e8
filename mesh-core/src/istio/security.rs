//! PeerAuthentication and AuthorizationPolicy: the server-side policy.
//!
//! Authorization is read strictly: an unknown field inside a rule is an error, not a warning,
//! and so are JWT conditions (`requestPrincipals`, `request.auth.*`), `CUSTOM` actions and
//! condition keys the mesh cannot evaluate. Ignoring any of them would make a rule match more
//! requests than its author wrote, which for an ALLOW policy widens access.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

use super::{
    Meta,
    cursor::{Node, Obj},
    service_entry::read_labels,
};
use crate::{
    AuthorizationPolicy, AuthzAction, AuthzCondition, AuthzOperation, AuthzRule, AuthzSource,
    ConditionKey, IstioString, MtlsMode, PeerAuthentication, WorkloadScope,
};

/// Reads a PeerAuthentication `spec`.
pub(super) fn read_peer_authentication(
    meta: &Meta,
    mut spec: Obj<'_>,
) -> Option<PeerAuthentication> {
    let cx = spec.cx();
    let errors = cx.error_count();
    let scope = read_scope(meta, &mut spec);
    let mode = spec.obj("mtls").and_then(|mut m| read_mode(&mut m));
    let mut port_modes = Vec::new();
    if let Some(mut ports) = spec.obj("portLevelMtls") {
        for (port, n) in ports.entries() {
            let Ok(number) = port.parse::<u16>() else {
                n.error(format!("`{port}` is not a port number"));
                continue;
            };
            if number == 0 {
                n.error("port 0 is not a valid port");
                continue;
            }
            if let Some(mut m) = n.obj()
                && let Some(mode) = read_mode(&mut m)
            {
                port_modes.push((number, mode));
            }
        }
        if scope.selector.is_none() && !port_modes.is_empty() {
            spec.warn(
                "portLevelMtls",
                "has no effect without a selector (as in Istio), ignored",
            );
        }
    }
    drop(spec);
    if cx.error_count() != errors {
        return None;
    }
    Some(PeerAuthentication {
        name: meta.name.clone(),
        scope,
        mode,
        port_modes: port_modes.into(),
    })
}

fn read_mode(m: &mut Obj<'_>) -> Option<MtlsMode> {
    match m.enumeration("mode", &["UNSET", "DISABLE", "PERMISSIVE", "STRICT"])? {
        "STRICT" => Some(MtlsMode::Strict),
        "PERMISSIVE" => Some(MtlsMode::Permissive),
        "DISABLE" => Some(MtlsMode::Disable),
        _ => None,
    }
}

/// `selector.matchLabels` and the namespace; `targetRef(s)` is rejected since ignoring it would
/// apply the policy to other workloads than intended.
fn read_scope(meta: &Meta, spec: &mut Obj<'_>) -> WorkloadScope {
    let selector = spec.obj("selector").and_then(|mut s| {
        let labels = read_labels(&mut s, "matchLabels");
        s.unsupported("matchExpressions");
        labels
    });
    for key in ["targetRef", "targetRefs"] {
        if spec.has(key) {
            spec.error(key, "is not supported; use selector.matchLabels");
        }
    }
    spec.skip("targetRef");
    spec.skip("targetRefs");
    WorkloadScope {
        namespace: meta.namespace.clone(),
        selector,
    }
}

/// Reads an AuthorizationPolicy `spec`.
pub(super) fn read_authorization_policy(meta: &Meta, spec: Obj<'_>) -> Option<AuthorizationPolicy> {
    let mut spec = spec.strict();
    let cx = spec.cx();
    let errors = cx.error_count();
    let scope = read_scope(meta, &mut spec);
    let action = match spec.enumeration("action", &["ALLOW", "DENY", "AUDIT", "CUSTOM"]) {
        Some("DENY") => AuthzAction::Deny,
        Some("AUDIT") => AuthzAction::Audit,
        Some("CUSTOM") => {
            spec.error("action", "CUSTOM (external authorization) is not supported");
            AuthzAction::Deny
        }
        _ => AuthzAction::Allow,
    };
    if spec.has("provider") {
        spec.skip("provider");
        spec.error(
            "provider",
            "external authorization providers are not supported",
        );
    }
    let mut rules = Vec::new();
    for n in spec.list("rules") {
        let Some(r) = n.obj() else { continue };
        rules.push(read_rule(r.strict()));
    }
    drop(spec);
    let dry_run = meta
        .annotations
        .iter()
        .any(|(k, v)| k == "istio.io/dry-run" && v.eq_ignore_ascii_case("true"));
    if cx.error_count() != errors {
        return None;
    }
    Some(AuthorizationPolicy {
        name: meta.name.clone(),
        scope,
        action,
        rules: rules.into(),
        dry_run,
    })
}

fn read_rule(mut r: Obj<'_>) -> AuthzRule {
    let mut from = Vec::new();
    for n in r.list("from") {
        let Some(mut f) = n.obj().map(Obj::strict) else {
            continue;
        };
        if let Some(s) = f.obj("source") {
            from.push(read_source(s.strict()));
        } else {
            f.error("source", "required field is missing");
        }
    }
    let mut to = Vec::new();
    for n in r.list("to") {
        let Some(mut t) = n.obj().map(Obj::strict) else {
            continue;
        };
        if let Some(o) = t.obj("operation") {
            to.push(read_operation(o.strict()));
        } else {
            t.error("operation", "required field is missing");
        }
    }
    let mut when = Vec::new();
    for n in r.list("when") {
        if let Some(c) = n.obj() {
            when.extend(read_condition(c.strict()));
        }
    }
    AuthzRule {
        from: from.into(),
        to: to.into(),
        when: when.into(),
    }
}

fn strings(o: &mut Obj<'_>, key: &'static str) -> Arc<[IstioString]> {
    let mut out = Vec::new();
    for (path, s) in o.str_list(key) {
        match IstioString::parse(s) {
            Ok(v) => out.push(v),
            Err(e) => o.cx().error(&path, e.message()),
        }
    }
    out.into()
}

fn ip_blocks(o: &mut Obj<'_>, key: &'static str) -> Vec<IpNet> {
    let mut out = Vec::new();
    for (path, s) in o.str_list(key) {
        match s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        {
            Ok(net) => out.push(net),
            Err(_) => o
                .cx()
                .error(&path, format!("`{s}` is not an IP address or CIDR block")),
        }
    }
    out
}

fn ports(o: &mut Obj<'_>, key: &'static str) -> Arc<[u16]> {
    let mut out = Vec::new();
    for n in o.list(key) {
        let parsed = match n.value {
            yaml_serde::Value::String(s) => s.parse::<u16>().ok(),
            yaml_serde::Value::Number(num) => num.as_u64().and_then(|v| u16::try_from(v).ok()),
            _ => None,
        };
        match parsed {
            Some(p) if p > 0 => out.push(p),
            _ => n.error("expected a port number (as a string, e.g. \"8080\")"),
        }
    }
    out.into()
}

fn read_source(mut s: Obj<'_>) -> AuthzSource {
    for key in ["requestPrincipals", "notRequestPrincipals"] {
        if s.has(key) {
            s.error(
                key,
                "request principals (JWT) are not supported; ignoring them would weaken the policy",
            );
        }
    }
    s.skip("requestPrincipals");
    s.skip("notRequestPrincipals");
    let mut ip = ip_blocks(&mut s, "ipBlocks");
    let mut not_ip = ip_blocks(&mut s, "notIpBlocks");
    for (key, into) in [
        ("remoteIpBlocks", &mut ip),
        ("notRemoteIpBlocks", &mut not_ip),
    ] {
        if s.has(key) {
            s.warn(
                key,
                "treated like the peer's address (ipBlocks): there is no proxy in front to tell them apart",
            );
        }
        into.extend(ip_blocks(&mut s, key));
    }
    AuthzSource {
        principals: strings(&mut s, "principals"),
        not_principals: strings(&mut s, "notPrincipals"),
        namespaces: strings(&mut s, "namespaces"),
        not_namespaces: strings(&mut s, "notNamespaces"),
        ip_blocks: ip.into(),
        not_ip_blocks: not_ip.into(),
    }
}

fn read_operation(mut o: Obj<'_>) -> AuthzOperation {
    AuthzOperation {
        hosts: strings(&mut o, "hosts"),
        not_hosts: strings(&mut o, "notHosts"),
        ports: ports(&mut o, "ports"),
        not_ports: ports(&mut o, "notPorts"),
        methods: strings(&mut o, "methods"),
        not_methods: strings(&mut o, "notMethods"),
        paths: strings(&mut o, "paths"),
        not_paths: strings(&mut o, "notPaths"),
    }
}

fn read_condition(mut c: Obj<'_>) -> Option<AuthzCondition> {
    let key_node: Option<Node<'_>> = c.node("key");
    let values = strings(&mut c, "values");
    let not_values = strings(&mut c, "notValues");
    let Some(key_node) = key_node else {
        c.error("key", "required field is missing");
        return None;
    };
    let key = key_node.str()?;
    let parsed = if let Some(h) = key
        .strip_prefix("request.headers[")
        .and_then(|r| r.strip_suffix(']'))
    {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(ConditionKey::RequestHeader(name)),
            Err(_) => {
                key_node.error(format!("`{h}` is not a valid header name"));
                return None;
            }
        }
    } else {
        match key {
            "source.ip" => Some(ConditionKey::SourceIp),
            "source.namespace" => Some(ConditionKey::SourceNamespace),
            "source.principal" => Some(ConditionKey::SourcePrincipal),
            "destination.port" => Some(ConditionKey::DestinationPort),
            _ => None,
        }
    };
    let Some(key) = parsed else {
        if key.starts_with("request.auth.") {
            key_node.error(format!(
                "`{key}` (JWT) is not supported; ignoring it would weaken the policy"
            ));
        } else {
            key_node.error(format!(
                "condition key `{key}` is not supported; ignoring it would weaken the policy"
            ));
        }
        return None;
    };
    if values.is_empty() && not_values.is_empty() {
        c.error_here("a condition needs values or notValues");
        return None;
    }
    Some(AuthzCondition {
        key,
        values,
        not_values,
    })
}
