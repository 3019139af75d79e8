use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use proptest::prelude::*;

use super::*;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "00f067aa0ba902b7";
const PARENT: &str = "b7ad6b7169203331";

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(*name, HeaderValue::from_str(value).unwrap());
    }
    map
}

fn trace_id(hex: &str) -> TraceId {
    TraceId::from_hex(hex).unwrap()
}

fn span_id(hex: &str) -> SpanId {
    SpanId::from_hex(hex).unwrap()
}

fn context(pairs: &[(&'static str, &str)]) -> Option<TraceContext> {
    TraceContext::extract(&headers(pairs))
}

#[test]
fn traceparent_is_decoded() {
    let ctx = context(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]).unwrap();
    assert_eq!(ctx.trace_id(), trace_id(TRACE));
    assert_eq!(ctx.span_id(), span_id(SPAN));
    assert_eq!(ctx.parent_span_id(), None);
    assert_eq!(ctx.sampling(), Sampling::Sampled);
    assert_eq!(ctx.span_context(true).trace_flags(), TraceFlags::SAMPLED);

    let ctx = context(&[("traceparent", &format!("00-{TRACE}-{SPAN}-00"))]).unwrap();
    assert_eq!(ctx.sampling(), Sampling::NotSampled);
    // Reserved flags are dropped, the sampled bit kept.
    let ctx = context(&[("traceparent", &format!("00-{TRACE}-{SPAN}-ff"))]).unwrap();
    assert_eq!(ctx.sampling(), Sampling::Sampled);
}

#[test]
fn a_later_traceparent_version_with_more_fields_is_read() {
    let ctx = context(&[(
        "traceparent",
        &format!("01-{TRACE}-{SPAN}-01-what-the-future"),
    )]);
    assert_eq!(ctx.unwrap().span_id(), span_id(SPAN));
}

#[test]
fn malformed_traceparents_are_ignored() {
    let zero_trace = "0".repeat(32);
    let zero_span = "0".repeat(16);
    for bad in [
        String::new(),
        "garbage".to_owned(),
        format!("ff-{TRACE}-{SPAN}-01"),
        format!("00-{TRACE}-{SPAN}-01-extra"),
        format!("01-{TRACE}-{SPAN}-01x"),
        format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
        format!("00-{TRACE}-{}-01", SPAN.to_uppercase()),
        format!("00-{zero_trace}-{SPAN}-01"),
        format!("00-{TRACE}-{zero_span}-01"),
        format!("00-{}-{SPAN}-01", &TRACE[1..]),
        format!("00-{TRACE}-{SPAN}-1"),
        format!("00_{TRACE}_{SPAN}_01"),
        format!("0g-{TRACE}-{SPAN}-01"),
        format!("00-{}x-{SPAN}-01", &TRACE[1..]),
        format!("00-{TRACE}-{SPAN}-0z"),
    ] {
        assert_eq!(context(&[("traceparent", &bad)]), None, "{bad:?}");
    }
}

#[test]
fn tracestate_is_passed_on_when_well_formed() {
    let parent = format!("00-{TRACE}-{SPAN}-01");
    let ctx = context(&[
        ("traceparent", &parent),
        ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ])
    .unwrap();
    assert_eq!(
        ctx.trace_state().unwrap(),
        "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
    );
    assert_eq!(
        ctx.span_context(true).trace_state().get("congo"),
        Some("t61rcWkgMzE")
    );
    let mut out = HeaderMap::new();
    ctx.inject(Propagation::W3C, &mut out);
    assert_eq!(out["tracestate"], "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");

    let too_many = (0..33)
        .map(|i| format!("k{i}=v"))
        .collect::<Vec<_>>()
        .join(",");
    for bad in ["novalue", "=v", &"a=b".repeat(200), &too_many] {
        let ctx = context(&[("traceparent", &parent), ("tracestate", bad)]).unwrap();
        assert_eq!(ctx.trace_state(), None, "{bad:?}");
    }
}

#[test]
fn b3_multi_headers_are_decoded() {
    let ctx = context(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-parentspanid", PARENT),
        ("x-b3-sampled", "1"),
    ])
    .unwrap();
    assert_eq!(ctx.trace_id(), trace_id(TRACE));
    assert_eq!(ctx.span_id(), span_id(SPAN));
    assert_eq!(ctx.parent_span_id(), Some(span_id(PARENT)));
    assert_eq!(ctx.sampling(), Sampling::Sampled);

    let short = context(&[("x-b3-traceid", "a3ce929d0e0e4736"), ("x-b3-spanid", SPAN)]).unwrap();
    assert_eq!(
        short.trace_id(),
        trace_id("0000000000000000a3ce929d0e0e4736")
    );
    assert_eq!(short.sampling(), Sampling::Deferred);

    for (sampled, expected) in [
        ("0", Sampling::NotSampled),
        ("false", Sampling::NotSampled),
        ("true", Sampling::Sampled),
    ] {
        let ctx = context(&[
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", sampled),
        ]);
        assert_eq!(ctx.unwrap().sampling(), expected, "{sampled}");
    }
    let debug = context(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-flags", "1"),
    ]);
    assert_eq!(debug.unwrap().sampling(), Sampling::Debug);
}

