//! Steering commands end to end through the `lantern` binary: `orthogonalize` on
//! SmolLM2-135M-Instruct equals hook ablation of the same direction (skipped without the model
//! unless `LANTERN_REQUIRE_SMOLLM2=1`), `cvec export|import` maps layers as llama.cpp does, and
//! bad input gets one-line errors.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

use burn::tensor::Device;
use lantern_lm::{HookPoint, Hooks, LanguageModel, LogitsAt, Model};
use lantern_search::directions::{DirectionMeta, Directions};

mod support;
use support::gguf;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lantern"))
        .args(args)
        .output()
        .expect("spawn lantern")
}

fn run_ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "lantern {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_err(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "lantern {args:?} succeeded");
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert_eq!(err.lines().count(), 1, "not one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A direction file with pseudo-random vectors at `layers` of `site`.
fn write_direction(path: &Path, site: &str, layers: &[usize], d: usize) -> Directions {
    let layers: BTreeMap<usize, Vec<f32>> = layers
        .iter()
        .map(|&l| {
            let v = (0..d)
                .map(|i| ((i * 7 + l * 13) as f32 * 0.618).sin())
                .collect();
            (l, v)
        })
        .collect();
    let d = Directions {
        layers,
        meta: DirectionMeta {
            hook: site.into(),
            method: "test".into(),
            ..Default::default()
        },
    };
    d.write(path).unwrap();
    d
}

fn logits(model: &Model, ids: &[u32], hooks: &mut Hooks<'_>) -> Vec<f32> {
    let real = vec![vec![true; ids.len()]];
    model
        .forward(ids, &real, None, hooks, LogitsAt::All)
        .unwrap()
        .logits
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap()
}

#[test]
fn orthogonalized_smollm2_gives_the_hook_ablation_logits() {
    let Some(model) = gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("r.safetensors");
    let r = write_direction(&dir, "resid_pre", &[12], 576).layers[&12].clone();
    let out = tmp.path().join("orth");
    run_ok(&[
        "orthogonalize",
        "--model",
        s(&model),
        "--direction",
        s(&dir),
        "--out",
        s(&out),
    ]);
    let dev = Device::flex();
    let base = LanguageModel::load(&model, &dev).unwrap();
    let ids = base
        .encode("The quick brown fox jumps over the lazy dog, and then")
        .unwrap();
    let mut hooks = Hooks::new();
    for l in 0..base.model.config().n_layers {
        for p in [
            HookPoint::ResidPre(l),
            HookPoint::AttnOut(l),
            HookPoint::MlpOut(l),
        ] {
            hooks.project_out(p, r.clone(), None);
        }
    }
    let ablated = logits(&base.model, &ids, &mut hooks);
    let plain = logits(&base.model, &ids, &mut Hooks::new());
    let orth = LanguageModel::load(&out, &dev).unwrap();
    let edited = logits(&orth.model, &ids, &mut Hooks::new());
    let max = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max)
    };
    let err = max(&ablated, &edited);
    let moved = max(&plain, &edited);
    eprintln!(
        "max |Δlogit| hook vs weights {err:.2e}; the ablation itself moves logits by {moved:.3}"
    );
    // Measured 8.7e-5 (2026-12-02); the bound is 1e-4, with headroom for other CPUs.
    assert!(err < 2e-4, "hook ablation vs orthogonalized weights: {err}");
    assert!(
        moved > 100.0 * err,
        "the ablation should change the logits: {moved}"
    );
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("orthogonalize.json")).unwrap())
            .unwrap();
    assert_eq!(meta["changed"].as_array().unwrap().len(), 1 + 2 * 30);
    let wide = tmp.path().join("wide.safetensors");
    write_direction(&wide, "resid_post", &[3], 577);
    let e = run_err(&[
        "orthogonalize",
        "--model",
        s(&model),
        "--direction",
        s(&wide),
        "--out",
        s(&tmp.path().join("o")),
    ]);
    assert!(e.contains("d_model is 576"), "{e}");
    let e = run_err(&[
        "orthogonalize",
        "--model",
        s(&model),
        "--direction",
        s(&dir),
        "--layer",
        "40",
        "--out",
        s(&tmp.path().join("o")),
    ]);
    assert!(e.contains("no layer 40"), "{e}");
}

