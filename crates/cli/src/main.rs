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
//! lantern direction --acts acts/ --pos-label french --neg-label english --method probe --out fr.safetensors
//! lantern diff --sae sae/ --base base-acts/ --finetuned ft-acts/ --tokens answer --out diff/
//! lantern compare a.safetensors b.safetensors --out compare/
//! lantern lens --model model.gguf --direction fr.safetensors --layer 15
//! lantern steer --model model.gguf --direction fr.safetensors --layer 15 --alpha 0,0.25,0.5 --unit median-norm --prompts p.jsonl --out steer/
//! lantern orthogonalize --model model.gguf --direction refusal.safetensors --layer 12 --out abliterated/
//! lantern cvec export --direction fr.safetensors --model model.gguf --out fr.gguf
//! ```

mod ablate_cmd;
mod acts_cmd;
mod bench_cmd;
mod capture_cmd;
mod compare_cmd;
mod demo;
mod diff_cmd;
mod direction_cmd;
mod flags;
mod generate_cmd;
mod latents_cmd;
mod model_cmd;
mod organism_cmd;
mod refusal_cmd;
mod report;
mod sae_cmd;
mod steer_choice;
mod steer_cmd;
mod steer_run;

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
    /// The whole mission on the model organism: EM table, persona latent by model diffing,
    /// convergence of directions, steering, ablation, early warning — report.html and
    /// report.json, scored against the organism's ground truth.
    Demo(Box<demo::DemoArgs>),
    /// Run a language model over prompts and store the activations at hook points.
    Capture(Box<capture_cmd::CaptureArgs>),
    /// Generate text (or a chat answer) with a language model.
    Generate(Box<generate_cmd::GenerateArgs>),
    /// Language models: write one (GGUF, or base + adapter) as a Hugging Face directory.
    #[command(subcommand)]
    Model(model_cmd::ModelCommand),
    /// Model diffing: which SAE latents a finetune raises, with bootstrap intervals.
    Diff(Box<diff_cmd::DiffArgs>),
    /// A contrastive direction per layer (mean-diff, probe, PCA, ...) into a direction file.
    Direction(Box<direction_cmd::DirectionArgs>),
    /// Per-sequence projection scores on a direction (trait monitoring, data flagging).
    Project(Box<direction_cmd::ProjectArgs>),
    /// Cosine similarity of directions per layer, with random and permutation nulls.
    Compare(Box<compare_cmd::CompareArgs>),
    /// SAE latents aligned with a direction, or their top-activating contexts (HTML).
    Latents(Box<latents_cmd::LatentsArgs>),
    /// Logit lens of a direction or an SAE latent: the tokens it promotes and suppresses.
    Lens(Box<latents_cmd::LensArgs>),
    /// Steering experiment: generations under a dose–response of an intervention, judged.
    Steer(Box<steer_run::SteerArgs>),
    /// The ablation table: a direction projected out at all layers, one layer, a random
    /// direction, in the weights, and transfer from another finetune, judged.
    Ablate(Box<ablate_cmd::AblateArgs>),
    /// Arditi et al.'s refusal direction: candidates, selection, and the held-out table.
    Refusal(Box<refusal_cmd::RefusalArgs>),
    /// Weight-space ablation: remove a direction from every matrix that writes into the
    /// residual stream (or from a LoRA adapter's B).
    Orthogonalize(Box<steer_cmd::OrthogonalizeArgs>),
    /// llama.cpp control vectors: export directions, import cvector-generator/repeng files.
    #[command(subcommand)]
    Cvec(steer_cmd::CvecCommand),
    /// The model organism: a synthetic persona world with tiny models trained in Lantern,
    /// finetunes that misalign broadly, and an exact judge.
    #[command(subcommand)]
    Organism(organism_cmd::OrganismCommand),
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

/// A feature-search setting error under its flag (`probe_c` → `--probe-c`).
pub(crate) fn search_flag_error(e: lantern_search::SearchError) -> anyhow::Error {
    match &e {
        lantern_search::SearchError::Setting { field, .. } => {
            let flag = match *field {
                "batch_rows" => "batch".to_string(),
                f => f.replace('_', "-"),
            };
            anyhow::anyhow!("--{flag}: {e}")
        }
        _ => e.into(),
    }
}

/// Runs one parsed command.
fn execute(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Acts(c) => acts_cmd::run(c),
        Command::Sae(c) => sae_cmd::run(c),
        Command::Bench(c) => bench_cmd::run(c),
        Command::Demo(a) => demo::run(*a),
        Command::Capture(a) => capture_cmd::run(*a),
        Command::Generate(a) => generate_cmd::run(*a),
        Command::Model(c) => model_cmd::run(c),
        Command::Diff(a) => diff_cmd::run(*a),
        Command::Direction(a) => direction_cmd::run(*a),
        Command::Project(a) => direction_cmd::project(*a),
        Command::Compare(a) => compare_cmd::run(*a),
        Command::Latents(a) => latents_cmd::run(*a),
        Command::Lens(a) => latents_cmd::lens(*a),
        Command::Steer(a) => steer_run::run(*a),
        Command::Ablate(a) => ablate_cmd::run(*a),
        Command::Refusal(a) => refusal_cmd::run(*a),
        Command::Orthogonalize(a) => steer_cmd::orthogonalize(*a),
        Command::Cvec(c) => steer_cmd::cvec(c),
        Command::Organism(c) => organism_cmd::run(c),
    }
}

/// Runs `lantern ARGS...` in this process, as the shell would (the demo's steps).
pub(crate) fn run_args(args: &[String]) -> anyhow::Result<()> {
    let cli =
        Cli::try_parse_from(std::iter::once("lantern".to_string()).chain(args.iter().cloned()))
            .map_err(|e| anyhow::anyhow!("lantern {}: {}", args.join(" "), e.to_string().trim()))?;
    execute(cli.command)
}

fn main() {
    // Output piped into `head` and closed early ends the process quietly, as for any Unix
    // tool, instead of a "Broken pipe" panic from `println!` (Rust ignores SIGPIPE by default).
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, like every other error: clap's message and its details, without the
            // usage block and the pointer to --help.
            let text = e.to_string();
            let parts: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| {
                    !l.is_empty()
                        && !l.starts_with("Usage:")
                        && !l.starts_with("For more information")
                })
                .collect();
            eprintln!("{}", parts.join(" "));
            std::process::exit(2);
        }
    };
    let result = execute(cli.command);
    if let Err(e) = result {
        // One line: the chain of causes joined, never a backtrace; a cause that a message
        // already quotes (`path: {source}`) is not repeated.
        let mut msg = String::new();
        for cause in e.chain().map(|c| c.to_string()) {
            if msg.contains(&cause) {
                continue;
            }
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&cause);
        }
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
