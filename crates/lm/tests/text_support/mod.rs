//! Shared by the tokenizer, chat, GGUF and SmolLM2 tests: fixtures and the real SmolLM2 GGUF.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

/// A file under `tests/fixtures/`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A JSON file under `tests/fixtures/`, parsed.
pub fn json_fixture(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The parsed `tests/fixtures/smollm2_tokens.json`.
pub fn smollm2_fixture() -> serde_json::Value {
    json_fixture("smollm2_tokens.json")
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The real SmolLM2 GGUF, or `None` (with a note) when it is not downloaded, unless
/// `LANTERN_REQUIRE_SMOLLM2=1`, which turns its absence into a failure.
pub fn smollm2_gguf() -> Option<PathBuf> {
    let path = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ));
    if path.exists() {
        return Some(path);
    }
    if std::env::var("LANTERN_REQUIRE_SMOLLM2").as_deref() == Ok("1") {
        panic!(
            "{} is missing and LANTERN_REQUIRE_SMOLLM2=1",
            path.display()
        );
    }
    eprintln!("skipping: {} not downloaded", path.display());
    None
}

/// The tokenizer and chat template of the real SmolLM2 GGUF.
pub fn smollm2() -> Option<(lantern_lm::tokenizer::Tokenizer, String)> {
    let path = smollm2_gguf()?;
    let file = lantern_lm::gguf::GgufFile::open(&path).unwrap();
    let vocab = lantern_lm::language_model::gguf_vocab(&file, &path).unwrap();
    let tokenizer = lantern_lm::tokenizer::Tokenizer::from_gguf_metadata(&path, &vocab).unwrap();
    let template = file.get_str("tokenizer.chat_template").unwrap().to_string();
    Some((tokenizer, template))
}
