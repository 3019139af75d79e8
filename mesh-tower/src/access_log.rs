//! Access logs: one line per request on both reporters, in Istio's default text format or as
//! JSON with Istio's keys, written as a `tracing` event on the [`TARGET`] target and, optionally,
//! appended to a file.
//!
//! Configure with [`Mesh::set_access_log`](crate::Mesh::set_access_log), the counterpart of
//! MeshConfig's `accessLogFile` / `accessLogEncoding` and of the Telemetry API's
//! `accessLogging` (with its `filter.expression`, of which [`Filter`] takes a documented subset).
//!
//! # What a line says
//! The text encoding is Istio's default `accessLogFormat` ([`ISTIO_TEXT_FORMAT`]) followed by
//! three fields Envoy can log but Istio's default omits: the gRPC status, the trace id and the
//! peer's principal ([`TEXT_FORMAT`] is the whole format). JSON uses Istio's default keys plus
//! `grpc_status`, `trace_id` and `peer_principal`. A value that is absent is `-` in text and
//! `null` in JSON, as Envoy writes them.
//!
//! A proxyless mesh knows less than a sidecar about some fields, and says so with `-`:
//! - `upstream_host` is the endpoint of the call's last attempt on the client (the one whose
//!   response the caller got; `-` when no endpoint answered, e.g. a breaker overflow); on the
//!   server there is no upstream (the handler is in process).
//! - the peer principal on the client (the server's certificate is checked per connection,
//!   below the call), `%UPSTREAM_LOCAL_ADDRESS%`, `%DOWNSTREAM_LOCAL_ADDRESS%`,
//!   `%REQUESTED_SERVER_NAME%`, `%RESPONSE_CODE_DETAILS%`, `%CONNECTION_TERMINATION_DETAILS%`,
//!   `%UPSTREAM_TRANSPORT_FAILURE_REASON%` and `x-envoy-upstream-service-time`.
//!
//! The server's `upstream_cluster` is Istio's inbound cluster name,
//! `inbound|<port>||<service>`; the client's is the cluster the route chose (`-` for an answer
//! the route layer made itself, e.g. `NR`). The client's path is the one sent, after the
//! route's rewrite; the server's is the one received, before path normalization. The trace id
//! is the call's (client) or the incoming request's (server), so both sides' lines of one call
//! join on it, as they do on `x-request-id`.
//!
//! # Cost
//! With no access log set, a request pays one atomic load (the `OnceLock` read). With one, the
//! request's head fields are copied when it starts (header values share their bytes), and the
//! line is formatted once, when the response ends, only if the filter passes. The file sink
//! never blocks a request: lines go through a bounded queue to a writer thread; when the queue
//! is full the line is dropped and counted ([`AccessLog::dropped`]).

mod filter;

use std::{
    fmt::{self, Write as _},
    io::{self, Write as _},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderValue, Request, Version, header};
use mesh_core::GrpcCode;
use tokio::sync::mpsc;

pub use self::filter::{Filter, FilterError};
use crate::{
    RouteDecision,
    synthesize::ResponseFlags,
    trace::{RequestId, RequestTrace},
};

/// The `tracing` target of access log events (`RUST_LOG=mesh_tower::access_log=info`).
pub const TARGET: &str = "mesh_tower::access_log";

/// Istio's default text format (MeshConfig `accessLogFormat` when empty).
pub const ISTIO_TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% \
%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \
%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" \
%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \
\"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% \
%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%";

/// The text format the mesh writes: [`ISTIO_TEXT_FORMAT`] and three more fields.
pub const TEXT_FORMAT: &str = "[%START_TIME%] \"%REQ(:METHOD)% \
%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\" %RESPONSE_CODE% %RESPONSE_FLAGS% \
%RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\" \
%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \
\"%REQ(X-FORWARDED-FOR)%\" \"%REQ(USER-AGENT)%\" \"%REQ(X-REQUEST-ID)%\" \"%REQ(:AUTHORITY)%\" \
\"%UPSTREAM_HOST%\" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% \
%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME% %GRPC_STATUS_NUMBER% \
%TRACE_ID% \"%DOWNSTREAM_PEER_URI_SAN%\"";

/// How many lines may wait for the file writer before new ones are dropped.
const FILE_QUEUE: usize = 4096;

/// Where and how requests are logged; see the [module docs](self). Cheap to clone.
///
/// Default is text, every request, as `tracing` events only.
#[derive(Clone, Debug, Default)]
pub struct AccessLog {
    encoding: Encoding,
    filter: Option<Filter>,
    file: Option<FileSink>,
}

/// The encoding of a line (MeshConfig `accessLogEncoding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// [`TEXT_FORMAT`] (`TEXT`).
    #[default]
    Text,
    /// One JSON object per line with Istio's keys (`JSON`).
    Json,
}

/// The file lines are appended to, through a writer thread.
#[derive(Clone, Debug)]
struct FileSink {
    lines: mpsc::Sender<String>,
    dropped: Arc<AtomicU64>,
}

