//! Cluster policy: load balancing, circuit-breaker thresholds, outlier detection, upstream TLS,
//! and the endpoints that serve the cluster.
//!
//! Defaults are Envoy's, because both Istio and xDS leave unset fields to Envoy's defaults and a
//! user moving from a sidecar expects the same behaviour.

use std::{sync::Arc, time::Duration};

use crate::{Endpoint, Error, HealthStatusSet, Percentage, RetryBudget, matcher::StringMatcher};

/// An upstream cluster: a set of endpoints and how traffic to them is managed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cluster {
    /// Its name, e.g. `outbound|9080|v2|reviews.default.svc.cluster.local`.
    pub name: Arc<str>,
    /// How an endpoint is chosen.
    pub lb: LbPolicy,
    /// Concurrency limits.
    pub breaker: CircuitBreakers,
    /// Passive health checking; `None` is off.
    pub outlier: Option<OutlierDetection>,
    /// Below this share of healthy endpoints, balance over all endpoints (Envoy's panic mode).
    /// Default is 50 %; 0 % disables panic mode.
    pub panic_threshold: Percentage,
    /// Prefer endpoints in the caller's locality (Envoy's locality-weighted / zone-aware
    /// balancing); priorities always fail over in order. Default is `false`.
    pub locality_weighted: bool,
    /// Istio's `failover` and `failoverPriority`, applied with
    /// [`locality_weighted`](Self::locality_weighted). Default is off (empty).
    pub locality_failover: crate::lb::LocalityFailover,
    /// Bound on establishing a connection. Default is 10 s (Istio's).
    pub connect_timeout: Duration,
    /// Requests after which a connection takes no new ones: later requests go to a fresh
    /// connection and the old one closes once its requests finish (Envoy's
    /// `max_requests_per_connection`). `None` is unlimited.
    pub max_requests_per_connection: Option<u32>,
    /// Close a connection with no request in flight for this long; the next request
    /// reconnects. `None` keeps idle connections open. Default is 1 h (Envoy's and Istio's).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive on connections to the endpoints; `None` is off (the socket's default).
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// TLS to the endpoints.
    pub tls: UpstreamTls,
    /// The endpoints.
    pub endpoints: Arc<[Endpoint]>,
    /// The health an endpoint needs to take a request pinned to it by a session (Envoy's
    /// `common_lb_config.override_host_status`); an endpoint ejected by outlier detection counts
    /// as unhealthy. Default is Envoy's: unknown, healthy or degraded.
    pub override_host_status: HealthStatusSet,
}

/// How an endpoint is chosen.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub enum LbPolicy {
    /// Weighted round robin. Envoy's (and Istio's) default.
    #[default]
    RoundRobin,
    /// Weighted random.
    Random,
    /// Power of `choice_count` choices, fewest active requests wins.
    LeastRequest {
        /// Endpoints sampled per pick (≥ 2). Default is 2.
        choice_count: u32,
    },
    /// Consistent hashing on the route's hash policy over a ring of virtual nodes (xxh64).
    RingHash {
        /// Minimum ring entries. Default is 1,024.
        min_ring_size: u64,
        /// Maximum ring entries. Default is 8,388,608.
        max_ring_size: u64,
    },
    /// Latency-aware power of two choices: the lower peak-EWMA of round-trip time × load wins
    /// (Finagle's / Linkerd's algorithm).
    PeakEwma {
        /// Half-life-like decay of the latency estimate. Default is 10 s.
        decay: Duration,
    },
}

/// Envoy's per-cluster circuit-breaker thresholds (default priority). Over a threshold the
/// request fails at once and is counted as an overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CircuitBreakers {
    /// Connections to all endpoints together, open or draining. Over it a request that needs
    /// a new connection waits as a pending request for one to close, except that an endpoint
    /// with no connection at all always gets one (Envoy's rule), so the count may exceed it by
    /// at most the number of endpoints. Default is 1,024.
    pub max_connections: u32,
    /// Requests waiting for a connection. Default is 1,024.
    pub max_pending_requests: u32,
    /// Requests in flight. Default is 1,024.
    pub max_requests: u32,
    /// Retries in flight. Default is 3. Ignored when `retry_budget` is set.
    pub max_retries: u32,
    /// Retries in flight as a share of active requests (Envoy's `retry_budget`); replaces
    /// `max_retries` when set. Default is `None`.
    pub retry_budget: Option<RetryBudget>,
}

