//! The fuzz corpora and crash reproducers (`fuzz/corpus/TARGET/`, `fuzz/artifacts/TARGET/`)
//! replayed through the same drivers the fuzz targets call, on the stable toolchain: every
//! input must return (an error is fine) without a panic.

use std::path::Path;

use lantern_tests::parsers::TARGETS;

#[test]
fn every_committed_fuzz_input_is_handled_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut total = 0;
    for (name, run) in TARGETS {
        let mut n = 0;
        for sub in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(sub).join(name)) else {
                continue;
            };
            let mut files: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            files.sort();
            for f in files {
                let bytes = std::fs::read(&f).unwrap();
                let r = std::panic::catch_unwind(|| run(&bytes));
                assert!(r.is_ok(), "{name}: {} panicked", f.display());
                n += 1;
            }
        }
        assert!(n > 0, "{name}: no corpus in fuzz/corpus/{name}");
        total += n;
    }
    eprintln!("replayed {total} inputs");
}
