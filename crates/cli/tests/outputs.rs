//! Issue 15 §1, the data-loss reproductions, through the `lantern` binary:
//! - `acts export STORE --out STORE/<a file of the store>` is refused and the store survives;
//! - the final SAE save killed at each rename, fsync, link, mkdir and unlink in turn (strace
//!   fault injection) leaves the old SAE or the new one, never one's `cfg.json` beside the
//!   other's weights;
//! - a second `sae train` with the same `--out` fails at once naming the first's pid;
//! - a store is never created in a directory holding other files (shards without a manifest, a
//!   leftover `ground_truth.safetensors`), which stay untouched.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;
use support::{kill_after, lantern, organism_model, run_err, run_ok};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn synth(dir: &Path, name: &str) -> PathBuf {
    synth_sized(dir, name, "16", "64", "20000", "5")
}

/// `acts synth` into `dir/name`: rows of width `d` from `features` features.
fn synth_sized(dir: &Path, name: &str, d: &str, features: &str, rows: &str, seed: &str) -> PathBuf {
    let store = dir.join(name);
    run_ok(&[
        "acts",
        "synth",
        "--d",
        d,
        "--features",
        features,
        "--rows",
        rows,
        "--seed",
        seed,
        "--out",
        s(&store),
    ]);
    store
}

/// Every file of `dir` (not recursive; the output lock left out) with its bytes.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file() && e.file_name() != ".lantern.lock")
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn export_into_the_store_is_refused_and_the_store_survives() {
    let tmp = tempfile::tempdir().unwrap();
    let store = synth(tmp.path(), "acts");
    let before = snapshot(&store);
    for target in ["shard-00000.safetensors", "manifest.json", "new.npy"] {
        let e = run_err(&["acts", "export", s(&store), "--out", s(&store.join(target))]);
        assert!(e.contains("would overwrite the input store"), "{e}");
    }
    assert!(snapshot(&store) == before, "the store changed");
    run_ok(&["acts", "info", s(&store), "--verify"]);
    // Elsewhere it works, and leaves no temporary file behind.
    let npy = tmp.path().join("out/acts.npy");
    std::fs::create_dir_all(npy.parent().unwrap()).unwrap();
    run_ok(&["acts", "export", s(&store), "--out", s(&npy)]);
    assert_eq!(std::fs::read_dir(npy.parent().unwrap()).unwrap().count(), 1);
}

fn train(store: &Path, out: &Path, arch: &[&str], steps: &str) -> Vec<String> {
    let mut v: Vec<String> = ["sae", "train", "--acts", s(store)]
        .iter()
        .chain(arch)
        .chain(&[
            "--d-sae",
            "32",
            "--steps",
            steps,
            "--batch",
            "256",
            "--eval-rows",
            "2000",
            "--quiet",
            "--out",
            s(out),
        ])
        .map(|x| x.to_string())
        .collect();
    v.shrink_to_fit();
    v
}

const UNIT: [&str; 3] = [
    "cfg.json",
    "sae_weights.safetensors",
    "sparsity.safetensors",
];

