//! Istio YAML (VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Sidecar,
//! PeerAuthentication, AuthorizationPolicy; Kubernetes Service and endpoints) to one validated
//! [`MeshConfig`]. Sidecars apply once the local workload is known
//! ([`MeshConfig::for_workload`]).
//!
//! This is the mesh's embedded default: with no control plane, the same policies an operator
//! would `kubectl apply` load from a local file. The mapping follows what istiod generates for
//! proxyless gRPC, so a YAML file and an xDS stream built from the same resources produce the
//! same model: Istio's cluster names (`outbound|9080|v2|reviews.default.svc.cluster.local`),
//! one listener per service host and port, Istio's default retry policy and circuit-breaker
//! thresholds.
//!
//! Loading never stops at the first problem: every error and warning of every document is
//! collected with its file, document number, resource and field path, because an operator fixing
//! a file wants the whole list at once. Fields the mesh does not support are warnings, never
//! silently dropped; values that would weaken security (`insecureSkipVerify`, JWT conditions the
//! mesh cannot evaluate) are errors. No input panics: the fuzz target `istio_yaml` and a
//! property test hold the loader to that.

mod build;
mod cursor;
mod destination_rule;
mod duration;
mod kubernetes;
mod limits;
mod positions;
mod precedence;
mod security;
mod service_entry;
mod sidecar;
mod virtual_service;

#[cfg(test)]
mod tests;

use std::{
    cell::{Cell, RefCell},
    collections::BTreeSet,
    fmt,
    sync::Arc,
};

use serde::de::DeserializeSeed as _;
use yaml_serde::Value;

use self::cursor::{Ctx, Cx, Diags, Node};
use crate::{MeshConfig, sidecar::ExportTo};

pub use self::limits::MAX_SOURCE_BYTES;

/// Documents beyond this many in one source are refused: a bound on work for hostile input.
const MAX_DOCUMENTS: usize = 10_000;

/// One input file.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// The file name used in diagnostics.
    pub name: &'a str,
    /// The YAML text (one or more `---`-separated documents).
    pub text: &'a str,
}

/// A successful load: the configuration and the warnings (ignored fields and resources).
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The configuration.
    pub config: MeshConfig,
    /// Everything that was ignored because it is unknown or not supported.
    pub warnings: Vec<Diagnostic>,
}

/// A failed load: every error found, and the warnings found along the way.
#[derive(Clone, Debug)]
pub struct LoadError {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

/// One problem, with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The source's file name.
    pub file: String,
    /// The document within the file, 1-based.
    pub document: usize,
    /// `Kind name` of the resource, once known (e.g. `VirtualService reviews`).
    pub resource: Option<String>,
    /// The field path, e.g. `spec.http[0].route[1].weight`; empty for the whole document.
    pub path: String,
    /// What is wrong, in lower case.
    pub message: String,
    /// Line and column (1-based) in the file: of a syntax error, or of the field at `path`
    /// (its key or list item; for a missing field, the mapping that lacks it), where known.
    pub position: Option<(usize, usize)>,
}

/// How strictly to load.
///
/// By default an unknown field of a known kind (`weigth`, `consecutive5xxError`) and an
/// unknown kind in an Istio API group (`VirtualSevice`) are errors, as the Kubernetes API
/// server's strict field validation refuses them: ignoring a typo silently removes the policy
/// it was meant to set. Fields the mesh knows but does not support are warnings either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoadOptions {
    lenient: bool,
}

// === impl LoadOptions ===

impl LoadOptions {
    /// Unknown fields and unknown Istio kinds are warnings, and are ignored (as `kubectl apply
    /// --validate=false` would let them through). Default is strict. Unknown fields of
    /// security policies stay errors: ignoring one could widen access.
    pub fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }
}

/// Istio kinds this loader knows but does not apply: ignored with a warning, never an error.
const UNSUPPORTED_ISTIO_KINDS: [&str; 9] = [
    "Gateway",
    "EnvoyFilter",
    "WorkloadGroup",
    "ProxyConfig",
    "RequestAuthentication",
    "Telemetry",
    "WasmPlugin",
    "IstioOperator",
    "MeshConfig",
];