#[test]
fn malformed_b3_multi_headers_are_ignored() {
    let zero = "0".repeat(16);
    for bad in [
        vec![("x-b3-traceid", TRACE)],
        vec![("x-b3-spanid", SPAN)],
        vec![("x-b3-traceid", &TRACE[..20]), ("x-b3-spanid", SPAN)],
        vec![("x-b3-traceid", TRACE), ("x-b3-spanid", &zero)],
        vec![("x-b3-traceid", &zero), ("x-b3-spanid", SPAN)],
        vec![("x-b3-traceid", "zz"), ("x-b3-spanid", SPAN)],
        vec![
            ("x-b3-traceid", TRACE),
            ("x-b3-spanid", SPAN),
            ("x-b3-parentspanid", "nope"),
        ],
    ] {
        assert_eq!(context(&bad), None, "{bad:?}");
    }
}

#[test]
fn b3_single_header_is_decoded() {
    let ctx = context(&[("b3", &format!("{TRACE}-{SPAN}-1-{PARENT}"))]).unwrap();
    assert_eq!(
        (
            ctx.trace_id(),
            ctx.span_id(),
            ctx.parent_span_id(),
            ctx.sampling()
        ),
        (
            trace_id(TRACE),
            span_id(SPAN),
            Some(span_id(PARENT)),
            Sampling::Sampled
        )
    );
    let ctx = context(&[("b3", &format!("{TRACE}-{SPAN}"))]).unwrap();
    assert_eq!(ctx.sampling(), Sampling::Deferred);
    let ctx = context(&[("b3", &format!("a3ce929d0e0e4736-{SPAN}-d"))]).unwrap();
    assert_eq!(ctx.sampling(), Sampling::Debug);
    for bad in [
        format!("{TRACE}-{SPAN}-x"),
        format!("{TRACE}-{SPAN}-1-{PARENT}-more"),
        format!("{TRACE}-{SPAN}-1-zz"),
        TRACE.to_owned(),
        "2".to_owned(),
    ] {
        assert_eq!(context(&[("b3", &bad)]), None, "{bad:?}");
    }
}

#[test]
fn a_sampling_decision_alone_starts_a_new_trace_with_it() {
    for (pairs, expected) in [
        (vec![("b3", "0")], Sampling::NotSampled),
        (vec![("b3", "d")], Sampling::Debug),
        (vec![("x-b3-sampled", "0")], Sampling::NotSampled),
        (vec![], Sampling::Sampled),
    ] {
        let headers = headers(&pairs);
        assert_eq!(TraceContext::extract(&headers), None);
        let root = TraceContext::extract_or_root(&headers);
        assert_eq!(root.sampling(), expected, "{pairs:?}");
        assert_eq!(root.parent_span_id(), None);
    }
}

