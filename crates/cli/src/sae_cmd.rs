//! `lantern sae ...`

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lantern_acts::Store;
use lantern_sae::init::BDecInit;
use lantern_sae::rows::DEFAULT_OUTLIER_FACTOR;
use lantern_sae::{Arch, DeviceChoice, EvalOptions, RowFilter, TrainConfig, TrainEvent};

use crate::report;

#[derive(Subcommand)]
pub enum SaeCommand {
    /// Train an SAE on an activation store.
    Train(Box<TrainArgs>),
    /// Train every combination of the listed settings in one pass over the store (each batch
    /// read once and fed to every SAE); each SAE in SAELens layout under OUT/NAME, and
    /// sweep.csv, sweep.json and sweep.png (FVU against L0) over all of them.
    Sweep(Box<SweepArgs>),
    /// Evaluate an SAE (any supported format) on an activation store, or spliced into a model.
    Eval(Box<EvalArgs>),
    /// Describe an SAE in any supported format.
    Info { sae: PathBuf },
    /// Convert an SAE (SAELens, sparsify, Gemma Scope) to the SAELens v6 layout.
    Convert {
        sae: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Args, Clone)]
pub struct TrainArgs {
    /// Activation store to train on.
    #[arg(long)]
    pub acts: PathBuf,
    /// relu | topk | batchtopk | matryoshka (Matryoshka BatchTopK) | jumprelu
    #[arg(long)]
    pub arch: String,
    /// Active latents per token (topk, batchtopk, matryoshka).
    #[arg(long)]
    pub k: Option<usize>,
    /// With --arch matryoshka: widths of the nested prefixes that must reconstruct on their
    /// own, before the whole dictionary (comma-separated, increasing; default d_sae/16,
    /// d_sae/4).
    #[arg(long, value_delimiter = ',')]
    pub matryoshka_widths: Vec<usize>,
    /// batchtopk, matryoshka: start at k = d_in and lower it linearly to --k over N steps.
    #[arg(long, default_value_t = 0)]
    pub k_anneal_steps: u64,
    /// batchtopk, matryoshka: select the top k per row (plain TopK) for the first N steps,
    /// then batch-wide (default: a tenth of the steps; 0 = batch-wide from the start).
    #[arg(long)]
    pub topk_warmup_steps: Option<u64>,
    /// batchtopk, matryoshka: keep the decoder rows at unit norm and rank activations by
    /// relu(pre) (the default before 2026-12-04) instead of leaving the norms free and ranking
    /// by relu(pre)·‖W_dec‖ (SAELens's rescale_acts_by_decoder_norm).
    #[arg(long)]
    pub unit_decoder_norms: bool,
    /// topk, batchtopk, matryoshka: AuxK also trains latents firing on fewer than this
    /// fraction of tokens (averaged over ≈ 50 steps), not only dead ones (default 0.001 for
    /// batchtopk and matryoshka, off for topk; 0 = off); jumprelu: the pre-activation loss
    /// (--pre-act-coeff) also takes them.
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub revive_below: Option<f32>,
    /// Number of latents.
    #[arg(long, conflicts_with = "expansion")]
    pub d_sae: Option<usize>,
    /// Number of latents as a multiple of d_in.
    #[arg(long)]
    pub expansion: Option<usize>,
    /// Training tokens (rounded up to whole batches).
    #[arg(long, conflicts_with = "steps")]
    pub tokens: Option<u64>,
    /// Optimiser steps.
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    /// Peak learning rate; `sparsify` for sparsify's rule 2e-4/√(d_sae/2¹⁴); `rule` for the
    /// default rate alone (topk, batchtopk, matryoshka and jumprelu max(2e-4/√(d_sae/2¹⁴),
    /// 1.8/√(d_in·steps)), which raises the rate for short runs; relu 5e-5); `probe` to train
    /// that rate ×0.71, ×1 and ×1.41 in one pass and keep the SAE with the lowest FVU on the
    /// evaluation rows (50 000 with --eval-rows 0). Default: `probe` for runs under 500 steps
    /// of those four architectures (where the best rate strays from the rule both ways),
    /// unless the run checkpoints or resumes; `rule` otherwise.
    #[arg(long)]
    #[arg(value_parser = crate::flags::lr, allow_negative_numbers = true)]
    pub lr: Option<crate::flags::Lr>,
    #[arg(long)]
    pub lr_warmup_steps: Option<u64>,
    /// Linear decay to 0 over the last N steps (default: half the steps for batchtopk, a fifth
    /// for the others).
    #[arg(long)]
    pub lr_decay_steps: Option<u64>,
    /// λ of the L1 (relu) or L0 (jumprelu) penalty.
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub sparsity_coeff: Option<f32>,
    #[arg(long)]
    pub sparsity_warmup_steps: Option<u64>,
    /// relu, jumprelu: aim the training L0 at N latents per token. relu adapts λ after its
    /// warm-up (--sparsity-coeff is then the starting value); jumprelu penalises
    /// λ·(L0/N − 1)² instead of λ·L0 (default λ then 30·(d_in/64)·(N/8)).
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub target_l0: Option<f32>,
    /// AuxK coefficient (topk: 1/32; batchtopk, matryoshka: 1).
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub aux_coeff: Option<f32>,
    /// A latent silent for this many tokens is dead.
    #[arg(long)]
    pub dead_tokens: Option<u64>,
    /// jumprelu: coefficient of the pre-activation loss c·Σ relu(θ − pre) over dead latents
    /// (Anthropic 2025, SAELens's pre_act_loss_coefficient), which pulls latents that never
    /// fire up to their thresholds; dead means silent for --dead-tokens or, with
    /// --revive-below, rare (default 0 = off; 0.01 with --revive-below 0.001 left no latent
    /// dead on synthetic data but did not improve the dictionary: BENCHMARKS.md).
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub pre_act_coeff: Option<f32>,
    /// jumprelu: peak learning rate of the log-thresholds, or `same` for --lr's (default
    /// max(lr, 5/steps): Adam moves log θ by about its rate a step, and the thresholds must
    /// climb a few units in log space whatever d_in is; at d 576 the weights' rate left L0 at
    /// 147 for a target of 32; `same` resumes checkpoints written before 2026-12-05).
    #[arg(long)]
    #[arg(value_parser = crate::flags::threshold_lr, allow_negative_numbers = true)]
    pub threshold_lr: Option<lantern_sae::train::ThresholdLr>,
    /// JumpReLU straight-through bandwidth ε (default 0.05).
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub bandwidth: Option<f32>,
    /// JumpReLU initial threshold θ₀ (default 0.1; from Gemma Scope's 0.001 the thresholds
    /// did not reach a target L0 of 8 in 7 800 steps: BENCHMARKS.md).
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub init_threshold: Option<f32>,
    /// Global gradient-norm clip (0 = off; default 0.01 for topk/batchtopk, 1 for relu/jumprelu)
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub grad_clip: Option<f32>,
    /// Train on raw inputs instead of inputs scaled to E‖x‖ = √d.
    #[arg(long)]
    pub no_normalize: bool,
    /// median | mean | zero
    #[arg(long, default_value = "median")]
    pub b_dec_init: String,
    #[command(flatten)]
    pub rows: RowArgs,
    /// What the shuffle mixes: `store` (each batch drawn from the whole store) or `window`
    /// (rows within windows of 65 536 consecutive rows: nearly sequential reads, the order
    /// before 2026-12-04; a store captured document by document then ends the run on a few
    /// documents).
    #[arg(long, default_value = "store")]
    pub shuffle: lantern_acts::ShuffleScope,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Skip NaN/Inf rows instead of failing.
    #[arg(long)]
    pub skip_non_finite: bool,
    /// Checkpoint every N steps (0 = never).
    #[arg(long, default_value_t = 0)]
    pub checkpoint_every: u64,
    #[arg(long, default_value_t = 50)]
    pub log_every: u64,
    /// Continue from OUT/checkpoint.safetensors.
    #[arg(long)]
    pub resume: bool,
    /// Rows evaluated after training (0 = skip).
    #[arg(long, default_value_t = 200_000)]
    pub eval_rows: u64,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Output directory (SAELens v6 files, metrics.json, plots, checkpoint).
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Clone)]
pub struct EvalArgs {
    #[arg(long)]
    pub sae: PathBuf,
    /// Reconstruction metrics on a store's rows (FVU, L0, dead/dense latents, MMCS).
    #[arg(long)]
    pub acts: Option<PathBuf>,
    /// Spliced-in evaluation instead: the model's CE and KL with the SAE's reconstruction,
    /// zero, and reconstruction + error in place of the hook's activation
    /// (ce_loss_score, kl_div_score), with --prompts or --text.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub input: SpliceInput,
    /// With --model: the hook to splice at (default: the SAE's own hook_name).
    #[arg(long)]
    pub hook: Option<String>,
    /// With --model: evaluate only the first N sequences.
    #[arg(long)]
    pub sequences: Option<usize>,
    /// With --model: splice position 0 too (by default the first token, an attention
    /// sink, keeps its activation).
    #[arg(long)]
    pub splice_first: bool,
    /// With --model: write splice.json and latents.csv (density, consistent-activation
    /// heuristic per latent) into this directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Rows to evaluate (default: all).
    #[arg(long)]
    pub rows: Option<u64>,
    /// With --acts: which rows to leave out.
    #[command(flatten)]
    pub row_filter: RowArgs,
    /// Rows per batch with --acts, sequences per batch with --model.
    #[arg(long)]
    pub batch: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Ground-truth features (.safetensors with `features`); default: the store's
    /// ground_truth.safetensors when present.
    #[arg(long)]
    pub ground_truth: Option<PathBuf>,
}

