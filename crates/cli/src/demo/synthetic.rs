//! `lantern demo --synthetic`: synthesizes activations with known features, trains a TopK SAE
//! on them, evaluates it (with its recovery of the features) and writes the SAE, metrics and
//! plots.

use std::path::Path;

use anyhow::Result;
use lantern_acts::{Dtype, SynthConfig};

use crate::sae_cmd::{self, TrainArgs};

/// The synthetic run's sizes.
pub struct Synthetic {
    pub rows: u64,
    pub d: usize,
    pub features: usize,
    pub k: usize,
}

pub fn run(out: &Path, device: &str, a: &Synthetic) -> Result<()> {
    let acts = out.join("acts");
    if acts.join("manifest.json").exists() {
        println!("reusing synthetic activations in {}", acts.display());
    } else {
        let cfg = SynthConfig {
            d: a.d,
            features: a.features,
            rows: a.rows,
            mean_active: 4.0,
            alpha: 0.6,
            noise: 0.02,
            seed: 0,
            dtype: Dtype::F32,
            shard_rows: None,
            ..Default::default()
        };
        lantern_acts::synthesize(&cfg, &acts)?;
        println!(
            "synthesized {} rows (d = {}, {} ground-truth features) into {}",
            a.rows,
            a.d,
            a.features,
            acts.display()
        );
    }
    let args = TrainArgs {
        acts,
        arch: "topk".into(),
        k: Some(a.k),
        matryoshka_widths: Vec::new(),
        target_l0: None,
        k_anneal_steps: 0,
        topk_warmup_steps: None,
        unit_decoder_norms: false,
        revive_below: None,
        d_sae: Some(2 * a.features),
        expansion: None,
        tokens: Some(a.rows),
        steps: None,
        batch: 1024,
        lr: Some(crate::flags::Lr::Rate(4e-3)),
        lr_warmup_steps: None,
        lr_decay_steps: None,
        sparsity_coeff: None,
        sparsity_warmup_steps: None,
        aux_coeff: None,
        dead_tokens: Some(100_000),
        pre_act_coeff: None,
        threshold_lr: None,
        bandwidth: None,
        init_threshold: None,
        grad_clip: None,
        no_normalize: false,
        b_dec_init: "median".into(),
        rows: Default::default(),
        shuffle: lantern_acts::ShuffleScope::Store,
        seed: 0,
        skip_non_finite: false,
        checkpoint_every: 0,
        log_every: 20,
        resume: false,
        eval_rows: 200_000,
        device: device.to_string(),
        out: out.join("sae"),
        quiet: false,
    };
    let outcome = sae_cmd::train(&args)?;
    println!(
        "demo done: SAE, metrics.json and plots in {}",
        outcome.out.display()
    );
    Ok(())
}
