//! One connection's life: the requests it has taken, when it stops taking more, when it closes.
//!
//! A connection is *retired* once it has taken `max_requests_per_connection` requests or has
//! had none in flight for the idle timeout (Envoy's `common_http_protocol_options`). A retired
//! connection takes no new request, so the endpoint makes a fresh one for the next; it is
//! closed once its last request finishes, so retiring never fails a request. The decision and
//! the leases share one lock: a request cannot take a connection the idle timer is closing.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use mesh_core::EndpointAddress;
use tokio::{sync::Notify, time::Instant};

/// What a connection has been used for, and whether it still takes requests.
#[derive(Debug)]
pub(crate) struct ConnectionLife {
    usage: Mutex<Usage>,
    /// Requests after which the connection is retired; `None` is unlimited.
    max_requests: Option<u32>,
    /// Woken when the connection may have become closable (retired, or idle).
    changed: Notify,
}

#[derive(Debug)]
struct Usage {
    started: u32,
    in_flight: u32,
    retired: bool,
    /// Since when no request has been in flight (meaningful when `in_flight` is 0).
    idle_since: Instant,
}

/// A request's hold on a connection, from taking it until the response ends or is dropped.
#[derive(Debug)]
pub(crate) struct Lease(Arc<ConnectionLife>);

/// What the connection's driver does next.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Close,
    /// Wait for a change, or until the deadline when there is one.
    Wait(Option<Instant>),
}

// === impl ConnectionLife ===

impl ConnectionLife {
    pub(crate) fn new(max_requests: Option<u32>, now: Instant) -> Arc<Self> {
        Arc::new(Self {
            usage: Mutex::new(Usage {
                started: 0,
                in_flight: 0,
                retired: false,
                idle_since: now,
            }),
            max_requests,
            changed: Notify::new(),
        })
    }

    /// Takes the connection for one request, unless it is retired. The request that reaches
    /// `max_requests` retires it.
    pub(crate) fn try_lease(self: &Arc<Self>) -> Option<Lease> {
        let mut u = self.lock();
        if u.retired {
            return None;
        }
        u.started = u.started.saturating_add(1);
        u.in_flight += 1;
        if self.max_requests.is_some_and(|max| u.started >= max) {
            u.retired = true;
        }
        Some(Lease(self.clone()))
    }

    /// Whether the connection still takes requests.
    pub(crate) fn is_taking_requests(&self) -> bool {
        !self.lock().retired
    }

    /// Decides at `now` whether to close, retiring the connection when it has been idle for
    /// `idle_timeout`.
    fn next(&self, idle_timeout: Option<Duration>, now: Instant) -> Next {
        let mut u = self.lock();
        if u.in_flight > 0 {
            return Next::Wait(None);
        }
        if u.retired {
            return Next::Close;
        }
        match idle_timeout.map(|t| u.idle_since + t) {
            Some(deadline) if now >= deadline => {
                u.retired = true;
                Next::Close
            }
            deadline => Next::Wait(deadline),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        // Every update is a few field writes that cannot panic midway.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut u = self.0.lock();
        u.in_flight = u.in_flight.saturating_sub(1);
        if u.in_flight == 0 {
            u.idle_since = Instant::now();
            drop(u);
            // A stored permit when the driver is not waiting: the wake-up is never lost.
            self.0.changed.notify_one();
        }
    }
}

/// Runs a connection's request dispatcher until the peer or hyper ends it, or until the
/// connection is retired with nothing in flight. Dropping the dispatcher then lets hyper close
/// the connection gracefully (no stream is open).
pub(crate) async fn drive<F>(
    dispatcher: F,
    life: Arc<ConnectionLife>,
    idle_timeout: Option<Duration>,
    address: EndpointAddress,
) where
    F: std::future::Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(dispatcher);
    loop {
        let deadline = match life.next(idle_timeout, Instant::now()) {
            Next::Close => return,
            Next::Wait(deadline) => deadline,
        };
        let timer = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = &mut dispatcher => {
                if let Err(error) = ended {
                    tracing::debug!(%address, %error, "upstream connection closed with an error");
                }
                // Closed under us: no request may take it any more.
                life.lock().retired = true;
                return;
            }
            () = life.changed.notified() => {}
            () = timer => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_request_that_reaches_the_limit_retires_the_connection() {
        let life = ConnectionLife::new(Some(2), Instant::now());
        let first = life.try_lease().expect("first");
        let second = life.try_lease().expect("second, the last");
        assert!(life.try_lease().is_none(), "retired after two");
        assert_eq!(
            life.next(None, Instant::now()),
            Next::Wait(None),
            "in flight"
        );
        drop(first);
        drop(second);
        assert_eq!(life.next(None, Instant::now()), Next::Close, "drained");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_is_retired_at_the_deadline_and_not_before() {
        let idle = Duration::from_secs(30);
        let life = ConnectionLife::new(None, Instant::now());
        let lease = life.try_lease().expect("open");
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(life.next(Some(idle), Instant::now()), Next::Wait(None));
        drop(lease);
        let deadline = Instant::now() + idle;
        assert_eq!(
            life.next(Some(idle), Instant::now()),
            Next::Wait(Some(deadline))
        );
        assert!(life.is_taking_requests());
        assert_eq!(life.next(Some(idle), deadline), Next::Close);
        assert!(life.try_lease().is_none(), "closing: no new request");
    }
}