/// Which side logged a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// What a request's line needs from its start; finished by [`Entry::write`] at its end.
#[derive(Debug)]
pub(crate) struct Entry {
    log: AccessLog,
    side: Side,
    start: SystemTime,
    method: http::Method,
    path: Option<http::uri::PathAndQuery>,
    version: Version,
    authority: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    forwarded_for: Option<HeaderValue>,
    request_id: Option<RequestId>,
    trace: Option<RequestTrace>,
    route_name: Option<Arc<str>>,
    cluster: Option<Arc<str>>,
    upstream_host: Option<mesh_core::EndpointAddress>,
    downstream_remote: Option<std::net::SocketAddr>,
    peer_principal: Option<Arc<str>>,
}

/// How a request ended, as the metrics recorded it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Outcome {
    pub(crate) code: u16,
    pub(crate) grpc_status: Option<GrpcCode>,
    pub(crate) flags: Option<ResponseFlags>,
    pub(crate) bytes_received: u64,
    pub(crate) bytes_sent: u64,
    pub(crate) duration: Duration,
}

// === impl AccessLog ===

impl AccessLog {
    /// Text lines for every request, as `tracing` events.
    pub fn new() -> Self {
        Self::default()
    }

    /// The encoding. Default is [`Encoding::Text`].
    pub fn with_encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// Logs only the requests `filter` accepts. Default is every request.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Also appends each line to the file at `path` (MeshConfig `accessLogFile`), created when
    /// missing, from a writer thread. Fails when the file cannot be opened for appending.
    pub fn with_file(mut self, path: impl AsRef<Path>) -> io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (lines, receiver) = mpsc::channel(FILE_QUEUE);
        std::thread::Builder::new()
            .name("mesh-access-log".into())
            .spawn(move || write_lines(file, receiver))?;
        self.file = Some(FileSink {
            lines,
            dropped: Arc::default(),
        });
        Ok(self)
    }

    /// The encoding.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }

    /// Lines the file writer could not keep up with and that were dropped.
    pub fn dropped(&self) -> u64 {
        self.file
            .as_ref()
            .map_or(0, |f| f.dropped.load(Ordering::Relaxed))
    }

    /// Starts a request's entry, with what its head says.
    pub(crate) fn entry<B>(&self, side: Side, req: &Request<B>) -> Entry {
        let headers = req.headers();
        let trace = RouteDecision::pinned_trace(req.extensions()).cloned();
        let request_id = RequestId::from_headers(headers)
            .or_else(|| trace.as_ref().map(|t| t.request_id().clone()));
        let decision = req.extensions().get::<RouteDecision>();
        Entry {
            log: self.clone(),
            side,
            start: SystemTime::now(),
            method: req.method().clone(),
            path: req.uri().path_and_query().cloned(),
            version: req.version(),
            authority: authority(req),
            user_agent: headers.get(header::USER_AGENT).cloned(),
            forwarded_for: headers.get("x-forwarded-for").cloned(),
            request_id,
            trace,
            route_name: decision.and_then(|d| d.route_name.clone()),
            cluster: decision.map(|d| d.cluster.policy.name.clone()),
            upstream_host: None,
            downstream_remote: None,
            peer_principal: None,
        }
    }
}

fn authority<B>(req: &Request<B>) -> Option<HeaderValue> {
    match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    }
}

/// The writer thread: appends lines, flushing whenever the queue is momentarily empty; ends
/// when every [`AccessLog`] holding the sink is gone.
fn write_lines(file: std::fs::File, mut lines: mpsc::Receiver<String>) {
    let mut out = io::BufWriter::new(file);
    while let Some(line) = lines.blocking_recv() {
        let mut result = out.write_all(line.as_bytes());
        while result.is_ok()
            && let Ok(line) = lines.try_recv()
        {
            result = out.write_all(line.as_bytes());
        }
        if let Err(error) = result.and_then(|()| out.flush()) {
            tracing::warn!(target: TARGET, %error, "cannot write the access log file");
        }
    }
}

// === impl Entry ===

impl Entry {
    /// The server's peer: its address and principal.
    pub(crate) fn with_peer(mut self, peer: &crate::Peer) -> Self {
        self.downstream_remote = peer.address;
        self.peer_principal = peer.identity.as_ref().and_then(|id| id.principal.clone());
        self
    }

    /// The server's cluster, as Istio names inbound clusters.
    pub(crate) fn with_cluster(mut self, cluster: Arc<str>) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// Reads the endpoint that answered from the response head (the balancer marks it).
    pub(crate) fn head<B>(&mut self, response: &http::Response<B>) {
        self.upstream_host = response
            .extensions()
            .get::<crate::balance::UpstreamAddress>()
            .map(|upstream| upstream.0.clone());
    }

