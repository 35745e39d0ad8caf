//! Shared by the CLI tests: running the `lantern` binary, and the real model's path.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn lantern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lantern"))
}

pub fn run(args: &[&str]) -> Output {
    lantern().args(args).output().expect("spawn lantern")
}

/// lm's tiny Llama checkpoint (`parity/llama_gqa`, vocabulary 64) with the tiny BPE tokenizer
/// beside it, copied into `to`: a model every command can load, in milliseconds.
pub fn tiny_llama_with_tokenizer(to: &Path) {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm/tests/fixtures");
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(fixtures.join("parity/llama_gqa")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
    std::fs::copy(
        fixtures.join("tiny_bpe/tokenizer.json"),
        to.join("tokenizer.json"),
    )
    .unwrap();
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "lantern {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command that must fail; returns its one-line error.
pub fn run_err(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "lantern {args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

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

/// The path of one of the shipped organism models (`base`, `chat`, ...), extracted into
/// `cache` by `organism list`.
pub fn organism_model(cache: &Path, name: &str) -> PathBuf {
    let list: serde_json::Value = serde_json::from_str(&run_ok(&[
        "organism",
        "list",
        "--json",
        "--cache",
        cache.to_str().unwrap(),
    ]))
    .unwrap();
    let models = list["models"].as_array().unwrap();
    let m = models.iter().find(|m| m["name"] == name).unwrap();
    PathBuf::from(m["path"].as_str().unwrap())
}

/// Starts `lantern args`, kills it (SIGKILL) after `delay`, and says whether it was still
/// running then.
pub fn kill_after(args: &[&str], delay: std::time::Duration) -> bool {
    let mut child = lantern()
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    child.wait().unwrap();
    running
}
