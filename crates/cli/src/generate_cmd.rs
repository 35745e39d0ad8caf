//! `lantern generate`: text continuation or a chat answer, streamed to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use lantern_lm::chat::Message;
use lantern_lm::{GenerateOptions, Hooks, LanguageModel, Sampling, generate};
use lantern_sae::DeviceChoice;

#[derive(Args)]
pub struct GenerateArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors),
    /// merged into the model's weights at load.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The prompt (repeat for a batch, generated together with left padding).
    #[arg(long = "prompt", required = true)]
    prompts: Vec<String>,
    /// Treat each prompt as a user message and answer it with the chat template.
    #[arg(long)]
    chat: bool,
    /// A system message for --chat.
    #[arg(long, requires = "chat")]
    system: Option<String>,
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    top_p: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run(a: GenerateArgs) -> Result<()> {
    let device = a.device.parse::<DeviceChoice>()?.open()?;
    let lm = LanguageModel::load_with_adapter(&a.model, a.adapter.as_deref(), &device)?;
    let prompts: Vec<Vec<u32>> = a
        .prompts
        .iter()
        .map(|p| {
            if a.chat {
                let mut msgs = Vec::new();
                if let Some(s) = &a.system {
                    msgs.push(Message::new("system", s.clone()));
                }
                msgs.push(Message::new("user", p.clone()));
                lm.encode_chat(&msgs, true).map(|c| c.ids)
            } else {
                lm.encode(p)
            }
        })
        .collect::<Result<_, _>>()?;
    let opts = GenerateOptions {
        max_new_tokens: a.max_new_tokens,
        sampling: Sampling {
            temperature: a.temperature,
            top_p: a.top_p,
            seed: a.seed,
        },
        stop_ids: lm.stop_ids(),
        pad_id: lm.pad_id(),
        row_seeds: Vec::new(),
    };
    let single = prompts.len() == 1;
    let mut stream = lm.tokenizer.stream_decoder(true);
    let mut stdout = std::io::stdout();
    let t = Instant::now();
    let out = generate(&lm.model, &prompts, &opts, &mut Hooks::new(), |_, id| {
        if single && let Ok(Some(text)) = stream.push(id) {
            let _ = write!(stdout, "{text}");
            let _ = stdout.flush();
        }
    })
    .map_err(crate::flag_error)?
    .tokens;
    let secs = t.elapsed().as_secs_f64();
    if single {
        println!();
    } else {
        for (p, ids) in a.prompts.iter().zip(&out) {
            println!("### {p}\n{}\n", lm.tokenizer.decode(ids, true)?);
        }
    }
    let n: usize = out.iter().map(Vec::len).sum();
    eprintln!(
        "{n} new tokens in {secs:.2} s ({:.1} tokens/s, prompt included)",
        n as f64 / secs
    );
    Ok(())
}
