//! Helpers for Tern integration tests live in tests/tests/.
