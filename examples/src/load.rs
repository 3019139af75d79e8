//! The load tool's engine: sends Echo calls through a mesh channel, closed loop (N requests at
//! a fixed concurrency) or open loop (a fixed rate for a duration), and summarizes what came
//! back — replies per version, statuses, and latency percentiles.
//!
//! Open-loop latency is measured from each request's *scheduled* send time, so a stalled
//! server shows up as latency rather than as fewer requests (no coordinated omission).

use std::{collections::BTreeMap, fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderName, HeaderValue};
use http_body::Body;
use serde::Serialize;
use tokio::{sync::Mutex, time::Instant};
use tonic::{Code, client::GrpcService, codegen::StdError, metadata::MetadataMap};

use crate::proto::echo::{EchoRequest, echo_client::EchoClient};

/// How much load, and of what shape.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// The shape of the load.
    pub shape: Shape,
    /// Headers sent with every request (e.g. `x-beta-user: true`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Each call's deadline, sent as `grpc-timeout`.
    pub timeout: Option<Duration>,
}

/// A gRPC transport the load tool can drive from many tasks: a [`mesh_tower::Channel`], a plain
/// `tonic::transport::Channel`, or anything else a tonic client accepts that is cheap to clone
/// and `Send`.
pub trait Transport:
    GrpcService<
        tonic::body::Body,
        Future: Send,
        Error: Into<StdError>,
        ResponseBody: Body<Data = Bytes, Error: Into<StdError> + Send> + Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<C> Transport for C where
    C: GrpcService<
            tonic::body::Body,
            Future: Send,
            Error: Into<StdError>,
            ResponseBody: Body<Data = Bytes, Error: Into<StdError> + Send> + Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// Closed or open loop.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// `requests` calls in total, `concurrency` in flight at a time.
    Closed {
        /// Calls in total.
        requests: u64,
        /// Calls in flight at a time (at least 1).
        concurrency: usize,
    },
    /// `concurrency` calls in flight at a time until `duration` has passed (calls in flight
    /// then finish and are counted), so runs of different speeds last equally long.
    ClosedFor {
        /// How long to start new calls.
        duration: Duration,
        /// Calls in flight at a time (at least 1).
        concurrency: usize,
    },
    /// `rate` calls per second for `duration`, whatever the latency.
    Open {
        /// Calls per second (must be positive).
        rate: f64,
        /// How long to send.
        duration: Duration,
    },
}

/// What a run observed.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Calls made.
    pub total: u64,
    /// Successful replies per `service/version` that answered.
    pub by_version: BTreeMap<String, u64>,
    /// Calls per gRPC status name (`OK`, `UNAVAILABLE`, …).
    pub by_status: BTreeMap<String, u64>,
    /// Successful replies per instance address.
    pub by_instance: BTreeMap<String, u64>,
    /// Trace ids servers reported, with how many replies carried each (usually one per call).
    pub distinct_trace_ids: u64,
    /// Latency percentiles in microseconds.
    pub latency_us: Percentiles,
    /// Wall time of the run in milliseconds.
    pub elapsed_ms: u64,
    /// Calls per second over the run.
    pub throughput: f64,
    /// A sample error message per failing status.
    pub errors: BTreeMap<String, String>,
}

/// Latency percentiles (microseconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest call.
    pub max: u64,
}

impl Summary {
    /// How many successful replies came from `version` of any service.
    pub fn version_count(&self, version: &str) -> u64 {
        self.by_version
            .iter()
            .filter(|(k, _)| k.rsplit('/').next() == Some(version))
            .map(|(_, n)| n)
            .sum()
    }

