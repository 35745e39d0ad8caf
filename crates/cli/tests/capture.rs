//! `lantern capture` end to end on SmolLM2-135M-Instruct (the GGUF from
//! `scripts/fetch-smollm2.sh`): every token once with its ids, positions and roles, activations
//! equal to a direct forward pass, kill-and-resume without lost or duplicated rows, and
//! one-line errors. Skipped without the model unless `LANTERN_REQUIRE_SMOLLM2=1`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use burn::tensor::Device;
use lantern_acts::Store;
use lantern_lm::{HookPoint, Hooks, LanguageModel, LogitsAt};

mod support;
use support::gguf;

const HOOK: &str = "blocks.3.hook_resid_post";

fn lantern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lantern"))
}

fn run(args: &[&str]) -> Output {
    lantern().args(args).output().expect("spawn lantern")
}

fn prompts(dir: &Path, n_text: usize) -> PathBuf {
    let mut lines = Vec::new();
    for i in 0..n_text {
        lines.push(serde_json::json!({"text": format!(
            "Record {i}: the quick brown fox jumps over the lazy dog while {} birds sing.", i * 7
        )}));
    }
    lines.push(serde_json::json!({"messages": [
        {"role": "user", "content": "Name a primary colour."},
        {"role": "assistant", "content": "Blue is a primary colour."}
    ]}));
    let path = dir.join("prompts.jsonl");
    let text: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();
    path
}

fn capture_args<'a>(model: &'a str, prompts: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "capture",
        "--model",
        model,
        "--prompts",
        prompts,
        "--hook",
        HOOK,
        "--batch",
        "3",
        "--shard-rows",
        "32",
        "--out",
        out,
    ]
}

/// Every row of a store in order: (acts, token, seq, position, role).
fn rows(store: &Path) -> Vec<(Vec<f32>, u32, u32, u32, u8)> {
    let s = Store::open(store).unwrap();
    let d = s.d_model();
    let mut out = Vec::new();
    for i in 0..s.num_shards() {
        let sh = s.shard(i).unwrap();
        for r in 0..sh.rows() {
            let mut acts = vec![0.0; d];
            sh.row_f32(r, &mut acts);
            out.push((
                acts,
                sh.token_id(r),
                sh.seq_id(r),
                sh.position(r),
                sh.role(r).unwrap_or(255),
            ));
        }
    }
    out
}

