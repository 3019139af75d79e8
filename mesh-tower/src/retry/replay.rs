//! A request body that a later retry attempt can send again, buffered up to a cap.
//!
//! A retry must re-send the request body, but a body is a stream that can be read once. A
//! [`ReplayBody`] wraps the original and copies each data frame into a shared buffer *as it is
//! forwarded*: the first attempt streams without waiting for the whole body, and only the copy is
//! kept. A clone made for the next attempt ([`ReplayBody::try_clone`]) first yields the copied
//! frames (and the trailers, if the original already ended with them), then continues reading the
//! original from where the previous attempt stopped.
//!
//! # The cap
//!
//! Buffering is bounded: once the data read exceeds the cap, the copy is freed and the body is no
//! longer replayable. The handle that is streaming at that moment keeps streaming the original to
//! its end (a first attempt is never broken by the cap); [`ReplayBody::try_clone`] returns `None`
//! from then on, and a clone made before the cap was exceeded fails with a [`ReplayError`] when it
//! reaches the lost data, rather than sending a truncated body.
//!
//! # Failures
//!
//! An error from the original body goes to the handle polling it. What would have followed is
//! unknown, so the body is no longer replayable either: the copy is freed, `try_clone` returns
//! `None`, and earlier clones fail at once with a [`ReplayError`] instead of sending a part of the
//! body and then an end.
//!
//! # One reader at a time
//!
//! Attempts are sequential: the retry layer drops one attempt's handle (possibly mid-stream)
//! before it sends the next. The original body lives in the shared state and is polled under its
//! (synchronous, never held across an await) lock by whichever handle has caught up with it, so a
//! dropped handle never takes the original with it. Handles polled *concurrently* stay correct
//! (each keeps its own position) but only the last one to poll the original is woken by it.
//!
//! Data is replayed by cloning [`Bytes`] (a reference count), never by copying it. Empty data
//! frames are forwarded but not recorded, so they cannot grow the buffer past the cap.

use std::{
    fmt,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll, ready},
};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::body::{BoxError, RequestBody};

#[cfg(test)]
mod tests;

/// A request body that a later attempt can send again ([`ReplayBody::try_clone`]).
///
/// Data is forwarded as it arrives and a copy is kept, up to the cap given to
/// [`ReplayBody::new`]; past it, the handle streaming keeps streaming but no clone can be made,
/// and earlier clones fail with a [`ReplayError`] rather than send a truncated body.
pub(crate) struct ReplayBody {
    shared: Arc<Mutex<Shared>>,
    /// How many recorded (non-empty data) frames this handle has yielded.
    frames: usize,
    /// How many bytes those frames hold: the buffered remainder is the buffer's length minus this.
    bytes: usize,
    /// Whether this handle has reached the end (yielded the trailers or `None`).
    done: bool,
}

/// Why a [`ReplayBody`] cannot send the body again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReplayError {
    kind: ErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorKind {
    Capped,
    Failed,
}

/// The state every handle of one body shares.
#[derive(Debug)]
struct Shared {
    cap: usize,
    original: Original,
    /// Non-empty data frames read from the original so far (by any handle).
    read: usize,
    /// Copies of those frames; `None` once they exceeded `cap`.
    buffer: Option<Buffer>,
    /// The original's trailers, once it ended with them.
    trailers: Option<HeaderMap>,
}

#[derive(Debug)]
enum Original {
    /// Not finished yet; the next handle to catch up with it polls it.
    Streaming(RequestBody),
    /// Finished (returned `None` or its trailers); dropped to free its resources.
    Ended,
    /// Returned an error; what followed it is unknown, so it can't be replayed to the end.
    Failed,
}

/// The recorded data frames, in order. Invariant: `chunks.len() == Shared::read`.
struct Buffer {
    chunks: Chunks,
    len: usize,
}

/// Frames in order: the first kept inline, for a unary call's one message costs no allocation
/// beside the shared state's.
#[derive(Default)]
struct Chunks {
    first: Option<Bytes>,
    rest: Vec<Bytes>,
}

// === impl ReplayBody ===

