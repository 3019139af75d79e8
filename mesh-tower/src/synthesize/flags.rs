//! Why the mesh answered a request itself, as Envoy's response flags name it.

/// Why the mesh answered instead of the upstream (Envoy's response flag names in the docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseFlags {
    /// `NR`: no route configured for the request.
    NoRoute,
    /// `NC`: the route names a cluster that is not present.
    NoCluster,
    /// `UH`: no healthy endpoint in the cluster.
    NoHealthyUpstream,
    /// `UF`: connecting to the upstream failed.
    UpstreamConnectionFailure,
    /// `UR`: the upstream reset the stream or connection.
    UpstreamReset,
    /// `UT`: the route timeout expired.
    UpstreamRequestTimeout,
    /// `UO`: a circuit breaker rejected the request (overflow).
    UpstreamOverflow,
    /// `FI`: a fault abort was injected.
    FaultInjected,
    /// `DR`: answered by the route's direct response or redirect.
    DirectResponse,
    /// `DI`: the request was delayed by an injected fault (then forwarded).
    DelayInjected,
    /// `RL`: the local rate limit rejected the request.
    RateLimited,
    /// `URX`: the response is the last attempt's after the retry limit was reached.
    UpstreamRetryLimitExceeded,
}

// === impl ResponseFlags ===

impl ResponseFlags {
    /// Envoy's short code (`UO`, `FI`, ...), as Istio's `response_flags` label shows it.
    pub fn short_code(self) -> &'static str {
        match self {
            Self::NoRoute => "NR",
            Self::NoCluster => "NC",
            Self::NoHealthyUpstream => "UH",
            Self::UpstreamConnectionFailure => "UF",
            Self::UpstreamReset => "UR",
            Self::UpstreamRequestTimeout => "UT",
            Self::UpstreamOverflow => "UO",
            Self::FaultInjected => "FI",
            Self::DirectResponse => "DR",
            Self::DelayInjected => "DI",
            Self::RateLimited => "RL",
            Self::UpstreamRetryLimitExceeded => "URX",
        }
    }
}
