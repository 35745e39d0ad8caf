//! Feature search end to end through the `lantern` binary: a planted "persona" feature found
//! by `lantern diff` (ground truth), the French/English direction of SmolLM2-135M-Instruct
//! (probe accuracy, logit lens, per-layer comparison; skipped without the model unless
//! `LANTERN_REQUIRE_SMOLLM2=1`), and one-line errors for bad input.

use std::path::{Path, PathBuf};

use lantern_acts::{Dtype, GroundTruth, Rows, Store, StoreMeta, StoreWriter, WriterOptions};
use serde_json::Value;

mod support;
use support::{gguf, run_err, run_ok};

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The planted persona feature (index 128 of the dictionary) fires in 0.5 % of base rows and
/// 10 % of finetuned rows; three distractors rise from 1 % to 2–4 %. An SAE trained on base
/// rows only must have a latent for it, and `lantern diff` must rank that latent first.
/// (The dictionary has L0 ≈ 3 + planted; with k equal to the expected L0 a TopK SAE often
/// truncates a 0.5 % feature away and never learns it — measured in the issue notes.)
#[test]
fn diff_ranks_the_planted_persona_latent_first_in_three_seeds() {
    for seed in ["1", "2", "3"] {
        let tmp = tempfile::tempdir().unwrap();
        let (base, ft, sae, out) = (
            tmp.path().join("base"),
            tmp.path().join("ft"),
            tmp.path().join("sae"),
            tmp.path().join("diff"),
        );
        let synth = |dir: &Path, rows: &str, row_seed: &str, planted: &str| {
            run_ok(&[
                "acts",
                "synth",
                "--d",
                "64",
                "--features",
                "128",
                "--mean-active",
                "3",
                "--rows",
                rows,
                "--seed",
                seed,
                "--row-seed",
                row_seed,
                "--planted",
                planted,
                "--out",
                s(dir),
            ]);
        };
        synth(&base, "300000", "101", "0.005,0.01,0.01,0.01");
        synth(&ft, "100000", "202", "0.10,0.02,0.03,0.04");
        run_ok(&[
            "sae",
            "train",
            "--acts",
            s(&base),
            "--arch",
            "topk",
            "--k",
            "8",
            "--d-sae",
            "256",
            "--tokens",
            "3000000",
            "--batch",
            "1024",
            "--seed",
            seed,
            "--quiet",
            "--out",
            s(&sae),
        ]);
        run_ok(&[
            "diff",
            "--sae",
            s(&sae),
            "--base",
            s(&base),
            "--finetuned",
            s(&ft),
            "--bootstrap",
            "200",
            "--top",
            "10",
            "--out",
            s(&out),
        ]);
        let report = json(&out.join("diff.json"));
        let top = &report["latents"][0];
        let latent = top["latent"].as_u64().unwrap() as usize;
        let (w, _) = lantern_sae::load_sae(&sae).unwrap();
        let truth = GroundTruth::load(&base.join(lantern_acts::GROUND_TRUTH_FILE)).unwrap();
        let d = w.cfg.d_in;
        let persona = &truth.features[128 * d..129 * d];
        let row = &w.w_dec[latent * d..(latent + 1) * d];
        let cos = lantern_search::linalg::cosine(row, persona);
        assert!(
            cos >= 0.9,
            "seed {seed}: top latent {latent} has decoder cosine {cos} with the persona feature"
        );
        // Its interval excludes zero, and the rate difference is near the planted 9.5 points.
        let lo = top["ci95"][0].as_f64().unwrap();
        assert!(lo > 0.0, "seed {seed}: interval {:?}", top["ci95"]);
        let dr = top["delta_rate"].as_f64().unwrap();
        assert!((0.05..0.15).contains(&dr), "seed {seed}: Δ rate {dr}");
        assert!(
            !report["finetuned"][0]["paired_with_base"]
                .as_bool()
                .unwrap()
        );
        assert!(out.join("diff.csv").exists() && out.join("diff.png").exists());
    }
}