/// The resource kinds this loader understands, with their API group.
const KINDS: [(&str, &str); 7] = [
    ("VirtualService", "networking.istio.io"),
    ("Sidecar", "networking.istio.io"),
    ("DestinationRule", "networking.istio.io"),
    ("ServiceEntry", "networking.istio.io"),
    ("WorkloadEntry", "networking.istio.io"),
    ("PeerAuthentication", "security.istio.io"),
    ("AuthorizationPolicy", "security.istio.io"),
];

/// A parsed document's identity and where it came from.
#[derive(Clone, Debug)]
struct Meta {
    name: Arc<str>,
    namespace: Arc<str>,
    annotations: Vec<(String, String)>,
    ctx: Ctx,
}

/// Every resource of the input, parsed but not yet cross-checked.
#[derive(Debug, Default)]
struct Resources<'a> {
    service_entries: Vec<service_entry::ServiceEntry>,
    workload_entries: Vec<service_entry::WorkloadEntry>,
    destination_rules: Vec<destination_rule::DestinationRule>,
    /// VirtualServices are read once services and subsets are known, to check references.
    virtual_services: Vec<(Meta, &'a Value)>,
    kube_services: Vec<kubernetes::KubeService>,
    kube_endpoints: Vec<kubernetes::KubeEndpoints>,
    peer_authentications: Vec<crate::PeerAuthentication>,
    authorization_policies: Vec<crate::AuthorizationPolicy>,
    sidecars: Vec<crate::sidecar::Sidecar>,
}