#[test]
fn cvec_export_maps_sites_to_llama_cpp_indices_and_import_reads_them_back() {
    let tmp = tempfile::tempdir().unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lm/tests/fixtures/parity/llama_gqa");
    let cfg = Model::load(&model, &Device::flex())
        .unwrap()
        .config()
        .clone();
    let d = cfg.d_model;
    let pre = tmp.path().join("post.safetensors");
    let dirs = write_direction(&pre, "resid_post", &[0, 1], d);
    let gguf_out = tmp.path().join("v.gguf");
    // resid_post 0 would be direction.0, which llama.cpp cannot hold.
    let e = run_err(&[
        "cvec",
        "export",
        "--direction",
        s(&pre),
        "--model",
        s(&model),
        "--out",
        s(&gguf_out),
    ]);
    assert!(e.contains("layer 0") && e.contains("control vector"), "{e}");
    run_ok(&[
        "cvec",
        "export",
        "--direction",
        s(&pre),
        "--model",
        s(&model),
        "--scale",
        "2",
        "--skip-unrepresentable",
        "--out",
        s(&gguf_out),
    ]);
    let back = tmp.path().join("back.safetensors");
    run_ok(&["cvec", "import", "--cvec", s(&gguf_out), "--out", s(&back)]);
    let got = Directions::read(&back, None).unwrap();
    // resid_post 1 = the output of block 1 = direction.1.
    assert_eq!(got.layers.keys().copied().collect::<Vec<_>>(), [1]);
    assert_eq!(got.meta.hook, "resid_post");
    let want: Vec<f32> = dirs.layers[&1].iter().map(|x| x * 2.0).collect();
    assert_eq!(got.layers[&1], want);
    let e = run_err(&[
        "cvec",
        "export",
        "--direction",
        s(&pre),
        "--model",
        s(&tmp.path().join("nope")),
        "--out",
        s(&gguf_out),
    ]);
    assert!(e.contains("nope"), "{e}");
    // A direction of another width.
    let wide = tmp.path().join("wide.safetensors");
    write_direction(&wide, "resid_post", &[1], d + 1);
    let e = run_err(&[
        "cvec",
        "export",
        "--direction",
        s(&wide),
        "--model",
        s(&model),
        "--out",
        s(&gguf_out),
    ]);
    assert!(e.contains("d_model"), "{e}");
}