/// The texts of a spliced-in evaluation (`sae eval --model`, `sae sweep --model`).
#[derive(Args, Clone)]
pub struct SpliceInput {
    /// With --model: a prompts JSONL (text or chat records; chat records are rendered with
    /// the model's template).
    #[arg(long)]
    pub prompts: Option<PathBuf>,
    /// With --model: a UTF-8 text file, cut into windows of --max-tokens-per-seq tokens
    /// (each starting with the model's BOS when it has one).
    #[arg(long)]
    pub text: Option<PathBuf>,
    /// With --model: tokens per sequence (longer prompts are cut).
    #[arg(long, default_value_t = 128)]
    pub max_tokens_per_seq: usize,
}

impl SpliceInput {
    /// The one file given (`--prompts` or `--text`).
    fn source(&self) -> Result<&std::path::Path> {
        match (&self.prompts, &self.text) {
            (Some(p), None) => Ok(p),
            (None, Some(t)) => Ok(t),
            _ => bail!("--model needs --prompts FILE or --text FILE (one of them)"),
        }
    }

    /// The token sequences: the records of the prompts file (cut to `n` tokens) or the text
    /// file in windows of `n` tokens (each led by the BOS when the model has one); sequences
    /// of fewer than 2 tokens are left out, then the first `sequences` kept.
    fn texts(
        &self,
        lm: &lantern_lm::LanguageModel,
        sequences: Option<usize>,
    ) -> Result<Vec<Vec<u32>>> {
        let n = self.max_tokens_per_seq;
        if n < 2 {
            bail!("--max-tokens-per-seq must be at least 2 (one next-token prediction)");
        }
        let source = self.source()?;
        let mut texts: Vec<Vec<u32>> = if self.prompts.is_some() {
            lantern_lm::prompts::read_prompts(source)?
                .iter()
                .map(|rec| {
                    crate::steer_run::prompt_tokens(lm, rec, false, source).map(|(t, _)| {
                        let mut ids = t.ids;
                        ids.truncate(n);
                        ids
                    })
                })
                .collect::<Result<Vec<_>>>()?
        } else {
            let bytes =
                std::fs::read(source).with_context(|| format!("--text {}", source.display()))?;
            let body = lantern_lm::prompts::utf8_lines(&bytes, source)?;
            let ids = lm.tokenizer.encode(&body, false)?;
            let bos = lm.tokenizer.bos_id();
            let width = n - usize::from(bos.is_some());
            ids.chunks(width)
                .map(|c| bos.into_iter().chain(c.iter().copied()).collect())
                .collect()
        };
        texts.retain(|t| t.len() >= 2);
        if let Some(k) = sequences {
            texts.truncate(k);
        }
        if texts.is_empty() {
            bail!(
                "{}: no sequence of at least 2 tokens to evaluate on",
                source.display()
            );
        }
        Ok(texts)
    }
}

#[derive(Args, Clone)]
pub struct SweepArgs {
    /// Activation store to train on.
    #[arg(long)]
    pub acts: PathBuf,
    /// Architectures, comma-separated: relu, topk, batchtopk, matryoshka, jumprelu.
    #[arg(long, value_delimiter = ',', required = true)]
    pub arch: Vec<String>,
    /// k values for topk / batchtopk / matryoshka, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub k: Vec<usize>,
    /// λ values for relu / jumprelu, comma-separated (default: each architecture's default).
    #[arg(long, value_delimiter = ',')]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub sparsity_coeff: Vec<f32>,
    /// Target L0 values for relu / jumprelu, comma-separated (`sae train --target-l0`; with
    /// --sparsity-coeff, every pair).
    #[arg(long, value_delimiter = ',')]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub target_l0: Vec<f32>,
    /// Learning rates, comma-separated; `auto` (or `rule`) is `sae train`'s default rate for
    /// the architecture without its short-run probe, `sparsify` sparsify's rule
    /// 2e-4/√(d_sae/2¹⁴).
    #[arg(long, value_delimiter = ',', default_value = "auto")]
    pub lr: Vec<String>,
    /// Dictionary sizes, comma-separated (default: 8 × d_in).
    #[arg(long, value_delimiter = ',')]
    pub d_sae: Vec<usize>,
    /// Training tokens (rounded up to whole batches), the same for every SAE.
    #[arg(long, conflicts_with = "steps")]
    pub tokens: Option<u64>,
    #[arg(long)]
    pub steps: Option<u64>,
    #[arg(long, default_value_t = 4096)]
    pub batch: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// store | window (`sae train --shuffle`).
    #[arg(long, default_value = "store")]
    pub shuffle: lantern_acts::ShuffleScope,
    #[command(flatten)]
    pub rows: RowArgs,
    /// Rows evaluated after training (0 = skip; then the table shows the last training batch).
    #[arg(long, default_value_t = 200_000)]
    pub eval_rows: u64,
    /// Also evaluate every SAE spliced into this model (the one the store was captured from):
    /// ce_loss_score and kl_div_score columns and sweep-ce.png, on --prompts or --text.
    #[arg(long)]
    pub model: Option<PathBuf>,
    #[command(flatten)]
    pub input: SpliceInput,
    /// The hook to splice at (default: the store's).
    #[arg(long)]
    pub hook: Option<String>,
    /// Sequences of the spliced-in evaluation.
    #[arg(long, default_value_t = 64)]
    pub sequences: usize,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub out: PathBuf,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Which rows `sae train`, `sae sweep` and `sae eval --acts` use ([`lantern_sae::rows`]).
#[derive(Args, Clone, Debug, Default)]
pub struct RowArgs {
    /// Comma-separated token ids whose rows are left out (e.g. BOS).
    #[arg(long, value_delimiter = ',')]
    pub exclude_token_ids: Vec<u32>,
    /// Keep the first position of each sequence (left out by default: in most models an
    /// attention sink whose norm dwarfs the other rows').
    #[arg(long)]
    pub keep_first: bool,
    /// Leave out rows with ‖x‖ above this multiple of the median norm (default 10).
    #[arg(long, conflicts_with = "keep_outliers")]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub outlier_factor: Option<f32>,
    /// Keep rows of any norm.
    #[arg(long)]
    pub keep_outliers: bool,
}

impl RowArgs {
    pub fn filter(&self) -> RowFilter {
        RowFilter {
            exclude_token_ids: self.exclude_token_ids.clone(),
            drop_first: !self.keep_first,
            outlier_factor: if self.keep_outliers {
                None
            } else {
                Some(self.outlier_factor.unwrap_or(DEFAULT_OUTLIER_FACTOR))
            },
        }
    }

