//! Listener decoding tests.
