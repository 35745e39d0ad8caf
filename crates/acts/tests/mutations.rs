//! A damaged store never panics: seeded mutations of a small store's manifest (numbers set to
//! 0, off by one, huge; fields removed) and of its shard (bytes changed, with the manifest's
//! size and checksum updated to match, as a careless hand edit would) must each open and read
//! back or fail with an error (issue 15).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;

use lantern_acts::{Rng, Store, SynthConfig, synthesize};
use serde_json::Value;

/// The crate's own generator, drawing indices.
struct Draw(Rng);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        self.0.below(n as u64) as usize
    }
}

/// Opens, verifies and reads every row; `Ok` or the error's text.
fn read_all(dir: &Path) -> Result<u64, String> {
    let store = Store::open(dir).map_err(|e| e.to_string())?;
    store.verify().map_err(|e| e.to_string())?;
    let mut row = vec![0.0f32; store.d_model()];
    let mut n = 0;
    for i in 0..store.num_shards() {
        let s = store.shard(i).map_err(|e| e.to_string())?;
        for r in 0..s.rows() {
            s.row_f32(r, &mut row);
            let _ = (
                s.token_id(r),
                s.seq_id(r),
                s.position(r),
                s.role(r),
                s.label(r),
            );
            n += 1;
        }
    }
    Ok(n)
}

/// Every number in `v` with a path to it, depth first.
fn numbers(v: &Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Number(_) => out.push(path.clone()),
        Value::Object(m) => {
            for (k, x) in m {
                path.push(k.clone());
                numbers(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(i.to_string());
                numbers(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn at<'a>(v: &'a mut Value, path: &[String]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match v {
        Value::Array(a) => &mut a[k.parse::<usize>().unwrap()],
        other => &mut other[k.as_str()],
    })
}

#[test]
fn damaged_stores_open_or_fail_without_panicking() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good");
    let cfg = SynthConfig {
        d: 8,
        features: 16,
        rows: 300,
        mean_active: 2.0,
        shard_rows: Some(100),
        ..Default::default()
    };
    synthesize(&cfg, &good).unwrap();
    assert_eq!(read_all(&good), Ok(300));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(good.join("manifest.json")).unwrap())
            .unwrap();
    let mut paths = Vec::new();
    numbers(&manifest, &mut Vec::new(), &mut paths);
    let shard_name = manifest["shards"][1]["file"].as_str().unwrap().to_string();
    let shard = std::fs::read(good.join(&shard_name)).unwrap();

    let mut rng = Draw(Rng::new(7));
    let (mut opened, mut refused) = (0, 0);
    for i in 0..1500 {
        let dir = tmp.path().join("m");
        if dir.exists() {
            std::fs::remove_dir_all(&dir).unwrap();
        }
        std::fs::create_dir(&dir).unwrap();
        for f in std::fs::read_dir(&good).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, dir.join(f.file_name().unwrap())).unwrap();
        }
        let mut m = manifest.clone();
        if rng.below(2) == 0 {
            // A manifest number set to something else, or a field removed.
            let p = &paths[rng.below(paths.len())];
            let v = at(&mut m, p);
            *v = match rng.below(5) {
                0 => Value::from(0),
                1 => Value::from(v.as_u64().unwrap_or(0) + 1),
                2 => Value::from(v.as_u64().unwrap_or(1).saturating_sub(1)),
                3 => Value::from(u64::MAX),
                _ => Value::Null,
            };
        } else {
            // Shard bytes changed (header first), manifest made to agree with them.
            let mut b = shard.clone();
            let span = if rng.below(3) == 0 {
                b.len()
            } else {
                b.len().min(256)
            };
            for _ in 0..1 + rng.below(3) {
                let k = rng.below(span.min(b.len()));
                if rng.below(5) == 0 {
                    b.truncate(k.max(1));
                } else {
                    b[k] = rng.next() as u8;
                }
            }
            std::fs::write(dir.join(&shard_name), &b).unwrap();
            m["shards"][1]["bytes"] = Value::from(b.len());
            m["shards"][1]["crc32"] = Value::from(crc32fast::hash(&b));
        }
        std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
        match catch_unwind(AssertUnwindSafe(|| read_all(&dir))) {
            Ok(Ok(_)) => opened += 1,
            Ok(Err(e)) => {
                assert!(!e.contains('\n'), "mutation {i}: {e}");
                refused += 1;
            }
            Err(_) => panic!("mutation {i} panicked: manifest {m}"),
        }
    }
    assert!(
        refused > 100 && opened > 0,
        "{opened} opened, {refused} refused"
    );
}
