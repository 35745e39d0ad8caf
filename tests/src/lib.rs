//! Cross-crate integration tests of Lantern (see `tests/`): training quality on synthetic
//! data with known features.
