use std::task::Poll;

use bytes::Bytes;
use futures::{channel::mpsc, stream};
use http::HeaderMap;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use proptest::prelude::*;
use tokio_test::{assert_pending, assert_ready, task};

use super::{ReplayBody, ReplayError};
use crate::body::{BoxError, RequestBody};

type FrameResult = Result<Frame<Bytes>, BoxError>;

const CAP: usize = 64 * 1024;

fn full(data: &'static str) -> RequestBody {
    Full::new(Bytes::from_static(data.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn frames(frames: Vec<FrameResult>) -> RequestBody {
    StreamBody::new(stream::iter(frames)).boxed_unsync()
}

/// A body whose frames the test sends one at a time; it stays pending in between.
fn channel() -> (mpsc::UnboundedSender<FrameResult>, RequestBody) {
    let (tx, rx) = mpsc::unbounded();
    (tx, StreamBody::new(rx).boxed_unsync())
}

fn data(s: &'static str) -> FrameResult {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

fn trailers() -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    trailers
}

/// Reads `body` to its end without consuming the handle.
async fn drain(body: &mut ReplayBody) -> Result<(Vec<u8>, Option<HeaderMap>), BoxError> {
    let mut bytes = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        match frame.into_data() {
            Ok(data) => bytes.extend_from_slice(&data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok((bytes, trailers))
}

async fn next_data(body: &mut ReplayBody) -> Bytes {
    body.frame()
        .await
        .expect("a frame")
        .expect("not an error")
        .into_data()
        .expect("a data frame")
}

/// Polls a spawned body once, for tests that check wakeups.
fn next_polled(body: &mut task::Spawn<ReplayBody>) -> Poll<Option<Bytes>> {
    body.enter(|cx, body| {
        body.poll_frame(cx)
            .map(|frame| frame.map(|f| f.unwrap().into_data().unwrap()))
    })
}

fn replay_error(error: &BoxError) -> ReplayError {
    *error.downcast_ref::<ReplayError>().expect("a ReplayError")
}

#[tokio::test]
async fn a_small_body_is_sent_whole_by_the_first_attempt_and_again_by_a_clone() {
    let first = ReplayBody::new(full("hello"), CAP);
    let second = first.try_clone().expect("replayable");

    let sent = first.collect().await.unwrap().to_bytes();
    assert_eq!(sent, "hello");

    assert!(second.is_replayable());
    let resent = second.collect().await.unwrap().to_bytes();
    assert_eq!(resent, "hello");
}

#[tokio::test]
async fn a_clone_made_mid_stream_replays_what_was_sent_then_continues_with_the_rest() {
    let (tx, body) = channel();
    let mut first = ReplayBody::new(body, CAP);
    tx.unbounded_send(data("one")).unwrap();
    tx.unbounded_send(data("two")).unwrap();
    assert_eq!(next_data(&mut first).await, "one");
    assert_eq!(next_data(&mut first).await, "two");

    // The first attempt is waiting for frame three when the retry layer gives up on it.
    {
        let mut waiting = task::spawn(first.frame());
        assert_pending!(waiting.poll());
    }
    let second = first.try_clone().expect("replayable");
    drop(first);
    // The original body is still alive (the sender sees a receiver) and was handed over.
    assert!(!tx.is_closed());

    let mut second = task::spawn(second);
    assert_eq!(assert_ready!(next_polled(&mut second)).unwrap(), "one");
    assert_eq!(assert_ready!(next_polled(&mut second)).unwrap(), "two");
    assert_pending!(next_polled(&mut second));

    // Frame three arrives: the clone, not the dropped handle, is woken for it.
    tx.unbounded_send(data("three")).unwrap();
    assert!(second.is_woken());
    assert_eq!(assert_ready!(next_polled(&mut second)).unwrap(), "three");
    tx.unbounded_send(data("four")).unwrap();
    drop(tx);
    assert_eq!(assert_ready!(next_polled(&mut second)).unwrap(), "four");
    assert!(assert_ready!(next_polled(&mut second)).is_none());
}

#[tokio::test]
async fn trailers_are_replayed() {
    let body = frames(vec![data("req"), Ok(Frame::trailers(trailers()))]);
    let mut first = ReplayBody::new(body, CAP);
    let second = first.try_clone().unwrap();

    let (bytes, sent) = drain(&mut first).await.unwrap();
    assert_eq!((bytes.as_slice(), sent), (&b"req"[..], Some(trailers())));

    // A clone made after the end, and one made before it, both send the trailers.
    let third = first.try_clone().unwrap();
    for body in [second, third] {
        let collected = body.collect().await.unwrap();
        assert_eq!(collected.trailers(), Some(&trailers()));
        assert_eq!(collected.to_bytes(), "req");
    }
}

#[tokio::test]
async fn past_the_cap_the_first_attempt_completes_but_the_body_cannot_be_replayed() {
    let body = frames(vec![data("ab"), data("cd"), data("ef")]);
    let mut first = ReplayBody::new(body, 4);
    let early = first.try_clone().unwrap();

    assert_eq!(next_data(&mut first).await, "ab");
    assert_eq!(next_data(&mut first).await, "cd");
    // Exactly at the cap: still replayable.
    let at_cap = first.try_clone().expect("4 bytes fit a cap of 4");

    assert_eq!(next_data(&mut first).await, "ef");
    assert!(!first.is_replayable());
    assert!(first.try_clone().is_none());
    assert!(
        first.frame().await.is_none(),
        "the first attempt ends normally"
    );

    // Clones made before the cap was exceeded fail rather than send a truncated body.
    for clone in [early, at_cap] {
        assert!(!clone.is_replayable());
        let error = clone.collect().await.unwrap_err();
        assert!(replay_error(&error).is_capped());
        assert_eq!(
            error.to_string(),
            "request body exceeded the replay buffer and cannot be replayed"
        );
    }
}

#[tokio::test]
async fn a_clone_that_takes_over_keeps_streaming_past_the_cap() {
    let (tx, body) = channel();
    let mut first = ReplayBody::new(body, 3);
    tx.unbounded_send(data("abc")).unwrap();
    assert_eq!(next_data(&mut first).await, "abc");
    let mut second = first.try_clone().unwrap();
    drop(first);

    tx.unbounded_send(data("def")).unwrap();
    drop(tx);
    let (bytes, _) = drain(&mut second).await.unwrap();
    assert_eq!(bytes, b"abcdef");
    assert!(second.try_clone().is_none());
}

#[tokio::test]
async fn errors_from_the_original_body_pass_through() {
    let boom: BoxError = "boom".into();
    let body = frames(vec![data("a"), Err(boom)]);
    let mut first = ReplayBody::new(body, CAP);
    let early = first.try_clone().unwrap();

    assert_eq!(next_data(&mut first).await, "a");
    let error = first.frame().await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "boom");
    assert!(error.downcast_ref::<ReplayError>().is_none());

    // What followed the error is unknown: no new clone, and an earlier one fails at once
    // rather than send a part of the body.
    assert!(first.try_clone().is_none());
    let error = early.collect().await.unwrap_err();
    assert!(replay_error(&error).is_failed());
    assert_eq!(
        error.to_string(),
        "request body failed on an earlier attempt and cannot be replayed"
    );
}

#[tokio::test]
async fn a_fresh_clone_of_an_ended_body_knows_its_exact_size_and_end() {
    let body = frames(vec![data("hello"), data(" world")]);
    let mut first = ReplayBody::new(body, CAP);
    drain(&mut first).await.unwrap();
    assert!(first.is_end_stream());
    assert_eq!(first.size_hint().exact(), Some(0));

    let mut second = first.try_clone().unwrap();
    assert!(!second.is_end_stream());
    assert_eq!(second.size_hint().exact(), Some(11));
    assert_eq!(next_data(&mut second).await, "hello");
    assert_eq!(second.size_hint().exact(), Some(6));
    assert_eq!(next_data(&mut second).await, " world");
    assert!(second.is_end_stream());
    assert_eq!(second.size_hint().exact(), Some(0));

    // With trailers, the end comes only after them.
    let body = frames(vec![data("x"), Ok(Frame::trailers(trailers()))]);
    let mut first = ReplayBody::new(body, CAP);
    drain(&mut first).await.unwrap();
    let mut second = first.try_clone().unwrap();
    assert_eq!(next_data(&mut second).await, "x");
    assert!(!second.is_end_stream());
    assert_eq!(second.size_hint().exact(), Some(0));
    assert!(second.frame().await.unwrap().unwrap().is_trailers());
    assert!(second.is_end_stream());
}

#[tokio::test]
async fn an_unread_body_reports_the_originals_size() {
    let first = ReplayBody::new(full("hello"), CAP);
    assert_eq!(first.size_hint().exact(), Some(5));
    assert!(!first.is_end_stream());
    let empty = ReplayBody::new(full(""), CAP);
    assert!(empty.is_end_stream());
}

#[tokio::test]
async fn three_attempts_each_replay_and_continue_where_the_last_stopped() {
    let (tx, body) = channel();
    for chunk in ["1", "2", "3"] {
        tx.unbounded_send(data(chunk)).unwrap();
    }
    drop(tx);

    let mut attempt = ReplayBody::new(body, CAP);
    assert_eq!(next_data(&mut attempt).await, "1");

    let mut attempt = attempt.try_clone().unwrap();
    assert_eq!(next_data(&mut attempt).await, "1");
    assert_eq!(next_data(&mut attempt).await, "2");

    let mut attempt = attempt.try_clone().unwrap();
    let (bytes, trailers) = drain(&mut attempt).await.unwrap();
    assert_eq!(bytes, b"123");
    assert_eq!(trailers, None);
}

#[test]
fn a_replay_body_can_cross_threads() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<ReplayBody>();
    send_sync::<ReplayError>();
}

#[test]
fn debug_shows_the_shape_not_the_data() {
    let body = ReplayBody::new(full("secret"), CAP);
    let debug = format!("{body:?}");
    assert!(debug.contains("ReplayBody"), "{debug}");
    assert!(!debug.contains("secret"), "{debug}");
}

proptest! {
    /// Attempts read a random number of frames each, then hand over to a clone; clones kept
    /// from the way are sent at the end. Every clone yields the exact body or fails; none
    /// yields a truncated body, and past the cap none succeeds.
    #[test]
    fn every_replay_is_the_whole_body_or_an_error(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..32), 0..12),
        cap in 0usize..256,
        stops in prop::collection::vec(0usize..6, 0..5),
    ) {
        let whole: Vec<u8> = chunks.concat();
        let body = frames(
            chunks.iter().map(|c| Ok(Frame::data(Bytes::from(c.clone())))).collect(),
        );
        tokio_test::block_on(async {
            let mut attempt = ReplayBody::new(body, cap);
            let mut kept = Vec::new();
            kept.extend(attempt.try_clone());
            // What the current attempt has sent so far.
            let mut sent = Vec::new();
            for stop in stops {
                for _ in 0..stop {
                    if let Some(frame) = attempt.frame().await {
                        sent.extend_from_slice(&frame.unwrap().into_data().unwrap());
                    }
                }
                if let Some(next) = attempt.try_clone() {
                    kept.extend(attempt.try_clone());
                    attempt = next;
                    sent.clear();
                }
            }

            // Whoever is streaming always finishes with the whole body.
            let (rest, _) = drain(&mut attempt).await.unwrap();
            sent.extend_from_slice(&rest);
            prop_assert_eq!(&sent, &whole);
            prop_assert_eq!(attempt.is_replayable(), whole.len() <= cap);

            for mut clone in kept {
                match drain(&mut clone).await {
                    Ok((bytes, _)) => {
                        prop_assert!(whole.len() <= cap);
                        prop_assert_eq!(&bytes, &whole);
                    }
                    Err(error) => {
                        prop_assert!(whole.len() > cap);
                        prop_assert!(replay_error(&error).is_capped());
                    }
                }
            }
            Ok(())
        })?;
    }
}
