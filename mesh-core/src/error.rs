//! The error of every validating constructor in the model.

/// A value was rejected while building the policy model; the message says why.
///
/// Loaders (the Istio YAML parser, the xDS decoder) wrap it with *where* the value came from.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    message: String,
}

// === impl Error ===

impl Error {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The reason, in lower case, without location.
    pub fn message(&self) -> &str {
        &self.message
    }
}
