//! The persisted file's checks: a corrupted, foreign or other-format file is refused whole.

#![allow(clippy::unwrap_used)]

use super::*;

fn owner() -> Owner {
    Owner {
        server_uri: "istiod.istio-system.svc:15012".into(),
        node_id: "sidecar~10.0.0.1~reviews.default~default.svc.cluster.local".into(),
    }
}

/// A fresh path in the temporary directory, removed first.
fn path(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "mesh-xds-persist-{}-{name}.json",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&path);
    path
}

fn persisted() -> Persisted {
    let mut state = AdsState::new();
    state.watch(
        "reviews.default.svc.cluster.local:9080",
        "reviews.default.svc.cluster.local:9080",
    );
    Persisted::of(
        &state,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
    )
}

#[test]
fn a_saved_file_loads_back_and_no_temporary_file_is_left() {
    let path = path("round-trip");
    assert_eq!(
        Persisted::load(&path, &owner()).unwrap(),
        None,
        "no file yet"
    );
    let saved = persisted();
    saved.save(&path, &owner()).unwrap();
    saved.save(&path, &owner()).unwrap(); // Replaces it.
    assert_eq!(Persisted::load(&path, &owner()).unwrap(), Some(saved));
    let dir = path.parent().unwrap();
    let stem = path.file_name().unwrap().to_str().unwrap();
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_str().unwrap_or("");
            name.starts_with(stem) && name != stem
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_file_for_another_server_or_node_is_foreign() {
    let path = path("foreign");
    persisted().save(&path, &owner()).unwrap();
    for other in [
        Owner {
            server_uri: "other:15012".into(),
            ..owner()
        },
        Owner {
            node_id: "sidecar~10.0.0.2~ratings.default~default.svc.cluster.local".into(),
            ..owner()
        },
    ] {
        assert!(
            matches!(
                Persisted::load(&path, &other),
                Err(PersistError::Foreign(..))
            ),
            "{other:?}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_damaged_file_or_one_of_another_format_is_refused_whole() {
    let path = path("damaged");
    persisted().save(&path, &owner()).unwrap();
    let good = std::fs::read_to_string(&path).unwrap();
    let cluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
    let damaged = [
        // Cut short, as by a crash mid-write of a non-atomic writer.
        good[..good.len() / 2].to_owned(),
        good.replace(FORMAT, "mesh-xds-persisted-resources/999"),
        good.replace("\"types\":[]", &format!("\"types\":[{{\"type_url\":\"{cluster}\",\"version_info\":\"1\",\"resources\":[[\"{cluster}\",\"zz\"]]}}]")),
        // Valid hex, but not a Cluster: the whole file is refused, nothing applied.
        good.replace("\"types\":[]", &format!("\"types\":[{{\"type_url\":\"{cluster}\",\"version_info\":\"1\",\"resources\":[[\"{cluster}\",\"ffff\"]]}}]")),
        good.replace("\"types\":[]", "\"types\":[{\"type_url\":\"type.googleapis.com/envoy.Unknown\",\"version_info\":\"1\",\"resources\":[]}]"),
    ];
    assert!(good.contains("\"types\":[]"), "{good}");
    for text in damaged {
        std::fs::write(&path, &text).unwrap();
        assert!(
            matches!(
                Persisted::load(&path, &owner()),
                Err(PersistError::Corrupted(..))
            ),
            "{text}"
        );
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn hex_round_trips_and_rejects_non_hex() {
    let bytes: Vec<u8> = (0..=255).collect();
    assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
    assert_eq!(unhex("0"), None);
    assert_eq!(unhex("zz"), None);
    assert_eq!(unhex("FF"), Some(vec![255]));
}
