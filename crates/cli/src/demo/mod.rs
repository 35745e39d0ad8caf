//! `lantern demo`: the mission on the model organism, scored against its ground truth.
//!
//! On the shipped organism models (or a directory from `lantern organism train --all`), every
//! step is a public `lantern` command run in this process (see [`pipeline`]): the EM table, an
//! SAE on the chat model, model diffing against the ground-truth persona direction, the
//! finetunes' directions and their convergence, steering, ablation and the early-warning sweep.
//! [`results`] reads what the commands wrote into `report.json`; [`html`] lays it out as one
//! self-contained page with the paper's number beside each of ours, in red where the organism
//! does not reproduce it.
//!
//! ```text
//! lantern demo --out lantern-out          # ≈ 1 min on 2 CPU cores
//! lantern demo --quick --out quick-out    # fewer samples and strengths (CI)
//! lantern demo --synthetic --out synth    # synthetic activations → TopK SAE → recovery
//! ```

mod html;
mod pipeline;
mod results;
mod steps;
mod synthetic;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

#[derive(Args)]
pub struct DemoArgs {
    /// Output directory (report.html, report.json and every step's files).
    #[arg(long, default_value = "lantern-out")]
    pub out: PathBuf,
    /// cpu | wgpu | vulkan (SAE training, captures, diffing).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Fewer samples and strengths (≈ half the time; what CI runs).
    #[arg(long, conflicts_with = "synthetic")]
    pub quick: bool,
    /// Answers sampled per question in every judged step (default 8, 4 with --quick).
    #[arg(long, conflicts_with = "synthetic")]
    pub samples: Option<usize>,
    /// An organism directory made by `lantern organism train --all` instead of the shipped
    /// models.
    #[arg(long, conflicts_with = "synthetic")]
    pub organism: Option<PathBuf>,
    /// Where the shipped models are extracted (as `lantern organism list --cache`).
    #[arg(long, conflicts_with_all = ["synthetic", "organism"])]
    pub cache: Option<PathBuf>,
    /// Also run the alignment-pretraining experiment in this run (`lantern organism train
    /// --mixes`, one seed, ≈ 15 min); without it the report shows the committed
    /// multi-seed measurement, marked as such.
    #[arg(long, conflicts_with = "synthetic")]
    pub mixes: bool,
    /// The older demo instead: synthetic activations with known features → TopK SAE →
    /// evaluation and recovery of the features.
    #[arg(long)]
    pub synthetic: bool,
    /// With --synthetic: rows of synthetic activations.
    #[arg(long, requires = "synthetic")]
    pub rows: Option<u64>,
    /// With --synthetic: activation width.
    #[arg(long, requires = "synthetic")]
    pub d: Option<usize>,
    /// With --synthetic: ground-truth features.
    #[arg(long, requires = "synthetic")]
    pub features: Option<usize>,
    /// With --synthetic: the SAE's k.
    #[arg(long, requires = "synthetic")]
    pub k: Option<usize>,
}

/// Marks a directory as the demo's, so a rerun may replace what an earlier run wrote there.
const MARKER: &str = ".lantern-demo";

pub fn run(a: DemoArgs) -> Result<()> {
    if a.synthetic {
        let s = synthetic::Synthetic {
            rows: a.rows.unwrap_or(1_000_000),
            d: a.d.unwrap_or(64),
            features: a.features.unwrap_or(256),
            k: a.k.unwrap_or(8),
        };
        return synthetic::run(&a.out, &a.device, &s);
    }
    let samples = a.samples.unwrap_or(if a.quick { 4 } else { 8 });
    if samples == 0 {
        bail!("--samples 0: expected at least one answer per question");
    }
    let start = Instant::now();
    let org = match &a.organism {
        Some(dir) => {
            if !dir.join("organism.json").is_file() {
                bail!(
                    "--organism {}: expected a directory made by `lantern organism train --all` \
                     (with organism.json)",
                    dir.display()
                );
            }
            dir.clone()
        }
        None => {
            let root = a
                .cache
                .clone()
                .unwrap_or_else(lantern_organism::shipped::default_cache_root);
            lantern_organism::shipped::manifest(&root)?.0
        }
    };
    let org = std::fs::canonicalize(&org).with_context(|| format!("{}", org.display()))?;
    let _lock = crate::report::lock_output("--out", &a.out, &[("--organism", org.as_path())])?;
    prepare_out(&a.out)?;
    // Absolute, so the report's `$OUT` stands for exactly this directory.
    let out =
        std::fs::canonicalize(&a.out).with_context(|| format!("--out {}", a.out.display()))?;
    let manifest = lantern_organism::zoo::Manifest::read(&org.join("organism.json"))?;
    let plan = pipeline::Plan::new(&org, manifest, &out, &a.device, samples, a.quick)?;
    let mut steps = steps::Steps::new(&out, &org, plan.count(a.mixes))?;
    let ran = pipeline::run(&plan, &mut steps, a.mixes);
    steps.finish();
    ran?;
    let report = results::collect(&plan, &steps, a.mixes, start.elapsed().as_secs_f64())?;
    crate::report::write_json(&a.out.join("report.json"), &report)?;
    let page = html::page(&report, &out)?;
    lantern_output::write_atomic(&a.out.join("report.html"), page.as_bytes())?;
    results::print_summary(&report);
    println!(
        "\nreport: {}  (every number: {}; each step's files and log under {})",
        a.out.join("report.html").display(),
        a.out.join("report.json").display(),
        a.out.display()
    );
    Ok(())
}

/// `out` must be new, empty, or an earlier demo's output (whose step directories are then
/// replaced); anything else is refused rather than mixed with the demo's files.
fn prepare_out(out: &Path) -> Result<()> {
    let entries: Vec<_> = std::fs::read_dir(out)
        .with_context(|| format!("--out {}", out.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() != ".lantern.lock")
        .collect();
    if !entries.is_empty() {
        if !out.join(MARKER).exists() {
            bail!(
                "--out {}: not empty and not an earlier demo's output; choose a new directory",
                out.display()
            );
        }
        for e in entries {
            let p = e.path();
            let r = if e.file_type().is_ok_and(|t| t.is_dir()) {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.with_context(|| format!("--out {}: cannot replace {}", out.display(), p.display()))?;
        }
    }
    lantern_output::write_atomic(
        &out.join(MARKER),
        b"written by `lantern demo`; a rerun replaces this directory's contents\n",
    )?;
    Ok(())
}