    /// Writes the line, when the filter accepts `outcome`.
    pub(crate) fn write(&self, outcome: &Outcome) {
        if let Some(filter) = &self.log.filter
            && !filter.accepts(outcome)
        {
            return;
        }
        let mut line = String::with_capacity(320);
        let written = match self.log.encoding {
            Encoding::Text => self.text(outcome, &mut line),
            Encoding::Json => {
                self.json(outcome, &mut line);
                Ok(())
            }
        };
        if written.is_err() {
            return;
        }
        let reporter = match self.side {
            Side::Client => "source",
            Side::Server => "destination",
        };
        tracing::info!(target: TARGET, reporter, "{line}");
        if let Some(file) = &self.log.file {
            line.push('\n');
            if file.lines.try_send(line).is_err() {
                file.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn trace_id(&self) -> Option<String> {
        self.trace
            .as_ref()
            .map(|t| t.context().trace_id().to_string())
    }

    fn protocol(&self) -> &'static str {
        match self.version {
            Version::HTTP_09 => "HTTP/0.9",
            Version::HTTP_10 => "HTTP/1.0",
            Version::HTTP_11 => "HTTP/1.1",
            Version::HTTP_2 => "HTTP/2",
            Version::HTTP_3 => "HTTP/3",
            _ => "-",
        }
    }

    fn text(&self, o: &Outcome, out: &mut String) -> fmt::Result {
        let header = |v: &Option<HeaderValue>| -> Dash<String> {
            Dash(
                v.as_ref()
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
            )
        };
        write!(
            out,
            "[{}] \"{} {} {}\" {} {} - - \"-\" {} {} {} - \"{}\" \"{}\" \"{}\" \"{}\" \"{}\" {} - - {} - {} {} {} \"{}\"",
            Rfc3339(self.start),
            self.method,
            Dash(self.path.as_ref().map(|p| p.as_str())),
            self.protocol(),
            o.code,
            Dash(o.flags.map(ResponseFlags::short_code)),
            o.bytes_received,
            o.bytes_sent,
            o.duration.as_millis(),
            header(&self.forwarded_for),
            header(&self.user_agent),
            Dash(self.request_id.as_ref().and_then(|id| id.as_str())),
            header(&self.authority),
            Dash(self.upstream_host.as_ref()),
            Dash(self.cluster.as_deref()),
            Dash(self.downstream_remote),
            Dash(self.route_name.as_deref()),
            Dash(o.grpc_status.map(GrpcCode::as_i32)),
            Dash(self.trace_id()),
            Dash(self.peer_principal.as_deref()),
        )
    }

    fn json(&self, o: &Outcome, out: &mut String) {
        use serde_json::{Value, json};
        let text = |v: Option<&str>| v.map_or(Value::Null, |s| Value::String(s.to_owned()));
        let header = |v: &Option<HeaderValue>| text(v.as_ref().and_then(|v| v.to_str().ok()));
        let value = json!({
            "start_time": Rfc3339(self.start).to_string(),
            "method": self.method.as_str(),
            "path": text(self.path.as_ref().map(|p| p.as_str())),
            "protocol": self.protocol(),
            "response_code": o.code,
            "response_flags": text(o.flags.map(ResponseFlags::short_code)),
            "response_code_details": null,
            "connection_termination_details": null,
            "upstream_transport_failure_reason": null,
            "bytes_received": o.bytes_received,
            "bytes_sent": o.bytes_sent,
            "duration": u64::try_from(o.duration.as_millis()).unwrap_or(u64::MAX),
            "upstream_service_time": null,
            "x_forwarded_for": header(&self.forwarded_for),
            "user_agent": header(&self.user_agent),
            "request_id": text(self.request_id.as_ref().and_then(|id| id.as_str())),
            "authority": header(&self.authority),
            "upstream_host": self.upstream_host.as_ref().map(ToString::to_string),
            "upstream_cluster": text(self.cluster.as_deref()),
            "upstream_local_address": null,
            "downstream_local_address": null,
            "downstream_remote_address": self.downstream_remote.map(|a| a.to_string()),
            "requested_server_name": null,
            "route_name": text(self.route_name.as_deref()),
            "grpc_status": o.grpc_status.map(GrpcCode::as_i32),
            "trace_id": self.trace_id(),
            "peer_principal": text(self.peer_principal.as_deref()),
        });
        // Writing a `Value` into a `String` cannot fail.
        let _ = write!(out, "{value}");
    }
}

/// A value, or Envoy's `-` for one that is absent or empty.
struct Dash<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Dash<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("-"),
        }
    }
}

/// A UTC time as Envoy's `%START_TIME%` writes it: `2024-05-01T12:34:56.789Z`.
struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let days = i64::try_from(secs / 86_400).unwrap_or(0);
        let of_day = secs % 86_400;
        let (year, month, day) = civil_from_days(days);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            of_day / 3600,
            of_day / 60 % 60,
            of_day % 60,
            since.subsec_millis()
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
pub(crate) fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests;