    /// The same choice as `sae train` flags.
    fn argv(&self) -> Vec<String> {
        let mut v = Vec::new();
        if !self.exclude_token_ids.is_empty() {
            let ids: Vec<String> = self.exclude_token_ids.iter().map(u32::to_string).collect();
            v.extend(["--exclude-token-ids".into(), ids.join(",")]);
        }
        if self.keep_first {
            v.push("--keep-first".into());
        }
        if let Some(f) = self.outlier_factor {
            v.extend(["--outlier-factor".into(), f.to_string()]);
        }
        if self.keep_outliers {
            v.push("--keep-outliers".into());
        }
        v
    }
}

/// `sae train`'s own flags, parsed from an argument list (the sweep builds one per SAE, so
/// each gets exactly the defaults and checks of `sae train`).
#[derive(clap::Parser)]
struct TrainArgv {
    #[command(flatten)]
    args: TrainArgs,
}

/// One SAE of a sweep: its directory name and `sae train` arguments.
fn sweep_runs(a: &SweepArgs) -> Result<Vec<(String, TrainArgs)>> {
    use clap::Parser;
    // (name part, `sae train --lr` value)
    let lrs: Vec<(String, Option<String>)> = a
        .lr
        .iter()
        .map(|v| match v.as_str() {
            // The rule alone: a sweep lists its rates itself.
            "auto" | "rule" => Ok((v.clone(), Some("rule".to_string()))),
            "sparsify" => Ok(("sparsify".to_string(), Some("sparsify".to_string()))),
            v => match v.parse::<f32>() {
                Ok(x) if x.is_finite() && x > 0.0 => Ok((format!("{x:e}"), Some(x.to_string()))),
                _ => Err(anyhow::anyhow!(
                    "--lr '{v}': expected auto, rule, sparsify or a positive number"
                )),
            },
        })
        .collect::<Result<_>>()?;
    let sizes: Vec<Option<usize>> = if a.d_sae.is_empty() {
        vec![None]
    } else {
        a.d_sae.iter().copied().map(Some).collect()
    };
    let mut runs = Vec::new();
    for arch in &a.arch {
        let topk = matches!(arch.as_str(), "topk" | "batchtopk") || is_matryoshka(arch);
        let sparsity: Vec<(String, Vec<String>)> = if topk {
            if a.k.is_empty() {
                bail!("--arch {arch} needs --k (one or more values)");
            }
            a.k.iter()
                .map(|k| (format!("k{k}"), vec!["--k".into(), k.to_string()]))
                .collect()
        } else {
            let lambdas: Vec<(String, Vec<String>)> = if a.sparsity_coeff.is_empty() {
                vec![(String::new(), Vec::new())]
            } else {
                a.sparsity_coeff
                    .iter()
                    .map(|l| {
                        (
                            format!("l{l}"),
                            vec!["--sparsity-coeff".into(), l.to_string()],
                        )
                    })
                    .collect()
            };
            let targets: Vec<(String, Vec<String>)> = if a.target_l0.is_empty() {
                vec![(String::new(), Vec::new())]
            } else {
                a.target_l0
                    .iter()
                    .map(|t| (format!("t{t}"), vec!["--target-l0".into(), t.to_string()]))
                    .collect()
            };
            lambdas
                .iter()
                .flat_map(|(lt, lf)| {
                    targets.iter().map(move |(tt, tf)| {
                        let tag = [lt.as_str(), tt.as_str()]
                            .into_iter()
                            .filter(|s| !s.is_empty())
                            .collect::<Vec<_>>()
                            .join("-");
                        (tag, lf.iter().chain(tf).cloned().collect())
                    })
                })
                .collect()
        };
        for m in &sizes {
            for lr in &lrs {
                for (tag, flags) in &sparsity {
                    let mut name = arch.clone();
                    for part in [
                        tag.clone(),
                        m.map(|m| format!("m{m}")).unwrap_or_default(),
                        format!("lr{}", lr.0),
                    ] {
                        if !part.is_empty() {
                            name.push('-');
                            name.push_str(&part);
                        }
                    }
                    let mut argv: Vec<String> = vec![
                        "train".into(),
                        "--acts".into(),
                        a.acts.display().to_string(),
                        "--arch".into(),
                        arch.clone(),
                        "--batch".into(),
                        a.batch.to_string(),
                        "--seed".into(),
                        a.seed.to_string(),
                        "--shuffle".into(),
                        a.shuffle.to_string(),
                        "--eval-rows".into(),
                        a.eval_rows.to_string(),
                        "--device".into(),
                        a.device.clone(),
                        "--out".into(),
                        a.out.join(&name).display().to_string(),
                        "--quiet".into(),
                    ];
                    argv.extend(flags.iter().cloned());
                    argv.extend(a.rows.argv());
                    if let Some(m) = m {
                        argv.extend(["--d-sae".into(), m.to_string()]);
                    }
                    if let Some(lr) = &lr.1 {
                        argv.extend(["--lr".into(), lr.clone()]);
                    }
                    match (a.tokens, a.steps) {
                        (Some(t), _) => argv.extend(["--tokens".into(), t.to_string()]),
                        (None, Some(s)) => argv.extend(["--steps".into(), s.to_string()]),
                        (None, None) => bail!("give --tokens N or --steps N"),
                    }
                    let args = TrainArgv::try_parse_from(&argv)
                        .map_err(|e| anyhow::anyhow!("{name}: {}", e.to_string().trim()))?
                        .args;
                    runs.push((name, args));
                }
            }
        }
    }
    if runs.is_empty() {
        bail!("the sweep has no combination to train");
    }
    Ok(runs)
}

/// `sae sweep`: the runs of [`sweep_runs`] in lockstep, then each SAE's files and the table.
pub fn sweep(a: &SweepArgs) -> Result<()> {
    let _lock = report::lock_output("--out", &a.out, &[("--acts", &a.acts)])?;
    let runs = sweep_runs(a)?;
    let device: DeviceChoice = a.device.parse()?;
    let store = Store::open(&a.acts)?;
    // The spliced-in evaluation's model, texts and hook, checked before any training.
    let splice = match &a.model {
        None => {
            if a.input.prompts.is_some() || a.input.text.is_some() || a.hook.is_some() {
                bail!("--prompts, --text and --hook apply to the spliced-in evaluation (--model)");
            }
            None
        }
        Some(m) => {
            let lm = lantern_lm::LanguageModel::load(m, &device.open()?)?;
            let texts = a.input.texts(&lm, Some(a.sequences))?;
            let hook = a
                .hook
                .clone()
                .unwrap_or_else(|| store.manifest().hook.clone());
            let point: lantern_lm::HookPoint = hook
                .parse()
                .map_err(|e| anyhow::anyhow!("--hook '{hook}': {e}"))?;
            Some((lm, texts, point))
        }
    };
    let mut locks = Vec::new();
    let mut configs = Vec::new();
    for (name, args) in &runs {
        locks.push(report::lock_output(
            "--out",
            &args.out,
            &[("--acts", &a.acts)],
        )?);
        let cfg = args
            .config(store.d_model())
            .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
        configs.push((cfg, args.out.clone()));
    }
    let steps = configs[0].0.steps;
    let bar = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps)
    };
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} steps × {} SAEs {{per_sec}}",
            runs.len()
        ))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let t0 = std::time::Instant::now();
    let reports = lantern_sae::train::train_lockstep(&store, &configs, device, &mut |i, ev| {
        if let (0, TrainEvent::Step(s)) = (i, ev) {
            bar.set_position(s);
        }
    })
    .map_err(train_flag_error)?;
    bar.finish_and_clear();
    let seconds = t0.elapsed().as_secs_f64();
    let mut rows = Vec::new();
    const COLUMNS: &str = "name,arch,k,sparsity_coeff,target_l0,d_sae,lr,fvu,l0,dead_fraction,mmcs,ce_loss_score,kl_div_score,absorption";
    let mut csv = format!("{COLUMNS}\n");
    let mut diverged = Vec::new();
    for (((name, args), (cfg, _)), report) in runs.iter().zip(&configs).zip(reports) {
        let report = match report {
            Ok(r) => r,
            Err(e @ lantern_sae::SaeError::Diverged { .. }) => {
                // Kept in the table as a row without numbers, and said at the end.
                // Empty cells for every column after lr.
                let empty = ",".repeat(COLUMNS.split(',').count() - 7);
                csv.push_str(&format!(
                    "{name},{},,,,{},{}{empty}\n",
                    args.arch, cfg.d_sae, cfg.lr
                ));
                rows.push(serde_json::json!({
                    "name": name, "arch": args.arch, "d_sae": cfg.d_sae, "lr": cfg.lr,
                    "diverged": e.to_string(),
                }));
                diverged.push(format!("{name} ({e})"));
                continue;
            }
            Err(e) => return Err(train_flag_error(e)),
        };
        let history_last = report.history.last().cloned();
        let time = report::RunTime {
            seconds,
            steady_tokens_per_second: None,
        };
        let outcome = report::finish_training(args, cfg, &store, device, report, time, None)?;
        let (fvu, l0, dead) = match (&outcome.eval, &history_last) {
            (Some(e), _) => (e.fvu, e.l0, e.dead_fraction),
            (None, Some(m)) => (m.fvu, m.l0, m.dead_fraction),
            (None, None) => (f64::NAN, f64::NAN, f64::NAN),
        };
        let (k, lambda) = match cfg.arch {
            lantern_sae::Arch::TopK { k } | lantern_sae::Arch::BatchTopK { k } => (Some(k), None),
            _ => (None, Some(cfg.sparsity_coeff)),
        };
        let arch = args.arch.clone();
        let spliced = match &splice {
            Some((lm, texts, point)) => {
                let (w, _) = lantern_sae::load_sae(&outcome.out)?;
                let sae = lantern_sae::Sae::from_weights(&w, &device.open()?)?;
                let opts = lantern_steer::splice::SpliceOptions {
                    splice_first: false,
                    batch: 8,
                };
                let r = lantern_steer::splice::splice_eval(
                    &lm.model,
                    &sae,
                    *point,
                    texts,
                    &opts,
                    |_| {},
                )
                .with_context(|| format!("{name}: spliced-in evaluation"))?;
                Some((r.ce_loss_score, r.kl_div_score))
            }
            None => None,
        };
        let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
        let mmcs = outcome.truth.as_ref().map(|t| t.mmcs);
        let absorption = outcome
            .truth
            .as_ref()
            .and_then(|t| t.absorption.as_ref())
            .map(|a| a.absorption);
        csv.push_str(&format!(
            "{name},{arch},{},{},{},{},{},{fvu},{l0},{dead},{},{},{},{}\n",
            k.map_or(String::new(), |k| k.to_string()),
            lambda.map_or(String::new(), |l| l.to_string()),
            cfg.target_l0.map_or(String::new(), |t| t.to_string()),
            cfg.d_sae,
            cfg.lr,
            opt(mmcs),
            opt(spliced.map(|s| s.0)),
            opt(spliced.map(|s| s.1)),
            opt(absorption),
        ));
        rows.push(serde_json::json!({
            "name": name, "arch": arch, "k": k, "sparsity_coeff": lambda,
            "target_l0": cfg.target_l0, "d_sae": cfg.d_sae,
            "lr": cfg.lr, "fvu": fvu, "l0": l0, "dead_fraction": dead, "mmcs": mmcs,
            "ce_loss_score": spliced.map(|s| s.0), "kl_div_score": spliced.map(|s| s.1),
            "absorption": absorption,
            "dir": outcome.out,
        }));
    }
    drop(locks);
    lantern_output::write_atomic(&a.out.join("sweep.csv"), csv.as_bytes())?;
    report::write_json(
        &a.out.join("sweep.json"),
        &serde_json::json!({
            "store": a.acts, "tokens": configs[0].0.steps * a.batch as u64,
            "seconds": seconds, "device": device.to_string(), "runs": rows,
        }),
    )?;
    // FVU (and the CE score) against L0: one line per (architecture, size, learning rate)
    // through its k or λ values, in order of L0.
    let chart = |metric: &str, y_label: &str, log_y: bool, file: &str| -> Result<()> {
        let mut groups: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for r in &rows {
            let key = format!(
                "{} m{} lr {}",
                r["arch"].as_str().unwrap_or(""),
                r["d_sae"],
                r["lr"].as_f64().map_or("?".into(), |v| format!("{v:.1e}"))
            );
            let point = (
                r["l0"].as_f64().unwrap_or(f64::NAN),
                r[metric].as_f64().unwrap_or(f64::NAN),
            );
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(g) => g.1.push(point),
                None => groups.push((key, vec![point])),
            }
        }
        let series: Vec<lantern_plot::Series> = groups
            .into_iter()
            .map(|(name, mut points)| {
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                lantern_plot::Series { name, points }
            })
            .collect();
        lantern_plot::line_chart(
            &a.out.join(file),
            &lantern_plot::LineChart {
                title: "SAE sweep: reconstruction against sparsity",
                x_label: "L0 (active latents per token)",
                y_label,
                log_y,
                series: &series,
            },
        )?;
        Ok(())
    };
    chart("fvu", "FVU", true, "sweep.png")?;
    if splice.is_some() {
        chart(
            "ce_loss_score",
            "spliced-in CE loss score",
            false,
            "sweep-ce.png",
        )?;
    }
    println!("{csv}");
    if !diverged.is_empty() {
        println!("diverged (no SAE written): {}", diverged.join("; "));
    }
    println!(
        "trained {} SAEs in one pass ({seconds:.1} s); wrote {}/sweep.csv, sweep.json, sweep.png",
        runs.len() - diverged.len(),
        a.out.display()
    );
    Ok(())
}

