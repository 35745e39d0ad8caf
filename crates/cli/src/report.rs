//! What a run leaves behind: the SAE, `metrics.json` and the plots of training, and the JSON
//! helpers every command writes its results with.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use lantern_acts::{GroundTruth, Store};
use lantern_plot::{Histogram, LineChart, Series};
use lantern_sae::eval::Absorption;
use lantern_sae::train::LrProbe;
use lantern_sae::{
    DeviceChoice, Dropped, EvalOptions, EvalReport, MetricsRow, RowCut, SaeWeights, TrainConfig,
    TrainReport,
};
use serde::Serialize;

use crate::sae_cmd::TrainArgs;

/// Paths and numbers of a finished run.
#[derive(Serialize)]
pub struct TrainOutcome {
    pub out: PathBuf,
    pub tokens: u64,
    pub seconds: f64,
    pub tokens_per_second: f64,
    pub eval: Option<EvalReport>,
    /// What the store's ground truth says of the SAE, when it has one.
    pub truth: Option<TruthScores>,
    pub files: Vec<PathBuf>,
}

/// What a synthetic store's ground truth says of an SAE.
#[derive(Serialize)]
pub struct TruthScores {
    /// Mean max cosine of the true features to the decoder rows.
    pub mmcs: f64,
    /// Feature absorption, when the truth has a parent/child hierarchy.
    pub absorption: Option<Absorption>,
}

/// Fresh rows drawn for the absorption measurement (and their seed).
const ABSORPTION_ROWS: usize = 20_000;
const ABSORPTION_SEED: u64 = 0xab50;

#[derive(Serialize)]
struct MetricsFile<'a> {
    config: &'a TrainConfig,
    device: String,
    tokens: u64,
    seconds: f64,
    /// Tokens trained per second, over every SAE of a learning-rate probe.
    tokens_per_second: f64,
    /// Batch rows per second from the end of the first step to the last step's statistics:
    /// the trainer's step rate without its set-up, the first step (shader compilation and
    /// autotuning on a GPU), the evaluation or the saving; what `bench sae` measures for the
    /// step alone. A single run of two or more steps.
    steady_tokens_per_second: Option<f64>,
    input_scale: f32,
    skipped_non_finite: u64,
    /// Rows not trained on, by reason, and the cut (its median norm, whether position 0 goes).
    dropped_rows: Dropped,
    row_cut: &'a RowCut,
    eval: Option<&'a EvalReport>,
    mmcs: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    absorption: Option<&'a Absorption>,
    /// The rates a learning-rate probe trained, their FVU, and which it kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    lr_probe: Option<&'a LrProbe>,
    history: &'a [MetricsRow],
}

/// The files a training run writes beside the SAE (with the SAE, one unit).
const METRICS_FILE: &str = "metrics.json";
const LOSS_PNG: &str = "training_loss.png";
const SPARSITY_PNG: &str = "training_sparsity.png";
const DENSITY_PNG: &str = "feature_density.png";

/// How a run's SAE is evaluated after training: `rows` of the store, read with the run's batch
/// size, non-finite handling and row filter.
pub fn eval_options(cfg: &TrainConfig, rows: u64) -> EvalOptions {
    EvalOptions {
        batch: cfg.batch,
        max_rows: Some(rows),
        skip_non_finite: cfg.skip_non_finite,
        filter: cfg.row_filter(),
    }
}

/// A learning-rate probe's table and the kept SAE's evaluation on the rows that chose it
/// ([`eval_options`] of `--eval-rows`, when that is not 0).
pub struct Probed<'a> {
    pub probe: &'a LrProbe,
    pub eval: EvalReport,
}

/// How long a run took: wall seconds from the start, and the rate after its first step
/// (metrics.json `steady_tokens_per_second`; single runs only).
pub struct RunTime {
    pub seconds: f64,
    pub steady_tokens_per_second: Option<f64>,
}

