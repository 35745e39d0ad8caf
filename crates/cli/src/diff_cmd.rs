//! `lantern diff`: which SAE latents a finetune raises (model diffing). Writes diff.json (the
//! top latents and the stores' summaries), diff.csv (every latent) and diff.png (the top
//! latents with their bootstrap intervals). Where a finetuned store holds the same text as the
//! base store, also the activation difference lens: `adl/pos{p}.safetensors` (one direction
//! file per position, `ft{k}-` prefixed with several finetunes) and `adl.json`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lantern_acts::Store;
use lantern_plot::{Interval, IntervalChart};
use lantern_sae::{DeviceChoice, Sae};
use lantern_search::{DiffOptions, TokenSelection, diff_latents};
use serde_json::json;

use crate::report::{finite_or_null, write_json};
use crate::search_flag_error;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct DiffArgs {
    #[command(subcommand)]
    command: Option<DiffCommand>,
    /// The SAE (SAELens, sparsify or Gemma Scope directory); without it only the activation
    /// difference lens runs.
    #[arg(long)]
    sae: Option<PathBuf>,
    /// Store captured from the base model at the SAE's hook.
    #[arg(long, required = true)]
    base: Option<PathBuf>,
    /// Store of a finetuned model (repeatable; Δ is the mean over finetunes).
    #[arg(long, required = true)]
    finetuned: Vec<PathBuf>,
    /// all | prompt | answer | last-prompt | first-answer:N, optionally followed by
    /// ,skip-first:N (drop the first N positions, e.g. an attention sink at position 0)
    #[arg(long, default_value = "all")]
    tokens: String,
    /// Latents in diff.json and diff.png (diff.csv has them all).
    #[arg(long, default_value_t = 50)]
    top: usize,
    /// Sequence-bootstrap replicates for the 95 % intervals (0: none).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Tokens per device batch.
    #[arg(long, default_value_t = 1024)]
    batch: usize,
    /// Positions of the activation difference lens (0: none); run only on finetuned stores
    /// that hold the base store's text.
    #[arg(long, default_value_t = 5)]
    adl_positions: usize,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, required = true)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DiffCommand {
    /// Per-token KL(p_finetuned ‖ p_base) on the same prompts: the mean per prompt and the
    /// tokens where the finetune departs most, with their context.
    Kl(KlArgs),
}

#[derive(Args)]
struct KlArgs {
    /// The base model (Hugging Face directory or .gguf).
    #[arg(long)]
    base: PathBuf,
    /// The finetuned model (or give --adapter for base + a PEFT adapter).
    #[arg(long, required_unless_present = "adapter")]
    finetuned: Option<PathBuf>,
    #[arg(long, conflicts_with = "finetuned")]
    adapter: Option<PathBuf>,
    /// JSONL prompts ({"text"} or {"messages"}), as for capture.
    #[arg(long)]
    prompts: PathBuf,
    #[arg(long, default_value_t = 512)]
    max_tokens_per_seq: usize,
    /// Highest-KL tokens reported.
    #[arg(long, default_value_t = 50)]
    top: usize,
    /// Tokens of context shown before a top token.
    #[arg(long, default_value_t = 12)]
    window: usize,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    out: PathBuf,
}

