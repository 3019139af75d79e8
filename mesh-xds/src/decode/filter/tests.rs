//! Filter chain tests with the chains istiod's gRPC generator builds
//! (`pilot/pkg/networking/grpcgen/lds.go`, `util.BuildStatefulSessionFilter`).

use envoy_types::pb::{
    envoy::{
        config::core::v3::TypedExtensionConfig,
        extensions::{
            filters::{
                http::{
                    fault::v3::HttpFault, router::v3::Router, stateful_session::v3::StatefulSession,
                },
                network::http_connection_manager::v3::{HttpFilter, http_filter::ConfigType},
            },
            http::stateful_session::{
                cookie::v3::CookieBasedSessionState, header::v3::HeaderBasedSessionState,
            },
        },
        r#type::http::v3::Cookie,
    },
    google::protobuf::Any,
};
use prost::{Message, Name};

use super::{super::Unsupported, *};

fn pack<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn filter(name: &str, config: Any) -> HttpFilter {
    HttpFilter {
        name: name.into(),
        config_type: Some(ConfigType::TypedConfig(config)),
        ..Default::default()
    }
}

/// istiod's `supportedFilters`: an empty fault filter, then the router.
fn istiod_filters() -> Vec<HttpFilter> {
    vec![
        filter(FAULT_FILTER, pack(&HttpFault::default())),
        filter("envoy.filters.http.router", pack(&Router::default())),
    ]
}

/// `util.BuildStatefulSessionFilter` with the service label
/// `istio.io/persistent-session: test-cookie:/Service/Method` (istiod's grpcgen test).
fn istiod_cookie_session() -> HttpFilter {
    let state = CookieBasedSessionState {
        cookie: Some(Cookie {
            name: "test-cookie".into(),
            path: "/Service/Method".into(),
            ..Default::default()
        }),
    };
    session_filter(TypedExtensionConfig {
        name: "envoy.http.stateful_session.cookie".into(),
        typed_config: Some(pack(&state)),
    })
}

/// With `istio.io/persistent-session-header: x-session`.
fn istiod_header_session() -> HttpFilter {
    session_filter(TypedExtensionConfig {
        name: "envoy.http.stateful_session.header".into(),
        typed_config: Some(pack(&HeaderBasedSessionState {
            name: "x-session".into(),
        })),
    })
}

fn session_filter(state: TypedExtensionConfig) -> HttpFilter {
    filter(
        "envoy.filters.http.stateful_session",
        pack(&StatefulSession {
            session_state: Some(state),
            ..Default::default()
        }),
    )
}

fn decode(filters: &[HttpFilter]) -> Result<(HttpFilters, Vec<Unsupported>), DecodeError> {
    let mut ctx = Ctx::new("Listener", "reviews.default.svc.cluster.local:9080");
    let out = http_filters(&mut ctx, "api_listener.api_listener", filters)?;
    let done = ctx.done(out);
    Ok((done.value, done.unsupported))
}

#[test]
fn istiods_persistent_session_filters_pin_sessions() {
    let (plain, _) = decode(&istiod_filters()).unwrap();
    assert_eq!(plain.session, None);
    for (session, expected) in [
        (
            istiod_cookie_session(),
            SessionState::Cookie {
                name: "test-cookie".into(),
                path: "/Service/Method".into(),
                // istiod sends no ttl: a session cookie.
                ttl: Duration::ZERO,
            },
        ),
        (
            istiod_header_session(),
            SessionState::Header(HeaderName::from_static("x-session")),
        ),
    ] {
        // lds.go: the session filter is prepended to the supported filters.
        let mut chain = vec![session];
        chain.extend(istiod_filters());
        let (filters, unsupported) = decode(&chain).unwrap();
        assert_eq!(filters.fault, plain.fault);
        assert_eq!(filters.names[0], "envoy.filters.http.stateful_session");
        assert!(unsupported.is_empty(), "{unsupported:?}");
        let session = filters.session.unwrap();
        assert_eq!(session.name, "envoy.filters.http.stateful_session");
        assert_eq!(
            session.default.as_deref(),
            Some(&SessionAffinity {
                state: expected,
                strict: false,
            })
        );
    }
}

#[test]
fn istiods_empty_session_filter_pins_nothing_until_a_route_says_so() {
    // xdsfilters.EmptySessionFilter: a StatefulSession without session state.
    let mut chain = vec![filter(
        "envoy.filters.http.stateful_session",
        pack(&StatefulSession::default()),
    )];
    chain.extend(istiod_filters());
    let (filters, unsupported) = decode(&chain).unwrap();
    assert!(unsupported.is_empty(), "{unsupported:?}");
    assert_eq!(filters.session.unwrap().default, None);
}

#[test]
fn a_malformed_session_filter_is_an_error() {
    let unknown_state = session_filter(TypedExtensionConfig {
        name: "envoy.http.stateful_session.envelope".into(),
        typed_config: Some(Any {
            type_url: "type.googleapis.com/envoy.extensions.http.stateful_session.envelope.v3.EnvelopeSessionState".into(),
            value: Vec::new(),
        }),
    });
    let no_cookie_name = session_filter(TypedExtensionConfig {
        name: "envoy.http.stateful_session.cookie".into(),
        typed_config: Some(pack(&CookieBasedSessionState { cookie: None })),
    });
    for (session, field) in [
        (
            unknown_state,
            "api_listener.api_listener.http_filters[0].typed_config.session_state.typed_config",
        ),
        (
            no_cookie_name,
            "api_listener.api_listener.http_filters[0].typed_config.session_state.typed_config.cookie.name",
        ),
    ] {
        let mut chain = vec![session];
        chain.extend(istiod_filters());
        assert_eq!(decode(&chain).unwrap_err().field, field);
    }
}
