//! The last ACKed resources on disk, for a cold start without the control plane.
//!
//! Opt-in ([`XdsClientOptions::persist_path`](super::XdsClientOptions::persist_path)). After
//! every accepted update the client writes what it holds: the watched targets, and per type
//! the ACKed `version_info` and the last good value of every resource as received. The file is
//! written to a temporary file in the same directory and renamed over the old one, so a reader
//! (or a crash) never sees half a file.
//!
//! At start the file is read and checked whole — its format version, the management server and
//! node it was written for (a file from another mesh or another workload is *foreign*), and
//! every resource decoded against a scratch state — before anything is applied, so a corrupted
//! or foreign file is reported and ignored, never half-applied. It is applied only if the
//! management server cannot be reached before any fresh response, and the configuration is
//! then marked stale (config dump, `mesh_xds_config_age_seconds`) until the first fresh
//! response; fallback servers are still tried while it serves (a stale cache does not make
//! them useless, unlike a fresh one under gRPC A71). Restored updates count as accepted updates in [`Counters`](super::Counters).

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use envoy_types::pb::{envoy::service::discovery::v3::DiscoveryResponse, google::protobuf::Any};

use super::state::{AdsState, ResourceType};

/// The format written; a file of another format is ignored.
const FORMAT: &str = "mesh-xds-persisted-resources/1";
/// The nonce of restored responses; never sent (a new stream starts without nonces).
const RESTORED_NONCE: &str = "persisted";

/// A persisted configuration, read and checked.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Persisted {
    /// When it was written: the last time it was known fresh.
    pub(crate) saved_at: SystemTime,
    /// Watched targets and their Listener names.
    targets: BTreeMap<String, String>,
    /// One state-of-the-world response per type, in dependency order.
    responses: Vec<DiscoveryResponse>,
}

/// Why a persisted file was not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PersistError {
    /// Reading or writing failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Not a file this client wrote, or damaged.
    #[error("{0}: corrupted: {1}")]
    Corrupted(PathBuf, String),
    /// Written for another management server or node.
    #[error("{0}: written for {1}, not for this client ({2}); ignored")]
    Foreign(PathBuf, String, String),
}

/// Who a file belongs to: the primary management server and the node id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Owner {
    pub(crate) server_uri: String,
    pub(crate) node_id: String,
}

/// The file's JSON.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    server_uri: String,
    node_id: String,
    saved_at_unix_ms: u64,
    targets: BTreeMap<String, String>,
    types: Vec<FileType>,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileType {
    type_url: String,
    version_info: String,
    /// Each resource's `Any` as received: its type URL and its bytes in hex.
    resources: Vec<(String, String)>,
}

// === impl Persisted ===

impl Persisted {
    /// What `state` holds now: the last good value of every resource.
    pub(crate) fn of(state: &AdsState, saved_at: SystemTime) -> Self {
        let responses = ResourceType::ALL
            .into_iter()
            .map(|ty| DiscoveryResponse {
                version_info: state.version_info(ty).to_owned(),
                resources: state
                    .resources(ty)
                    .filter(|(_, e)| e.value.is_some())
                    .filter_map(|(_, e)| e.raw.clone())
                    .collect(),
                type_url: ty.type_url().to_owned(),
                nonce: RESTORED_NONCE.to_owned(),
                ..DiscoveryResponse::default()
            })
            .filter(|r| !r.resources.is_empty())
            .collect();
        Self {
            saved_at,
            targets: state.targets().clone(),
            responses,
        }
    }

    /// Applies it to `state`: watches its targets and feeds its responses in dependency order.
    /// Returns whether every response was accepted (it was checked so at load; `false` would
    /// mean the decoder changed under it).
    pub(crate) fn apply(&self, state: &mut AdsState, now: SystemTime) -> bool {
        for (target, listener) in &self.targets {
            state.watch(target, listener);
        }
        let mut all_acked = true;
        for response in &self.responses {
            all_acked &= state.on_response(response, now).acked;
        }
        all_acked
    }

