//! Issue 15, item 7: a rotation to material that cannot serve (an expired, not yet valid or
//! foreign-CA leaf) is refused; the old material keeps serving real handshakes.

use mesh_tower::{mesh_core::MtlsMode, tls::TlsError};

use crate::{
    certs::{Ca, Validity, spiffe},
    fixture::*,
};

#[tokio::test]
async fn a_rotation_to_bad_material_is_refused_and_the_old_keeps_serving() {
    let pki = pki();
    let mesh = pki.server_mesh("");
    let addr = serve_axum(
        mesh.server_layer(workload()),
        server_tls(&mesh, MtlsMode::Strict),
        Axum::WithConnectInfo,
    )
    .await;
    let caller = pki.caller(&[&spiffe("client")]);
    assert_eq!(https_get(addr, &caller, Version::Http2).await, 200);

    let watcher = mesh.tls().workload_identity().unwrap();
    let rogue = Ca::new("rogue root");
    let bad = [
        (
            "expired",
            pki.ca
                .leaf(&[&spiffe("server")], &["localhost"], Validity::Expired),
            "has expired",
        ),
        (
            "not yet valid",
            pki.ca
                .leaf(&[&spiffe("server")], &["localhost"], Validity::NotYetValid),
            "is not valid yet",
        ),
        (
            "foreign CA",
            rogue.leaf(&[&spiffe("server")], &["localhost"], Validity::Now),
            "does not verify against the trust bundle",
        ),
    ];
    for (round, (what, leaf, why)) in bad.into_iter().enumerate() {
        pki.dir.rotate("server", &leaf);
        let refused = watcher.reload();
        match &refused {
            Err(TlsError::Invalid { path, reason }) => {
                assert!(path.ends_with("server.crt"), "{what}: {path}");
                assert!(reason.contains(why), "{what}: {reason}");
            }
            other => panic!("{what}: the rotation must be refused, got {other:?}"),
        }
        assert_eq!(watcher.failures(), round as u64 + 1, "{what}: counted");
        assert_eq!(watcher.last_error(), refused.err(), "{what}: reported");
        assert_eq!(watcher.reloads(), 0, "{what}: nothing installed");
        // The old certificate still completes real handshakes.
        for version in [Version::Http1, Version::Http2] {
            assert_eq!(https_get(addr, &caller, version).await, 200, "{what}");
        }
    }

    // A good rotation is still installed.
    let next = pki
        .ca
        .leaf(&[&spiffe("server")], &["localhost"], Validity::Now);
    pki.dir.rotate("server", &next);
    assert_eq!(watcher.reload(), Ok(true));
    assert_eq!(watcher.last_error(), None);
    assert_eq!(https_get(addr, &caller, Version::Http2).await, 200);
}
