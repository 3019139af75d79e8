//! The policy model of the proxyless mesh, and every policy decision, as plain data and pure
//! functions.
//!
//! Nothing here performs I/O, reads a clock, or draws random numbers: time (`now`) and uniform
//! random draws (`u64`) are arguments, so every decision is reproducible in a unit test and the
//! data plane (`mesh-tower`) owns all effects. Policy types are validated on construction and
//! are `Clone + Debug + PartialEq + Eq + Hash`; collections are `Arc<[T]>` so snapshots share
//! structure cheaply.
//!
//! - [`route`]: virtual hosts, routes, matching and weighted cluster choice.
//! - [`lb`]: endpoint choice: priority levels and panic mode, weighted round robin, weighted
//!   random, least request, ring hash and the request hash.
//! - [`outlier`]: outlier detection as a state machine (events and `now` in, ejections out).
//! - [`path`]: request path normalization (Istio's `pathNormalization`).
//! - [`backoff`]: the jittered exponential backoff of retries and reconnects.
//! - [`RetryPolicy`], [`FaultPolicy`], [`Cluster`], [`Endpoint`], [`ServerPolicy`]: the policies.
//! - [`Outcome`]: the one failure classifier every policy reads.
//! - [`MeshConfig`]: one complete, immutable snapshot.

#![forbid(unsafe_code)]

pub mod backoff;
mod classify;
mod cluster;
mod config;
mod endpoint;
mod error;
mod fault;
mod grpc;
pub mod istio;
pub mod lb;
pub mod matcher;
pub mod outlier;
pub mod path;
mod percentage;
mod retry;
pub mod route;
mod server;
pub mod sidecar;
#[cfg(test)]
mod test_rng;
mod workload;

pub use self::{
    classify::{Origin, Outcome},
    cluster::{
        BreakerResource, CertificateSource, CircuitBreakers, Cluster, ConsecutiveRule, EjectionCap,
        FailurePercentageRule, LbPolicy, OutlierDetection, SanKind, SanMatcher, SuccessRateRule,
        TcpKeepalive, TlsMode, UpstreamTls,
    },
    config::MeshConfig,
    endpoint::{Endpoint, EndpointAddress, HealthStatus, HealthStatusSet, Labels, Locality},
    error::Error,
    fault::{AbortStatus, FaultAbort, FaultDecision, FaultDelay, FaultPolicy, HeaderFaultShare},
    grpc::GrpcCode,
    outlier::{EjectionReason, OutlierDetector, OutlierEvent},
    path::{EscapedSlashesAction, PathError, PathNormalization, PathNormalizer},
    percentage::Percentage,
    retry::{Backoff, HedgePolicy, RetryBudget, RetryOn, RetryPolicy},
    route::{Action, RouteTable},
    server::{
        AuditCondition, AuthorizationPolicy, AuthzAction, AuthzCondition, AuthzDecision,
        AuthzOperation, AuthzReason, AuthzRequest, AuthzRule, AuthzSource, ConditionKey,
        DEFAULT_ROOT_NAMESPACE, DEFAULT_TRUST_DOMAIN, FilterChainMatch, HeaderField, InboundChain,
        InboundListener, InboundListeners, InboundState, IstioString, LocalRateLimit, MtlsMode,
        PeerAuthentication, Permission, Principal, Rbac, RbacAction, RbacAudit, RbacFilter,
        RbacHeader, RbacPolicy, ServerPolicy, SourceType, TokenBucket, TrustDomains, WorkloadScope,
        authorize, authorize_rbac, mtls_mode,
    },
    workload::{SourceMatcher, Workload},
};
