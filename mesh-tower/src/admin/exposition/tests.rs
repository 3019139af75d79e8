use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::Counter, exemplar::CounterWithExemplar, family::Family, gauge::Gauge,
        histogram::Histogram, info::Info,
    },
    registry::{Registry, Unit},
};

use super::*;

fn negotiate(accept: &[&str]) -> Format {
    Format::negotiate(accept.iter().copied())
}

#[test]
fn scrapers_without_an_openmetrics_accept_get_the_text_format() {
    for accept in [
        &[][..],
        &[""],
        &["*/*"],
        &["text/plain"],
        &["text/plain; version=0.0.4"],
        // curl
        &["*/*"],
        // A browser.
        &["text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"],
        // Neither format admitted: the text format rather than a 406, as Prometheus' clients.
        &["application/json"],
        &["garbage"],
    ] {
        assert_eq!(negotiate(accept), Format::Text, "{accept:?}");
    }
}

#[test]
fn prometheus_servers_get_openmetrics() {
    for accept in [
        // Prometheus 2.x.
        &[
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        ][..],
        // Prometheus 3.x.
        &[
            "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
        ],
        &["application/openmetrics-text"],
        // Any version, quoted or not, in any case.
        &["application/openmetrics-text; version=0.0.1"],
        &["application/openmetrics-text; version=\"1.0.0\"; charset=utf-8"],
        &["Application/OpenMetrics-Text"],
        // Over several header lines.
        &["text/plain;q=0.5", "application/openmetrics-text;q=0.9"],
        // Preferred, or equal to, the best range that admits text/plain.
        &["application/openmetrics-text;q=0.5, text/*;q=0.4"],
        &["text/plain, application/openmetrics-text"],
        &["*/*;q=0.9, application/openmetrics-text;q=0.9"],
    ] {
        assert_eq!(negotiate(accept), Format::OpenMetrics, "{accept:?}");
    }
}

#[test]
fn quality_values_decide() {
    for accept in [
        &["application/openmetrics-text;q=0"][..],
        &["application/openmetrics-text;q=0, */*"],
        &["text/plain;q=0.9, application/openmetrics-text;q=0.5"],
        &["*/*;q=0.8, application/openmetrics-text;q=0.7"],
        // A malformed quality refuses the range rather than preferring it.
        &["application/openmetrics-text;q=high"],
        &["application/openmetrics-text;q=2"],
    ] {
        assert_eq!(negotiate(accept), Format::Text, "{accept:?}");
    }
    // The most specific range that admits text/plain counts, not the best of all of them.
    assert_eq!(
        negotiate(&["text/*;q=1, text/plain;q=0.2, application/openmetrics-text;q=0.3"]),
        Format::OpenMetrics
    );
}

#[test]
fn a_comma_inside_a_quoted_parameter_does_not_split_the_range() {
    assert_eq!(
        negotiate(&["application/openmetrics-text; note=\"a, text/plain\""]),
        Format::OpenMetrics
    );
}

#[test]
fn content_types_name_the_format_and_version() {
    assert_eq!(
        Format::OpenMetrics.content_type(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(
        Format::Text.content_type(),
        "text/plain; version=0.0.4; charset=utf-8"
    );
}

/// A registry with each metric type prometheus-client has, a unit, a prefix, an exemplar and
/// a label value that needs escaping.
fn registry() -> Registry {
    let mut registry = Registry::default();
    let requests = Family::<Vec<(String, String)>, Counter>::default();
    requests
        .get_or_create(&vec![("path".into(), "/a \"b\"\\c\n".into())])
        .inc_by(3);
    registry.register("requests", "Requests \\ answered", requests);
    let traced = CounterWithExemplar::<Vec<(String, String)>>::default();
    traced.inc_by(2, Some(vec![("trace_id".into(), "abc # {x}".into())]), None);
    registry.register("traced", "Traced", traced);
    let sub = registry.sub_registry_with_prefix("mesh");
    let bytes = Gauge::<i64>::default();
    bytes.set(7);
    sub.register_with_unit("buffered", "Bytes buffered", Unit::Bytes, bytes);
    let latency = Histogram::new([1.0, 5.0]);
    latency.observe(3.0);
    sub.register("latency_milliseconds", "Latency", latency);
    sub.register(
        "build",
        "The build",
        Info::new(vec![("version".to_owned(), "1.0".to_owned())]),
    );
    registry
}

#[test]
fn the_text_format_names_counters_by_their_samples_and_drops_openmetrics_only_lines() {
    let mut openmetrics = String::new();
    encode(&mut openmetrics, &registry()).unwrap();
    // What prometheus-client writes, for reference: the differences are the point.
    assert!(
        openmetrics.contains("# TYPE requests counter\n"),
        "{openmetrics}"
    );
    assert!(openmetrics.contains("# UNIT mesh_buffered_bytes bytes\n"));
    assert!(openmetrics.contains("traced_total 2 # {trace_id=\"abc # {x}\"} 2"));
    assert!(openmetrics.ends_with("# EOF\n"));

    assert_eq!(
        to_text_format(&openmetrics),
        "# HELP requests_total Requests \\\\ answered.\n\
         # TYPE requests_total counter\n\
         requests_total{path=\"/a \\\"b\\\"\\\\c\\n\"} 3\n\
         # HELP traced_total Traced.\n\
         # TYPE traced_total counter\n\
         traced_total 2\n\
         # HELP mesh_buffered_bytes Bytes buffered.\n\
         # TYPE mesh_buffered_bytes gauge\n\
         mesh_buffered_bytes 7\n\
         # HELP mesh_latency_milliseconds Latency.\n\
         # TYPE mesh_latency_milliseconds histogram\n\
         mesh_latency_milliseconds_sum 3.0\n\
         mesh_latency_milliseconds_count 1\n\
         mesh_latency_milliseconds_bucket{le=\"1.0\"} 0\n\
         mesh_latency_milliseconds_bucket{le=\"5.0\"} 1\n\
         mesh_latency_milliseconds_bucket{le=\"+Inf\"} 1\n\
         # HELP mesh_build_info The build.\n\
         # TYPE mesh_build_info gauge\n\
         mesh_build_info{version=\"1.0\"} 1\n"
    );
}

#[test]
fn created_samples_go_timestamps_become_milliseconds_and_help_is_re_escaped() {
    let openmetrics = "# HELP jobs Jobs \\\"done\\\"\\nper run \\d.\n\
                       # TYPE jobs counter\n\
                       jobs_total 4 1700000000.25\n\
                       jobs_created 1700000000.0\n\
                       # HELP temperature_celsius Now.\n\
                       # TYPE temperature_celsius unknown\n\
                       # UNIT temperature_celsius celsius\n\
                       temperature_celsius 21.5 # {} 1\n\
                       # TYPE undocumented gauge\n\
                       undocumented NaN\n\
                       # EOF\n";
    assert_eq!(
        to_text_format(openmetrics),
        "# HELP jobs_total Jobs \"done\"\\nper run \\\\d.\n\
         # TYPE jobs_total counter\n\
         jobs_total 4 1700000000250\n\
         # HELP temperature_celsius Now.\n\
         # TYPE temperature_celsius untyped\n\
         temperature_celsius 21.5\n\
         # TYPE undocumented gauge\n\
         undocumented NaN\n"
    );
}

#[test]
fn an_empty_registry_is_an_empty_text() {
    let mut openmetrics = String::new();
    encode(&mut openmetrics, &Registry::default()).unwrap();
    assert_eq!(to_text_format(&openmetrics), "");
}