#[test]
fn steer_baseline_rows_are_plain_generations_and_bad_input_gets_one_line() {
    let Some(model) = gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"text\": \"The capital of France is\", \"id\": \"fr\"}\n{\"text\": \"My favourite food is\"}\n",
    )
    .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../steer/tests/fixtures/llama_cpp/direction.safetensors");
    let out = tmp.path().join("out");
    run_ok(&[
        "steer",
        "--model",
        s(&model),
        "--direction",
        s(&dir),
        "--layer",
        "10",
        "--alpha",
        "12",
        "--prompts",
        s(&prompts),
        "--max-new-tokens",
        "8",
        "--judge",
        "keyword:Paris",
        "--out",
        s(&out),
    ]);
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(out.join("generations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 2 prompts × (the baseline added, 12).
    assert_eq!(lines.len(), 4);
    for (i, p) in ["The capital of France is", "My favourite food is"]
        .iter()
        .enumerate()
    {
        let plain = run_ok(&[
            "generate",
            "--model",
            s(&model),
            "--prompt",
            p,
            "--max-new-tokens",
            "8",
        ]);
        let base = &lines[2 * i];
        assert_eq!(base["strength"], 0.0);
        assert_eq!(base["text"].as_str().unwrap().trim(), plain.trim(), "{p}");
        assert_ne!(
            lines[2 * i + 1]["text"],
            base["text"],
            "{p}: steering changed nothing"
        );
    }
    let res: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    let c0 = &res["conditions"][0]["judges"]["keyword:Paris"];
    assert_eq!(
        (c0["n"].as_u64(), c0["hits"].as_u64()),
        (Some(2), Some(1)),
        "{c0}"
    );
    assert!(out.join("dose_response.png").exists() && out.join("results.csv").exists());

    let base = [
        "steer",
        "--model",
        s(&model),
        "--prompts",
        s(&prompts),
        "--out",
        s(&out),
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter().chain(extra).map(|x| x.to_string()).collect()
    };
    let err = |extra: &[&str]| {
        let args = with(extra);
        run_err(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let e = err(&["--direction", s(&dir), "--layer", "40", "--alpha", "1"]);
    assert!(e.contains("no layer 40"), "{e}");
    let e = err(&["--direction", s(&dir), "--mode", "ablate", "--alpha", "2"]);
    assert!(e.contains("β ∈ [0, 1]"), "{e}");
    let e = err(&["--direction", s(&dir), "--alpha", "1", "--unit", "furlongs"]);
    assert!(e.contains("--unit") && e.contains("median-norm"), "{e}");
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let e = run_err(&[
        "steer",
        "--model",
        s(&model),
        "--direction",
        s(&dir),
        "--alpha",
        "1",
        "--prompts",
        s(&empty),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("no records"), "{e}");
    let wide = tmp.path().join("wide.safetensors");
    write_direction(&wide, "resid_post", &[3], 577);
    let e = err(&["--direction", s(&wide), "--alpha", "1"]);
    assert!(e.contains("d_model is 576"), "{e}");
}

#[test]
fn ablate_writes_the_table_and_weight_space_equals_arditi_points() {
    let Some(model) = gguf() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let prompts = tmp.path().join("p.jsonl");
    std::fs::write(
        &prompts,
        "{\"text\": \"The capital of France is\"}\n{\"text\": \"My favourite food is\"}\n",
    )
    .unwrap();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../steer/tests/fixtures/llama_cpp/direction.safetensors");
    let out = tmp.path().join("abl");
    run_ok(&[
        "ablate",
        "--model",
        s(&model),
        "--direction",
        s(&dir),
        "--layer",
        "10",
        "--points",
        "arditi",
        "--prompts",
        s(&prompts),
        "--neutral",
        s(&prompts),
        "--max-new-tokens",
        "6",
        "--judge",
        "keyword:Paris",
        "--out",
        s(&out),
    ]);
    let res: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("ablation.json")).unwrap()).unwrap();
    let rows = res["rows"].as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["condition"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "baseline",
            "all layers",
            "layer 10 only",
            "random direction, all layers",
            "weight space (orthogonalized)"
        ]
    );
    assert_eq!(rows[0]["kl"], 0.0);
    // Ablation at every block input, attention and MLP output is the orthogonalized model:
    // the same KL and CE on the neutral text, and the same judged texts.
    let (kl_h, kl_w) = (
        rows[1]["kl"].as_f64().unwrap(),
        rows[4]["kl"].as_f64().unwrap(),
    );
    assert!(
        kl_h > 0.0 && (kl_h - kl_w).abs() < 1e-4 * (1.0 + kl_h),
        "{kl_h} vs {kl_w}"
    );
    let gens: Vec<serde_json::Value> = std::fs::read_to_string(out.join("generations.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts = |c: &str| -> Vec<String> {
        gens.iter()
            .filter(|g| g["condition"] == c)
            .map(|g| g["text"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(texts("all layers"), texts("weight space (orthogonalized)"));
    let md = std::fs::read_to_string(out.join("ablation.md")).unwrap();
    assert!(md.contains("| layer 10 only |"), "{md}");
}
