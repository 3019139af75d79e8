//! Decoding Envoy v3 xDS resources into the `mesh-core` model.
//!
//! Two phases, so a NACK can name what failed: a resource's name is read first, then its body
//! is decoded. Every error names the resource and the field path (`Cluster
//! outbound|9080|v2|reviews.default.svc.cluster.local: outlier_detection.interval: must be
//! positive`). Every field the mesh does not support is reported as an [`Unsupported`] entry —
//! never silently ignored — and a field whose omission would weaken security is an error.

use std::fmt;

pub mod cluster;
pub mod endpoint;
mod fields;
pub mod filter;
pub mod inbound;
pub mod listener;
pub mod route;

pub use self::{
    cluster::{DecodedCluster, EndpointSource, InlineKind, decode_cluster},
    endpoint::decode_load_assignment,
    filter::{FaultFilter, HttpFilters, SessionFilter},
    inbound::decode_inbound_listener,
};

/// A resource that could not be decoded: which resource, which field, why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name}: {field}: {message}")]
pub struct DecodeError {
    /// Resource kind, e.g. `Cluster`.
    pub kind: &'static str,
    /// Resource name.
    pub name: String,
    /// Field path inside the resource, e.g. `circuit_breakers.thresholds[0].max_requests`.
    pub field: String,
    /// Why, in lower case.
    pub message: String,
}

/// A field set in a resource that the mesh does not act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsupported {
    /// Resource kind.
    pub kind: &'static str,
    /// Resource name.
    pub name: String,
    /// Field path inside the resource.
    pub field: String,
    /// What the mesh does instead, e.g. `ignored` or `treated as round robin`.
    pub note: String,
}

/// A decoded value and the unsupported fields met while decoding it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decoded<T> {
    /// The value.
    pub value: T,
    /// Fields that were set but are not acted on.
    pub unsupported: Vec<Unsupported>,
}

/// The decoding context of one resource: its identity, for errors and reports.
#[derive(Debug)]
pub(crate) struct Ctx {
    kind: &'static str,
    name: String,
    unsupported: Vec<Unsupported>,
}

// === impl Ctx ===

impl Ctx {
    pub(crate) fn new(kind: &'static str, name: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.into(),
            unsupported: Vec::new(),
        }
    }

    /// An error at `field`.
    pub(crate) fn error(
        &self,
        field: impl Into<String>,
        message: impl fmt::Display,
    ) -> DecodeError {
        DecodeError {
            kind: self.kind,
            name: self.name.clone(),
            field: field.into(),
            message: message.to_string(),
        }
    }

    /// Reports `field` as set but not acted on.
    pub(crate) fn unsupported(&mut self, field: impl Into<String>, note: impl Into<String>) {
        self.unsupported.push(Unsupported {
            kind: self.kind,
            name: self.name.clone(),
            field: field.into(),
            note: note.into(),
        });
    }

    /// Finishes decoding with `value`.
    pub(crate) fn done<T>(self, value: T) -> Decoded<T> {
        Decoded {
            value,
            unsupported: self.unsupported,
        }
    }
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}: not supported, {}",
            self.kind, self.name, self.field, self.note
        )
    }
}