impl ReplayBody {
    /// Wraps `body`, buffering up to `cap` bytes of data so it can be replayed (the mesh uses
    /// 64 KiB).
    pub(crate) fn new(body: RequestBody, cap: usize) -> Self {
        let shared = Shared {
            cap,
            original: Original::Streaming(body),
            read: 0,
            buffer: Some(Buffer {
                chunks: Chunks::default(),
                len: 0,
            }),
            trailers: None,
        };
        Self::handle(Arc::new(Mutex::new(shared)))
    }

    /// A handle that replays everything read so far and then continues with the rest of the
    /// original body.
    ///
    /// `None` once the body can no longer be replayed: it exceeded the cap, or the original
    /// failed.
    pub(crate) fn try_clone(&self) -> Option<Self> {
        if !self.is_replayable() {
            return None;
        }
        Some(Self::handle(Arc::clone(&self.shared)))
    }

    /// Whether the body can still be replayed (it has not exceeded the cap nor failed).
    pub(crate) fn is_replayable(&self) -> bool {
        lock(&self.shared).is_replayable()
    }

    /// What further handles of this body are made from, to carry where the body itself cannot
    /// go (a request's extensions).
    pub(crate) fn source(&self) -> ReplaySource {
        ReplaySource(Arc::clone(&self.shared))
    }

    fn handle(shared: Arc<Mutex<Shared>>) -> Self {
        Self {
            shared,
            frames: 0,
            bytes: 0,
            done: false,
        }
    }
}

/// Makes handles of a [`ReplayBody`] ([`ReplayBody::source`]): the retry layer hands it to the
/// balancer, which then resends a request from the retry layer's buffer instead of buffering
/// the body a second time.
#[derive(Clone)]
pub(crate) struct ReplaySource(Arc<Mutex<Shared>>);

impl ReplaySource {
    /// A handle that replays everything read so far, as [`ReplayBody::try_clone`].
    pub(crate) fn body(&self) -> Option<ReplayBody> {
        self.is_replayable()
            .then(|| ReplayBody::handle(Arc::clone(&self.0)))
    }

    /// Whether the body can still be replayed, as [`ReplayBody::is_replayable`].
    pub(crate) fn is_replayable(&self) -> bool {
        lock(&self.0).is_replayable()
    }
}

impl fmt::Debug for ReplaySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ReplaySource")
    }
}

impl Body for ReplayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Self {
            shared,
            frames,
            bytes,
            done,
        } = self.get_mut();
        let mut shared = lock(shared);
        let shared = &mut *shared;

        // Behind the original: replay the recorded frames, if they are still there.
        if *frames < shared.read {
            let chunk = shared
                .buffer
                .as_ref()
                .and_then(|buffer| buffer.chunks.get(*frames));
            return Poll::Ready(Some(match chunk {
                Some(chunk) => {
                    *frames += 1;
                    *bytes = bytes.saturating_add(chunk.len());
                    Ok(Frame::data(chunk.clone()))
                }
                // The copy was freed: the cap was exceeded, or the original failed.
                None if matches!(shared.original, Original::Failed) => {
                    Err(ReplayError::failed().into())
                }
                None => Err(ReplayError::capped().into()),
            }));
        }

        // Caught up: continue from the original.
        let body = match &mut shared.original {
            Original::Streaming(body) => body,
            Original::Ended => return Poll::Ready(finish(done, shared.trailers.as_ref())),
            Original::Failed => return Poll::Ready(Some(Err(ReplayError::failed().into()))),
        };
        let frame = match ready!(Pin::new(body).poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                shared.original = Original::Failed;
                shared.buffer = None;
                // This handle saw the error itself; later polls say why it can't continue.
                return Poll::Ready(Some(Err(error)));
            }
            None => {
                shared.original = Original::Ended;
                *done = true;
                return Poll::Ready(None);
            }
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                if !data.is_empty() {
                    shared.record(&data);
                    *frames += 1;
                    *bytes = bytes.saturating_add(data.len());
                }
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            Err(frame) => frame,
        };
        match frame.into_trailers() {
            Ok(trailers) => {
                // Trailers are the last frame: the original is done.
                shared.original = Original::Ended;
                shared.trailers = Some(trailers.clone());
                *done = true;
                Poll::Ready(Some(Ok(Frame::trailers(trailers))))
            }
            Err(frame) => {
                // Neither data nor trailers (http-body 1 has no such frame): forward it, but it
                // can't be recorded, so earlier clones must fail rather than skip it.
                shared.read += 1;
                shared.buffer = None;
                *frames += 1;
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        if self.done {
            return true;
        }
        let shared = lock(&self.shared);
        if self.frames < shared.read {
            // Recorded data to replay, or an error saying it is lost.
            return false;
        }
        match &shared.original {
            Original::Streaming(body) => body.is_end_stream(),
            Original::Ended => shared.trailers.is_none(),
            Original::Failed => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.done {
            return SizeHint::with_exact(0);
        }
        let shared = lock(&self.shared);
        let buffered = if self.frames < shared.read {
            match &shared.buffer {
                Some(buffer) => to_u64(buffer.len.saturating_sub(self.bytes)),
                // The next frame is an error.
                None => return SizeHint::default(),
            }
        } else {
            0
        };
        match &shared.original {
            Original::Streaming(body) => {
                let rest = body.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower().saturating_add(buffered));
                if let Some(upper) = rest.upper().and_then(|u| u.checked_add(buffered)) {
                    hint.set_upper(upper);
                }
                hint
            }
            Original::Ended => SizeHint::with_exact(buffered),
            // An error follows the replayed data.
            Original::Failed => SizeHint::default(),
        }
    }
}

