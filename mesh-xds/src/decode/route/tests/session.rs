//! Stateful session per-filter configs: istiod's Envoy shape (an empty filter overridden per
//! virtual host) and the most specific level winning.

use std::{collections::HashMap, sync::Arc};

use envoy_types::pb::envoy::{
    config::{core::v3::TypedExtensionConfig, route::v3::FilterConfig},
    extensions::{
        filters::http::stateful_session::v3::{
            StatefulSession, StatefulSessionPerRoute, stateful_session_per_route::Override,
        },
        http::stateful_session::header::v3::HeaderBasedSessionState,
    },
};
use mesh_core::route::{SessionAffinity, SessionState};

use super::*;
use crate::decode::SessionFilter;

const SESSION: &str = "envoy.filters.http.stateful_session";

fn header_session(name: &str) -> StatefulSession {
    StatefulSession {
        session_state: Some(TypedExtensionConfig {
            name: "envoy.http.stateful_session.header".into(),
            typed_config: Some(pack(&HeaderBasedSessionState { name: name.into() })),
        }),
        ..Default::default()
    }
}

fn affinity(name: &'static str) -> Option<Arc<SessionAffinity>> {
    Some(Arc::new(SessionAffinity {
        state: SessionState::Header(HeaderName::from_static(name)),
        strict: false,
    }))
}

fn per_route(o: Override) -> HashMap<String, Any> {
    HashMap::from([(
        SESSION.to_string(),
        pack(&StatefulSessionPerRoute {
            r#override: Some(o),
        }),
    )])
}

fn with_session(default: Option<Arc<SessionAffinity>>) -> HttpFilters {
    HttpFilters {
        session: Some(SessionFilter {
            name: SESSION.into(),
            default,
        }),
        ..HttpFilters::default()
    }
}

fn session_of(t: &mesh_core::RouteTable, path: &str) -> Option<Arc<SessionAffinity>> {
    fwd(find(t, HOST, path, &[]).unwrap()).session.clone()
}

#[test]
fn istiods_per_virtual_host_session_overrides_the_empty_filter_and_a_route_can_disable_it() {
    // httproute.go: StatefulSessionPerRoute{stateful_session} on the service's virtual host.
    let mut disabled = route(prefix("/off"), action(V1));
    disabled.typed_per_filter_config = per_route(Override::Disabled(true));
    let mut own = route(prefix("/own"), action(V1));
    own.typed_per_filter_config = per_route(Override::StatefulSession(header_session("x-own")));
    let mut vh = vhost(vec![disabled, own, route(prefix("/"), action(V1))]);
    vh.typed_per_filter_config = per_route(Override::StatefulSession(header_session("x-session")));
    let decoded = decode_route_configuration(&config(vec![vh]), &with_session(None)).unwrap();
    assert!(decoded.unsupported.is_empty(), "{:?}", decoded.unsupported);
    let t = decoded.value;
    assert_eq!(session_of(&t, "/any"), affinity("x-session"));
    assert_eq!(session_of(&t, "/off"), None);
    assert_eq!(session_of(&t, "/own"), affinity("x-own"));
}

#[test]
fn the_filters_own_session_applies_unless_a_filter_config_disables_it() {
    let mut off = route(prefix("/off"), action(V1));
    off.typed_per_filter_config = HashMap::from([(
        SESSION.to_string(),
        pack(&FilterConfig {
            disabled: true,
            ..Default::default()
        }),
    )]);
    let vh = vhost(vec![off, route(prefix("/"), action(V1))]);
    let t = decode_route_configuration(&config(vec![vh]), &with_session(affinity("x-top")))
        .unwrap()
        .value;
    assert_eq!(session_of(&t, "/any"), affinity("x-top"));
    assert_eq!(session_of(&t, "/off"), None);
    // Without a session filter in the chain, routes have no session.
    assert_eq!(
        session_of(
            &decode(&config(vec![vhost(vec![route(prefix("/"), action(V1))])])).value,
            "/"
        ),
        None
    );
}