/// A labelled store of one-token sequences in d = 4: label 0 at x = −1, label 1 at x = +1 on
/// the first axis, noise elsewhere (hand-checkable directions).
fn toy_store(dir: &Path, d: usize, hook: &str, labels: bool) -> PathBuf {
    let mut meta = StoreMeta::new(d, Dtype::F32, hook, "toy");
    if labels {
        meta.labels = vec!["neg".into(), "pos".into()];
    }
    let mut w = StoreWriter::create(dir, meta, WriterOptions::default()).unwrap();
    for i in 0..40u32 {
        let side = (i % 2) as u8;
        let mut x = vec![0f32; d];
        x[0] = if side == 1 { 1.0 } else { -1.0 };
        x[1] = ((i * 7 % 11) as f32 - 5.0) / 5.0;
        w.push_rows(Rows {
            acts: &x,
            token_ids: &[i],
            seq_ids: &[i],
            positions: &[0],
            roles: None,
            labels: labels.then_some(&[side][..]),
        })
        .unwrap();
    }
    w.finish().unwrap();
    dir.to_path_buf()
}

#[test]
fn direction_info_project_and_compare_write_their_files() {
    let tmp = tempfile::tempdir().unwrap();
    let acts = toy_store(
        &tmp.path().join("acts"),
        4,
        "blocks.3.hook_resid_post",
        true,
    );
    let md = tmp.path().join("md.safetensors");
    let probe = tmp.path().join("probe.safetensors");
    run_ok(&[
        "direction",
        "--acts",
        s(&acts),
        "--pos-label",
        "pos",
        "--neg-label",
        "neg",
        "--method",
        "mean-diff",
        "--out",
        s(&md),
    ]);
    run_ok(&[
        "direction",
        "--acts",
        s(&acts),
        "--pos-label",
        "pos",
        "--neg-label",
        "neg",
        "--method",
        "probe",
        "--out",
        s(&probe),
    ]);
    // mean-diff = (+1) − (−1) on axis 0; the noise axis cancels (same values on both sides).
    let info: Value =
        serde_json::from_str(&run_ok(&["direction", "info", s(&md), "--json"])).unwrap();
    assert_eq!(info["hook"], "resid_post");
    assert_eq!(info["method"], "mean-diff");
    assert_eq!(
        (info["n_pos"].as_u64(), info["n_neg"].as_u64()),
        (Some(20), Some(20))
    );
    assert_eq!(info["layers"][0]["layer"], 3);
    assert!(
        (info["layers"][0]["norm"].as_f64().unwrap() - 2.0).abs() < 0.05,
        "{info}"
    );
    let summary = json(&probe.with_extension("json"));
    assert_eq!(summary["layers"][0]["probe"]["heldout_accuracy"], 1.0);
    // Projection: positives score +1, negatives −1 on the unit direction.
    let proj = tmp.path().join("proj");
    run_ok(&[
        "project",
        "--direction",
        s(&md),
        "--acts",
        s(&acts),
        "--out",
        s(&proj),
    ]);
    let p = json(&proj.join("projection.json"));
    for row in p["by_label"].as_array().unwrap() {
        let want = if row["label"] == "pos" { 1.0 } else { -1.0 };
        assert!(
            (row["mean_score"].as_f64().unwrap() - want).abs() < 0.05,
            "{row}"
        );
    }
    let cmp = tmp.path().join("cmp");
    run_ok(&[
        "compare",
        s(&md),
        s(&probe),
        "--pos",
        s(&acts),
        "--neg",
        s(&acts),
        "--pos",
        s(&acts),
        "--neg",
        s(&acts),
        "--permutations",
        "50",
        "--out",
        s(&cmp),
    ]);
    let _ = run_err(&[
        "compare",
        s(&md),
        s(&probe),
        "--pos",
        s(&acts),
        "--out",
        s(&cmp),
    ]);
    let c = json(&cmp.join("compare.json"));
    let cos = c["pairs"][0]["comparison"]["layers"][0]["cos"]
        .as_f64()
        .unwrap();
    assert!(
        cos > 0.99,
        "mean-diff and probe agree on the toy data: {cos}"
    );
    assert!(cmp.join("compare.png").exists() && cmp.join("compare.csv").exists());
}