/// `--arch matryoshka` (or SAELens's name, `matryoshka_batchtopk`).
fn is_matryoshka(arch: &str) -> bool {
    matches!(arch, "matryoshka" | "matryoshka_batchtopk")
}

pub fn parse_arch(arch: &str, k: Option<usize>) -> Result<Arch> {
    let need_k = || k.with_context(|| format!("--arch {arch} needs --k"));
    let no_k = |a: Arch| match k {
        Some(k) => bail!(
            "--k {k}: --arch {arch} has no fixed number of active latents (topk and batchtopk do)"
        ),
        None => Ok(a),
    };
    Ok(match arch {
        "relu" | "standard" => no_k(Arch::Relu)?,
        "topk" => Arch::TopK { k: need_k()? },
        // Matryoshka BatchTopK is BatchTopK at inference; its prefixes are a training setting
        // (TrainConfig::matryoshka_widths).
        a if a == "batchtopk" || is_matryoshka(a) => Arch::BatchTopK { k: need_k()? },
        "jumprelu" => no_k(Arch::JumpRelu)?,
        other => bail!("--arch '{other}': expected relu, topk, batchtopk, matryoshka or jumprelu"),
    })
}

impl TrainArgs {
    pub fn config(&self, d_in: usize) -> Result<TrainConfig> {
        let arch = parse_arch(&self.arch, self.k)?;
        let d_sae = match (self.d_sae, self.expansion) {
            (Some(n), _) => n,
            (None, Some(e)) => e * d_in,
            (None, None) => 8 * d_in,
        };
        if self.batch == 0 {
            bail!("--batch must be at least 1");
        }
        let steps = match (self.tokens, self.steps) {
            (Some(t), _) => t.div_ceil(self.batch as u64),
            (None, Some(s)) => s,
            (None, None) => bail!("give --tokens N or --steps N"),
        };
        let mut c = TrainConfig::new(arch, d_in, d_sae, steps, self.batch);
        match self.lr {
            Some(crate::flags::Lr::Rate(v)) => c.lr = v,
            Some(crate::flags::Lr::Sparsify) => c.lr = lantern_sae::train::sparsify_lr(d_sae),
            Some(crate::flags::Lr::Rule | crate::flags::Lr::Probe) | None => {}
        }
        if let Some(v) = self.lr_warmup_steps {
            c.lr_warmup_steps = v;
        }
        if let Some(v) = self.sparsity_coeff {
            c.sparsity_coeff = v;
        }
        if let Some(v) = self.sparsity_warmup_steps {
            c.sparsity_warmup_steps = v;
        }
        c.target_l0 = self.target_l0;
        c.k_anneal_steps = self.k_anneal_steps;
        if self.unit_decoder_norms {
            if !matches!(arch, Arch::BatchTopK { .. }) {
                bail!(
                    "--unit-decoder-norms applies to --arch batchtopk and matryoshka (the other architectures' decoder norms are fixed by their loss)"
                );
            }
            c.free_decoder_norms = false;
        }
        if let Some(r) = self.revive_below {
            c.revive_below = (r != 0.0).then_some(r);
        }
        if let Some(t) = self.target_l0
            && arch == Arch::JumpRelu
            && self.sparsity_coeff.is_none()
        {
            // λ·(L0/T − 1)² balances a reconstruction error that grows with d_in against a
            // slope that shrinks with T (lantern_sae::train::jumprelu_target_coeff).
            c.sparsity_coeff = lantern_sae::train::jumprelu_target_coeff(d_in, t);
        }
        if let Some(v) = self.aux_coeff {
            c.aux_coeff = v;
        }
        if let Some(v) = self.dead_tokens {
            c.dead_tokens = v;
        }
        if let Some(v) = self.pre_act_coeff {
            c.pre_act_coeff = v;
        }
        if let Some(v) = self.threshold_lr {
            c.threshold_lr = v;
        }
        if let Some(v) = self.bandwidth {
            c.bandwidth = v;
        }
        if let Some(v) = self.init_threshold {
            c.init_threshold = v;
        }
        if let Some(v) = self.grad_clip {
            if v < 0.0 {
                bail!("--grad-clip {v}: expected a positive norm, or 0 to turn clipping off");
            }
            c.grad_clip = (v > 0.0).then_some(v);
        }
        c.normalize_inputs = !self.no_normalize;
        c.b_dec_init = self.b_dec_init.parse::<BDecInit>()?;
        let rows = self.rows.filter();
        c.exclude_token_ids = rows.exclude_token_ids;
        c.outlier_factor = rows.outlier_factor;
        c.drop_first_position = rows.drop_first;
        c.seed = self.seed;
        c.shuffle_scope = self.shuffle;
        c.skip_non_finite = self.skip_non_finite;
        c.checkpoint_every = self.checkpoint_every;
        c.log_every = self.log_every.max(1);
        let matryoshka = is_matryoshka(&self.arch);
        if !matryoshka && !self.matryoshka_widths.is_empty() {
            bail!(
                "--matryoshka-widths applies to --arch matryoshka, not to --arch {}",
                self.arch
            );
        }
        if matryoshka {
            let widths = if self.matryoshka_widths.is_empty() {
                let mut w: Vec<usize> = [d_sae / 16, d_sae / 4]
                    .into_iter()
                    .filter(|w| *w > 0 && *w < d_sae)
                    .collect();
                w.dedup();
                w
            } else {
                self.matryoshka_widths.clone()
            };
            if widths.is_empty() {
                bail!(
                    "--arch matryoshka with {d_sae} latents: too few for nested prefixes (give --matryoshka-widths)"
                );
            }
            c.set_matryoshka(widths);
        }
        if let Some(v) = self.topk_warmup_steps {
            c.topk_warmup_steps = v;
        }
        if let Some(v) = self.lr_decay_steps {
            c.lr_decay_steps = v;
        }
        // Refuse what cannot fit on the CPU instead of aborting mid-run. TopK and plain
        // BatchTopK run on the CPU engine (lantern_sae::cpu): parameters and Adam moments
        // (6 d_in × d_sae), one block of pre-activations (≤ 256 MiB), the kept per-latent
        // gradients (≤ 512 MiB), four batch × d_in buffers and the selected entries (k, or
        // BatchTopK's candidates, + AuxK's d_in/2 per row, 24 bytes each). The burn-ops step
        // (other architectures) holds about three batch × d_sae buffers (pre-activations,
        // codes, their gradient), three batch × d_in, and eight d_in × d_sae (both matrices,
        // their gradients and Adam moments).
        if self.device == "cpu"
            && let Some(avail) = lantern_output::available_memory()
        {
            let (b, i, m) = (self.batch as u128, d_in as u128, d_sae as u128);
            let need = match c.engine_selection() {
                Some(k) => {
                    let grads = 4 * m * (2 * i + 1);
                    let kept = if grads <= 512 << 20 { grads } else { 0 };
                    4 * (6 * i * m + (b * m).min(1 << 26) + 4 * b * i)
                        + kept
                        + 24 * b * (k as u128 + i / 2)
                }
                None => 4 * (3 * b * m + 3 * b * i + 8 * i * m),
            };
            // A probe holds one run per rate.
            let runs = if self.lr_probe(&c)? {
                lantern_sae::train::PROBE_FACTORS.len() as u128
            } else {
                1
            };
            let need = need * runs;
            if need > u128::from(avail) {
                bail!(
                    "--batch {} with {d_sae} latents of width {d_in} needs about {:.1} GiB per \
                     step{}, more than the {:.1} GiB of memory available",
                    self.batch,
                    need as f64 / (1u64 << 30) as f64,
                    if runs > 1 {
                        format!(
                            " for the {runs} rates of the learning-rate probe \
                             (--lr rule trains one)"
                        )
                    } else {
                        String::new()
                    },
                    avail as f64 / (1u64 << 30) as f64
                );
            }
        }
        Ok(c)
    }

