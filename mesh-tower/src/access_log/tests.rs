use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn outcome(code: u16, grpc_status: Option<GrpcCode>) -> Outcome {
    Outcome {
        code,
        grpc_status,
        flags: None,
        bytes_received: 0,
        bytes_sent: 0,
        duration: Duration::ZERO,
    }
}

#[test]
fn filters_parse_the_documented_subset() {
    let filter = Filter::parse("response.code >= 400").unwrap();
    assert!(filter.accepts(&outcome(503, None)));
    assert!(!filter.accepts(&outcome(200, None)));

    let filter = Filter::parse("response.code == 200 && (response.grpc_status != 0)").unwrap();
    assert!(filter.accepts(&outcome(200, Some(GrpcCode::Internal))));
    assert!(!filter.accepts(&outcome(200, Some(GrpcCode::Ok))));
    // An absent gRPC status makes its comparison false.
    assert!(!filter.accepts(&outcome(200, None)));

    // `&&` binds tighter than `||`.
    let filter =
        Filter::parse("response.code<300||response.code>=500&&response.code!=503").unwrap();
    assert!(filter.accepts(&outcome(200, None)));
    assert!(filter.accepts(&outcome(500, None)));
    assert!(!filter.accepts(&outcome(503, None)));
    assert!(!filter.accepts(&outcome(404, None)));
}

#[test]
fn filters_outside_the_subset_are_rejected_with_where() {
    for (expression, position) in [
        ("response.code >= 400 || request.headers['x'] == 'y'", 24),
        ("response.code", 13),
        ("response.code >= four", 17),
        ("(response.code >= 400", 21),
        ("response.code >= 400 extra", 21),
        ("response.duration > 5", 0),
    ] {
        let error = Filter::parse(expression).unwrap_err();
        assert_eq!(error.position, position, "{expression}: {error}");
        assert!(error.to_string().contains(expression), "{error}");
    }
    let deep = format!("{}response.code == 1{}", "(".repeat(40), ")".repeat(40));
    assert!(Filter::parse(&deep).is_err());
}

#[test]
fn errors_only_takes_http_and_grpc_failures() {
    let errors = Filter::errors_only();
    assert!(errors.accepts(&outcome(503, None)));
    assert!(errors.accepts(&outcome(200, Some(GrpcCode::Unavailable))));
    assert!(!errors.accepts(&outcome(200, Some(GrpcCode::Ok))));
    assert!(!errors.accepts(&outcome(204, None)));
}

#[test]
fn start_time_is_rfc3339_utc_with_milliseconds() {
    let at = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
    assert_eq!(Rfc3339(at).to_string(), "2024-02-29T12:34:56.789Z");
    assert_eq!(Rfc3339(UNIX_EPOCH).to_string(), "1970-01-01T00:00:00.000Z");
}