#[test]
fn w3c_wins_over_b3_and_a_malformed_one_falls_back_to_b3() {
    let b3 = format!("{PARENT}{PARENT}-{PARENT}-1");
    let ctx = context(&[
        ("traceparent", &format!("00-{TRACE}-{SPAN}-01")),
        ("b3", &b3),
    ])
    .unwrap();
    assert_eq!(ctx.trace_id(), trace_id(TRACE));
    let ctx = context(&[("traceparent", "00-bad"), ("b3", &b3)]).unwrap();
    assert_eq!(ctx.span_id(), span_id(PARENT));
}

#[test]
fn inject_writes_each_format() {
    let ctx = context(&[
        ("x-b3-traceid", TRACE),
        ("x-b3-spanid", SPAN),
        ("x-b3-parentspanid", PARENT),
        ("x-b3-sampled", "1"),
    ])
    .unwrap();
    let mut out = headers(&[("x-b3-flags", "1"), ("b3", "stale"), ("other", "kept")]);
    ctx.inject(
        Propagation::W3C | Propagation::B3_MULTI | Propagation::B3_SINGLE,
        &mut out,
    );
    assert_eq!(out["traceparent"], format!("00-{TRACE}-{SPAN}-01"));
    assert_eq!(out["x-b3-traceid"], TRACE);
    assert_eq!(out["x-b3-spanid"], SPAN);
    assert_eq!(out["x-b3-parentspanid"], PARENT);
    assert_eq!(out["x-b3-sampled"], "1");
    assert_eq!(out["b3"], format!("{TRACE}-{SPAN}-1-{PARENT}"));
    assert_eq!(out["other"], "kept");
    assert!(
        out.get("x-b3-flags").is_none(),
        "stale headers are replaced"
    );

    let mut out = HeaderMap::new();
    ctx.inject(Propagation::default(), &mut out);
    assert!(out.contains_key("traceparent") && out.contains_key("b3"));
    assert!(!out.contains_key("x-b3-traceid"));
    let mut out = headers(&[("traceparent", "x")]);
    ctx.inject(Propagation::NONE, &mut out);
    assert!(out.is_empty());
}

#[test]
fn b3_keeps_64_bit_trace_ids_short_and_w3c_pads_them() {
    let ctx = context(&[
        ("x-b3-traceid", "a3ce929d0e0e4736"),
        ("x-b3-spanid", SPAN),
        ("x-b3-flags", "1"),
    ])
    .unwrap();
    let mut out = HeaderMap::new();
    ctx.inject(
        Propagation::W3C | Propagation::B3_MULTI | Propagation::B3_SINGLE,
        &mut out,
    );
    assert_eq!(out["x-b3-traceid"], "a3ce929d0e0e4736");
    assert_eq!(out["x-b3-flags"], "1");
    assert!(!out.contains_key("x-b3-sampled"), "debug implies sampled");
    assert_eq!(out["b3"], format!("a3ce929d0e0e4736-{SPAN}-d"));
    assert_eq!(
        out["traceparent"],
        format!("00-0000000000000000a3ce929d0e0e4736-{SPAN}-01")
    );
}

#[test]
fn a_child_continues_the_trace_under_its_parent() {
    let root = TraceContext::new_root(Sampling::Sampled);
    let child = root.child();
    assert_eq!(child.trace_id(), root.trace_id());
    assert_eq!(child.parent_span_id(), Some(root.span_id()));
    assert_ne!(child.span_id(), root.span_id());
    assert_ne!(
        TraceContext::new_root(Sampling::Sampled).trace_id(),
        root.trace_id()
    );
}

