//! Route decoding tests.
