//! Sending the demo's requests and tallying what came back.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures::{StreamExt, stream};
use mesh_tower::Mesh;
use tonic::{Code, metadata::MetadataValue};

use crate::{
    bookinfo::{ProductPage, RATINGS, REVIEWS},
    demo::{PRODUCTPAGE, xds},
    load::code_name,
    proto::bookinfo::{
        RatingsRequest, ReviewsRequest, ratings_client::RatingsClient,
        reviews_client::ReviewsClient,
    },
};

/// What a batch of calls observed.
#[derive(Clone, Debug, Default)]
pub struct Tally {
    /// Successful replies by what answered (reviews version or ratings instance).
    pub answered_by: BTreeMap<String, u32>,
    /// Failures by gRPC code name.
    pub failed: BTreeMap<String, u32>,
    /// One failure message per code, for showing what the caller saw.
    pub messages: BTreeMap<String, String>,
    /// The latency of every call.
    pub latencies: Vec<Duration>,
    /// The callers' principals ratings saw (for mTLS).
    pub principals: BTreeMap<String, u32>,
    /// Every call, in the order it ended: the report draws them.
    pub calls: Vec<Call>,
}

/// One call, as the report draws it.
#[derive(Clone, Debug)]
pub struct Call {
    /// When it ended.
    pub ended: Instant,
    /// How long it took.
    pub latency: Duration,
    /// What answered it (a reviews version, a ratings instance) or the gRPC code it failed with.
    pub outcome: String,
    /// Whether it failed.
    pub failed: bool,
}

// === impl Tally ===

impl Tally {
    /// Calls made.
    pub fn total(&self) -> u32 {
        self.answered_by.values().sum::<u32>() + self.failed.values().sum::<u32>()
    }

    /// Failed calls.
    pub fn failures(&self) -> u32 {
        self.failed.values().sum()
    }

    /// The share of calls answered by `who`, in percent.
    pub fn percent(&self, who: &str) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        f64::from(self.answered_by.get(who).copied().unwrap_or(0)) * 100.0 / f64::from(total)
    }

    /// The share of calls that failed with `code`, in percent.
    pub fn failed_percent(&self, code: Code) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        let n = self.failed.get(code_name(code)).copied().unwrap_or(0);
        f64::from(n) * 100.0 / f64::from(total)
    }

    /// The smallest latency seen.
    pub fn min_latency(&self) -> Duration {
        self.latencies.iter().copied().min().unwrap_or_default()
    }

    /// A one-line summary: `v1 90.5 %, v2 9.5 %, UNAVAILABLE 0 %`.
    pub fn summary(&self) -> String {
        let total = f64::from(self.total().max(1));
        let answered = self
            .answered_by
            .iter()
            .map(|(k, v)| format!("{k} {:.1} %", f64::from(*v) * 100.0 / total));
        let failed = self
            .failed
            .iter()
            .map(|(k, v)| format!("{k} {:.1} %", f64::from(*v) * 100.0 / total));
        let parts: Vec<String> = answered.chain(failed).collect();
        format!("{} of {}", parts.join(", "), self.total())
    }

    fn record(&mut self, latency: Duration, result: Result<(String, String), tonic::Status>) {
        self.latencies.push(latency);
        let (outcome, failed) = match &result {
            Ok((who, _)) => (who.clone(), false),
            Err(status) => (code_name(status.code()).to_owned(), true),
        };
        self.calls.push(Call {
            ended: Instant::now(),
            latency,
            outcome,
            failed,
        });
        match result {
            Ok((who, principal)) => {
                *self.answered_by.entry(who).or_default() += 1;
                if !principal.is_empty() {
                    *self.principals.entry(principal).or_default() += 1;
                }
            }
            Err(status) => {
                let code = code_name(status.code()).to_owned();
                self.messages
                    .entry(code.clone())
                    .or_insert_with(|| status.message().to_owned());
                *self.failed.entry(code).or_default() += 1;
            }
        }
    }
}

