//! Micro-benchmarks of trace header decoding and encoding on the request path, next to
//! opentelemetry's `TraceContextPropagator` doing the same W3C work (the reason the mesh has its
//! own codecs; see `mesh_tower::trace`).

// A benchmark with a broken fixture should stop loudly; it is test code, not library code.
#![allow(clippy::expect_used)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, HeaderValue};
use mesh_tower::trace::{Propagation, RequestId, TraceContext};
use opentelemetry::{
    Context,
    propagation::{Extractor, Injector, TextMapPropagator},
    trace::TraceContextExt,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace_decode");
    let w3c = headers(&[("traceparent", TRACEPARENT)]);
    let b3_multi = headers(&[
        ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
        ("x-b3-spanid", "00f067aa0ba902b7"),
        ("x-b3-parentspanid", "b7ad6b7169203331"),
        ("x-b3-sampled", "1"),
    ]);
    let b3_single = headers(&[(
        "b3",
        "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-b7ad6b7169203331",
    )]);
    let malformed = headers(&[(
        "traceparent",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
    )]);
    for (name, map) in [
        ("w3c", &w3c),
        ("b3_multi", &b3_multi),
        ("b3_single", &b3_single),
        ("malformed", &malformed),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(TraceContext::extract(black_box(map))))
        });
    }
    let propagator = TraceContextPropagator::new();
    group.bench_function("w3c_opentelemetry_propagator", |b| {
        b.iter(|| {
            let cx = propagator.extract(&HeaderExtractor(black_box(&w3c)));
            black_box(cx.span().span_context().span_id())
        })
    });
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace_encode");
    let parent = TraceContext::extract(&headers(&[("traceparent", TRACEPARENT)]))
        .expect("valid traceparent");
    let attempt = parent.child();
    for (name, propagation) in [
        ("w3c", Propagation::W3C),
        ("w3c_b3_multi", Propagation::default()),
        (
            "all_formats",
            Propagation::W3C | Propagation::B3_MULTI | Propagation::B3_SINGLE,
        ),
    ] {
        let mut out = HeaderMap::with_capacity(16);
        group.bench_function(name, |b| {
            b.iter(|| {
                attempt.inject(propagation, &mut out);
                black_box(out.len())
            })
        });
    }
    group.bench_function("child_and_w3c_b3_multi", |b| {
        let mut out = HeaderMap::with_capacity(16);
        b.iter(|| {
            parent.child().inject(Propagation::default(), &mut out);
            black_box(out.len())
        })
    });
    let propagator = TraceContextPropagator::new();
    let cx = Context::new().with_remote_span_context(attempt.span_context(false));
    group.bench_function("w3c_opentelemetry_propagator", |b| {
        let mut out = HeaderMap::with_capacity(16);
        b.iter(|| {
            propagator.inject_context(&cx, &mut HeaderInjector(&mut out));
            black_box(out.len())
        })
    });
    group.bench_function("request_id_generate", |b| {
        b.iter(|| black_box(RequestId::generate()))
    });
    group.finish();
}

/// Reads an `http::HeaderMap` for opentelemetry's propagators (as `opentelemetry-http` does).
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

/// Writes an `http::HeaderMap` for opentelemetry's propagators (as `opentelemetry-http` does).
struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(key.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

criterion_group!(benches, decode, encode);
criterion_main!(benches);
