//! Training quality on synthetic data with known features (issue §4, small version: d = 64,
//! 256 features, 800k rows instead of d = 128, 1024 features, 5M rows — the full-size numbers
//! are in BENCHMARKS.md): every architecture must recover the ground-truth dictionary
//! (mean max cosine similarity) and reconstruct the data (FVU).

use lantern_acts::{Dtype, Hierarchy, Store, SynthConfig};
use lantern_sae::eval::{absorption, mean_max_cosine};
use lantern_sae::{Arch, DeviceChoice, EvalOptions, TrainConfig, evaluate, train};

struct Outcome {
    mmcs: f64,
    fvu: f64,
    l0: f64,
}

/// The small-size runs: d 64, 256 features, 800k rows, 512 latents, lr 4e-3.
fn run(arch: Arch, tweak: impl FnOnce(&mut TrainConfig)) -> Outcome {
    let mut cfg = TrainConfig::new(arch, 64, 512, 800_000 / 1024, 1024);
    cfg.lr = 4e-3;
    cfg.dead_tokens = 50_000;
    cfg.log_every = 100;
    tweak(&mut cfg);
    train_on(
        &SynthConfig {
            d: 64,
            features: 256,
            rows: 800_000,
            mean_active: 4.0,
            alpha: 0.6,
            noise: 0.02,
            seed: 7,
            dtype: Dtype::F32,
            shard_rows: None,
            ..Default::default()
        },
        &cfg,
    )
}

/// Synthesizes `synth`, trains `cfg` on it on the CPU, evaluates on 50 000 of its rows.
fn train_on(synth: &SynthConfig, cfg: &TrainConfig) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("acts");
    let truth = lantern_acts::synthesize(synth, &store_dir).unwrap();
    let store = Store::open(&store_dir).unwrap();
    let report = train(
        &store,
        cfg,
        DeviceChoice::Cpu,
        &dir.path().join("sae"),
        false,
        &mut |_| {},
    )
    .unwrap();
    let eval = evaluate(
        &report.weights,
        &store,
        DeviceChoice::Cpu,
        &EvalOptions {
            batch: 4096,
            max_rows: Some(50_000),
            skip_non_finite: false,
            filter: cfg.row_filter(),
        },
    )
    .unwrap();
    Outcome {
        mmcs: mean_max_cosine(&truth.features, &report.weights.w_dec, truth.d),
        fvu: eval.fvu,
        l0: eval.l0,
    }
}

#[test]
fn topk_recovers_ground_truth_features() {
    let o = run(Arch::TopK { k: 8 }, |_| {});
    assert!(o.mmcs >= 0.9, "MMCS {:.3}", o.mmcs);
    assert!(o.fvu <= 0.1, "FVU {:.3}", o.fvu);
    assert!((o.l0 - 8.0).abs() < 0.5, "L0 {:.2} should be k", o.l0);
}

#[test]
fn batchtopk_recovers_ground_truth_features_and_its_threshold_keeps_l0_near_k() {
    // With the default revival of rare latents (BENCHMARKS.md: 0.986 / 0.101; 0.909 / 0.122
    // without it), BatchTopK is held to nearly TopK's bar.
    let o = run(Arch::BatchTopK { k: 8 }, |_| {});
    assert!(o.mmcs >= 0.95, "MMCS {:.3}", o.mmcs);
    assert!(o.fvu <= 0.11, "FVU {:.3}", o.fvu);
    assert!(
        o.l0 > 3.0 && o.l0 < 16.0,
        "L0 {:.2} with the inference threshold",
        o.l0
    );
}

#[test]
fn relu_recovers_ground_truth_features() {
    let o = run(Arch::Relu, |c| c.sparsity_coeff = 1.0);
    assert!(o.mmcs >= 0.9, "MMCS {:.3}", o.mmcs);
    assert!(o.fvu <= 0.15, "FVU {:.3}", o.fvu);
    assert!(o.l0 < 40.0, "L0 {:.1}", o.l0);
}

#[test]
fn jumprelu_recovers_ground_truth_features() {
    // JumpReLU learns least well of the four on this budget (see BENCHMARKS.md). Its default
    // θ₀ and ε are what this checks: with Gemma Scope's 0.001 / 0.001 the thresholds stay far
    // below the data's scale and the dictionary is not learnt (MMCS 0.38).
    let o = run(Arch::JumpRelu, |c| c.sparsity_coeff = 3.0);
    assert!(o.mmcs >= 0.75, "MMCS {:.3}", o.mmcs);
    assert!(o.fvu <= 0.2, "FVU {:.3}", o.fvu);
    assert!(o.l0 < 16.0, "L0 {:.1}", o.l0);
}

