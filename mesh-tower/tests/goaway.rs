//! Transparent resends, frame by frame: a hand-written HTTP/2 server on 127.0.0.1 sends GOAWAY
//! and RST_STREAM exactly where each test says, so the client's behaviour at each of them is
//! checked deterministically (a real server shutting down only sometimes hits these cases).
//!
//! The route has no retry policy (`attempts: 0`): a request that succeeds after a refusal was
//! resent by the balancer's transparent resend, not retried by the route.

// A test crate: its helpers may panic, like the tests that call them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::HashMap, future::Future, time::Duration};

use mesh_test_support::echo as support;
use prost::Message;
use support::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Every test finishes well within this; a bug makes it fail instead of hang.
const BOUND: Duration = Duration::from_secs(10);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types and flags (RFC 9113 §6).
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;

// Error codes (RFC 9113 §7).
const NO_ERROR: u32 = 0x0;
const INTERNAL_ERROR: u32 = 0x2;
const REFUSED_STREAM: u32 = 0x7;

/// One complete request received: its stream and the `EchoRequest` message it carried.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Received {
    stream: u32,
    message: String,
}

/// The server side of one HTTP/2 connection, driven by the test. It decodes no header block
/// (the request is identified by its message, in DATA) and encodes the responses' headers as
/// HPACK literals, so no HPACK state is shared with the client.
struct Conn {
    tcp: TcpStream,
    /// Request bodies of open streams, by stream id.
    bodies: HashMap<u32, Vec<u8>>,
    /// Named in the replies' `served_by`.
    name: &'static str,
}

impl Conn {
    /// Accepts a connection: the client's preface, then the server's (empty) SETTINGS.
    async fn accept(listener: &TcpListener, name: &'static str) -> Self {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut preface = [0; PREFACE.len()];
        tcp.read_exact(&mut preface).await.unwrap();
        assert_eq!(preface, PREFACE);
        let mut conn = Self {
            tcp,
            bodies: HashMap::new(),
            name,
        };
        conn.frame(SETTINGS, 0, 0, &[]).await;
        conn
    }

    async fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
        let mut frame = vec![len[1], len[2], len[3], kind, flags];
        frame.extend_from_slice(&stream.to_be_bytes());
        frame.extend_from_slice(payload);
        self.tcp.write_all(&frame).await.unwrap();
    }

    /// The next complete request (HEADERS and DATA up to END_STREAM), answering the client's
    /// SETTINGS and PINGs on the way.
    async fn next_request(&mut self) -> Received {
        loop {
            let mut head = [0; 9];
            self.tcp.read_exact(&mut head).await.unwrap();
            let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0; len];
            self.tcp.read_exact(&mut payload).await.unwrap();
            match kind {
                SETTINGS if flags & ACK == 0 => self.frame(SETTINGS, ACK, 0, &[]).await,
                PING if flags & ACK == 0 => self.frame(PING, ACK, 0, &payload).await,
                HEADERS | CONTINUATION => {
                    self.bodies.entry(stream).or_default();
                    if flags & END_STREAM != 0 {
                        return self.complete(stream);
                    }
                }
                DATA => {
                    let data = if flags & PADDED != 0 {
                        let pad = usize::from(payload[0]);
                        &payload[1..payload.len() - pad]
                    } else {
                        &payload[..]
                    };
                    self.bodies
                        .entry(stream)
                        .or_default()
                        .extend_from_slice(data);
                    if flags & END_STREAM != 0 {
                        return self.complete(stream);
                    }
                }
                // WINDOW_UPDATE, PRIORITY, acknowledgements, the client's own RST_STREAM.
                _ => {}
            }
        }
    }

    fn complete(&mut self, stream: u32) -> Received {
        let body = self.bodies.remove(&stream).unwrap();
        // One gRPC message: a flag byte, a 4-byte length, the protobuf.
        let request = EchoRequest::decode(&body[5..]).unwrap();
        Received {
            stream,
            message: request.message,
        }
    }

    /// Answers `request` with a successful gRPC response echoing its message.
    async fn respond(&mut self, request: &Received) {
        // `:status: 200` (static index 8); `content-type: application/grpc`, a literal
        // without indexing with the static name index 31.
        let mut headers = vec![0x88, 0x0f, 0x10, 16];
        headers.extend_from_slice(b"application/grpc");
        self.frame(HEADERS, END_HEADERS, request.stream, &headers)
            .await;
        let reply = EchoReply {
            message: request.message.clone(),
            served_by: self.name.into(),
            ..EchoReply::default()
        }
        .encode_to_vec();
        let mut data = vec![0];
        data.extend_from_slice(&u32::try_from(reply.len()).unwrap().to_be_bytes());
        data.extend_from_slice(&reply);
        self.frame(DATA, 0, request.stream, &data).await;
        // `grpc-status: 0`, a literal without indexing with a new name.
        let mut trailers = vec![0x00, 11];
        trailers.extend_from_slice(b"grpc-status");
        trailers.extend_from_slice(&[1, b'0']);
        self.frame(HEADERS, END_HEADERS | END_STREAM, request.stream, &trailers)
            .await;
    }

    async fn go_away(&mut self, last_stream: u32, code: u32) {
        let mut payload = last_stream.to_be_bytes().to_vec();
        payload.extend_from_slice(&code.to_be_bytes());
        self.frame(GOAWAY, 0, 0, &payload).await;
    }

    async fn reset(&mut self, stream: u32, code: u32) {
        self.frame(RST_STREAM, 0, stream, &code.to_be_bytes()).await;
    }
}