    /// Writes it to `path` atomically, for `owner`.
    pub(crate) fn save(&self, path: &Path, owner: &Owner) -> Result<(), PersistError> {
        let io = |e| PersistError::Io(path.to_owned(), e);
        let file = File {
            format: FORMAT.to_owned(),
            server_uri: owner.server_uri.clone(),
            node_id: owner.node_id.clone(),
            saved_at_unix_ms: self
                .saved_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            targets: self.targets.clone(),
            types: self
                .responses
                .iter()
                .map(|r| FileType {
                    type_url: r.type_url.clone(),
                    version_info: r.version_info.clone(),
                    resources: r
                        .resources
                        .iter()
                        .map(|a| (a.type_url.clone(), hex(&a.value)))
                        .collect(),
                })
                .collect(),
        };
        let json = serde_json::to_vec(&file)
            .map_err(|e| PersistError::Corrupted(path.to_owned(), e.to_string()))?;
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".tmp-{}", std::process::id()));
        let temp = PathBuf::from(temp);
        let written = (|| {
            let mut f = std::fs::File::create(&temp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&temp, path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&temp);
        }
        written.map_err(io)
    }

    /// Reads and checks `path`: its format, its `owner`, and every resource against a scratch
    /// state. `Ok(None)` when there is no file.
    pub(crate) fn load(path: &Path, owner: &Owner) -> Result<Option<Self>, PersistError> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PersistError::Io(path.to_owned(), e)),
        };
        let corrupted = |why: String| PersistError::Corrupted(path.to_owned(), why);
        let file: File = serde_json::from_slice(&bytes).map_err(|e| corrupted(e.to_string()))?;
        if file.format != FORMAT {
            return Err(corrupted(format!(
                "format `{}`, expected `{FORMAT}`",
                file.format
            )));
        }
        let written_for = Owner {
            server_uri: file.server_uri,
            node_id: file.node_id,
        };
        if written_for != *owner {
            return Err(PersistError::Foreign(
                path.to_owned(),
                format!(
                    "server `{}` node `{}`",
                    written_for.server_uri, written_for.node_id
                ),
                format!("server `{}` node `{}`", owner.server_uri, owner.node_id),
            ));
        }
        let mut responses = Vec::new();
        for t in file.types {
            let Some(ty) = ResourceType::from_type_url(&t.type_url) else {
                return Err(corrupted(format!("unknown type `{}`", t.type_url)));
            };
            let mut resources = Vec::new();
            for (type_url, value) in t.resources {
                let value = unhex(&value)
                    .ok_or_else(|| corrupted(format!("a {ty} resource is not hex")))?;
                resources.push(Any { type_url, value });
            }
            responses.push(DiscoveryResponse {
                version_info: t.version_info,
                resources,
                type_url: ty.type_url().to_owned(),
                nonce: RESTORED_NONCE.to_owned(),
                ..DiscoveryResponse::default()
            });
        }
        // Dependency order, whatever the file's order: a Listener subscribes its routes.
        responses.sort_by_key(|r| ResourceType::from_type_url(&r.type_url));
        let persisted = Self {
            saved_at: SystemTime::UNIX_EPOCH + Duration::from_millis(file.saved_at_unix_ms),
            targets: file.targets,
            responses,
        };
        let mut scratch = AdsState::new();
        for (target, listener) in &persisted.targets {
            scratch.watch(target, listener);
        }
        for response in &persisted.responses {
            let outcome = scratch.on_response(response, persisted.saved_at);
            if !outcome.acked {
                return Err(corrupted(outcome.errors.join("; ")));
            }
        }
        Ok(Some(persisted))
    }
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// The bytes of lower- or upper-case hex; `None` when it is not hex.
fn unhex(text: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| {
        char::from(c)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return None;
    }
    bytes
        .chunks_exact(2)
        .map(|pair| match pair {
            [high, low] => Some((digit(*high)? << 4) | digit(*low)?),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests;