/// Saves the SAE (SAELens v6), evaluates it on `--eval-rows` rows (a probe's evaluation is
/// taken as it is: the same rows), and writes metrics.json and the plots.
pub fn finish_training(
    args: &TrainArgs,
    cfg: &TrainConfig,
    store: &Store,
    device: DeviceChoice,
    report: TrainReport,
    time: RunTime,
    probed: Option<Probed>,
) -> Result<TrainOutcome> {
    let RunTime {
        seconds,
        steady_tokens_per_second,
    } = time;
    let out = &args.out;
    let lr_probe = probed.as_ref().map(|p| p.probe);
    let eval = match (args.eval_rows, probed) {
        (0, _) => None,
        (_, Some(p)) => Some(p.eval),
        (rows, None) => Some(lantern_sae::evaluate(
            &report.weights,
            store,
            device,
            &eval_options(cfg, rows),
        )?),
    };
    // The SAE, its metrics and its plots are one unit: staged beside `out` and swapped in at
    // once, so a kill leaves the previous run's files or this run's, never a mix (the
    // checkpoint and the output lock are carried over as the same files).
    let stage = lantern_output::DirStage::new(out)?;
    let staged = stage.path().to_path_buf();
    lantern_sae::write_saelens_files(
        &report.weights,
        &staged,
        eval.as_ref().map(|e| e.log10_density.as_slice()),
    )?;
    let truth = ground_truth_scores(None, &args.acts, &report.weights)?;
    // A probe trained one SAE per rate on the same tokens: its speed counts all of them.
    let runs = lr_probe.map_or(1, |p| p.candidates.len());
    let tokens_per_second = (runs as u64 * report.tokens) as f64 / seconds.max(1e-9);
    let metrics = MetricsFile {
        config: cfg,
        device: device.to_string(),
        tokens: report.tokens,
        seconds,
        tokens_per_second,
        steady_tokens_per_second,
        input_scale: report.input_scale,
        skipped_non_finite: report.skipped_non_finite,
        dropped_rows: report.dropped,
        row_cut: &report.row_cut,
        eval: eval.as_ref(),
        mmcs: truth.as_ref().map(|t| t.mmcs),
        absorption: truth.as_ref().and_then(|t| t.absorption.as_ref()),
        lr_probe,
        history: &report.history,
    };
    let metrics_path = staged.join(METRICS_FILE);
    std::fs::write(&metrics_path, serde_json::to_string_pretty(&metrics)?)
        .with_context(|| format!("writing {}", metrics_path.display()))?;
    let mut names: Vec<String> = vec!["cfg.json".into(), "sae_weights.safetensors".into()];
    names.push(METRICS_FILE.into());
    if eval.is_some() {
        names.push("sparsity.safetensors".into());
    }
    let mut plots = plot_curves(&staged, &report.history)?;
    if let Some(e) = &eval {
        plots.push(plot_density(&staged, &e.log10_density)?);
    }
    names.extend(
        plots
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned())),
    );
    let mut unit: Vec<&str> = lantern_sae::SAELENS_FILES.to_vec();
    unit.extend([METRICS_FILE, LOSS_PNG, SPARSITY_PNG, DENSITY_PNG]);
    stage.commit(&unit)?;
    let files: Vec<PathBuf> = names.iter().map(|n| out.join(n)).collect();
    if !args.quiet {
        println!(
            "trained {} tokens{} in {seconds:.1} s ({tokens_per_second:.0} tokens/s{}); left out: {}{}",
            report.tokens,
            if runs > 1 {
                format!(" at each of {runs} rates")
            } else {
                String::new()
            },
            steady_tokens_per_second
                .map(|r| format!(", {r:.0} after the first step"))
                .unwrap_or_default(),
            report.dropped.describe(&report.row_cut),
            if report.dropped.first_position + report.dropped.outlier > 0 {
                " (--keep-first, --keep-outliers keep them)"
            } else {
                ""
            }
        );
        if let Some(e) = &eval {
            print_eval(e, truth.as_ref());
        }
        println!("wrote:");
        for f in &files {
            println!("  {}", f.display());
        }
    }
    Ok(TrainOutcome {
        out: out.clone(),
        tokens: report.tokens,
        seconds,
        tokens_per_second,
        eval,
        truth,
        files,
    })
}

pub fn print_eval(e: &EvalReport, truth: Option<&TruthScores>) {
    println!("rows           {}", e.rows);
    println!("left out       {}", e.dropped.describe(&e.row_cut));
    println!("mse            {:.6}", e.mse);
    println!("fvu            {:.4}", e.fvu);
    println!("l0             {:.2}", e.l0);
    println!("dead           {:.2} %", 100.0 * e.dead_fraction);
    println!("dense (>10 %)  {:.2} %", 100.0 * e.dense_fraction);
    if let Some(t) = truth {
        println!("mmcs (truth)   {:.4}", t.mmcs);
        if let Some(a) = &t.absorption {
            println!(
                "absorption     {:.4} ({} parents, {} fresh rows; parent latent fires alone {:.1} %, cosine {:.3})",
                a.absorption,
                a.parents,
                a.rows,
                100.0 * a.parent_recall,
                a.parent_cosine
            );
        }
    }
}