    /// How many calls ended with `code`.
    pub fn status_count(&self, code: Code) -> u64 {
        self.by_status
            .get(code_name(code))
            .copied()
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Tally {
    summary: Summary,
    trace_ids: std::collections::HashSet<String>,
    histogram: Option<Histogram<u64>>,
}

impl Tally {
    fn record(
        &mut self,
        latency: Duration,
        outcome: Result<crate::proto::echo::EchoReply, tonic::Status>,
    ) {
        let s = &mut self.summary;
        s.total += 1;
        let code = match outcome {
            Ok(reply) => {
                *s.by_version
                    .entry(format!("{}/{}", reply.service, reply.version))
                    .or_default() += 1;
                *s.by_instance.entry(reply.instance).or_default() += 1;
                if !reply.trace_id.is_empty() {
                    self.trace_ids.insert(reply.trace_id);
                }
                Code::Ok
            }
            Err(status) => {
                s.errors
                    .entry(code_name(status.code()).to_owned())
                    .or_insert_with(|| status.message().to_owned());
                status.code()
            }
        };
        *s.by_status.entry(code_name(code).to_owned()).or_default() += 1;
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Some(h) = &mut self.histogram {
            h.saturating_record(micros);
        }
    }

    fn finish(mut self, elapsed: Duration) -> (Summary, Option<Histogram<u64>>) {
        let s = &mut self.summary;
        if let Some(h) = &self.histogram
            && !h.is_empty()
        {
            s.latency_us = Percentiles {
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
            };
        }
        s.distinct_trace_ids = self.trace_ids.len() as u64;
        s.elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let secs = elapsed.as_secs_f64();
        s.throughput = if secs > 0.0 {
            s.total as f64 / secs
        } else {
            0.0
        };
        (self.summary, self.histogram)
    }
}

/// Microseconds from 1 µs to 10 minutes, 3 significant digits; longer calls are recorded as
/// 10 minutes.
fn latency_histogram() -> Option<Histogram<u64>> {
    Histogram::new_with_bounds(1, 600_000_000, 3).ok()
}

/// Runs `spec` against `channel` and summarizes the outcome.
///
/// `channel` is a [`mesh_tower::Channel`] or any other gRPC transport (a plain
/// `tonic::transport::Channel`, for comparisons).
pub async fn run<C: Transport>(channel: C, spec: &LoadSpec) -> Summary {
    run_recorded(channel, spec).await.0
}

/// Like [`run`], and also returns the latency histogram (microseconds from 1 µs to 10 minutes,
/// 3 significant digits), so runs can be merged and percentiles read at any quantile. The
/// histogram is `None` only if it could not be allocated.
pub async fn run_recorded<C: Transport>(
    channel: C,
    spec: &LoadSpec,
) -> (Summary, Option<Histogram<u64>>) {
    let tally = Arc::new(Mutex::new(Tally {
        histogram: latency_histogram(),
        ..Tally::default()
    }));
    let started = Instant::now();
    match spec.shape {
        Shape::Closed {
            requests,
            concurrency,
        } => closed_loop(&channel, spec, &tally, concurrency, Some(requests), None).await,
        Shape::ClosedFor {
            duration,
            concurrency,
        } => {
            let deadline = started + duration;
            closed_loop(&channel, spec, &tally, concurrency, None, Some(deadline)).await
        }
        Shape::Open { rate, duration } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(f64::MIN_POSITIVE));
            let count = (duration.as_secs_f64() * rate).floor() as u64;
            let mut calls = Vec::new();
            for i in 0..count {
                let scheduled = started + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled).await;
                let (tally, spec) = (tally.clone(), spec.clone());
                let mut client = EchoClient::new(channel.clone());
                calls.push(tokio::spawn(async move {
                    let outcome = call(&mut client, &spec).await;
                    tally.lock().await.record(scheduled.elapsed(), outcome);
                }));
            }
            for c in calls {
                let _ = c.await;
            }
        }
    }
    let elapsed = started.elapsed();
    match Arc::try_unwrap(tally) {
        Ok(tally) => tally.into_inner().finish(elapsed),
        Err(shared) => std::mem::take(&mut *shared.lock().await).finish(elapsed),
    }
}