/// TCP keepalive probes on an upstream connection (Envoy's
/// `upstream_connection_options.tcp_keepalive`, Istio's `connectionPool.tcp.tcpKeepalive`).
/// An unset field keeps the operating system's default, as in both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpKeepalive {
    /// Idle time before the first probe (`TCP_KEEPIDLE`); `None` is the system's (Linux: 2 h).
    pub time: Option<Duration>,
    /// Time between unanswered probes (`TCP_KEEPINTVL`); `None` is the system's (Linux: 75 s).
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`); `None` is the
    /// system's (Linux: 9).
    pub probes: Option<u32>,
}

/// Which breaker threshold a request or connection counts against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerResource {
    /// A connection.
    Connection,
    /// A request waiting for a connection.
    PendingRequest,
    /// A request in flight.
    Request,
    /// A retry in flight.
    Retry,
}

/// Envoy's outlier detection (passive health checking).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OutlierDetection {
    /// Eject after this many consecutive 5xx outcomes; `None` is off.
    pub consecutive_5xx: Option<ConsecutiveRule>,
    /// Eject after this many consecutive gateway errors (502/503/504, no response); `None` is
    /// off.
    pub consecutive_gateway_failure: Option<ConsecutiveRule>,
    /// Eject after this many consecutive local-origin failures (connect failure, reset,
    /// timeout); only counted when `split_external_local_origin_errors`; `None` is off.
    pub consecutive_local_origin_failure: Option<ConsecutiveRule>,
    /// Count local-origin failures apart from the upstream's answers (Envoy's
    /// `split_external_local_origin_errors`). Default is `false`: both count as 5xx.
    pub split_external_local_origin_errors: bool,
    /// Statistical ejection by success rate; `None` is off.
    pub success_rate: Option<SuccessRateRule>,
    /// Ejection by failure percentage; `None` is off.
    pub failure_percentage: Option<FailurePercentageRule>,
    /// How often the statistical rules are evaluated and ejections expire. Default is 10 s.
    pub interval: Duration,
    /// An ejection lasts `base_ejection_time × times ejected`, capped at `max_ejection_time`.
    /// Default is 30 s.
    pub base_ejection_time: Duration,
    /// Cap on an ejection's length; when below `base_ejection_time`, the base is the cap (as
    /// in Envoy). Default is 300 s.
    pub max_ejection_time: Duration,
    /// At most this share of the cluster's endpoints is ejected at once, as `ejection_cap`
    /// reads it. Default is 10 %.
    pub max_ejection_percent: Percentage,
    /// How `max_ejection_percent` is applied; Envoy's rule by default. Not an Envoy or Istio
    /// field: set it in code to opt into the strict cap.
    pub ejection_cap: EjectionCap,
}

/// How [`OutlierDetection::max_ejection_percent`] caps the hosts ejected at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EjectionCap {
    /// Envoy's rule: an ejection is made while `floor(max_ejection_percent × hosts)` hosts are
    /// not yet out, and always when none is. So one host is ejected whatever the percentage
    /// (Istio's default 10 % still ejects in a cluster of fewer than ten endpoints), and at
    /// 100 % every host can be (the balancer's panic mode then spreads the load over them).
    #[default]
    AtLeastOne,
    /// Never more than `floor(max_ejection_percent × hosts)`, and never the last host in
    /// service: a configured percentage stays a promise about capacity, at the price of
    /// ejecting nothing in a cluster too small for the percentage to reach one host.
    Strict,
}

/// A consecutive-failure rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConsecutiveRule {
    /// Failures in a row that trigger ejection (≥ 1).
    pub threshold: u32,
    /// Chance that a triggered ejection is enforced. Default is 100 % (Istio's setting).
    pub enforcing: Percentage,
}

/// Envoy's success-rate rule: eject endpoints whose success rate is below
/// `mean - stdev × stdev_factor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SuccessRateRule {
    /// The factor, in thousandths (Envoy's unit): 1900 is 1.9. Default is 1900.
    pub stdev_factor_milli: u32,
    /// Endpoints with enough volume needed to evaluate. Default is 5.
    pub minimum_hosts: u32,
    /// Requests in the interval an endpoint needs to be evaluated. Default is 100.
    pub request_volume: u32,
    /// Chance an ejection is enforced. Default is 100 %.
    pub enforcing: Percentage,
}

/// Envoy's failure-percentage rule: eject endpoints whose failure share exceeds `threshold`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FailurePercentageRule {
    /// Failure share above which an endpoint is ejected. Default is 85 %.
    pub threshold: Percentage,
    /// Endpoints with enough volume needed to evaluate. Default is 5.
    pub minimum_hosts: u32,
    /// Requests in the interval an endpoint needs to be evaluated. Default is 50.
    pub request_volume: u32,
    /// Chance an ejection is enforced. Default is 100 %.
    pub enforcing: Percentage,
}

