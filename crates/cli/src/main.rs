//! `lantern`: the command line of the Lantern SAE toolkit.
//!
//! ```text
//! lantern demo --out lantern-out                       # synth → train → eval → files + plots
//! lantern acts synth --d 128 --features 1024 --rows 1000000 --out acts/
//! lantern sae train --acts acts/ --arch topk --k 32 --d-sae 2048 --tokens 5000000 --out sae/
//! lantern sae eval --sae sae/ --acts acts/ --json
//! lantern generate --model SmolLM2-135M-Instruct.Q4_1.gguf --chat --prompt "What is 2+2?"
//! lantern capture --model model.gguf --prompts prompts.jsonl --hook blocks.15.hook_resid_post --out acts/
//! lantern model export --model base.gguf --adapter finetune/ --out merged/
//! ```

mod acts_cmd;
mod bench_cmd;
mod capture_cmd;
mod demo_cmd;
mod generate_cmd;
mod model_cmd;
mod report;
mod sae_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lantern",
    version,
    about = "Sparse-autoencoder interpretability toolkit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Activation stores: import, export, inspect, synthesize.
    #[command(subcommand)]
    Acts(acts_cmd::ActsCommand),
    /// Sparse autoencoders: train, evaluate, inspect, convert.
    #[command(subcommand)]
    Sae(sae_cmd::SaeCommand),
    /// Speed measurements (tokens/s, memory).
    #[command(subcommand)]
    Bench(bench_cmd::BenchCommand),
    /// The whole pipeline on built-in synthetic data with known features.
    Demo(Box<demo_cmd::DemoArgs>),
    /// Run a language model over prompts and store the activations at hook points.
    Capture(Box<capture_cmd::CaptureArgs>),
    /// Generate text (or a chat answer) with a language model.
    Generate(Box<generate_cmd::GenerateArgs>),
    /// Language models: write one (GGUF, or base + adapter) as a Hugging Face directory.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
}

/// A library setting error under the command-line flag that set it (`temperature` →
/// `--temperature`); other errors pass unchanged. The library names its fields, the CLI its
/// flags.
pub(crate) fn flag_error(e: lantern_lm::LmError) -> anyhow::Error {
    match &e {
        lantern_lm::LmError::Setting { field, .. } => {
            anyhow::anyhow!("--{}: {e}", field.replace('_', "-"))
        }
        _ => e.into(),
    }
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Acts(c) => acts_cmd::run(c),
        Command::Sae(c) => sae_cmd::run(c),
        Command::Bench(c) => bench_cmd::run(c),
        Command::Demo(a) => demo_cmd::run(*a),
        Command::Capture(a) => capture_cmd::run(*a),
        Command::Generate(a) => generate_cmd::run(*a),
        Command::Model(c) => model_cmd::run(c),
    };
    if let Err(e) = result {
        // One line: the chain of causes joined, never a backtrace.
        let msg = e
            .chain()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
