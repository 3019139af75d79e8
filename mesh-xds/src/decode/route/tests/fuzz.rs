//! Never-panic property tests: random and mutated bytes through `prost` into the decoder.

use envoy_types::pb::envoy::config::route::v3 as pb;
use proptest::prelude::*;
use prost::Message;

use super::*;
proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(rc) = pb::RouteConfiguration::decode(bytes.as_slice()) {
            let _ = decode_route_configuration(&rc, &HttpFilters::default());
            let _ = decode_route_configuration(&rc, &HttpFilters::with_fault(None));
        }
    }

    #[test]
    fn mutated_valid_configs_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut a = weighted(&[(V1, 90), (V3, 10)]);
        a.retry_policy = Some(istio_retry());
        let mut m = prefix("/");
        m.headers = vec![exact_header("end-user", "jason")];
        let mut bytes = config(vec![vhost(vec![route(m, a)])]).encode_to_vec();
        for (at, x) in flips {
            let len = bytes.len();
            if let Some(b) = bytes.get_mut(at % len) {
                *b ^= x;
            }
        }
        if let Ok(rc) = pb::RouteConfiguration::decode(bytes.as_slice()) {
            let _ = decode_route_configuration(&rc, &HttpFilters::with_fault(None));
        }
    }
}