/// TLS to the upstream (Istio's DestinationRule `tls`, Envoy's `UpstreamTlsContext`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// The mode.
    pub mode: TlsMode,
    /// SNI sent; `None` sends none.
    pub sni: Option<String>,
    /// The server's certificate must carry a SAN matching one of these; empty accepts any
    /// certificate the trust bundle validates.
    pub san_matchers: Arc<[SanMatcher]>,
    /// Client certificate for `Mutual` (`IstioMutual` uses the workload's own).
    pub client_certificate: Option<CertificateSource>,
    /// Trust bundle; `None` with `Simple` uses the workload's mesh trust bundle.
    pub trust_bundle: Option<CertificateSource>,
}

/// TLS mode, as in Istio's DestinationRule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Plaintext.
    #[default]
    Disable,
    /// TLS, server authenticated.
    Simple,
    /// mTLS with certificates named in the policy.
    Mutual,
    /// mTLS with the workload's mesh identity (SPIFFE certificate).
    IstioMutual,
}

/// A subject-alternative-name condition on a peer certificate.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SanMatcher {
    /// Which SAN type.
    pub kind: SanKind,
    /// How its value is compared.
    pub matcher: StringMatcher,
}

/// SAN types (Envoy's `SubjectAltNameMatcher.SanType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SanKind {
    /// DNS name.
    Dns,
    /// URI, e.g. a SPIFFE id `spiffe://cluster.local/ns/default/sa/reviews`.
    Uri,
    /// Email address.
    Email,
    /// IP address.
    IpAddress,
}

/// Where certificate material comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CertificateSource {
    /// PEM files on disk, watched for rotation.
    Files {
        /// Certificate chain (or CA bundle for a trust bundle).
        certificate: String,
        /// Private key; `None` for a trust bundle.
        private_key: Option<String>,
    },
    /// A certificate-provider instance from the xDS bootstrap.
    Provider {
        /// Instance name.
        instance: String,
        /// Certificate name within the instance.
        certificate_name: String,
    },
}

// === impl Cluster ===

impl Cluster {
    /// A cluster with Envoy's defaults and the given endpoints.
    pub fn new(name: impl Into<Arc<str>>, endpoints: Vec<Endpoint>) -> Self {
        Self {
            name: name.into(),
            lb: LbPolicy::default(),
            breaker: CircuitBreakers::default(),
            outlier: None,
            panic_threshold: Percentage::from_ppm(500_000).unwrap_or(Percentage::ZERO),
            locality_weighted: false,
            locality_failover: crate::lb::LocalityFailover::default(),
            connect_timeout: Duration::from_secs(10),
            max_requests_per_connection: None,
            idle_timeout: Some(Duration::from_secs(3600)),
            tcp_keepalive: None,
            tls: UpstreamTls::default(),
            endpoints: endpoints.into(),
            override_host_status: HealthStatusSet::default(),
        }
    }
}

// === impl LbPolicy ===

impl LbPolicy {
    /// Least request with `choice_count` choices; fewer than 2 is an error.
    pub fn least_request(choice_count: u32) -> Result<Self, Error> {
        if choice_count < 2 {
            return Err(Error::invalid(format!(
                "least request needs at least 2 choices, got {choice_count}"
            )));
        }
        Ok(Self::LeastRequest { choice_count })
    }

    /// Ring hash; sizes must be positive, at most 8,388,608 (Envoy's cap) and ordered.
    pub fn ring_hash(min_ring_size: u64, max_ring_size: u64) -> Result<Self, Error> {
        const CAP: u64 = 8_388_608;
        if min_ring_size == 0 || max_ring_size > CAP || min_ring_size > max_ring_size {
            return Err(Error::invalid(format!(
                "ring size bounds {min_ring_size}..{max_ring_size} must satisfy 1 <= min <= max <= {CAP}"
            )));
        }
        Ok(Self::RingHash {
            min_ring_size,
            max_ring_size,
        })
    }

    /// Ring hash with Envoy's default sizes.
    pub fn default_ring_hash() -> Self {
        Self::RingHash {
            min_ring_size: 1024,
            max_ring_size: 8_388_608,
        }
    }
}

// === impl CircuitBreakers ===

impl CircuitBreakers {
    /// The threshold for `resource`.
    pub fn limit(&self, resource: BreakerResource) -> u32 {
        match resource {
            BreakerResource::Connection => self.max_connections,
            BreakerResource::PendingRequest => self.max_pending_requests,
            BreakerResource::Request => self.max_requests,
            BreakerResource::Retry => self.max_retries,
        }
    }

    /// Whether one more `resource` may be admitted while `current` are in use.
    /// Over the threshold the caller fails fast and counts an overflow.
    pub fn admits(&self, resource: BreakerResource, current: u32) -> bool {
        current < self.limit(resource)
    }