#[test]
fn capture_stores_every_token_once_with_roles_and_the_forward_activations() {
    let Some(model) = gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let p = prompts(tmp.path(), 4);
    let out = tmp.path().join("store");
    let o = run(&capture_args(
        model.to_str().unwrap(),
        p.to_str().unwrap(),
        out.to_str().unwrap(),
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let got = rows(&out);

    let lm = LanguageModel::load(&model, &Device::flex()).unwrap();
    let text = std::fs::read_to_string(&p).unwrap();
    let mut expected_rows = 0;
    for (seq, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let (ids, roles) = match v.get("text") {
            Some(t) => {
                let ids = lm.encode(t.as_str().unwrap()).unwrap();
                let n = ids.len();
                (ids, vec![0u8; n])
            }
            None => {
                let m = vec![
                    lantern_lm::chat::Message::new("user", "Name a primary colour."),
                    lantern_lm::chat::Message::new("assistant", "Blue is a primary colour."),
                ];
                let c = lm.encode_chat(&m, false).unwrap();
                (c.ids, c.roles)
            }
        };
        // The direct forward pass of this sequence alone.
        let mut hooks = Hooks::new();
        let point: HookPoint = HOOK.parse().unwrap();
        hooks.capture(point);
        let acts = lm
            .model
            .forward(
                &ids,
                &[vec![true; ids.len()]],
                None,
                &mut hooks,
                LogitsAt::Skip,
            )
            .unwrap()
            .captures
            .take_one(point)
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap();
        let d = lm.model.config().d_model;
        let mine: Vec<_> = got.iter().filter(|r| r.2 == seq as u32).collect();
        assert_eq!(mine.len(), ids.len(), "record {seq}: one row per token");
        for (t, r) in mine.iter().enumerate() {
            assert_eq!(
                (r.1, r.3, r.4),
                (ids[t], t as u32, roles[t]),
                "record {seq} token {t}"
            );
            let want = &acts[t * d..(t + 1) * d];
            let err =
                r.0.iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
            let scale = want.iter().map(|a| a.abs()).fold(0.0, f32::max);
            assert!(
                err <= 1e-4 * (1.0 + scale),
                "record {seq} token {t}: differs by {err}"
            );
        }
        expected_rows += ids.len();
    }
    assert_eq!(got.len(), expected_rows);
    // The chat record marks exactly the answer (and its end-of-turn token) as role 1.
    let answer: Vec<u32> = got.iter().filter(|r| r.4 == 1).map(|r| r.1).collect();
    let answer_text = lm.tokenizer.decode(&answer, false).unwrap();
    assert!(
        answer_text.starts_with("Blue is a primary colour."),
        "{answer_text:?}"
    );
}

#[test]
fn capture_killed_midway_and_resumed_equals_an_uninterrupted_run() {
    let Some(model) = gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let p = prompts(tmp.path(), 40);
    let (m, ps) = (model.to_str().unwrap(), p.to_str().unwrap());
    let whole = tmp.path().join("whole");
    assert!(
        run(&capture_args(m, ps, whole.to_str().unwrap()))
            .status
            .success()
    );

    let cut = tmp.path().join("cut");
    let args = capture_args(m, ps, cut.to_str().unwrap());
    let total = Store::open(&whole).unwrap().rows();
    // Kill once at least two shards are committed. The whole capture takes a second or two,
    // so on a busy machine (the other tests of this binary run models on the same cores) this
    // thread can be scheduled too late, after the child has finished: then start over (a
    // fresh directory), up to five times.
    let mut before = total;
    for _ in 0..5 {
        let _ = std::fs::remove_dir_all(&cut);
        let mut child = lantern().args(&args).spawn().unwrap();
        let t = Instant::now();
        loop {
            let shards = std::fs::read_to_string(cut.join("manifest.json"))
                .ok()
                .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
                .and_then(|v| v["shards"].as_array().map(Vec::len))
                .unwrap_or(0);
            if shards >= 2 || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(t.elapsed() < Duration::from_secs(300));
            std::thread::sleep(Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        before = Store::open(&cut).unwrap().rows();
        if before < total {
            break;
        }
    }
    assert!(
        before < total,
        "the kill came after the capture had finished, five times"
    );
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (a, b) = (rows(&whole), rows(&cut));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!((x.1, x.2, x.3, x.4), (y.1, y.2, y.3, y.4));
        let err =
            x.0.iter()
                .zip(&y.0)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
        assert!(err <= 1e-5, "activations differ by {err}");
    }
    // Resuming with other prompts is refused.
    std::fs::write(&p, "{\"text\": \"something else\"}\n").unwrap();
    let o = run(&args);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("different prompts"),
        "{e}"
    );
}

#[test]
fn bad_capture_input_gives_one_line_errors() {
    let Some(model) = gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let m = model.to_str().unwrap();
    let bad = tmp.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"text\": \"ok\"}\n{\"txt\": 1}\n").unwrap();
    let out = tmp.path().join("o");
    let (bad, out) = (bad.to_str().unwrap(), out.to_str().unwrap());
    let with = |model, hook| {
        vec![
            "capture",
            "--model",
            model,
            "--prompts",
            bad,
            "--hook",
            hook,
            "--out",
            out,
        ]
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (capture_args(m, bad, out), "bad.jsonl:2"),
        (with(m, "blocks.30.hook_resid_post"), "out of range"),
        (with(m, "blocks.3.resid"), "unknown hook"),
        (with("/nonexistent.gguf", HOOK), "/nonexistent.gguf"),
    ];
    for (args, needle) in cases {
        let o = run(&args);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(
            e.contains(needle) && e.trim().lines().count() == 1,
            "{args:?}: {e}"
        );
    }
}

#[test]
fn labels_of_the_prompt_records_reach_the_store_per_sequence() {
    let Some(model) = gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let recs = [
        ("Bonjour, comment allez-vous ?", "french"),
        ("Hello, how are you?", "english"),
        ("Le chat dort sur le canapé.", "french"),
    ];
    let text: Vec<String> = recs
        .iter()
        .enumerate()
        .map(|(i, (t, l))| serde_json::json!({"text": t, "label": l, "id": i}).to_string())
        .collect();
    let p = tmp.path().join("p.jsonl");
    std::fs::write(&p, text.join("\n")).unwrap();
    let out = tmp.path().join("store");
    let o = run(&capture_args(
        model.to_str().unwrap(),
        p.to_str().unwrap(),
        out.to_str().unwrap(),
    ));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = Store::open(&out).unwrap();
    assert_eq!(s.labels(), ["french", "english"]);
    for i in 0..s.num_shards() {
        let sh = s.shard(i).unwrap();
        for r in 0..sh.rows() {
            let want = [0u8, 1, 0][sh.seq_id(r) as usize];
            assert_eq!(sh.label(r), Some(want), "row {r} of shard {i}");
        }
    }
    // Labelling some records and not others is refused, naming the line.
    std::fs::write(&p, format!("{}\n{{\"text\": \"unlabelled\"}}\n", text[0])).unwrap();
    let o = run(&capture_args(
        model.to_str().unwrap(),
        p.to_str().unwrap(),
        tmp.path().join("other").to_str().unwrap(),
    ));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("p.jsonl:2") && err.contains("label"),
        "{err}"
    );
}

#[test]
fn capture_does_not_resume_with_another_model_of_the_same_name() {
    // Issue 15: the record held the model's file name only, so a retrained model saved under
    // the same name resumed the store (rows 0–799 from one model, the rest from the other).
    let tmp = tempfile::tempdir().unwrap();
    // Three copies of the tiny Llama checkpoint (with a tokenizer), all named `model`; the
    // second gets one weight changed in its last bit.
    let (a, b, c) = (
        tmp.path().join("a/model"),
        tmp.path().join("b/model"),
        tmp.path().join("c/model"),
    );
    for m in [&a, &b, &c] {
        support::tiny_llama_with_tokenizer(m);
    }
    let shard = b.join("model-00002-of-00002.safetensors");
    let mut bytes = std::fs::read(&shard).unwrap();
    let header = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    bytes[8 + header + 40] ^= 1;
    std::fs::write(&shard, bytes).unwrap();

    let p = tmp.path().join("p.jsonl");
    std::fs::write(&p, "{\"text\": \"A(B)C\"}\n{\"text\": \"X;Y;Z=1\"}\n").unwrap();
    let out = tmp.path().join("store");
    let args = |m: &Path| -> Vec<String> {
        [
            "capture",
            "--model",
            m.to_str().unwrap(),
            "--prompts",
            p.to_str().unwrap(),
            "--hook",
            "blocks.0.hook_resid_post",
            "--out",
            out.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let o = lantern().args(args(&a)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = lantern().args(args(&b)).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("different model (contents"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    // The same weights under another path are the same model: the run resumes (nothing left).
    let o = lantern().args(args(&c)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}