#[test]
fn an_sae_save_killed_at_any_step_leaves_the_old_sae_or_the_new_one() {
    if Command::new("strace").arg("-V").output().is_err() {
        // .ci/run installs strace; a developer machine without it skips this one test.
        assert!(std::env::var("CI").is_err(), "strace is missing in CI");
        eprintln!("skipping: strace not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let store = synth(tmp.path(), "acts");
    let old_dir = tmp.path().join("old");
    let a = train(&store, &old_dir, &["--arch", "relu"], "20");
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let old = snapshot(&old_dir);
    let unit_of = |snap: &[(String, Vec<u8>)]| -> Vec<Vec<u8>> {
        UNIT.iter()
            .map(|f| {
                snap.iter()
                    .find(|x| x.0 == *f)
                    .map(|x| x.1.clone())
                    .unwrap_or_default()
            })
            .collect()
    };
    let old_unit = unit_of(&old);
    let out = tmp.path().join("sae");
    let b = train(&store, &out, &["--arch", "topk", "--k", "4"], "20");
    // Each step of a save, killed at its 1st, 2nd, ... call until the run gets through.
    for syscalls in [
        "rename,renameat,renameat2",
        "fsync,fdatasync",
        "linkat,link",
        "mkdir,mkdirat",
        "unlink,unlinkat,rmdir",
    ] {
        let mut completed = false;
        for when in 1..=40 {
            // The output as the first run left it.
            let _ = std::fs::remove_dir_all(&out);
            std::fs::create_dir_all(&out).unwrap();
            for (name, bytes) in &old {
                std::fs::write(out.join(name), bytes).unwrap();
            }
            let status = Command::new("strace")
                .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                .arg(format!("trace={syscalls}"))
                .arg("-e")
                .arg(format!("inject={syscalls}:signal=KILL:when={when}"))
                .arg(env!("CARGO_BIN_EXE_lantern"))
                .args(&b)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            let now = unit_of(&snapshot(&out));
            let cfg = String::from_utf8_lossy(&now[0]).into_owned();
            eprintln!(
                "kill at {syscalls} #{when}: {status}; the {} SAE",
                if now == old_unit { "old" } else { "new" }
            );
            if now == old_unit {
                assert!(
                    !status.success(),
                    "when={when}: a finished run left the old SAE"
                );
            } else {
                // The new SAE, whole: a TopK cfg and none of the old unit's files.
                assert!(
                    cfg.contains("\"topk\""),
                    "when={when}: cfg.json is not the new one:\n{cfg}"
                );
                for (i, f) in UNIT.iter().enumerate() {
                    assert!(
                        now[i] != old_unit[i],
                        "when={when}: {f} is still the old one beside a new cfg.json"
                    );
                }
                run_ok(&["sae", "info", s(&out)]);
            }
            if status.success() {
                completed = true;
                break;
            }
        }
        assert!(
            completed,
            "{syscalls}: the run never got past the injected kills"
        );
    }
    // Nothing left beside the output but the other directories of this test.
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sae."))
        .collect();
    names.sort();
    // A kill after the exchange leaves the old directory under its staging name; the next save
    // of the same output removes every such leftover of a process that is gone.
    assert!(names.is_empty(), "{names:?}");
}

#[test]
fn a_second_training_into_the_same_output_is_refused_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let store = synth(tmp.path(), "acts");
    let out = tmp.path().join("sae");
    let first_args = train(&store, &out, &["--arch", "relu"], "1000000");
    let mut first = lantern()
        .args(&first_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lock = out.join(".lantern.lock");
    let t = Instant::now();
    while std::fs::read_to_string(&lock).map_or(true, |p| p.trim().is_empty()) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the first run never locked {lock:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = train(&store, &out, &["--arch", "topk", "--k", "4"], "5");
    let t = Instant::now();
    let e = run_err(&second.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "the second run waited"
    );
    assert!(
        e.contains("in use by another lantern process")
            && e.contains(&format!("pid {}", first.id())),
        "{e}"
    );
    first.kill().unwrap();
    first.wait().unwrap();
    // The kernel released the lock with the process: the output is usable again.
    run_ok(&second.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn a_store_is_never_created_over_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let store = synth(tmp.path(), "acts");
    let npy = tmp.path().join("acts.npy");
    run_ok(&["acts", "export", s(&store), "--out", s(&npy)]);
    // Shard files without a manifest: someone's data, not a stray of ours.
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::copy(
        store.join("shard-00000.safetensors"),
        foreign.join("shard-00000.safetensors"),
    )
    .unwrap();
    let before = snapshot(&foreign);
    let e = run_err(&["acts", "import", s(&npy), "--out", s(&foreign)]);
    assert!(
        e.contains("not empty") && e.contains("shard-00000.safetensors"),
        "{e}"
    );
    assert!(snapshot(&foreign) == before, "the foreign files changed");
    // A leftover ground truth is not adopted by a new synthetic store.
    let left = tmp.path().join("left");
    std::fs::create_dir_all(&left).unwrap();
    std::fs::write(left.join("ground_truth.safetensors"), b"old truth").unwrap();
    let e = run_err(&[
        "acts",
        "synth",
        "--d",
        "16",
        "--features",
        "64",
        "--rows",
        "1000",
        "--out",
        s(&left),
    ]);
    assert!(
        e.contains("not empty") && e.contains("ground_truth.safetensors"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(left.join("ground_truth.safetensors")).unwrap(),
        b"old truth"
    );
    // An empty directory (or one holding only our lock) is fine.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    run_ok(&["acts", "import", s(&npy), "--out", s(&empty)]);
}

/// Unmounts a test's tmpfs when the test ends, however it ends.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A 1 MiB tmpfs at `at`, or `None` (with a note) where this machine does not let the test
/// mount one.
fn small_tmpfs(at: &Path) -> Option<Mounted> {
    std::fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(at)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping: cannot mount a tmpfs here (needs root)");
    }
    ok.then(|| Mounted(at.to_path_buf()))
}

/// Remounts the test's tmpfs with `options` (`ro`, `size=16m`).
fn remount(at: &Path, options: &str) {
    let ok = Command::new("mount")
        .args(["-o", &format!("remount,{options}")])
        .arg(at)
        .status()
        .unwrap();
    assert!(ok.success(), "remount {options}");
}

#[test]
fn a_full_disk_fails_the_run_on_one_line_and_keeps_the_old_sae() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    let Some(_mounted) = small_tmpfs(&mnt) else {
        return;
    };
    let store = synth(tmp.path(), "acts");
    let old_dir = tmp.path().join("old");
    let a = train(&store, &old_dir, &["--arch", "relu"], "20");
    run_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let out = mnt.join("sae");
    std::fs::create_dir_all(&out).unwrap();
    for (name, bytes) in snapshot(&old_dir) {
        std::fs::write(out.join(name), bytes).unwrap();
    }
    let old = snapshot(&out);
    // Fill the file system to the last byte.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(mnt.join("fill")).unwrap();
        let chunk = vec![7u8; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let b = train(&store, &out, &["--arch", "topk", "--k", "4"], "20");
    let o = lantern().args(&b).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a run on a full disk succeeded");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(snapshot(&out) == old, "the old SAE changed");
    // No staging directory or temporary file is left to fill the disk further.
    let left: Vec<String> = std::fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "sae" && n != "fill")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_read_only_output_fails_on_one_line_and_leaves_the_inputs_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("ro");
    let Some(_mounted) = small_tmpfs(&mnt) else {
        return;
    };
    let store = synth(tmp.path(), "acts");
    let before = snapshot(&store);
    remount(&mnt, "ro");
    let sae = mnt.join("sae");
    let b = train(&store, &sae, &["--arch", "topk", "--k", "4"], "20");
    let e = run_err(&b.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("Read-only file system"), "{e}");
    let e = run_err(&["acts", "export", s(&store), "--out", s(&mnt.join("a.npy"))]);
    assert!(e.contains("Read-only file system"), "{e}");
    let e = run_err(&[
        "acts",
        "synth",
        "--d",
        "8",
        "--features",
        "16",
        "--rows",
        "100",
        "--out",
        s(&mnt.join("s")),
    ]);
    assert!(e.contains("Read-only file system"), "{e}");
    // Import (a .npy written by export elsewhere) and capture (a tiny model) alike.
    let npy = tmp.path().join("a.npy");
    run_ok(&["acts", "export", s(&store), "--out", s(&npy)]);
    let e = run_err(&["acts", "import", s(&npy), "--out", s(&mnt.join("imported"))]);
    assert!(e.contains("Read-only file system"), "{e}");
    let model = tmp.path().join("model");
    support::tiny_llama_with_tokenizer(&model);
    let prompts = tmp.path().join("p.jsonl");
    std::fs::write(&prompts, "{\"text\": \"hello world\"}\n").unwrap();
    let e = run_err(&[
        "capture",
        "--model",
        s(&model),
        "--prompts",
        s(&prompts),
        "--hook",
        "blocks.0.hook_resid_post",
        "--out",
        s(&mnt.join("captured")),
    ]);
    assert!(e.contains("Read-only file system"), "{e}");
    assert!(snapshot(&store) == before, "the input store changed");
}

#[test]
fn a_capture_that_fills_the_disk_stops_cleanly_and_resumes_once_there_is_room() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("small");
    let Some(_mounted) = small_tmpfs(&mnt) else {
        return;
    };
    // The organism's tiny word-level model (d 32): any text tokenizes within its vocabulary.
    let model =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../organism/tests/fixtures/transformers/chat");
    // ≈ 2.2 MB of activations: more than the 1 MiB file system holds.
    let prompts = tmp.path().join("p.jsonl");
    let text: String = (0..1000)
        .map(|i| {
            format!("{{\"text\": \"the quiet cat {i} sees the old river near a big stone\"}}\n")
        })
        .collect();
    std::fs::write(&prompts, text).unwrap();
    let args = |out: &Path| -> Vec<String> {
        [
            "capture",
            "--model",
            s(&model),
            "--prompts",
            s(&prompts),
            "--hook",
            "blocks.0.hook_resid_post",
            "--shard-rows",
            "1024",
            "--out",
            s(out),
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = tmp.path().join("whole");
    run_ok(&args(&whole).iter().map(String::as_str).collect::<Vec<_>>());
    let want = lantern_acts::Store::open(&whole).unwrap().rows();

    let cut = mnt.join("capture");
    let e = run_err(&args(&cut).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(e.contains("No space left on device"), "{e}");
    // What was committed is a consistent store, short of the whole.
    run_ok(&["acts", "info", s(&cut), "--verify"]);
    let partial = lantern_acts::Store::open(&cut).unwrap().rows();
    assert!(partial > 0 && partial < want, "{partial} of {want} rows");

    remount(&mnt, "size=16m");
    run_ok(&args(&cut).iter().map(String::as_str).collect::<Vec<_>>());
    let (a, b) = (
        lantern_acts::Store::open(&whole).unwrap(),
        lantern_acts::Store::open(&cut).unwrap(),
    );
    assert_eq!(a.rows(), b.rows());
    let mut ra = vec![0.0f32; a.d_model()];
    let mut rb = vec![0.0f32; b.d_model()];
    let (mut i, mut j) = ((0, 0), (0, 0));
    for _ in 0..a.rows() {
        let (sa, sb) = (a.shard(i.0).unwrap(), b.shard(j.0).unwrap());
        sa.row_f32(i.1, &mut ra);
        sb.row_f32(j.1, &mut rb);
        assert_eq!(
            (ra.as_slice(), sa.token_id(i.1), sa.seq_id(i.1)),
            (rb.as_slice(), sb.token_id(j.1), sb.seq_id(j.1))
        );
        i.1 += 1;
        if i.1 == sa.rows() {
            i = (i.0 + 1, 0);
        }
        j.1 += 1;
        if j.1 == sb.rows() {
            j = (j.0 + 1, 0);
        }
    }
}

#[test]
fn an_export_killed_at_any_moment_leaves_no_file_or_the_whole_one_and_no_litter() {
    let tmp = tempfile::tempdir().unwrap();
    let store = synth_sized(tmp.path(), "big", "64", "128", "200000", "3");
    let reference = tmp.path().join("ref.npy");
    run_ok(&["acts", "export", s(&store), "--out", s(&reference)]);
    let want = std::fs::read(&reference).unwrap();
    let out_dir = tmp.path().join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("acts.npy");
    let mut seen_partial_run = false;
    for delay_ms in [2u64, 5, 10, 20, 40, 80, 160] {
        seen_partial_run |= kill_after(
            &["acts", "export", s(&store), "--out", s(&out)],
            Duration::from_millis(delay_ms),
        );
        if out.exists() {
            assert!(
                std::fs::read(&out).unwrap() == want,
                "a partial acts.npy after {delay_ms} ms"
            );
        }
        let _ = std::fs::remove_file(&out);
    }
    assert!(
        seen_partial_run,
        "every export finished before its kill; make the store larger"
    );
    // The next export removes what killed ones left and writes the whole file.
    run_ok(&["acts", "export", s(&store), "--out", s(&out)]);
    let names: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["acts.npy"]);
    assert!(std::fs::read(&out).unwrap() == want);
}

/// `acts import` killed at any moment leaves no store or the whole one (it is written beside
/// `--out` and swapped in), and the next import clears the leftover stage and completes.
#[test]
fn an_import_killed_at_any_moment_leaves_no_store_or_the_whole_one_and_a_rerun_completes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = synth_sized(tmp.path(), "big", "64", "128", "200000", "4");
    let source = tmp.path().join("rows.npy");
    run_ok(&["acts", "export", s(&store), "--out", s(&source)]);
    let want = std::fs::read(&source).unwrap();
    let parent = tmp.path().join("imports");
    std::fs::create_dir_all(&parent).unwrap();
    let out = parent.join("store");
    let back = tmp.path().join("back.npy");
    let mut seen_partial_run = false;
    for delay_ms in [2u64, 5, 10, 20, 40, 80, 160, 320] {
        seen_partial_run |= kill_after(
            &["acts", "import", s(&source), "--out", s(&out)],
            Duration::from_millis(delay_ms),
        );
        if out.join("manifest.json").exists() {
            // The whole store or nothing: it verifies and holds every row.
            run_ok(&["acts", "info", s(&out), "--verify"]);
            let _ = std::fs::remove_file(&back);
            run_ok(&["acts", "export", s(&out), "--out", s(&back)]);
            assert!(
                std::fs::read(&back).unwrap() == want,
                "a partial store after {delay_ms} ms"
            );
        } else if out.exists() {
            let names: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                names.iter().all(|n| n == ".lantern.lock"),
                "killed after {delay_ms} ms, --out holds {names:?}"
            );
        }
        let _ = std::fs::remove_dir_all(&out);
    }
    assert!(
        seen_partial_run,
        "every import finished before its kill; make the source larger"
    );
    // A run killed midway, then a rerun into the same --out: it completes, and no stage is
    // left beside it.
    kill_after(
        &["acts", "import", s(&source), "--out", s(&out)],
        Duration::from_millis(40),
    );
    if out.join("manifest.json").exists() {
        std::fs::remove_dir_all(&out).unwrap();
    }
    run_ok(&["acts", "import", s(&source), "--out", s(&out)]);
    let names: Vec<String> = std::fs::read_dir(&parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["store"]);
    let _ = std::fs::remove_file(&back);
    run_ok(&["acts", "export", s(&out), "--out", s(&back)]);
    assert!(std::fs::read(&back).unwrap() == want);
}

/// What a path holds: nothing, one file's bytes, or a directory's files (name, bytes).
#[derive(Debug, PartialEq)]
enum Held {
    Nothing,
    File(Vec<u8>),
    Dir(Vec<(String, Vec<u8>)>),
}

fn held(path: &Path) -> Held {
    if path.is_dir() {
        Held::Dir(snapshot(path))
    } else if path.exists() {
        Held::File(canonical(path, std::fs::read(path).unwrap()))
    } else {
        Held::Nothing
    }
}

/// A safetensors file's header JSON with its keys sorted (the `__metadata__` map is written
/// in hash order, so two runs differ in bytes but not in content), then its data; other files
/// as they are. A truncated file stays as it is, so it still compares unequal.
fn canonical(path: &Path, bytes: Vec<u8>) -> Vec<u8> {
    if path.extension().is_none_or(|e| e != "safetensors") || bytes.len() < 8 {
        return bytes;
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let Some(header) = bytes.get(8..8 + n) else {
        return bytes;
    };
    let Ok(v) =
        serde_json::from_slice::<std::collections::BTreeMap<String, serde_json::Value>>(header)
    else {
        return bytes;
    };
    let sorted: std::collections::BTreeMap<String, serde_json::Value> = v
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                serde_json::Value::Object(m) => serde_json::to_value(
                    m.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                )
                .unwrap(),
                v => v,
            };
            (k, v)
        })
        .collect();
    let mut out = serde_json::to_vec(&sorted).unwrap();
    out.extend_from_slice(&bytes[8 + n..]);
    out
}

