//! Cross-crate integration tests of Lantern (see `tests/`): training quality on synthetic
//! data with known features, and the byte-level drivers of every parser of outside data that
//! the fuzz targets (`fuzz/`) share with the corpus replay test.
//!
//! ```no_run
//! // What a fuzz target does with one input; an error is fine, a panic is a bug.
//! lantern_tests::parsers::gguf(b"GGUF\x03\x00\x00\x00");
//! ```

pub mod parsers;