#[test]
fn request_ids_are_kept_or_generated_as_uuid_v4() {
    let kept = RequestId::from_headers_or_generate(&headers(&[("x-request-id", "abc-123")]));
    assert_eq!(kept.as_str(), Some("abc-123"));
    assert_eq!(
        RequestId::from_headers(&headers(&[("x-request-id", " ")])),
        None
    );

    let id = RequestId::from_uuid_bytes([0xff; 16]);
    assert_eq!(id.as_str(), Some("ffffffff-ffff-4fff-bfff-ffffffffffff"));
    let id = RequestId::from_uuid_bytes([0; 16]);
    assert_eq!(id.as_str(), Some("00000000-0000-4000-8000-000000000000"));

    let a = RequestId::generate();
    let text = a.as_str().unwrap();
    assert_eq!(text.len(), 36);
    for (i, c) in text.char_indices() {
        match i {
            8 | 13 | 18 | 23 => assert_eq!(c, '-', "{text}"),
            14 => assert_eq!(c, '4', "{text}"),
            19 => assert!("89ab".contains(c), "{text}"),
            _ => assert!(c.is_ascii_hexdigit() && !c.is_ascii_uppercase(), "{text}"),
        }
    }
    assert_ne!(a, RequestId::generate());

    let mut out = headers(&[("x-request-id", "first")]);
    a.insert_if_absent(&mut out);
    assert_eq!(out["x-request-id"], "first");
    let mut out = HeaderMap::new();
    a.insert_if_absent(&mut out);
    assert_eq!(out["x-request-id"], text);
}

fn arb_context() -> impl Strategy<Value = TraceContext> {
    (
        any::<u128>().prop_filter("valid", |t| *t != 0),
        1..=u64::MAX,
        proptest::option::of(1..=u64::MAX),
        prop_oneof![
            Just(Sampling::Sampled),
            Just(Sampling::NotSampled),
            Just(Sampling::Deferred),
            Just(Sampling::Debug)
        ],
    )
        .prop_map(|(trace, span, parent, sampling)| {
            TraceContext::from_parts(
                TraceId::from(trace),
                SpanId::from(span),
                parent.map(SpanId::from),
                sampling,
                None,
            )
        })
}

proptest! {
    #[test]
    fn b3_round_trips(ctx in arb_context(), single in any::<bool>()) {
        let mut out = HeaderMap::new();
        let format = if single { Propagation::B3_SINGLE } else { Propagation::B3_MULTI };
        ctx.inject(format, &mut out);
        let back = TraceContext::extract(&out).unwrap();
        if single && ctx.sampling() == Sampling::Deferred {
            // `{trace}-{span}` has no room for a parent without a sampling state.
            prop_assert_eq!(back, TraceContext::from_parts(ctx.trace_id(), ctx.span_id(), None, Sampling::Deferred, None));
        } else {
            prop_assert_eq!(back, ctx);
        }
    }

    #[test]
    fn w3c_round_trips(ctx in arb_context()) {
        let mut out = HeaderMap::new();
        ctx.inject(Propagation::W3C, &mut out);
        let back = TraceContext::extract(&out).unwrap();
        prop_assert_eq!(back.trace_id(), ctx.trace_id());
        prop_assert_eq!(back.span_id(), ctx.span_id());
        prop_assert_eq!(back.sampling().is_sampled(), ctx.sampling().is_sampled());
    }

    #[test]
    fn arbitrary_header_values_never_panic(
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 9),
    ) {
        let names = ["traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
            "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-request-id"];
        let mut map = HeaderMap::new();
        for (name, value) in names.into_iter().zip(&values) {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                map.insert(name, value);
            }
        }
        let ctx = TraceContext::extract_or_root(&map);
        let _ = RequestId::from_headers_or_generate(&map);
        let mut out = HeaderMap::new();
        ctx.inject(Propagation::W3C | Propagation::B3_MULTI | Propagation::B3_SINGLE, &mut out);
        prop_assert!(TraceContext::extract(&out).is_some());
    }

    #[test]
    fn near_valid_traceparents_never_panic(
        version in "[0-9a-fA-F]{2}", trace in "[0-9a-f]{30,34}", span in "[0-9a-f]{14,18}",
        flags in "[0-9a-f]{1,3}", tail in "[-a-z0-9]{0,4}",
    ) {
        let value = format!("{version}-{trace}-{span}-{flags}{tail}");
        let _ = context(&[("traceparent", &value)]);
        let _ = context(&[("b3", &format!("{trace}-{span}-{flags}{tail}"))]);
    }
}