    /// Whether the run probes its learning rate ([`lantern_sae::train::train_lr_probe`]):
    /// with `--lr probe`, or by default for runs under
    /// [`lantern_sae::train::PROBE_BELOW_STEPS`] of an architecture whose default rate is
    /// [`lantern_sae::train::topk_lr`]'s rule, unless the run checkpoints or resumes (a probe
    /// keeps one of several runs, so it has no checkpoint to write or resume).
    pub fn lr_probe(&self, cfg: &TrainConfig) -> Result<bool> {
        let checkpoints = self.resume || self.checkpoint_every > 0;
        Ok(match self.lr {
            Some(crate::flags::Lr::Probe) => {
                if checkpoints {
                    bail!(
                        "--lr probe trains several SAEs and keeps one, so it cannot checkpoint or \
                         resume: give --lr rule or a rate with --checkpoint-every / --resume"
                    );
                }
                true
            }
            None => !checkpoints && short_rule_run(cfg),
            Some(_) => false,
        })
    }
}

/// A run whose default rate is [`lantern_sae::train::topk_lr`]'s rule and which is shorter than
/// [`lantern_sae::train::PROBE_BELOW_STEPS`]: what `sae train` probes by default.
fn short_rule_run(cfg: &TrainConfig) -> bool {
    lantern_sae::train::probe::rule_rated(cfg.arch)
        && cfg.steps < lantern_sae::train::PROBE_BELOW_STEPS
}