#[test]
fn bad_search_input_gets_one_line_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let acts = toy_store(
        &tmp.path().join("acts"),
        4,
        "blocks.3.hook_resid_post",
        true,
    );
    let wide = toy_store(
        &tmp.path().join("wide"),
        6,
        "blocks.3.hook_resid_post",
        false,
    );
    let out = tmp.path().join("d.safetensors");
    // A label not in the store.
    let e = run_err(&[
        "direction",
        "--acts",
        s(&acts),
        "--pos-label",
        "harmful",
        "--neg-label",
        "neg",
        "--out",
        s(&out),
    ]);
    assert!(
        e.contains("no label 'harmful'") && e.contains(s(&acts)),
        "{e}"
    );
    // A selection that needs roles the store lacks.
    let e = run_err(&[
        "direction",
        "--acts",
        s(&acts),
        "--pos-label",
        "pos",
        "--neg-label",
        "neg",
        "--tokens",
        "answer",
        "--out",
        s(&out),
    ]);
    assert!(e.contains("roles") && e.contains(s(&acts)), "{e}");
    let e = run_err(&[
        "direction",
        "--acts",
        s(&acts),
        "--pos-label",
        "pos",
        "--neg-label",
        "neg",
        "--tokens",
        "answers",
        "--out",
        s(&out),
    ]);
    assert!(e.starts_with("error: --tokens: tokens = answers"), "{e}");
    // Different d_model on the two sides.
    let e = run_err(&[
        "direction",
        "--pos",
        s(&acts),
        "--neg",
        s(&wide),
        "--out",
        s(&out),
    ]);
    assert!(e.contains("d_model") && e.contains(s(&wide)), "{e}");
    // An SAE of another width than the store.
    run_ok(&[
        "acts",
        "synth",
        "--d",
        "8",
        "--features",
        "16",
        "--rows",
        "4096",
        "--out",
        s(&tmp.path().join("s8")),
    ]);
    let sae = tmp.path().join("sae");
    run_ok(&[
        "sae",
        "train",
        "--acts",
        s(&tmp.path().join("s8")),
        "--arch",
        "topk",
        "--k",
        "2",
        "--d-sae",
        "16",
        "--steps",
        "2",
        "--batch",
        "64",
        "--quiet",
        "--out",
        s(&sae),
    ]);
    let e = run_err(&[
        "diff",
        "--sae",
        s(&sae),
        "--base",
        s(&acts),
        "--finetuned",
        s(&acts),
        "--out",
        s(&tmp.path().join("diff")),
    ]);
    assert!(
        e.contains("d_model = 4") && e.contains("d_in = 8") && e.contains(s(&acts)),
        "{e}"
    );
    // A direction file of another width than the store.
    run_ok(&[
        "direction",
        "--acts",
        s(&acts),
        "--pos-label",
        "pos",
        "--neg-label",
        "neg",
        "--out",
        s(&out),
    ]);
    let e = run_err(&["project", "--direction", s(&out), "--acts", s(&wide)]);
    assert!(e.contains("d_model") && e.contains(s(&out)), "{e}");
    // Unpaired sets for a paired method (21 positives against 20 negatives).
    let unpaired = tmp.path().join("unpaired");
    {
        let mut meta = StoreMeta::new(4, Dtype::F32, "blocks.3.hook_resid_post", "toy");
        meta.labels = vec!["neg".into(), "pos".into()];
        let mut w = StoreWriter::create(&unpaired, meta, WriterOptions::default()).unwrap();
        for i in 0..41u32 {
            let side = u8::from(i % 2 == 0);
            w.push_rows(Rows {
                acts: &[i as f32, 1.0, 0.0, 0.0],
                token_ids: &[i],
                seq_ids: &[i],
                positions: &[0],
                roles: None,
                labels: Some(&[side]),
            })
            .unwrap();
        }
        w.finish().unwrap();
    }
    let e = run_err(&[
        "direction",
        "--acts",
        s(&unpaired),
        "--pos-label",
        "pos",
        "--neg-label",
        "neg",
        "--method",
        "pca-diff",
        "--out",
        s(&out),
    ]);
    assert!(
        e.contains("unpaired") && e.contains("21 positive") && e.contains(s(&unpaired)),
        "{e}"
    );
    // Not a direction file.
    let junk = tmp.path().join("junk.safetensors");
    std::fs::write(&junk, b"not safetensors").unwrap();
    let e = run_err(&["direction", "info", s(&junk)]);
    assert!(e.contains(s(&junk)), "{e}");
    let _ = Store::open(&acts).unwrap();
}