/// The HF-directory, direction-file and GGUF writers killed (strace) at each rename, fsync,
/// link, mkdir and unlink in turn: the output is absent or whole after every kill, and the run
/// that gets through leaves nothing else beside it (what killed runs left is cleared).
#[test]
fn writers_killed_at_any_step_leave_no_output_or_the_whole_one() {
    if Command::new("strace").arg("-V").output().is_err() {
        assert!(std::env::var("CI").is_err(), "strace is missing in CI");
        eprintln!("skipping: strace not installed");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Inputs: the organism's chat model (a small HF directory with a tokenizer), two stores
    // at a real hook, a direction file.
    let model = organism_model(&tmp.path().join("cache"), "chat");
    let mut stores = Vec::new();
    for (name, seed) in [("pos", "5"), ("neg", "6")] {
        // Rows of the organism's width (64).
        let synth_dir = synth_sized(
            tmp.path(),
            &format!("{name}-synth"),
            "64",
            "128",
            "2000",
            seed,
        );
        let npy = tmp.path().join(format!("{name}.npy"));
        run_ok(&["acts", "export", s(&synth_dir), "--out", s(&npy)]);
        let store = tmp.path().join(name);
        run_ok(&[
            "acts",
            "import",
            s(&npy),
            "--hook",
            "blocks.1.hook_resid_post",
            "--out",
            s(&store),
        ]);
        stores.push(store);
    }
    let direction = tmp.path().join("direction.safetensors");
    run_ok(&[
        "direction",
        "--pos",
        s(&stores[0]),
        "--neg",
        s(&stores[1]),
        "--out",
        s(&direction),
    ]);
    let cases: Vec<(&str, Vec<String>, PathBuf)> = {
        let out = |name: &str| tmp.path().join(format!("out-{name}")).join(name);
        let (hf, dir, gguf) = (out("model"), out("dir.safetensors"), out("cvec.gguf"));
        vec![
            (
                "model export (HF directory)",
                ["model", "export", "--model", s(&model), "--out", s(&hf)]
                    .map(String::from)
                    .to_vec(),
                hf.clone(),
            ),
            (
                "direction file",
                [
                    "direction",
                    "--pos",
                    s(&stores[0]),
                    "--neg",
                    s(&stores[1]),
                    "--out",
                    s(&dir),
                ]
                .map(String::from)
                .to_vec(),
                dir.clone(),
            ),
            (
                "control vector (GGUF)",
                [
                    "cvec",
                    "export",
                    "--direction",
                    s(&direction),
                    "--model",
                    s(&model),
                    "--out",
                    s(&gguf),
                ]
                .map(String::from)
                .to_vec(),
                gguf.clone(),
            ),
        ]
    };
    for (what, args, out) in &cases {
        let parent = out.parent().unwrap();
        std::fs::create_dir_all(parent).unwrap();
        run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let whole = held(out);
        assert_ne!(whole, Held::Nothing, "{what}: no output");
        let mut kills = 0;
        for syscalls in [
            "rename,renameat,renameat2",
            "fsync,fdatasync",
            "linkat,link",
            "mkdir,mkdirat",
            "unlink,unlinkat,rmdir",
        ] {
            for when in 1..=40 {
                if out.is_dir() {
                    std::fs::remove_dir_all(out).unwrap();
                } else if out.exists() {
                    std::fs::remove_file(out).unwrap();
                }
                let status = Command::new("strace")
                    .args(["-f", "-qq", "-o", "/dev/null", "-e"])
                    .arg(format!("trace={syscalls}"))
                    .arg("-e")
                    .arg(format!("inject={syscalls}:signal=KILL:when={when}"))
                    .arg(env!("CARGO_BIN_EXE_lantern"))
                    .args(args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .unwrap();
                let now = held(out);
                assert!(
                    now == Held::Nothing || now == whole,
                    "{what}: killed at {syscalls} #{when} ({status}), the output is partial"
                );
                if status.success() {
                    break;
                }
                kills += 1;
            }
        }
        assert!(kills > 0, "{what}: no kill landed");
        // A run after the kills: the whole output and nothing else in its directory.
        if out.is_dir() {
            std::fs::remove_dir_all(out).unwrap();
        } else if out.exists() {
            std::fs::remove_file(out).unwrap();
        }
        run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(held(out), whole, "{what}");
        let names: Vec<String> = std::fs::read_dir(parent)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".lantern.lock")
            .collect();
        // The direction command also writes its summary (`NAME.json`, atomically on its own).
        let mut names = names;
        names.sort();
        let main = out.file_name().unwrap().to_string_lossy().into_owned();
        let want: Vec<String> = match main.strip_suffix(".safetensors") {
            Some(stem) if *what == "direction file" => vec![main.clone(), format!("{stem}.json")],
            _ => vec![main.clone()],
        };
        let mut want = want;
        want.sort();
        assert_eq!(names, want, "{what}: litter beside the output");
    }
}