pub fn run(cmd: SaeCommand) -> Result<()> {
    match cmd {
        SaeCommand::Train(args) => {
            train(&args)?;
        }
        SaeCommand::Sweep(args) => sweep(&args)?,
        SaeCommand::Eval(e) => {
            let device: DeviceChoice = e.device.parse()?;
            let acts = match (&e.acts, &e.model) {
                (Some(a), None) => {
                    let store_only = [
                        ("--prompts", e.input.prompts.is_some()),
                        ("--text", e.input.text.is_some()),
                        ("--hook", e.hook.is_some()),
                        ("--sequences", e.sequences.is_some()),
                        ("--splice-first", e.splice_first),
                        ("--out", e.out.is_some()),
                    ];
                    if let Some((flag, _)) = store_only.iter().find(|(_, given)| *given) {
                        bail!(
                            "{flag} applies to the spliced-in evaluation (--model), not to --acts"
                        );
                    }
                    a.clone()
                }
                (None, Some(model)) => {
                    if e.rows.is_some() || e.ground_truth.is_some() {
                        bail!("--rows and --ground-truth apply to --acts, not to --model");
                    }
                    return splice_eval(&e, model, device);
                }
                (Some(_), Some(_)) => bail!("give --acts or --model, not both"),
                (None, None) => bail!(
                    "give --acts STORE (reconstruction metrics) or --model MODEL with --prompts/--text (spliced-in CE/KL)"
                ),
            };
            let EvalArgs {
                sae,
                rows,
                row_filter,
                batch,
                json,
                ground_truth,
                ..
            } = *e;
            let (weights, format) = lantern_sae::load_sae(&sae)?;
            let store = Store::open(&acts)?;
            let r = lantern_sae::evaluate(
                &weights,
                &store,
                device,
                &EvalOptions {
                    batch: batch.unwrap_or(4096),
                    max_rows: rows,
                    skip_non_finite: false,
                    filter: row_filter.filter(),
                },
            )
            .map_err(train_flag_error)?;
            let truth = report::ground_truth_scores(ground_truth.as_deref(), &acts, &weights)?;
            if json {
                let mut v = serde_json::to_value(&r)?;
                v["format"] = serde_json::json!(format!("{format:?}"));
                if let Some(t) = &truth {
                    v["mmcs"] = serde_json::json!(t.mmcs);
                    if let Some(a) = &t.absorption {
                        v["absorption"] = serde_json::to_value(a)?;
                    }
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "sae            {} ({format:?}, {:?}, d_in {}, d_sae {})",
                    sae.display(),
                    weights.cfg.arch,
                    weights.cfg.d_in,
                    weights.cfg.d_sae
                );
                report::print_eval(&r, truth.as_ref());
            }
        }
        SaeCommand::Info { sae } => {
            let (w, format) = lantern_sae::load_sae(&sae)?;
            println!("sae                   {}", sae.display());
            println!("format                {format:?}");
            println!("architecture          {:?}", w.cfg.arch);
            println!("d_in                  {}", w.cfg.d_in);
            println!("d_sae                 {}", w.cfg.d_sae);
            println!("apply_b_dec_to_input  {}", w.cfg.apply_b_dec_to_input);
            println!("hook                  {}", w.cfg.hook_name);
            println!("model                 {}", w.cfg.model_name);
            let norms: Vec<f32> = w
                .w_dec
                .chunks(w.cfg.d_in)
                .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
                .collect();
            let mean = norms.iter().sum::<f32>() / norms.len().max(1) as f32;
            println!("decoder row norm      mean {mean:.4}");
            if let Some(t) = &w.threshold {
                let mean_t = t.iter().sum::<f32>() / t.len().max(1) as f32;
                println!("threshold             mean {mean_t:.4}");
            }
        }
        SaeCommand::Convert { sae, out } => {
            let _lock = report::lock_output("--out", &out, &[("the SAE", &sae)])?;
            let (w, format) = lantern_sae::load_sae(&sae)?;
            let density = if matches!(format, lantern_sae::SaeFormat::SaeLens) {
                lantern_sae::formats::load_log10_density(&sae)?
            } else {
                None
            };
            lantern_sae::save_saelens(&w, &out, density.as_deref())?;
            println!(
                "converted {} ({format:?}) to SAELens v6 at {}",
                sae.display(),
                out.display()
            );
        }
    }
    Ok(())
}

