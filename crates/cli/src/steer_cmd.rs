//! `lantern orthogonalize` (weight-space ablation of a direction) and `lantern cvec
//! export|import` (llama.cpp control vectors).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lantern_lm::{LanguageModel, LoraAdapter};
use lantern_sae::DeviceChoice;
use lantern_search::directions::Directions;
use lantern_steer::LayerVectors;
use serde_json::json;

use crate::report::write_json;

/// One layer's vector of a direction file: `--layer`, or the file's only layer.
pub fn one_layer(path: &Path, layer: Option<usize>) -> Result<(usize, LayerVectors)> {
    let v = LayerVectors::read(path, layer)?;
    let l = match layer {
        Some(l) => l,
        None if v.layers.len() == 1 => *v.layers.keys().next().expect("one layer"),
        None => bail!(
            "--layer: {} holds layers {}; say which one to use",
            path.display(),
            v.layer_list()
        ),
    };
    let v = v.select(&[l])?;
    Ok((l, v))
}

#[derive(Args)]
pub struct OrthogonalizeArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter directory (merged into the weights first, or with --weights lora-b
    /// the adapter whose B is edited).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// A direction file (or control vector, .npy, .safetensors export).
    #[arg(long)]
    direction: PathBuf,
    /// Which layer's vector to remove (needed when the file holds several).
    #[arg(long)]
    layer: Option<usize>,
    /// `model`: W ← W − r̂r̂ᵀW on every residual writer, written as a Hugging Face directory;
    /// `lora-b`: B′ = B − r̂r̂ᵀB renormalised to ‖B‖ on the adapter's residual writers, written
    /// as a PEFT adapter directory (Soligo et al.).
    #[arg(long, default_value = "model")]
    weights: String,
    /// The new directory.
    #[arg(long)]
    out: PathBuf,
}

pub fn orthogonalize(a: OrthogonalizeArgs) -> Result<()> {
    let dev = DeviceChoice::Cpu.open()?;
    let (layer, v) = one_layer(&a.direction, a.layer)?;
    let r = v.layers[&layer].clone();
    match a.weights.as_str() {
        "model" => {
            let mut lm = LanguageModel::load_with_adapter(&a.model, a.adapter.as_deref(), &dev)?;
            let cfg = lm.model.config().clone();
            v.check(cfg.n_layers, cfg.d_model)?;
            let changed = lantern_steer::orthogonalize::orthogonalize(&mut lm.model, &r)?;
            lantern_lm::save::save_hf(&lm, &a.out)?;
            write_json(
                &a.out.join("orthogonalize.json"),
                &json!({
                    "model": a.model, "adapter": a.adapter, "direction": a.direction,
                    "layer": layer, "site": v.site.to_string(), "changed": changed,
                    "rule": "W <- W - r r^T W on every residual writer; lm_head unchanged",
                }),
            )?;
            println!(
                "wrote {} ({} residual-writer parameters orthogonalized against layer {layer})",
                a.out.display(),
                changed.len()
            );
        }
        "lora-b" => {
            let Some(dir) = &a.adapter else {
                bail!("--weights lora-b: give the --adapter whose B vectors to edit");
            };
            let mut adapter = LoraAdapter::load(dir)?;
            let changed = lantern_steer::orthogonalize::ablate_lora_b(&mut adapter, &r)?;
            if a.out.exists() && std::fs::read_dir(&a.out)?.next().is_some() {
                bail!("--out {}: exists and is not empty", a.out.display());
            }
            lantern_steer::orthogonalize::write_adapter(&adapter, &a.out)?;
            println!(
                "wrote {} (B of {} modules with layer {layer}'s direction projected out)",
                a.out.display(),
                changed.len()
            );
        }
        other => bail!("--weights {other}: expected model or lora-b"),
    }
    Ok(())
}

#[derive(Subcommand)]
pub enum CvecCommand {
    /// Write directions as a llama.cpp control vector (GGUF; direction.N is added to the output
    /// of block N = resid_post N; resid_pre L becomes direction.(L−1)).
    Export(CvecExportArgs),
    /// Read a llama.cpp / repeng control vector into a direction file (resid_post layers).
    Import(CvecImportArgs),
}

#[derive(Args)]
pub struct CvecExportArgs {
    #[arg(long)]
    direction: PathBuf,
    /// Layers to export (all of the file's when not given).
    #[arg(long = "layer")]
    layers: Vec<usize>,
    /// The model the vector is for (its block count, width and architecture are checked and
    /// recorded).
    #[arg(long)]
    model: PathBuf,
    /// Multiplies every vector (llama.cpp adds the stored values unscaled).
    #[arg(long, default_value_t = 1.0)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    scale: f32,
    /// Leave out layers llama.cpp cannot express (resid_post 0) instead of failing.
    #[arg(long)]
    skip_unrepresentable: bool,
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct CvecImportArgs {
    /// A GGUF control vector (llama.cpp cvector-generator, repeng, or ours).
    #[arg(long)]
    cvec: PathBuf,
    /// The direction file to write (.safetensors).
    #[arg(long)]
    out: PathBuf,
}

pub fn cvec(c: CvecCommand) -> Result<()> {
    match c {
        CvecCommand::Export(a) => {
            let mut v = LayerVectors::read(&a.direction, None)?;
            if !a.layers.is_empty() {
                v = v.select(&a.layers)?;
            }
            let cfg = lantern_lm::Model::load(&a.model, &DeviceChoice::Cpu.open()?)?
                .config()
                .clone();
            v.check(cfg.n_layers, cfg.d_model)?;
            let skipped = lantern_steer::cvec::export(
                &v,
                a.scale,
                cfg.n_layers,
                &cfg.model_type,
                &a.out,
                a.skip_unrepresentable,
            )?;
            if !skipped.is_empty() {
                eprintln!("left out layers {skipped:?} (llama.cpp has no direction.0)");
            }
            println!("wrote {}", a.out.display());
        }
        CvecCommand::Import(a) => {
            let d = Directions::read(&a.cvec, None)?;
            d.write(&a.out)
                .with_context(|| format!("writing {}", a.out.display()))?;
            let layers: Vec<String> = d.layers.keys().map(usize::to_string).collect();
            println!(
                "wrote {} (resid_post layers {})",
                a.out.display(),
                layers.join(", ")
            );
        }
    }
    Ok(())
}