/// Mean max cosine similarity of the ground-truth features to the decoder rows, and feature
/// absorption when the truth has a hierarchy (on fresh rows of its law), when the store (or
/// `explicit`) has a ground truth.
pub fn ground_truth_scores(
    explicit: Option<&Path>,
    store_dir: &Path,
    w: &SaeWeights,
) -> Result<Option<TruthScores>> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => {
            let p = store_dir.join("ground_truth.safetensors");
            if !p.exists() {
                return Ok(None);
            }
            p
        }
    };
    let gt = GroundTruth::load(&path)?;
    if gt.d != w.cfg.d_in {
        anyhow::bail!(
            "{}: ground-truth features have d = {}, the SAE has d_in = {}",
            path.display(),
            gt.d,
            w.cfg.d_in
        );
    }
    Ok(Some(TruthScores {
        mmcs: lantern_sae::eval::mean_max_cosine(&gt.features, &w.w_dec, gt.d),
        absorption: lantern_sae::eval::absorption(w, &gt, ABSORPTION_ROWS, ABSORPTION_SEED),
    }))
}

fn plot_curves(out: &Path, h: &[MetricsRow]) -> Result<Vec<PathBuf>> {
    let series = |name: &str, f: &dyn Fn(&MetricsRow) -> f64| Series {
        name: name.to_string(),
        points: h.iter().map(|m| (m.tokens as f64, f(m))).collect(),
    };
    let loss = out.join(LOSS_PNG);
    lantern_plot::line_chart(
        &loss,
        &LineChart {
            title: "Training loss and FVU",
            x_label: "tokens",
            y_label: "value (log scale)",
            log_y: true,
            series: &[series("loss", &|m| m.loss), series("fvu", &|m| m.fvu)],
        },
    )?;
    let sparsity = out.join(SPARSITY_PNG);
    lantern_plot::line_chart(
        &sparsity,
        &LineChart {
            title: "L0 and dead / dense latents",
            x_label: "tokens",
            y_label: "L0 (active latents per token) / percent",
            log_y: false,
            series: &[
                series("L0", &|m| m.l0),
                series("dead %", &|m| 100.0 * m.dead_fraction),
                series("dense %", &|m| 100.0 * m.dense_fraction),
            ],
        },
    )?;
    Ok(vec![loss, sparsity])
}

fn plot_density(out: &Path, log10_density: &[f32]) -> Result<PathBuf> {
    let path = out.join(DENSITY_PNG);
    let values: Vec<f64> = log10_density
        .iter()
        .map(|v| {
            if *v <= -9.99 {
                f64::NEG_INFINITY
            } else {
                *v as f64
            }
        })
        .collect();
    lantern_plot::histogram(
        &path,
        &Histogram {
            title: "Feature density (log10 of firing frequency)",
            x_label: "log10 density",
            values: &values,
            bins: 50,
            markers: &[(-1.0, "dense (10 %)")],
        },
    )?;
    Ok(path)
}

/// Writes `v` as pretty JSON to `path` atomically (temporary file, fsync, rename).
pub fn write_json(path: &Path, v: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(v)? + "\n";
    lantern_output::write_atomic(path, text.as_bytes())?;
    Ok(())
}

/// Checks that the output directory `dir` is not (inside) one of `inputs` (`(flag, path)`),
/// creates it and takes its lock ([`lantern_output::OutputLock`]); hold the value for the run,
/// so a second process with the same output fails at once instead of mixing files with ours.
pub fn lock_output(
    flag: &str,
    dir: &Path,
    inputs: &[(&str, &Path)],
) -> Result<lantern_output::OutputLock> {
    lantern_output::check_not_inside(dir, inputs).with_context(|| flag.to_string())?;
    Ok(lantern_output::OutputLock::acquire(dir)?)
}

/// `x` as a JSON number, or `null` when it is NaN or infinite (JSON has neither).
pub fn finite_or_null(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}