fn kl(a: KlArgs) -> Result<()> {
    use lantern_lm::LanguageModel;
    let device = a.device.parse::<DeviceChoice>()?.open()?;
    let base = LanguageModel::load(&a.base, &device)?;
    let ft = match (&a.finetuned, &a.adapter) {
        (Some(f), None) => LanguageModel::load(f, &device)?,
        (None, Some(ad)) => LanguageModel::load_with_adapter(&a.base, Some(ad), &device)?,
        _ => bail!("give --finetuned MODEL or --adapter DIR"),
    };
    let records = lantern_lm::read_prompts(&a.prompts)?;
    if records.is_empty() {
        bail!("{}: no prompts", a.prompts.display());
    }
    let _lock = crate::report::lock_output("--out", &a.out, &[("--prompts", a.prompts.as_path())])?;
    let decode = |ids: &[u32]| base.tokenizer.decode(ids, false).unwrap_or_default();
    let bar = ProgressBar::new(records.len() as u64);
    let (mut per_prompt, mut tokens) = (Vec::new(), Vec::<(f64, usize, usize)>::new());
    let mut all_ids = Vec::new();
    let mut csv = String::from("record,id,tokens,mean_kl,max_kl\n");
    for (i, r) in records.iter().enumerate() {
        let seq = base
            .sequence(&r.content, a.max_tokens_per_seq)
            .with_context(|| format!("{}:{}", a.prompts.display(), r.line))?;
        let kl = lantern_search::kl::token_kl(&base.model, &ft.model, &seq.ids)
            .map_err(search_flag_error)?;
        let mean = kl.iter().sum::<f64>() / kl.len().max(1) as f64;
        let max = kl.iter().cloned().fold(0.0, f64::max);
        let id = r.id.clone().unwrap_or_else(|| i.to_string());
        csv += &format!("{i},{id},{},{mean},{max}\n", kl.len());
        per_prompt.push(
            json!({"record": i, "id": id, "tokens": kl.len(), "mean_kl": mean, "max_kl": max}),
        );
        tokens.extend(kl.iter().enumerate().map(|(t, &k)| (k, i, t)));
        all_ids.push(seq.ids);
        tokens.sort_by(|x, y| y.0.total_cmp(&x.0));
        tokens.truncate(a.top);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let top: Vec<_> = tokens
        .iter()
        .map(|&(k, i, t)| {
            let ids = &all_ids[i];
            let lo = t.saturating_sub(a.window);
            json!({
                "kl": k, "record": i, "position": t,
                "token": decode(&ids[t..t + 1]),
                "next_token": ids.get(t + 1).map(|n| decode(&[*n])),
                "context": decode(&ids[lo..=t]),
            })
        })
        .collect();
    let n: usize = per_prompt
        .iter()
        .map(|p| p["tokens"].as_u64().unwrap_or(0) as usize)
        .sum();
    let overall = per_prompt
        .iter()
        .map(|p| p["mean_kl"].as_f64().unwrap_or(0.0) * p["tokens"].as_f64().unwrap_or(0.0))
        .sum::<f64>()
        / n.max(1) as f64;
    write_json(
        &a.out.join("kl.json"),
        &json!({"base": a.base, "finetuned": a.finetuned, "adapter": a.adapter,
                "prompts": a.prompts, "tokens": n, "mean_kl_per_token": overall,
                "per_prompt": per_prompt, "top_tokens": top}),
    )?;
    std::fs::write(a.out.join("kl.csv"), csv)?;
    println!(
        "mean KL(ft ‖ base) {overall:.5} nats/token over {n} tokens of {} prompts",
        records.len()
    );
    for t in top.iter().take(10) {
        println!(
            "  {:>9.5}  {:?} → {:?}",
            t["kl"].as_f64().unwrap_or(0.0),
            t["context"].as_str().unwrap_or(""),
            t["next_token"].as_str().unwrap_or("")
        );
    }
    println!("wrote {}", a.out.join("kl.json").display());
    Ok(())
}

pub fn run(a: DiffArgs) -> Result<()> {
    if let Some(DiffCommand::Kl(k)) = a.command {
        return kl(k);
    }
    let selection: TokenSelection = a.tokens.parse().map_err(search_flag_error)?;
    let Some(base_path) = &a.base else {
        bail!("--base: the base model's store is required");
    };
    let base = Store::open(base_path)?;
    let Some(out) = a.out.clone() else {
        bail!("--out: the output directory is required");
    };
    let finetuned: Vec<Store> = a
        .finetuned
        .iter()
        .map(|p| Store::open(p))
        .collect::<Result<_, _>>()?;
    let mut inputs: Vec<(&str, &Path)> = vec![("--base", base_path.as_path())];
    inputs.extend(a.finetuned.iter().map(|p| ("--finetuned", p.as_path())));
    let _lock = crate::report::lock_output("--out", &out, &inputs)?;
    let adl = adl(&a, &out, &base, &finetuned)?;
    let Some(sae_dir) = &a.sae else {
        if adl == 0 {
            bail!(
                "--sae: without an SAE only the activation difference lens runs, and no \
                 finetuned store holds the base store's text"
            );
        }
        return Ok(());
    };
    let device = a.device.parse::<DeviceChoice>()?.open()?;
    let (weights, _) = lantern_sae::load_sae(sae_dir)?;
    let sae = Sae::from_weights(&weights, &device)?;
    let total: u64 = base.rows() + finetuned.iter().map(Store::rows).sum::<u64>();
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {per_sec}  eta {eta}")
            .expect("static template"),
    );
    let timer = std::time::Instant::now();
    let opts = DiffOptions {
        selection,
        batch_rows: a.batch,
        bootstrap: a.bootstrap,
        seed: a.seed,
    };
    let report = diff_latents(&sae, &base, &finetuned, &opts, |r| bar.set_position(r))
        .map_err(search_flag_error)?;
    bar.finish_and_clear();
    let secs = timer.elapsed().as_secs_f64();

    let mut csv = String::from(
        "latent,delta_mean,ci95_lo,ci95_hi,delta_rate,base_mean,finetuned_mean,base_rate,finetuned_rate,delta_sd",
    );
    for k in 0..finetuned.len() {
        csv += &format!(",delta_finetune_{k}");
    }
    csv.push('\n');
    for l in &report.latents {
        csv += &format!(
            "{},{},{},{},{},{},{},{},{},{}",
            l.latent,
            l.delta_mean,
            l.ci95[0],
            l.ci95[1],
            l.delta_rate,
            l.base_mean,
            l.finetuned_mean,
            l.base_rate,
            l.finetuned_rate,
            l.delta_sd
        );
        for d in &l.delta_per_finetune {
            csv += &format!(",{d}");
        }
        csv.push('\n');
    }
    std::fs::write(out.join("diff.csv"), csv)?;
    let top: Vec<_> = report.latents.iter().take(a.top).collect();
    let latents: Vec<_> = top
        .iter()
        .map(|l| {
            json!({
                "latent": l.latent, "delta_mean": l.delta_mean, "delta_rate": l.delta_rate,
                "base_mean": l.base_mean, "finetuned_mean": l.finetuned_mean,
                "base_rate": l.base_rate, "finetuned_rate": l.finetuned_rate,
                "delta_sd": finite_or_null(l.delta_sd),
                "ci95": [finite_or_null(l.ci95[0]), finite_or_null(l.ci95[1])],
                "delta_per_finetune": l.delta_per_finetune,
            })
        })
        .collect();
    write_json(
        &out.join("diff.json"),
        &json!({
            "sae": sae_dir, "hook": sae.cfg.hook_name, "d_sae": sae.cfg.d_sae,
            "tokens": report.tokens, "bootstrap": report.bootstrap, "seed": report.seed,
            "base": report.base, "finetuned": report.finetuned,
            "seconds": secs, "rows_per_second": total as f64 / secs,
            "latents": latents,
        }),
    )?;
    let items: Vec<Interval> = top
        .iter()
        .take(30)
        .map(|l| Interval {
            label: l.latent.to_string(),
            value: l.delta_mean,
            lo: l.ci95[0],
            hi: l.ci95[1],
        })
        .collect();
    lantern_plot::interval_chart(
        &out.join("diff.png"),
        &IntervalChart {
            title: "latents raised most by the finetune (95 % sequence-bootstrap intervals)",
            x_label: "latent",
            y_label: "Δ mean activation",
            items: &items,
        },
    )?;
    for s in std::iter::once(&report.base).chain(&report.finetuned) {
        println!(
            "{}: {} sequences, {} selected tokens of {} rows{}",
            s.path.display(),
            s.sequences,
            s.tokens,
            s.rows,
            if s.path == report.base.path {
                String::new()
            } else if s.paired_with_base {
                ", same text as base".into()
            } else {
                ", different text from base".into()
            }
        );
    }
    println!(
        "{:>8} {:>12} {:>24} {:>10} {:>10}",
        "latent", "Δ mean", "95 % interval", "Δ rate", "Δ/sd"
    );
    for l in top.iter().take(10) {
        println!(
            "{:>8} {:>12.5} [{:>10.5}, {:>10.5}] {:>10.5} {:>10.3}",
            l.latent, l.delta_mean, l.ci95[0], l.ci95[1], l.delta_rate, l.delta_sd
        );
    }
    println!(
        "{total} rows in {secs:.1} s ({:.0} rows/s) → {}",
        total as f64 / secs,
        out.join("diff.json").display()
    );
    Ok(())
}

