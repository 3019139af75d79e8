//! What the interop tests need to run gRPC's own implementations beside ours: the peers'
//! environments (`scripts/python-env`, `scripts/node-env`) and their xDS bootstrap.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The virtualenv's python (grpcio, xds-protos), failing clearly when `scripts/python-env` has
/// not run.
pub fn python() -> PathBuf {
    let python = repo_root().join("target/py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `scripts/python-env` (it creates the virtualenv with grpcio; \
         `scripts/test` runs it before the tests)",
        python.display()
    );
    python
}

/// `target/node/node_modules`, failing clearly when `scripts/node-env` has not run.
pub fn node_modules() -> PathBuf {
    let modules = repo_root().join("target/node/node_modules");
    assert!(
        modules.join("@grpc/grpc-js-xds").exists(),
        "{} lacks @grpc/grpc-js-xds: run `scripts/node-env` (it installs grpc-js and \
         grpc-js-xds with npm; `scripts/test` runs it before the tests)",
        modules.display()
    );
    modules
}

/// A gRPC xDS bootstrap for a client peer: `control_plane` in plaintext, node `node`, and the
/// `default` certificate provider istio-agent writes, which ISTIO_MUTUAL clusters name.
pub fn client_bootstrap(control_plane: SocketAddr, node: &str) -> serde_json::Value {
    serde_json::json!({
        "xds_servers": [{
            "server_uri": control_plane.to_string(),
            "channel_creds": [{"type": "insecure"}],
            "server_features": ["xds_v3"],
        }],
        "node": {"id": node, "locality": {"zone": "test"}},
        "certificate_providers": {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": "/var/run/secrets/workload-spiffe-credentials/certificates.pem",
                    "private_key_file": "/var/run/secrets/workload-spiffe-credentials/private_key.pem",
                    "ca_certificate_file": "/var/run/secrets/workload-spiffe-credentials/ca_certificates.pem",
                    "refresh_interval": "900s",
                },
            },
        },
    })
}