/// Calls `reviews` `n` times, `concurrency` at a time, with `end_user` as the `end-user`
/// header when given; `progress` sees the tally after every call.
pub(crate) async fn reviews(
    mesh: &Mesh,
    n: u32,
    concurrency: usize,
    end_user: Option<&str>,
    progress: &mut dyn FnMut(&Tally),
) -> Tally {
    let client = ReviewsClient::new(mesh.channel(xds(REVIEWS)));
    let user = end_user.and_then(|u| MetadataValue::try_from(u).ok());
    let calls = stream::iter(0..n).map(|_| {
        let mut client = client.clone();
        let user = user.clone();
        async move {
            let mut request = tonic::Request::new(ReviewsRequest { product_id: 1 });
            if let Some(user) = user {
                request.metadata_mut().insert("end-user", user);
            }
            let start = Instant::now();
            let result = client
                .get_reviews(request)
                .await
                .map(|r| (r.into_inner().version, String::new()));
            (start.elapsed(), result)
        }
    });
    collect(calls.buffer_unordered(concurrency.max(1)), progress).await
}

/// Calls `ratings` `n` times, one at a time (so consecutive failures are consecutive).
pub(crate) async fn ratings(mesh: &Mesh, n: u32, progress: &mut dyn FnMut(&Tally)) -> Tally {
    let client = RatingsClient::new(mesh.channel(xds(RATINGS)));
    let calls = stream::iter(0..n).map(|_| {
        let mut client = client.clone();
        async move {
            let start = Instant::now();
            let result = client
                .get_ratings(RatingsRequest { product_id: 1 })
                .await
                .map(|r| {
                    let r = r.into_inner();
                    (r.instance, r.caller_principal)
                });
            (start.elapsed(), result)
        }
    });
    collect(calls.buffered(1), progress).await
}

async fn collect(
    mut results: impl futures::Stream<Item = (Duration, Result<(String, String), tonic::Status>)>
    + Unpin,
    progress: &mut dyn FnMut(&Tally),
) -> Tally {
    let mut tally = Tally::default();
    while let Some((latency, result)) = results.next().await {
        tally.record(latency, result);
        progress(&tally);
    }
    tally
}

/// Asks the product page for product 1 over plain HTTP through the mesh, with no trace
/// headers: the mesh starts the trace.
pub(crate) async fn product_page(mesh: &Mesh) -> Result<ProductPage, String> {
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    let request = http::Request::get(format!("http://{PRODUCTPAGE}/productpage/1"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = mesh
        .channel(xds(PRODUCTPAGE))
        .oneshot(request)
        .await
        .map_err(|e| format!("product page unreachable: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("product page body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body)
        .map_err(|e| format!("product page answered {status} with an unreadable body: {e}"))
}

/// Calls ratings at `address` as a plain gRPC client outside the mesh (no TLS): what a workload
/// without a sidecar or mesh identity would do.
///
/// A STRICT server closes the connection when the first bytes are not a TLS handshake. When the
/// plaintext client notices depends on timing: during its own HTTP/2 handshake, or with the
/// call in flight, which tonic reports as `UNKNOWN` or `INTERNAL`. gRPC's other clients (C-core,
/// grpc-go) report a connection the server closed without answering as `UNAVAILABLE`, and so
/// does this one: a failure with a transport error behind it (no status from the server) is
/// `UNAVAILABLE`, whichever moment it surfaced at, so the demo's line is the same on every run.
pub(crate) async fn plaintext_ratings(address: std::net::SocketAddr) -> Result<(), String> {
    const CLOSED: &str = "UNAVAILABLE: connection closed without an answer";
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2));
    let channel = endpoint.connect().await.map_err(|_| CLOSED.to_owned())?;
    RatingsClient::new(channel)
        .get_ratings(RatingsRequest { product_id: 1 })
        .await
        .map(drop)
        .map_err(|status| {
            if std::error::Error::source(&status).is_some() {
                CLOSED.to_owned()
            } else {
                code_name(status.code()).to_owned()
            }
        })
}
