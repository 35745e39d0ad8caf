//! `lantern model export`: a model (a GGUF file, or a Hugging Face directory with an optional
//! PEFT adapter merged in) written as a Hugging Face directory that transformers loads.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};
use lantern_lm::LanguageModel;
use lantern_sae::DeviceChoice;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Write the model as a Hugging Face directory (config.json, model.safetensors in f32,
    /// tokenizer.json, tokenizer_config.json with the chat template).
    Export(ExportArgs),
}

#[derive(Args)]
pub struct ExportArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter directory to merge into the weights.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The new directory (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(c: ModelCommand) -> Result<()> {
    match c {
        ModelCommand::Export(a) => {
            let lm = LanguageModel::load_with_adapter(
                &a.model,
                a.adapter.as_deref(),
                &DeviceChoice::Cpu.open()?,
            )?;
            lantern_lm::save::save_hf(&lm, &a.out)?;
            println!("wrote {}", a.out.display());
            Ok(())
        }
    }
}
