//! The echo server with knobs: a service name and version label it reports in every reply,
//! and a failure rate, failure status and latency that can be changed while it runs (the demo
//! turns an instance bad and good again to show retries and outlier ejection).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tonic::{Code, Request, Response, Status};

use crate::proto::echo::{EchoReply, EchoRequest, echo_server};

/// What an echo server does besides echoing; every knob can change while it serves.
#[derive(Debug)]
pub struct Knobs {
    fail_percent: AtomicU32,
    fail_code: AtomicI32,
    latency_ms: AtomicU64,
    calls: AtomicU64,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            fail_percent: AtomicU32::new(0),
            fail_code: AtomicI32::new(Code::Unavailable.into()),
            latency_ms: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        }
    }
}

impl Knobs {
    /// Fails `percent` of calls (clamped to 100) with `code`. The failing calls are spread
    /// evenly (call `n` fails when `n·percent mod 100 < percent`), so a demo's outcome does
    /// not depend on luck.
    pub fn fail(&self, percent: u32, code: Code) {
        self.fail_code.store(code.into(), Ordering::Relaxed);
        self.fail_percent.store(percent.min(100), Ordering::Relaxed);
    }

    /// Delays every reply by `latency`.
    pub fn delay(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.latency_ms.store(ms, Ordering::Relaxed);
    }

    /// Calls served so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Counts a call, waits the configured latency, and fails it when its turn has come; `who`
    /// goes into the failure's message.
    pub async fn apply(&self, who: &str) -> Result<(), Status> {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        let latency = self.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        match self.should_fail(n) {
            Some(code) => Err(Status::new(code, format!("{who} failing on purpose"))),
            None => Ok(()),
        }
    }

    fn should_fail(&self, n: u64) -> Option<Code> {
        let percent = u64::from(self.fail_percent.load(Ordering::Relaxed));
        let spread = (n * percent) % 100;
        (percent == 100 || (percent > 0 && spread < percent))
            .then(|| Code::from(self.fail_code.load(Ordering::Relaxed)))
    }
}

/// The echo service of one instance.
#[derive(Clone, Debug)]
pub struct EchoService {
    service: Arc<str>,
    version: Arc<str>,
    instance: Arc<str>,
    knobs: Arc<Knobs>,
}

impl EchoService {
    /// An instance of `service` at `version` listening on `address`.
    pub fn new(service: &str, version: &str, address: SocketAddr, knobs: Arc<Knobs>) -> Self {
        Self {
            service: service.into(),
            version: version.into(),
            instance: address.to_string().into(),
            knobs,
        }
    }

    /// The tonic service to add to a server.
    pub fn into_server(self) -> echo_server::EchoServer<Self> {
        echo_server::EchoServer::new(self)
    }
}

#[tonic::async_trait]
impl echo_server::Echo for EchoService {
    async fn say(&self, request: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.knobs
            .apply(&format!("{} {}", self.service, self.version))
            .await?;
        let caller_principal = crate::caller_principal(&request);
        let trace_id = crate::trace_id(request.metadata().as_ref()).unwrap_or_default();
        Ok(Response::new(EchoReply {
            message: request.into_inner().message,
            service: self.service.to_string(),
            version: self.version.to_string(),
            instance: self.instance.to_string(),
            caller_principal,
            trace_id,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_spread_evenly_at_the_configured_rate() {
        let knobs = Knobs::default();
        for percent in [0, 1, 10, 33, 50, 99, 100] {
            knobs.fail(percent, Code::Internal);
            let failed = (0..1000)
                .filter(|n| knobs.should_fail(*n).is_some())
                .count();
            assert_eq!(failed, percent as usize * 10, "{percent}%");
            // Evenly: no window of 100 consecutive calls is off by more than one.
            for start in [0, 37, 500] {
                let window = (start..start + 100)
                    .filter(|n| knobs.should_fail(*n).is_some())
                    .count();
                assert!(
                    window.abs_diff(percent as usize) <= 1,
                    "{percent}% from {start}"
                );
            }
        }
        assert_eq!(knobs.should_fail(0), Some(Code::Internal));
    }
}