/// Loads every source into one configuration, or returns every error found.
///
/// The configuration's version is the hex xxh64 of the source texts (not their names), so
/// equal input gives an equal version.
pub fn load(sources: &[Source<'_>]) -> Result<Loaded, LoadError> {
    load_with(sources, LoadOptions::default())
}

/// Loads every source with `options`; see [`load`].
pub fn load_with(sources: &[Source<'_>], options: LoadOptions) -> Result<Loaded, LoadError> {
    let diags = RefCell::new(Diags {
        lenient: options.lenient,
        ..Diags::default()
    });
    let mut values: Vec<(Ctx, Value)> = Vec::new();
    let mut hasher = xxhash_rust::xxh64::Xxh64::new(0);
    for source in sources {
        // Length-prefixed, so that moving text between sources changes the version.
        hasher.update(&(source.text.len() as u64).to_le_bytes());
        hasher.update(source.text.as_bytes());
        split_documents(source, &diags, &mut values);
    }
    let version = format!("{:016x}", hasher.digest());

    let mut resources = Resources::default();
    let mut seen = BTreeSet::new();
    for (ctx, value) in &mut values {
        read_document(ctx, value, &diags, &mut seen, &mut resources);
    }
    let config = build::build(resources, version, &diags);
    let diags = diags.into_inner();
    match config {
        Some(config) if diags.errors.is_empty() => Ok(Loaded {
            config,
            warnings: diags.warnings,
        }),
        _ => Err(LoadError {
            errors: diags.errors,
            warnings: diags.warnings,
        }),
    }
}

/// Loads one file's text.
pub fn load_str(file_name: &str, text: &str) -> Result<Loaded, LoadError> {
    load(&[Source {
        name: file_name,
        text,
    }])
}

/// Splits a source into documents. A syntax error ends the source: the parser cannot resume.
/// Input over the limits of [`limits`] is refused before the parser sees it.
fn split_documents(source: &Source<'_>, diags: &RefCell<Diags>, out: &mut Vec<(Ctx, Value)>) {
    let file: Arc<str> = source.name.into();
    let whole = Ctx {
        file: file.clone(),
        document: 1,
        resource: None,
        positions: None,
    };
    let refuse = |message: String| Cx { ctx: &whole, diags }.error("", message);
    if source.text.len() > MAX_SOURCE_BYTES {
        refuse(format!(
            "the file is {} bytes, larger than {MAX_SOURCE_BYTES}: refused before parsing",
            source.text.len()
        ));
        return;
    }
    // A UTF-8 byte order mark is allowed by YAML but trips the parser mid-stream.
    let text = source.text.strip_prefix('\u{feff}').unwrap_or(source.text);
    if let Err((line, message)) = limits::check_flow_nesting(text) {
        Cx { ctx: &whole, diags }.error_at("", format!("invalid YAML: {message}"), (line, 1));
        return;
    }
    let budget = limits::node_budget(text.len());
    let nodes_left = Cell::new(budget);
    let mut documents = 0usize;
    let first = out.len();
    let mut parsed = 0usize;
    for (i, doc) in yaml_serde::Deserializer::from_str(text).enumerate() {
        parsed = i.saturating_add(1);
        let ctx = Ctx {
            file: file.clone(),
            document: i.saturating_add(1),
            resource: None,
            positions: None,
        };
        let seed = limits::BudgetedValue {
            nodes_left: &nodes_left,
            budget,
        };
        match seed.deserialize(doc) {
            // Empty documents (a trailing `---`) cost nothing and are not counted.
            Ok(Value::Null) => {}
            Ok(value) => {
                documents += 1;
                if documents > MAX_DOCUMENTS {
                    let cx = Cx { ctx: &ctx, diags };
                    cx.error("", format!("more than {MAX_DOCUMENTS} documents"));
                    return;
                }
                out.push((ctx, value));
            }
            Err(e) => {
                let cx = Cx { ctx: &ctx, diags };
                match e.location() {
                    Some(at) => {
                        cx.error_at("", format!("invalid YAML: {e}"), (at.line(), at.column()))
                    }
                    None => cx.error("", format!("invalid YAML: {e}")),
                }
                return;
            }
        }
    }
    // Field positions, used only when the scan saw the documents the parser did.
    let mut indexes = positions::index(text);
    if indexes.len() == parsed {
        for (ctx, _) in out.iter_mut().skip(first) {
            let index = indexes
                .get_mut(ctx.document.wrapping_sub(1))
                .map(std::mem::take);
            ctx.positions = index.map(Arc::new);
        }
    }
}

/// Reads one document's header and dispatches on its kind.
fn read_document<'a>(
    ctx: &mut Ctx,
    value: &'a Value,
    diags: &RefCell<Diags>,
    seen: &mut BTreeSet<(String, Arc<str>, Arc<str>)>,
    out: &mut Resources<'a>,
) {
    if value.is_null() {
        return; // An empty document (e.g. a trailing `---`).
    }
    // First pass: the header, so later diagnostics can name the resource.
    let (kind, api_version, name) = {
        let m = value.as_mapping();
        let get = |k: &str| m.and_then(|m| m.get(k)).and_then(Value::as_str);
        let name = m
            .and_then(|m| m.get("metadata"))
            .and_then(|md| md.get("name"))
            .and_then(Value::as_str);
        (get("kind"), get("apiVersion"), name)
    };
    if let Some(kind) = kind {
        ctx.resource = Some(match name {
            Some(name) => format!("{kind} {name}"),
            None => kind.to_string(),
        });
    }
    let ctx: &Ctx = ctx;
    let cx = Cx { ctx, diags };
    let Some(mut doc) = Node::new(value, String::new(), cx).obj() else {
        return;
    };
    let Some(kind) = kind else {
        doc.skip("kind");
        doc.skip("apiVersion");
        doc.skip("metadata");
        doc.skip("spec");
        doc.skip("status");
        doc.error("kind", "required field is missing or not a string");
        return;
    };
    if let Some(registry_kind) = kubernetes_registry_kind(kind, api_version) {
        read_kubernetes(registry_kind, value, &mut doc, ctx, seen, out);
        return;
    }
    let Some((_, group)) = KINDS.iter().find(|(k, _)| *k == kind) else {
        // Not ours: take the whole document as read.
        doc.ignore_rest();
        let istio_group = api_version
            .and_then(|a| a.split_once('/'))
            .is_some_and(|(g, _)| g == "istio.io" || g.ends_with(".istio.io"));
        if istio_group && !UNSUPPORTED_ISTIO_KINDS.contains(&kind) {
            let hint = KINDS
                .iter()
                .map(|(k, _)| *k)
                .find(|k| cursor::is_typo_of(kind, k))
                .map(|k| format!(" (did you mean {k}?)"))
                .unwrap_or_default();
            cx.unknown(
                "kind",
                format!(
                    "unknown kind {kind} in API group {}{hint}",
                    api_version.unwrap_or_default()
                ),
            );
        } else if istio_group {
            cx.warn(
                "",
                format!("kind {kind} is not applied by this mesh, ignored"),
            );
        } else {
            cx.warn("", format!("kind {kind} is not an Istio policy, ignored"));
        }
        return;
    };
    doc.skip("kind");
    doc.skip("apiVersion");
    let valid: &[&str] = if *group == "networking.istio.io" {
        &["v1", "v1beta1", "v1alpha3"]
    } else {
        &["v1", "v1beta1"]
    };
    let api_ok = api_version
        .and_then(|a| a.split_once('/'))
        .is_some_and(|(g, v)| g == *group && valid.contains(&v));
    if !api_ok {
        doc.error(
            "apiVersion",
            format!(
                "`{}` is not an apiVersion of {kind} (expected {})",
                api_version.unwrap_or(""),
                valid
                    .iter()
                    .map(|v| format!("{group}/{v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        doc.skip("metadata");
        doc.skip("spec");
        doc.skip("status");
        return;
    }
    // Kubernetes bookkeeping, irrelevant to policy.
    doc.skip("status");
    let Some(meta) = read_metadata(&mut doc, ctx) else {
        doc.skip("spec");
        return;
    };
    if !seen.insert((kind.to_string(), meta.namespace.clone(), meta.name.clone())) {
        cx.error(
            "metadata.name",
            format!(
                "duplicate {kind} `{}` in namespace `{}`",
                meta.name, meta.namespace
            ),
        );
        doc.skip("spec");
        return;
    }
    if kind == "VirtualService" {
        // Read later, once services and subsets are known; an absent spec is reported then.
        doc.skip("spec");
        if let Some(spec) = value.get("spec") {
            out.virtual_services.push((meta, spec));
        } else {
            cx.error("spec", "required field is missing");
        }
        return;
    }
    let Some(spec) = doc.obj("spec") else {
        if !doc.has("spec") {
            cx.error("spec", "required field is missing");
        }
        return;
    };
    match kind {
        "ServiceEntry" => {
            if let Some(se) = service_entry::read_service_entry(meta, spec) {
                out.service_entries.push(se);
            }
        }
        "WorkloadEntry" => {
            if let Some(we) = service_entry::read_workload_entry(meta, spec) {
                out.workload_entries.push(we);
            }
        }
        "DestinationRule" => {
            if let Some(dr) = destination_rule::read(meta, spec) {
                out.destination_rules.push(dr);
            }
        }
        "Sidecar" => {
            if let Some(sc) = sidecar::read(&meta, spec) {
                out.sidecars.push(sc);
            }
        }
        "PeerAuthentication" => {
            if let Some(pa) = security::read_peer_authentication(&meta, spec) {
                out.peer_authentications.push(pa);
            }
        }
        "AuthorizationPolicy" => {
            if let Some(ap) = security::read_authorization_policy(&meta, spec) {
                out.authorization_policies.push(ap);
            }
        }
        _ => {}
    }
}

/// The Kubernetes kinds read as the service registry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RegistryKind {
    Service,
    EndpointSlice,
    Endpoints,
}

fn kubernetes_registry_kind(kind: &str, api_version: Option<&str>) -> Option<RegistryKind> {
    match (kind, api_version?) {
        ("Service", "v1") => Some(RegistryKind::Service),
        ("Endpoints", "v1") => Some(RegistryKind::Endpoints),
        ("EndpointSlice", "discovery.k8s.io/v1") => Some(RegistryKind::EndpointSlice),
        _ => None,
    }
}

/// Reads a Kubernetes Service, EndpointSlice or Endpoints object into the registry.
fn read_kubernetes<'a>(
    kind: RegistryKind,
    value: &'a Value,
    doc: &mut cursor::Obj<'_>,
    ctx: &Ctx,
    seen: &mut BTreeSet<(String, Arc<str>, Arc<str>)>,
    out: &mut Resources<'a>,
) {
    doc.skip("kind");
    doc.skip("apiVersion");
    doc.skip("status");
    let Some(meta) = read_metadata(doc, ctx) else {
        doc.ignore_rest();
        return;
    };
    if !seen.insert((
        format!("{kind:?}"),
        meta.namespace.clone(),
        meta.name.clone(),
    )) {
        doc.ignore_rest();
        doc.error(
            "metadata.name",
            format!(
                "duplicate {kind:?} `{}` in namespace `{}`",
                meta.name, meta.namespace
            ),
        );
        return;
    }
    match kind {
        RegistryKind::Service => {
            let Some(spec) = doc.obj("spec") else {
                doc.error("spec", "required field is missing");
                return;
            };
            if let Some(svc) = kubernetes::read_service(meta, spec) {
                out.kube_services.push(svc);
            }
        }
        RegistryKind::EndpointSlice => {
            let service = value
                .get("metadata")
                .and_then(|m| m.get("labels"))
                .and_then(|l| l.get("kubernetes.io/service-name"))
                .and_then(Value::as_str);
            if let Some(eps) = kubernetes::read_endpoint_slice(&meta, service, doc) {
                out.kube_endpoints.push(eps);
            }
        }
        RegistryKind::Endpoints => {
            out.kube_endpoints
                .push(kubernetes::read_endpoints(&meta, doc));
        }
    }
}

/// Reads `metadata`: the name (required), the namespace (default `default`), annotations.
/// Other metadata (labels, uid, resourceVersion…) is Kubernetes bookkeeping and is skipped.
fn read_metadata(doc: &mut cursor::Obj<'_>, ctx: &Ctx) -> Option<Meta> {
    if !doc.has("metadata") {
        doc.skip("metadata");
        doc.error("metadata", "required field is missing");
        return None;
    }
    let mut md = doc.obj("metadata")?;
    let name = md.req_str("name");
    let namespace = md.str("namespace").unwrap_or("default");
    let annotations = md
        .str_map("annotations")
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    // The rest of metadata is bookkeeping: read it all without warnings.
    md.entries();
    let name = name?;
    if name.is_empty() {
        md.error("name", "must not be empty");
        return None;
    }
    Some(Meta {
        name: name.into(),
        namespace: namespace.into(),
        annotations,
        ctx: ctx.clone(),
    })
}

/// Reads `exportTo` of a resource in `namespace`. An invalid list is an error (the load fails)
/// and is taken as exporting to no namespace: never wider than what was written.
fn read_export_to(spec: &mut cursor::Obj<'_>, namespace: &str, allow_none: bool) -> ExportTo {
    let entries = spec.str_list("exportTo");
    let entries: Vec<&str> = entries.iter().map(|(_, e)| *e).collect();
    ExportTo::parse(&entries, namespace, allow_none).unwrap_or_else(|e| {
        spec.error("exportTo", e);
        ExportTo::Namespaces(Arc::from([]))
    })
}

// === impl Meta ===

impl Meta {
    /// A diagnostics handle for this resource.
    fn cx<'a>(&'a self, diags: &'a RefCell<Diags>) -> Cx<'a> {
        Cx {
            ctx: &self.ctx,
            diags,
        }
    }
}

// === impl LoadError ===

impl LoadError {
    /// Every error found, in input order.
    pub fn errors(&self) -> &[Diagnostic] {
        &self.errors
    }

    /// The warnings found along the way.
    pub fn warnings(&self) -> &[Diagnostic] {
        &self.warnings
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.len() {
            1 => f.write_str("1 error in the Istio configuration")?,
            n => write!(f, "{n} errors in the Istio configuration")?,
        }
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

// === impl Diagnostic ===

impl fmt::Display for Diagnostic {
    /// `mesh.yaml: document 3 (VirtualService reviews): spec.http[0].route: message at line
    /// 14 column 5` (the parser's own messages already end with their position).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)?;
        if let Some(r) = &self.resource {
            write!(f, " ({r})")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)?;
        match self.position {
            Some((line, column)) if !self.message.contains(" at line ") => {
                write!(f, " at line {line} column {column}")
            }
            _ => Ok(()),
        }
    }
}
