//! `lantern acts ...`

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;
use lantern_acts::{Dtype, Hierarchy, ImportOptions, Store, SynthConfig};

#[derive(Subcommand)]
pub enum ActsCommand {
    /// Import a .npy (2-D), .npz (named array) or .safetensors (named tensor) into a store.
    Import {
        /// The file to import.
        file: PathBuf,
        /// Array or tensor name inside .npz / .safetensors (needed when there are several).
        #[arg(long)]
        key: Option<String>,
        /// Drop rows holding NaN/Inf (counted and reported) instead of failing.
        #[arg(long)]
        skip_non_finite: bool,
        /// Hook name recorded in the manifest.
        #[arg(long, default_value = "unknown")]
        hook: String,
        /// Model name recorded in the manifest.
        #[arg(long, default_value = "unknown")]
        model: String,
        /// The store directory to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Describe a store (and verify every shard checksum with --verify).
    Info {
        store: PathBuf,
        #[arg(long)]
        verify: bool,
    },
    /// Export all rows as a 2-D f32 .npy.
    Export {
        store: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Synthesize x = Σ aᵢ fᵢ + noise with known unit-norm features fᵢ (saved as
    /// ground_truth.safetensors in the store) and power-law firing frequencies.
    Synth {
        #[arg(long)]
        d: usize,
        #[arg(long)]
        features: usize,
        #[arg(long)]
        rows: u64,
        /// Expected number of active features per row.
        #[arg(long, default_value_t = 8.0)]
        #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
        mean_active: f64,
        /// Power-law exponent of the firing probabilities pᵢ ∝ (i+1)^−alpha.
        #[arg(long, default_value_t = 0.6)]
        #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
        alpha: f64,
        /// Norm of the Gaussian noise.
        #[arg(long, default_value_t = 0.05)]
        #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
        noise: f32,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Planted features appended after the dictionary, each with its firing probability
        /// (comma-separated, e.g. 0.005,0.01): features whose rate a test controls exactly.
        #[arg(long, value_delimiter = ',')]
        #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
        planted: Vec<f64>,
        /// Seed of the rows alone: stores with one --seed and different --row-seed share their
        /// feature directions (a base and a "finetuned" store of one dictionary).
        #[arg(long)]
        row_seed: Option<u64>,
        /// A feature hierarchy PARENTSxCHILDREN (e.g. 16x4) appended after the dictionary:
        /// children fire only with their parent, at most one per parent (the setting of
        /// feature absorption; `sae eval` measures it).
        #[arg(long, value_parser = parse_hierarchy)]
        hierarchy: Option<(usize, usize)>,
        /// With --hierarchy: probability that a parent fires in a row.
        #[arg(long, default_value_t = 0.05, requires = "hierarchy")]
        #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
        parent_rate: f64,
        /// With --hierarchy: probability that one of a firing parent's children fires with it.
        #[arg(long, default_value_t = 0.75, requires = "hierarchy")]
        #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
        child_rate: f64,
        /// f32, f16 or bf16.
        #[arg(long, default_value = "f32")]
        dtype: String,
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(cmd: ActsCommand) -> Result<()> {
    match cmd {
        ActsCommand::Import {
            file,
            key,
            skip_non_finite,
            hook,
            model,
            out,
        } => {
            let opts = ImportOptions {
                key,
                skip_non_finite,
                shard_rows: None,
                hook,
                model,
            };
            let _lock = crate::report::lock_output("--out", &out, &[("the input", &file)])?;
            let r = lantern_acts::import_file(&file, &out, &opts)?;
            println!(
                "imported {} rows of d = {} ({}) into {}{}",
                r.rows,
                r.d_model,
                r.dtype,
                out.display(),
                if r.skipped_non_finite > 0 {
                    format!("; skipped {} non-finite rows", r.skipped_non_finite)
                } else {
                    String::new()
                }
            );
        }
        ActsCommand::Info { store, verify } => {
            let s = Store::open(&store)?;
            let m = s.manifest();
            let bytes: u64 = m.shards.iter().map(|sh| sh.bytes).sum();
            println!("store      {}", store.display());
            println!("rows       {}", m.rows);
            println!("d_model    {}", m.d_model);
            println!("dtype      {}", m.dtype);
            println!("hook       {}", m.hook);
            println!("model      {}", m.model);
            println!(
                "shards     {} ({:.1} MiB)",
                m.shards.len(),
                bytes as f64 / (1 << 20) as f64
            );
            println!("roles      {}", if s.has_roles() { "yes" } else { "no" });
            if store.join("ground_truth.safetensors").exists() {
                println!("truth      ground_truth.safetensors");
            }
            if verify {
                s.verify()?;
                println!("checksums  ok");
            }
        }
        ActsCommand::Export { store, out } => {
            let s = Store::open(&store)?;
            let rows = lantern_acts::export_npy(&s, &out)?;
            println!("wrote {rows} rows to {}", out.display());
        }
        ActsCommand::Synth {
            d,
            features,
            rows,
            mean_active,
            alpha,
            noise,
            seed,
            planted,
            row_seed,
            hierarchy,
            parent_rate,
            child_rate,
            dtype,
            out,
        } => {
            let dtype: Dtype = dtype
                .parse()
                .map_err(|e| anyhow::anyhow!("--dtype {dtype}: {e}"))?;
            let cfg = SynthConfig {
                d,
                features,
                rows,
                mean_active,
                alpha,
                noise,
                seed,
                dtype,
                shard_rows: None,
                planted,
                row_seed,
                hierarchy: hierarchy.map(|(parents, children)| Hierarchy {
                    parents,
                    children,
                    parent_rate,
                    child_rate,
                }),
            };
            let t = std::time::Instant::now();
            let _lock = crate::report::lock_output("--out", &out, &[])?;
            lantern_acts::synthesize(&cfg, &out)?;
            let family = cfg.hierarchy.map_or(String::new(), |h| {
                format!(
                    " + {}x{} hierarchy, {} parent/child features",
                    h.parents,
                    h.children,
                    h.parents * (h.children + 1)
                )
            });
            println!(
                "synthesized {rows} rows (d = {d}, {features} features{family}) into {} in {:.1} s",
                out.display(),
                t.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

/// `--hierarchy PARENTSxCHILDREN`.
fn parse_hierarchy(v: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("expected PARENTSxCHILDREN with both at least 1, e.g. 16x4; got '{v}'");
    let (p, c) = v.split_once(['x', 'X']).ok_or_else(bad)?;
    match (p.trim().parse::<usize>(), c.trim().parse::<usize>()) {
        (Ok(p), Ok(c)) if p > 0 && c > 0 => Ok((p, c)),
        _ => Err(bad()),
    }
}
