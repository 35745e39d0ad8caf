//! Damaged files never panic: thousands of seeded mutations of a valid GGUF file (bytes
//! flipped, lengths overwritten with huge values, the file cut short) must each either load or
//! fail with an error. A cheap, always-on complement to coverage-guided fuzzing (issue 15).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use burn::tensor::Device;
use lantern_lm::LanguageModel;
use lantern_lm::generate::SplitMix;
use lantern_lm::gguf::GgufFile;

/// lm's sampling generator, drawing indices.
struct Draw(SplitMix);

impl Draw {
    fn below(&mut self, n: usize) -> usize {
        (self.0.next_u64() % n as u64) as usize
    }
}

/// One mutation of `bytes`: a flipped byte, a little-endian u64 or u32 overwritten with an
/// extreme value (the way length fields go wrong), or the file cut short.
fn mutate(bytes: &[u8], rng: &mut Draw) -> Vec<u8> {
    let mut b = bytes.to_vec();
    let whole = rng.below(4) == 0;
    for _ in 0..1 + rng.below(3) {
        // Mostly the header and metadata, where the parser reads lengths and counts.
        let span = if whole { b.len() } else { b.len().min(4096) };
        let at = rng.below(span);
        match rng.below(4) {
            0 => b[at] ^= 1 << rng.below(8),
            1 => {
                let v = [u64::MAX, u64::MAX / 2, 1 << 40, 0][rng.below(4)];
                for (i, x) in v.to_le_bytes().iter().enumerate() {
                    if let Some(y) = b.get_mut(at + i) {
                        *y = *x;
                    }
                }
            }
            2 => {
                let v = [u32::MAX, 1 << 31, 0xFFFF][rng.below(3)];
                for (i, x) in v.to_le_bytes().iter().enumerate() {
                    if let Some(y) = b.get_mut(at + i) {
                        *y = *x;
                    }
                }
            }
            _ => b.truncate(at.max(1)),
        }
    }
    b
}

#[test]
fn mutated_gguf_files_load_or_fail_without_panicking() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_tiny.gguf");
    let bytes = std::fs::read(&src).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.gguf");
    let mut rng = Draw(SplitMix(15));
    let (mut ok, mut err) = (0, 0);
    for i in 0..3000 {
        let m = mutate(&bytes, &mut rng);
        std::fs::write(&path, &m).unwrap();
        let r = catch_unwind(AssertUnwindSafe(|| {
            GgufFile::open(&path)
                .map(|_| ())
                .and_then(|_| LanguageModel::load(&path, &Device::flex()).map(|_| ()))
        }));
        match r {
            Ok(Ok(())) => ok += 1,
            Ok(Err(e)) => {
                let msg = e.to_string();
                assert!(
                    !msg.is_empty() && !msg.contains('\n'),
                    "mutation {i}: {msg:?}"
                );
                err += 1;
            }
            Err(_) => {
                let keep = tmp.path().join(format!("panic-{i}.gguf"));
                std::fs::write(&keep, &m).unwrap();
                panic!("mutation {i} panicked (file kept as {})", keep.display());
            }
        }
    }
    assert!(err > 0, "no mutation was ever refused ({ok} loaded)");
}