impl fmt::Debug for ReplayBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("shared", &*lock(&self.shared))
            .field("frames", &self.frames)
            .field("bytes", &self.bytes)
            .field("done", &self.done)
            .finish()
    }
}

// === impl Shared ===

impl Shared {
    fn is_replayable(&self) -> bool {
        self.buffer.is_some() && !matches!(self.original, Original::Failed)
    }

    /// Records a data frame just read from the original, dropping the buffer past the cap.
    fn record(&mut self, data: &Bytes) {
        self.read += 1;
        if let Some(buffer) = &mut self.buffer {
            let len = buffer.len.saturating_add(data.len());
            if len > self.cap {
                tracing::debug!(cap = self.cap, "request body exceeded the replay buffer");
                self.buffer = None;
            } else {
                buffer.len = len;
                buffer.chunks.push(data.clone());
            }
        }
    }
}

// === impl Chunks ===

impl Chunks {
    fn get(&self, i: usize) -> Option<&Bytes> {
        match i.checked_sub(1) {
            None => self.first.as_ref(),
            Some(i) => self.rest.get(i),
        }
    }

    fn push(&mut self, data: Bytes) {
        if self.first.is_none() {
            self.first = Some(data);
        } else {
            self.rest.push(data);
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }
}

// === impl Buffer ===

impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The data itself is the caller's and may be large: show only its shape.
        f.debug_struct("Buffer")
            .field("chunks", &self.chunks.len())
            .field("len", &self.len)
            .finish()
    }
}

// === impl ReplayError ===

impl ReplayError {
    fn capped() -> Self {
        Self {
            kind: ErrorKind::Capped,
        }
    }

    fn failed() -> Self {
        Self {
            kind: ErrorKind::Failed,
        }
    }

    /// The body exceeded the replay buffer's cap before this attempt could send it.
    #[cfg(test)]
    pub(crate) fn is_capped(&self) -> bool {
        self.kind == ErrorKind::Capped
    }

    /// The original body failed on an earlier attempt.
    #[cfg(test)]
    pub(crate) fn is_failed(&self) -> bool {
        self.kind == ErrorKind::Failed
    }
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.kind {
            ErrorKind::Capped => "request body exceeded the replay buffer and cannot be replayed",
            ErrorKind::Failed => "request body failed on an earlier attempt and cannot be replayed",
        })
    }
}

impl std::error::Error for ReplayError {}

/// Locks the shared state. A panic while it was held (in the original body's `poll_frame`)
/// leaves it consistent, since it is only updated after that returns, so poisoning is ignored.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The end of a handle's stream: the trailers once, then `None`.
fn finish(done: &mut bool, trailers: Option<&HeaderMap>) -> Option<Result<Frame<Bytes>, BoxError>> {
    if std::mem::replace(done, true) {
        return None;
    }
    trailers.map(|t| Ok(Frame::trailers(t.clone())))
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}