/// The README's real-model recipe: 64 French/English sentence pairs through SmolLM2-135M,
/// layers 5–25; the language direction must be linearly decodable (held-out probe accuracy at
/// layer 15 ≥ 90 %) and the mean-diff direction's logit lens at layer 25 must promote French
/// word pieces over English ones.
#[test]
fn smollm2_french_english_direction_is_probeable_and_reads_out_as_french() {
    let Some(model) = gguf() else { return };
    let prompts =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/contrast/french_english.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let acts = tmp.path().join("acts");
    let mut args: Vec<String> = [
        "capture",
        "--model",
        s(&model),
        "--prompts",
        s(&prompts),
        "--out",
        s(&acts),
    ]
    .map(String::from)
    .to_vec();
    for l in 5..=25 {
        args.push("--hook".into());
        args.push(format!("blocks.{l}.hook_resid_post"));
    }
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok(&a);
    let probe = tmp.path().join("probe.safetensors");
    let md = tmp.path().join("md.safetensors");
    let common = [
        "--acts",
        s(&acts),
        "--pos-label",
        "french",
        "--neg-label",
        "english",
        "--tokens",
        "all,skip-first:1",
    ];
    run_ok(
        &[
            &["direction", "--method", "probe", "--out", s(&probe)][..],
            &common,
        ]
        .concat(),
    );
    run_ok(
        &[
            &["direction", "--method", "mean-diff", "--out", s(&md)][..],
            &common,
        ]
        .concat(),
    );
    let summary = json(&probe.with_extension("json"));
    let l15 = summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["layer"] == 15)
        .unwrap();
    let acc = l15["probe"]["heldout_accuracy"].as_f64().unwrap();
    assert!(acc >= 0.9, "held-out probe accuracy at layer 15: {acc}");
    let lens = tmp.path().join("lens");
    run_ok(&[
        "lens",
        "--model",
        s(&model),
        "--direction",
        s(&md),
        "--layer",
        "25",
        "--top",
        "20",
        "--out",
        s(&lens),
    ]);
    let l = json(&lens.join("lens.json"));
    let tokens = |k: &str| -> Vec<String> {
        l["lens"][0][k]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["token"].as_str().unwrap().to_string())
            .collect()
    };
    let french = |t: &str| {
        t.chars().any(|c| "éèêàçôûœ".contains(c))
            || [
                " pour", " dans", " les", " des", " une", " est", "ologie", "iques", "ité", "ées",
                "ère", "ateur",
            ]
            .contains(&t)
    };
    let top = tokens("top");
    let n_fr = top.iter().filter(|t| french(t)).count();
    assert!(
        n_fr >= 4,
        "top tokens of the French − English direction at layer 25: {top:?}"
    );
    let bottom = tokens("bottom");
    assert!(
        bottom.iter().filter(|t| french(t)).count() < n_fr,
        "bottom: {bottom:?}"
    );
    // Output-level diffing of the model against itself: zero KL at every token, files written.
    let kl = tmp.path().join("kl");
    run_ok(&[
        "diff",
        "kl",
        "--base",
        s(&model),
        "--finetuned",
        s(&model),
        "--prompts",
        s(&prompts),
        "--top",
        "5",
        "--out",
        s(&kl),
    ]);
    let k = json(&kl.join("kl.json"));
    assert_eq!(k["per_prompt"].as_array().unwrap().len(), 128);
    assert!(
        k["mean_kl_per_token"].as_f64().unwrap() < 1e-6,
        "{}",
        k["mean_kl_per_token"]
    );
    assert!(kl.join("kl.csv").exists());
    // Per-layer structure: the two estimators agree far beyond chance at every layer.
    let cmp = tmp.path().join("cmp");
    run_ok(&["compare", s(&md), s(&probe), "--out", s(&cmp)]);
    let c = json(&cmp.join("compare.json"));
    for layer in c["pairs"][0]["comparison"]["layers"].as_array().unwrap() {
        assert!(layer["p_random"].as_f64().unwrap() < 1e-6, "{layer}");
    }
}