/// `concurrency` workers sending one call after another, until `requests` calls were started
/// or `deadline` passed.
async fn closed_loop<C: Transport>(
    channel: &C,
    spec: &LoadSpec,
    tally: &Arc<Mutex<Tally>>,
    concurrency: usize,
    requests: Option<u64>,
    deadline: Option<Instant>,
) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (next, tally, spec) = (next.clone(), tally.clone(), spec.clone());
            let mut client = EchoClient::new(channel.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let sent = Instant::now();
                    if requests.is_some_and(|r| n >= r) || deadline.is_some_and(|d| sent >= d) {
                        break;
                    }
                    let outcome = call(&mut client, &spec).await;
                    tally.lock().await.record(sent.elapsed(), outcome);
                }
            })
        })
        .collect();
    for worker in workers {
        let _ = worker.await;
    }
}

async fn call<C: Transport>(
    client: &mut EchoClient<C>,
    spec: &LoadSpec,
) -> Result<crate::proto::echo::EchoReply, tonic::Status> {
    let mut request = tonic::Request::new(EchoRequest {
        message: "hello".into(),
    });
    let mut headers = http::HeaderMap::new();
    for (name, value) in &spec.headers {
        headers.append(name.clone(), value.clone());
    }
    *request.metadata_mut() = MetadataMap::from_headers(headers);
    if let Some(t) = spec.timeout {
        request.set_timeout(t);
    }
    client.say(request).await.map(tonic::Response::into_inner)
}

/// The canonical upper-case name of a gRPC status code.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} calls in {} ms ({:.0}/s)",
            self.total, self.elapsed_ms, self.throughput
        )?;
        let share = |n: u64| 100.0 * n as f64 / self.total.max(1) as f64;
        writeln!(f, "replies by version:")?;
        for (version, n) in &self.by_version {
            writeln!(f, "  {version:<28} {n:>7}  {:5.1} %", share(*n))?;
        }
        writeln!(f, "statuses:")?;
        for (status, n) in &self.by_status {
            let sample = self
                .errors
                .get(status)
                .map(|e| format!("  ({e})"))
                .unwrap_or_default();
            writeln!(f, "  {status:<28} {n:>7}  {:5.1} %{sample}", share(*n))?;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        write!(
            f,
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
            ms(self.latency_us.p50),
            ms(self.latency_us.p90),
            ms(self.latency_us.p99),
            ms(self.latency_us.max)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_recorded_latencies() {
        let mut tally = Tally {
            histogram: latency_histogram(),
            ..Tally::default()
        };
        for ms in 1..=100 {
            tally.record(
                Duration::from_millis(ms),
                Err(tonic::Status::unavailable("down")),
            );
        }
        let (s, _) = tally.finish(Duration::from_secs(1));
        assert_eq!(s.total, 100);
        assert_eq!(s.status_count(Code::Unavailable), 100);
        assert!(
            (49_900..=50_100).contains(&s.latency_us.p50),
            "{:?}",
            s.latency_us
        );
        assert!(
            (98_900..=99_100).contains(&s.latency_us.p99),
            "{:?}",
            s.latency_us
        );
    }

    #[tokio::test]
    async fn a_timed_closed_loop_drives_a_plain_tonic_channel_for_its_duration() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let echo = crate::echo::EchoService::new("echo", "v1", address, Default::default());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(echo.into_server())
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let spec = LoadSpec {
            shape: Shape::ClosedFor {
                duration: Duration::from_millis(300),
                concurrency: 2,
            },
            headers: Vec::new(),
            timeout: None,
        };
        let (summary, histogram) = run_recorded(channel, &spec).await;
        assert!(summary.total > 2, "{summary}");
        assert_eq!(summary.status_count(Code::Ok), summary.total, "{summary}");
        assert_eq!(summary.version_count("v1"), summary.total);
        // Calls stop starting at the deadline; the last ones finish just after it.
        assert!((300..5_000).contains(&summary.elapsed_ms), "{summary}");
        assert_eq!(histogram.unwrap().len(), summary.total);
    }
}