/// A mesh whose only `echo` endpoint is `listener`, with no retry policy.
async fn mesh_without_retries() -> (TcpListener, mesh_tower::Mesh) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let route = no_retries();
    (listener, mesh(&[("raw", addr)], &route))
}

async fn bounded<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}"))
}

/// Two concurrent requests on one connection; the server sends GOAWAY with the first one's
/// stream as the last it will process, answers only that one, and the second, which the
/// server provably did not process, is resent on a new connection: each request reaches the
/// application exactly once and both succeed.
#[tokio::test]
async fn a_stream_above_the_goaway_last_stream_id_is_resent_on_a_new_connection() {
    let (listener, mesh) = mesh_without_retries().await;
    let server = tokio::spawn(async move {
        let mut first_conn = Conn::accept(&listener, "first connection").await;
        let one = first_conn.next_request().await;
        let two = first_conn.next_request().await;
        let (first, second) = if one.stream < two.stream {
            (one, two)
        } else {
            (two, one)
        };
        first_conn.go_away(first.stream, NO_ERROR).await;
        first_conn.respond(&first).await;

        let mut second_conn = Conn::accept(&listener, "second connection").await;
        let resent = second_conn.next_request().await;
        assert_eq!(
            resent.message, second.message,
            "the refused request is resent"
        );
        second_conn.respond(&resent).await;
        // Kept open until the client has its answers.
        (first, second, first_conn, second_conn)
    });

    let channel = mesh.channel(TARGET);
    let mut a = EchoClient::new(channel.clone());
    let mut b = EchoClient::new(channel);
    let (a, b) = bounded("the calls", async {
        tokio::join!(a.say(request("a")), b.say(request("b")))
    })
    .await;
    let a = a.expect("call a succeeds").into_inner();
    let b = b.expect("call b succeeds").into_inner();
    let (first, second, _first_conn, _second_conn) = bounded("the server", server).await.unwrap();

    let served_by = |message: &str| {
        if message == "a" {
            &a.served_by
        } else {
            &b.served_by
        }
    };
    assert_eq!(served_by(&first.message), "first connection");
    assert_eq!(served_by(&second.message), "second connection");
    // The server script above answered each request once, and saw no other.
}

/// A stream refused with `RST_STREAM(REFUSED_STREAM)` is resent and succeeds; the server
/// answers the resend, which it receives once.
#[tokio::test]
async fn a_refused_stream_is_resent_and_succeeds() {
    let (listener, mesh) = mesh_without_retries().await;
    let server = tokio::spawn(async move {
        let mut conn = Conn::accept(&listener, "raw").await;
        let refused = conn.next_request().await;
        conn.reset(refused.stream, REFUSED_STREAM).await;
        // The connection is healthy, so the resend comes on it, on a new stream.
        let resent = conn.next_request().await;
        assert_eq!(resent.message, refused.message);
        assert!(resent.stream > refused.stream);
        conn.respond(&resent).await;
        conn
    });

    let mut client = EchoClient::new(mesh.channel(TARGET));
    let reply = bounded("the call", client.say(request("refused once"))).await;
    assert_eq!(
        reply.expect("the call succeeds").into_inner().message,
        "refused once"
    );
    let _conn = bounded("the server", server).await.unwrap();
}

/// A stream at or below the GOAWAY's last stream id may have been processed: when it is then
/// reset with another error, the request is not resent, and the caller gets `UNAVAILABLE`.
#[tokio::test]
async fn a_stream_the_server_may_have_processed_is_not_resent() {
    let (listener, mesh) = mesh_without_retries().await;
    let server = tokio::spawn(async move {
        let mut conn = Conn::accept(&listener, "raw").await;
        let request = conn.next_request().await;
        conn.go_away(request.stream, NO_ERROR).await;
        conn.reset(request.stream, INTERNAL_ERROR).await;
        // Any resend would come on a new connection and be answered, so the call would
        // succeed: the UNAVAILABLE below proves there was none.
        let answered_resends = tokio::spawn(async move {
            let mut resent = Vec::new();
            loop {
                let mut conn = Conn::accept(&listener, "resend").await;
                let request = conn.next_request().await;
                conn.respond(&request).await;
                resent.push((request, conn));
            }
        });
        (conn, answered_resends)
    });

    let mut client = EchoClient::new(mesh.channel(TARGET));
    let status = bounded("the call", client.say(request("maybe processed")))
        .await
        .unwrap_err();
    let (_conn, answered_resends) = bounded("the server", server).await.unwrap();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    answered_resends.abort();
}
