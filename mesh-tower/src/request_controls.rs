//! What a caller may control with Envoy's `x-envoy-*` request headers. Off by default.
//!
//! - **Header-driven faults** (Envoy's fault filter with `header_abort` / `header_delay`): a
//!   route's own fault policy enables them when its xDS fault says so; for routes without a
//!   fault of their own (static Istio YAML has no way to say it),
//!   [`RequestControls::header_faults`] enables them mesh-wide — as Envoy's listener-level
//!   fault filter applies to routes without a per-route fault.
//! - **Override headers** (`x-envoy-upstream-rq-timeout-ms`, `…-per-try-timeout-ms`,
//!   `x-envoy-max-retries`, `x-envoy-retry-on`, `x-envoy-retry-grpc-on`): read only when
//!   [`RequestControls::trust_override_headers`] says the application is trusted, as Envoy
//!   reads them only from internal callers; stripped from every request either way, so they
//!   never reach the upstream (Envoy consumes them, or sanitizes them at the edge).

use std::sync::Arc;

use http::HeaderMap;
use mesh_core::{FaultPolicy, HeaderFaultShare, route::overrides};

use crate::decision::RouteDecision;

/// The `x-envoy-*` request headers a mesh honours; see the module docs.
#[derive(Clone, Debug, Default)]
pub struct RequestControls {
    header_faults: Option<Arc<FaultPolicy>>,
    trust_override_headers: bool,
}

pub(crate) static DEFAULT_REQUEST_CONTROLS: RequestControls = RequestControls {
    header_faults: None,
    trust_override_headers: false,
};

// === impl RequestControls ===

impl RequestControls {
    /// Honours header-driven aborts and delays up to `share` on routes that configure no fault
    /// of their own (`HeaderFaultShare::HUNDRED`: as the headers ask). Default is off.
    pub fn header_faults(mut self, share: HeaderFaultShare) -> Self {
        self.header_faults = Some(Arc::new(FaultPolicy::from_headers(share)));
        self
    }

    /// Trusts the application's `x-envoy-*` timeout and retry override headers. Default is
    /// `false`: they are stripped unread.
    pub fn trust_override_headers(mut self, trust: bool) -> Self {
        self.trust_override_headers = trust;
        self
    }

    /// The mesh-wide header fault policy, when enabled.
    pub(crate) fn header_fault_policy(&self) -> Option<&Arc<FaultPolicy>> {
        self.header_faults.as_ref()
    }

    /// Whether the override headers are read.
    pub(crate) fn trusts_override_headers(&self) -> bool {
        self.trust_override_headers
    }

    /// Applies (when trusted) and strips the override headers of a routed request.
    pub(crate) fn apply_overrides(&self, decision: &mut RouteDecision, headers: &mut HeaderMap) {
        if !overrides::has_override_headers(headers) {
            return;
        }
        if self.trust_override_headers
            && let Some(forward) = decision.forward.with_override_headers(headers)
        {
            decision.forward = Arc::new(forward);
        }
        for name in overrides::OVERRIDE_HEADERS {
            headers.remove(name);
        }
    }
}