/// Trains, saves the SAE (SAELens v6), evaluates, writes metrics.json and plots.
pub fn train(args: &TrainArgs) -> Result<report::TrainOutcome> {
    let _lock = report::lock_output("--out", &args.out, &[("--acts", &args.acts)])?;
    let device: DeviceChoice = args.device.parse()?;
    let store = Store::open(&args.acts)?;
    let cfg = args.config(store.d_model())?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(cfg.steps)
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} steps {per_sec} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let tokens_per_step = cfg.batch as f64;
    let t0 = std::time::Instant::now();
    if args.lr_probe(&cfg)? {
        return train_probing(args, &cfg, &store, device, &bar, t0);
    }
    if !args.quiet && args.lr.is_none() && short_rule_run(&cfg) {
        println!(
            "lr {:.3e}: the rule's rate, not probed (a run under {} steps probes three rates \
             unless it checkpoints or resumes)",
            cfg.lr,
            lantern_sae::train::PROBE_BELOW_STEPS
        );
    }
    let mut first_step = 0;
    let mut rate = SteadyRate::default();
    let report = lantern_sae::train(
        &store,
        &cfg,
        device,
        &args.out,
        args.resume,
        &mut |ev| match ev {
            TrainEvent::Started { step, .. } => {
                first_step = step;
                bar.set_position(step);
            }
            TrainEvent::Step(s) => {
                rate.step(s);
                bar.set_position(s);
            }
            TrainEvent::Metrics(m) => {
                rate.metrics(m.step);
                let tok_s = (m.step - first_step) as f64 * tokens_per_step
                    / t0.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4} fvu {:.4} l0 {:.1} dead {:.1}% {:.0} tok/s",
                    m.loss,
                    m.fvu,
                    m.l0,
                    100.0 * m.dead_fraction,
                    tok_s
                ));
            }
            TrainEvent::Checkpoint(_) => {}
        },
    )
    .map_err(train_flag_error)?;
    bar.finish();
    report::finish_training(
        args,
        &cfg,
        &store,
        device,
        report,
        report::RunTime {
            seconds: t0.elapsed().as_secs_f64(),
            steady_tokens_per_second: rate.tokens_per_second(cfg.batch),
        },
        None,
    )
}

/// The trainer's rate after its first step (metrics.json `steady_tokens_per_second`): batch
/// rows per second from the first step's end to the last statistics, which come with the
/// last step (on a GPU they are read back, so its work is done by then).
#[derive(Default)]
struct SteadyRate {
    first: Option<(std::time::Instant, u64)>,
    last: Option<(std::time::Instant, u64)>,
}

impl SteadyRate {
    fn step(&mut self, step: u64) {
        self.first.get_or_insert((std::time::Instant::now(), step));
    }

    fn metrics(&mut self, step: u64) {
        self.last = Some((std::time::Instant::now(), step));
    }

    fn tokens_per_second(&self, batch: usize) -> Option<f64> {
        let ((t0, s0), (t1, s1)) = (self.first?, self.last?);
        (s1 > s0).then(|| (s1 - s0) as f64 * batch as f64 / (t1 - t0).as_secs_f64().max(1e-9))
    }
}

/// `sae train` with a learning-rate probe: the rates of
/// [`lantern_sae::train::train_lr_probe`] in one pass, the table of what each gave, then the
/// kept SAE's files (metrics.json records the probe).
fn train_probing(
    args: &TrainArgs,
    cfg: &TrainConfig,
    store: &Store,
    device: DeviceChoice,
    bar: &ProgressBar,
    t0: std::time::Instant,
) -> Result<report::TrainOutcome> {
    use lantern_sae::train::{PROBE_FACTORS, train_lr_probe};
    // The evaluation rows `sae train` reports on; 50 000 when it reports none.
    let rows = if args.eval_rows > 0 {
        args.eval_rows
    } else {
        50_000
    };
    let eval = report::eval_options(cfg, rows);
    bar.set_message(format!(
        "probing {} learning rates around {:.2e}",
        PROBE_FACTORS.len(),
        cfg.lr
    ));
    let outcome = train_lr_probe(
        store,
        cfg,
        &PROBE_FACTORS,
        device,
        &args.out,
        &eval,
        &mut |i, ev| {
            if let (0, TrainEvent::Step(s)) = (i, ev) {
                bar.set_position(s);
            }
        },
    )
    .map_err(train_flag_error)?;
    bar.finish();
    let probe = &outcome.probe;
    if !args.quiet {
        println!(
            "learning-rate probe ({rows} rows): {}; kept {:.3e}",
            probe
                .candidates
                .iter()
                .map(|c| match c.fvu {
                    Some(f) => format!("{:.3e} FVU {f:.4}", c.lr),
                    None => format!("{:.3e} diverged", c.lr),
                })
                .collect::<Vec<_>>()
                .join(", "),
            probe.lr()
        );
    }
    report::finish_training(
        args,
        &outcome.config,
        store,
        device,
        outcome.report,
        report::RunTime {
            seconds: t0.elapsed().as_secs_f64(),
            steady_tokens_per_second: None,
        },
        Some(report::Probed {
            probe,
            eval: outcome.eval,
        }),
    )
}

/// A trainer error under the flag that set the offending field (`d_sae` → `--d-sae`); a
/// resume refused for other settings names `--resume`.
fn train_flag_error(e: lantern_sae::SaeError) -> anyhow::Error {
    use lantern_sae::SaeError;
    match &e {
        SaeError::Setting { field, .. } => {
            let flag = match *field {
                "steps" => "--steps/--tokens".to_string(),
                f => format!("--{}", f.replace('_', "-")),
            };
            anyhow::anyhow!("{flag}: {e}")
        }
        SaeError::ConfigMismatch { .. } => anyhow::anyhow!("--resume: {e}"),
        SaeError::Diverged { .. } => anyhow::anyhow!("{e}: --lr, --grad-clip"),
        _ => e.into(),
    }
}