/// `target_l0`: ReLU's λ is steered by the controller, JumpReLU trains on `λ (L0/T − 1)²`;
/// both land near the asked L0 on the evaluation rows (BENCHMARKS.md: ReLU 7.78, JumpReLU
/// 7.39 for T = 8, against 19.3 and 8.5 from the hand-tuned λ of the tests above).
#[test]
fn target_l0_mode_lands_near_the_asked_l0() {
    let relu = run(Arch::Relu, |c| {
        c.sparsity_coeff = 1.0;
        c.target_l0 = Some(8.0);
    });
    let jump = run(Arch::JumpRelu, |c| {
        c.sparsity_coeff = lantern_sae::train::jumprelu_target_coeff(64, 8.0);
        c.target_l0 = Some(8.0);
    });
    for (name, o) in [("relu", relu), ("jumprelu", jump)] {
        assert!((o.l0 - 8.0).abs() < 1.2, "{name}: L0 {:.2}, asked 8", o.l0);
        assert!(o.mmcs >= 0.9, "{name}: MMCS {:.3}", o.mmcs);
    }
}

/// JumpReLU's default λ for a target (`jumprelu_target_coeff`, 30 at d 64 and T 8) grows with
/// the width and the target: at d 128 and T 32 it is 240, which holds L0 at the target, where
/// the d-64 value 30 lets the reconstruction pull L0 to ≈ 44 (BENCHMARKS.md, "JumpReLU θ₀ and
/// ε": 33.2 against 43.8 on this store and budget through the CLI).
#[test]
fn jumprelu_target_coeff_holds_the_target_at_a_wider_input() {
    let mut cfg = TrainConfig::new(Arch::JumpRelu, 128, 1024, 500_000 / 1024, 1024);
    cfg.target_l0 = Some(32.0);
    cfg.sparsity_coeff = lantern_sae::train::jumprelu_target_coeff(128, 32.0);
    assert_eq!(cfg.sparsity_coeff, 240.0);
    let o = train_on(
        &SynthConfig {
            d: 128,
            features: 1024,
            rows: 500_000,
            seed: 1,
            dtype: Dtype::F32,
            shard_rows: None,
            ..Default::default()
        },
        &cfg,
    );
    assert!((o.l0 - 32.0).abs() < 4.0, "L0 {:.2}, asked 32", o.l0);
    assert!(o.mmcs >= 0.4, "MMCS {:.3}", o.mmcs);
}

/// Absorption on a feature hierarchy (16 parents × 4 children beside the 256-feature
/// dictionary; a parent fires on 5 % of rows, one of its children with it 75 % of the time).
/// BatchTopK at k 6 learns latents for the children that carry the parent's direction and
/// leave the parent's own latent silent on some child rows; Matryoshka's nested prefixes
/// (32, 128 of 512 latents) must explain each row without the later latents, which keeps the
/// parent latent firing. BENCHMARKS.md: BatchTopK 0.16–0.18 and Matryoshka 0.08–0.10 at
/// seeds 0–2 without reviving rare latents, 0.19 and 0.10 with it (the default); plain
/// BatchTopK's TopK warm-up and half-run decay (defaults since 2026-12-05) raise its
/// absorption to 0.23–0.25 at the default rate.
#[test]
fn matryoshka_absorbs_parents_into_children_less_than_batchtopk() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("acts");
    let truth = lantern_acts::synthesize(
        &SynthConfig {
            d: 64,
            features: 256,
            rows: 800_000,
            mean_active: 4.0,
            noise: 0.02,
            seed: 7,
            hierarchy: Some(Hierarchy {
                parents: 16,
                children: 4,
                parent_rate: 0.05,
                child_rate: 0.75,
            }),
            ..Default::default()
        },
        &store_dir,
    )
    .unwrap();
    let store = Store::open(&store_dir).unwrap();
    let absorption = |widths: Vec<usize>| {
        let mut cfg = TrainConfig::new(Arch::BatchTopK { k: 6 }, 64, 512, 800_000 / 1024, 1024);
        cfg.lr = 4e-3;
        cfg.dead_tokens = 50_000;
        cfg.log_every = 100;
        cfg.set_matryoshka(widths);
        let out = dir
            .path()
            .join(format!("sae{}", cfg.matryoshka_widths.len()));
        let report = train(&store, &cfg, DeviceChoice::Cpu, &out, false, &mut |_| {}).unwrap();
        absorption(&report.weights, &truth, 20_000, 1).unwrap()
    };
    let plain = absorption(Vec::new());
    let nested = absorption(vec![32, 128]);
    assert_eq!(nested.parents, 16);
    assert!(
        nested.absorption + 0.04 < plain.absorption,
        "Matryoshka absorption {:.3}, BatchTopK {:.3}",
        nested.absorption,
        plain.absorption
    );
    assert!(nested.parent_cosine > 0.85, "{nested:?}");
}