    /// Whether one more retry may start with `active_requests` requests and `active_retries`
    /// retries in flight: by the retry budget when there is one, else by `max_retries`.
    pub fn admits_retry(&self, active_requests: u32, active_retries: u32) -> bool {
        match &self.retry_budget {
            Some(budget) => budget.allows(u64::from(active_requests), u64::from(active_retries)),
            None => active_retries < self.max_retries,
        }
    }
}

impl Default for CircuitBreakers {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_pending_requests: 1024,
            max_requests: 1024,
            max_retries: 3,
            retry_budget: None,
        }
    }
}

// === impl OutlierDetection ===

impl OutlierDetection {
    /// The most of `hosts` hosts that may be ejected at once, by [`Self::ejection_cap`].
    pub fn max_ejected_hosts(&self, hosts: usize) -> usize {
        let by_percent = usize::try_from(self.max_ejection_percent.of(hosts as u64))
            .unwrap_or(hosts)
            .min(hosts);
        match self.ejection_cap {
            EjectionCap::AtLeastOne => by_percent.max(hosts.min(1)),
            EjectionCap::Strict => by_percent.min(hosts.saturating_sub(1)),
        }
    }

    /// The length of the `times_ejected`-th ejection (1 for the first):
    /// `base × times_ejected`, capped at `max(max_ejection_time, base)`.
    pub fn ejection_duration(&self, times_ejected: u32) -> Duration {
        let cap = self.max_ejection_time.max(self.base_ejection_time);
        self.base_ejection_time
            .checked_mul(times_ejected.max(1))
            .map_or(cap, |d| d.min(cap))
    }
}

impl Default for OutlierDetection {
    /// Envoy's defaults: consecutive 5xx at 5, gateway failures counted but not enforced
    /// (left `None` here), success rate with Envoy's defaults, failure percentage off.
    fn default() -> Self {
        Self {
            consecutive_5xx: Some(ConsecutiveRule {
                threshold: 5,
                enforcing: Percentage::HUNDRED,
            }),
            consecutive_gateway_failure: None,
            consecutive_local_origin_failure: None,
            split_external_local_origin_errors: false,
            success_rate: None,
            failure_percentage: None,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(300),
            max_ejection_percent: Percentage::from_ppm(100_000).unwrap_or(Percentage::ZERO),
            ejection_cap: EjectionCap::AtLeastOne,
        }
    }
}

impl Default for SuccessRateRule {
    fn default() -> Self {
        Self {
            stdev_factor_milli: 1900,
            minimum_hosts: 5,
            request_volume: 100,
            enforcing: Percentage::HUNDRED,
        }
    }
}

impl Default for FailurePercentageRule {
    fn default() -> Self {
        Self {
            threshold: Percentage::from_ppm(850_000).unwrap_or(Percentage::HUNDRED),
            minimum_hosts: 5,
            request_volume: 50,
            enforcing: Percentage::HUNDRED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ejection_time_grows_linearly_up_to_the_cap() {
        let od = OutlierDetection {
            base_ejection_time: Duration::from_secs(30),
            max_ejection_time: Duration::from_secs(100),
            ..OutlierDetection::default()
        };
        assert_eq!(od.ejection_duration(1), Duration::from_secs(30));
        assert_eq!(od.ejection_duration(3), Duration::from_secs(90));
        assert_eq!(od.ejection_duration(4), Duration::from_secs(100));
        assert_eq!(od.ejection_duration(u32::MAX), Duration::from_secs(100));
        let base_above_max = OutlierDetection {
            max_ejection_time: Duration::from_secs(10),
            ..od
        };
        assert_eq!(base_above_max.ejection_duration(5), Duration::from_secs(30));
    }

    #[test]
    fn breaker_admits_below_each_threshold() {
        let b = CircuitBreakers {
            max_requests: 2,
            ..CircuitBreakers::default()
        };
        assert!(b.admits(BreakerResource::Request, 1));
        assert!(!b.admits(BreakerResource::Request, 2));
        assert!(b.admits(BreakerResource::Retry, 2));
        assert!(!b.admits(BreakerResource::Retry, 3));
        assert!(b.admits_retry(0, 2));
        assert!(!b.admits_retry(0, 3));
        let budgeted = CircuitBreakers {
            retry_budget: Some(RetryBudget::default()),
            ..b
        };
        assert!(budgeted.admits_retry(100, 19), "20% of 100 active requests");
        assert!(!budgeted.admits_retry(100, 20));
    }

    #[test]
    fn lb_constructors_validate() {
        assert!(LbPolicy::least_request(1).is_err());
        assert!(LbPolicy::ring_hash(0, 10).is_err());
        assert!(LbPolicy::ring_hash(20, 10).is_err());
        assert!(LbPolicy::ring_hash(1, 8_388_609).is_err());
        assert!(LbPolicy::ring_hash(1024, 4096).is_ok());
    }
}