/// `sae eval --model`: spliced-in CE/KL evaluation ([`lantern_steer::splice`]).
fn splice_eval(a: &EvalArgs, model: &std::path::Path, device: DeviceChoice) -> Result<()> {
    use lantern_lm::{HookPoint, LanguageModel};
    use lantern_steer::splice::{SpliceOptions, splice_eval};
    let batch = a.batch.unwrap_or(8);
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let source = a.input.source()?;
    let inputs = [
        ("the SAE", a.sae.as_path()),
        ("the model", model),
        ("the input", source),
    ];
    let _lock = match &a.out {
        Some(out) => Some(report::lock_output("--out", out, &inputs)?),
        None => None,
    };
    let (weights, _) = lantern_sae::load_sae(&a.sae)?;
    let hook_name = a
        .hook
        .clone()
        .unwrap_or_else(|| weights.cfg.hook_name.clone());
    let point: HookPoint = hook_name.parse().map_err(|e| {
        anyhow::anyhow!(
            "--hook '{hook_name}' (from {}): {e}",
            if a.hook.is_some() {
                "the flag"
            } else {
                "the SAE's cfg.json"
            }
        )
    })?;
    let dev = device.open()?;
    let lm = LanguageModel::load(model, &dev)?;
    let texts = a.input.texts(&lm, a.sequences)?;
    let sae = lantern_sae::Sae::from_weights(&weights, &dev)?;
    let bar = ProgressBar::new(texts.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("splice {bar:30} {pos}/{len} sequences {eta}")
            .expect("valid template"),
    );
    let r = splice_eval(
        &lm.model,
        &sae,
        point,
        &texts,
        &SpliceOptions {
            splice_first: a.splice_first,
            batch,
        },
        |k| bar.inc(k as u64),
    )?;
    bar.finish_and_clear();
    let mut v = serde_json::to_value(&r)?;
    v["sae"] = serde_json::json!(a.sae.display().to_string());
    v["model"] = serde_json::json!(model.display().to_string());
    v["hook"] = serde_json::json!(point.to_string());
    v["input"] = serde_json::json!(source.display().to_string());
    if let Some(out) = &a.out {
        report::write_json(&out.join("splice.json"), &v)?;
        let mut csv = String::from("latent,density,consistent_activation\n");
        for (i, (d, c)) in r.density.iter().zip(&r.consistent_activation).enumerate() {
            let c = if c.is_nan() {
                String::new()
            } else {
                format!("{c}")
            };
            csv.push_str(&format!("{i},{d},{c}\n"));
        }
        lantern_output::write_atomic(&out.join("latents.csv"), csv.as_bytes())?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "spliced at {point}: {} sequences, {} predictions, {} activations replaced ({})",
            r.sequences,
            r.predictions,
            r.spliced_tokens,
            if r.first_position_spliced {
                "position 0 included"
            } else {
                "position 0 kept clean"
            }
        );
        println!("               clean      SAE     zero  SAE+error");
        println!(
            "CE (nats)   {:8.4} {:8.4} {:8.4} {:8.4}",
            r.ce_clean, r.ce_sae, r.ce_zero, r.ce_sae_plus_error
        );
        println!(
            "KL (nats)   {:>8} {:8.4} {:8.4} {:8.2e}",
            "", r.kl_sae, r.kl_zero, r.kl_sae_plus_error
        );
        println!(
            "ce_loss_score {:.4}   kl_div_score {:.4}",
            r.ce_loss_score, r.kl_div_score
        );
        let s = &r.recon;
        println!(
            "explained variance {:.4} (legacy {:.4})  mse {:.4e}  cossim {:.4}  l2_ratio {:.4}  rel. bias {:.4}  L0 {:.2}",
            s.explained_variance,
            s.explained_variance_legacy,
            s.mse,
            s.cossim,
            s.l2_ratio,
            s.relative_reconstruction_bias,
            s.l0
        );
        if let Some(out) = &a.out {
            println!("wrote {}/splice.json, latents.csv", out.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    /// `sae train`'s arguments for `extra` on top of a run at d_in 64 (1 000 steps unless
    /// `extra` gives `--steps`).
    fn args(extra: &[&str]) -> TrainArgs {
        let mut argv = vec![
            "sae-train",
            "--acts",
            "store",
            "--out",
            "out",
            "--d-sae",
            "512",
            "--batch",
            "64",
        ];
        // k 8 for the architectures that take one.
        if !extra.iter().any(|a| a.ends_with("relu")) {
            argv.extend_from_slice(&["--k", "8"]);
        }
        if !extra.contains(&"--steps") {
            argv.extend_from_slice(&["--steps", "1000"]);
        }
        argv.extend_from_slice(extra);
        TrainArgv::try_parse_from(argv).unwrap().args
    }

    /// `sae train`'s config for `extra` (see [`args`]).
    fn config(extra: &[&str]) -> TrainConfig {
        args(extra).config(64).unwrap()
    }

    /// Whether `sae train` with `extra` probes its learning rate, or the error it gives.
    fn probes(extra: &[&str]) -> std::result::Result<bool, String> {
        let a = args(extra);
        let c = a.config(64).map_err(|e| e.to_string())?;
        a.lr_probe(&c).map_err(|e| e.to_string())
    }

    /// The default probes runs under 500 steps of the rule-rated architectures only, never
    /// one that checkpoints or resumes; `--lr probe` forces it (and refuses checkpoints),
    /// `--lr rule` or a rate turns it off.
    #[test]
    fn the_learning_rate_probe_is_the_default_of_short_runs_only() {
        for arch in ["topk", "batchtopk", "matryoshka"] {
            assert_eq!(
                probes(&["--arch", arch, "--steps", "499"]),
                Ok(true),
                "{arch}"
            );
            assert_eq!(
                probes(&["--arch", arch, "--steps", "500"]),
                Ok(false),
                "{arch}"
            );
        }
        assert_eq!(probes(&["--arch", "jumprelu", "--steps", "100"]), Ok(true));
        assert_eq!(probes(&["--arch", "relu", "--steps", "100"]), Ok(false));
        let short = ["--arch", "topk", "--steps", "100"];
        for off in [
            &["--lr", "rule"][..],
            &["--lr", "0.003"],
            &["--lr", "sparsify"],
            &["--checkpoint-every", "10"],
            &["--resume"],
        ] {
            let argv: Vec<&str> = short.iter().chain(off).copied().collect();
            assert_eq!(probes(&argv), Ok(false), "{off:?}");
        }
        assert_eq!(probes(&["--arch", "topk", "--lr", "probe"]), Ok(true));
        let e = probes(&[
            "--arch",
            "topk",
            "--lr",
            "probe",
            "--checkpoint-every",
            "10",
        ])
        .unwrap_err();
        assert!(
            e.contains("--lr probe") && e.contains("--checkpoint-every"),
            "{e}"
        );
        // `rule` and `probe` leave the rule's rate in the config; the probe scales it.
        let rule = lantern_sae::train::topk_lr(64, 512, 100);
        for lr in ["rule", "probe"] {
            let c = config(&["--arch", "topk", "--steps", "100", "--lr", lr]);
            assert_eq!(c.lr, rule, "{lr}");
        }
    }

    /// Each architecture's schedule defaults (TopK warm-up, learning-rate decay), and the
    /// flags over them — also for Matryoshka, whose defaults are set after its prefixes.
    #[test]
    fn schedule_defaults_per_architecture_and_flags_over_them() {
        let schedule = |c: TrainConfig| (c.topk_warmup_steps, c.lr_decay_steps);
        assert_eq!(schedule(config(&["--arch", "topk"])), (0, 200));
        assert_eq!(schedule(config(&["--arch", "batchtopk"])), (100, 500));
        assert_eq!(schedule(config(&["--arch", "matryoshka"])), (100, 200));
        for arch in ["batchtopk", "matryoshka"] {
            let given = [
                "--arch",
                arch,
                "--topk-warmup-steps",
                "3",
                "--lr-decay-steps",
                "7",
            ];
            assert_eq!(schedule(config(&given)), (3, 7), "{arch}");
        }
        assert_eq!(
            schedule(config(&["--arch", "topk", "--lr-decay-steps", "9"])),
            (0, 9)
        );
    }
}
