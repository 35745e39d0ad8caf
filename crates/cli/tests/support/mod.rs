//! Shared by the CLI tests that run the real model.

use std::path::PathBuf;

/// SmolLM2-135M-Instruct's GGUF from `scripts/fetch-smollm2.sh`, or `None` (the test skips)
/// when it is missing — unless `LANTERN_REQUIRE_SMOLLM2` is set, which makes that a failure.
pub fn gguf() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ));
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("LANTERN_REQUIRE_SMOLLM2").is_err(),
        "LANTERN_REQUIRE_SMOLLM2 is set but {} is missing",
        p.display()
    );
    eprintln!("skipping: {} not found", p.display());
    None
}