/// The activation difference lens for every finetuned store with the base store's text;
/// returns how many it ran on.
fn adl(a: &DiffArgs, out: &std::path::Path, base: &Store, finetuned: &[Store]) -> Result<usize> {
    if a.adl_positions == 0 {
        return Ok(0);
    }
    let hook: Option<lantern_lm::HookPoint> = base.manifest().hook.parse().ok();
    let (site, layer) = hook.map_or(("resid_post", 0), |h| {
        (
            lantern_search::sequences::site_of(h),
            lantern_search::sequences::layer_of(h),
        )
    });
    let dir = out.join("adl");
    let mut runs = Vec::new();
    for (k, ft) in finetuned.iter().enumerate() {
        let deltas = match lantern_search::adl::activation_difference(base, ft, a.adl_positions) {
            Ok(d) => d,
            Err(lantern_search::SearchError::Input { msg, .. }) if msg.contains("same text") => {
                println!(
                    "{}: not the base store's text; no activation difference lens",
                    ft.dir().display()
                );
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut positions = Vec::new();
        for (p, n, v) in deltas {
            let name = if finetuned.len() > 1 {
                format!("ft{k}-pos{p}.safetensors")
            } else {
                format!("pos{p}.safetensors")
            };
            let file = dir.join(name);
            let norm = lantern_search::linalg::norm(&v);
            let d = lantern_search::Directions {
                layers: [(layer, v)].into_iter().collect(),
                meta: lantern_search::DirectionMeta {
                    hook: site.to_string(),
                    model: ft.manifest().model.clone(),
                    method: "activation-difference".into(),
                    tokens: format!("position:{p}"),
                    n_pos: n,
                    n_neg: n,
                    normalized: false,
                    extra: [("base_model".to_string(), base.manifest().model.clone())]
                        .into_iter()
                        .collect(),
                },
            };
            d.write(&file)?;
            println!(
                "ADL {} position {p}: ‖δ‖ = {norm:.4} over {n} sequences → {}",
                ft.dir().display(),
                file.display()
            );
            positions.push(json!({"position": p, "sequences": n, "norm": norm, "file": file}));
        }
        runs.push(json!({"finetuned": ft.dir(), "layer": layer, "hook": base.manifest().hook, "positions": positions}));
    }
    if !runs.is_empty() {
        write_json(
            &out.join("adl.json"),
            &json!({"base": base.dir(), "runs": runs}),
        )?;
    }
    Ok(runs.len())
}
