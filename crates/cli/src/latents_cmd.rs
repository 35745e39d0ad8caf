//! `lantern latents` (latents aligned with a direction; top-activating contexts as JSON and a
//! self-contained HTML page) and `lantern lens` (logit lens of a direction or a latent).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use lantern_acts::Store;
use lantern_lm::LanguageModel;
use lantern_sae::{DeviceChoice, Sae};
use lantern_search::latents::top_bottom;
use lantern_search::{ContextOptions, Directions, TokenSelection, aligned_latents, top_contexts};
use serde_json::json;

use crate::report::write_json;
use crate::search_flag_error;

#[derive(Args)]
pub struct LatentsArgs {
    #[arg(long)]
    sae: PathBuf,
    /// Rank latents by the cosine of their decoder rows with this direction.
    #[arg(long, conflicts_with_all = ["acts", "latent"])]
    direction: Option<PathBuf>,
    /// The direction file's layer (default: the SAE's hook layer, or the file's only layer).
    #[arg(long)]
    layer: Option<usize>,
    /// Store to find the latents' top-activating contexts in (with --model and --latent).
    #[arg(long)]
    acts: Option<PathBuf>,
    /// The model whose tokenizer decodes the contexts.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Latent index (repeatable).
    #[arg(long)]
    latent: Vec<usize>,
    /// Latents (alignment) or contexts per latent.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// Tokens shown each side of a top token.
    #[arg(long, default_value_t = 12)]
    window: usize,
    /// Which tokens may be a top token (as --tokens of `lantern direction`)
    #[arg(long, default_value = "all")]
    tokens: String,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Directory for latents.json (and latents.html); alignment prints without it.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(a: LatentsArgs) -> Result<()> {
    let (weights, _) = lantern_sae::load_sae(&a.sae)?;
    if let Some(file) = &a.direction {
        let dirs = Directions::read(file, a.layer)?;
        let layer = pick_layer(&dirs, a.layer, &weights.cfg.hook_name, file)?;
        let v = dirs.layer(layer, file)?;
        if v.len() != weights.cfg.d_in {
            bail!(
                "{}: the direction has d_model {}, the SAE {} expects d_in {}",
                file.display(),
                v.len(),
                a.sae.display(),
                weights.cfg.d_in
            );
        }
        let top = aligned_latents(&weights, v, a.top);
        println!("{:>8} {:>9} {:>9}", "latent", "cos dec", "cos enc");
        for t in &top {
            println!("{:>8} {:>+9.4} {:>+9.4}", t.latent, t.cos_dec, t.cos_enc);
        }
        if let Some(out) = &a.out {
            let _lock = crate::report::lock_output("--out", out, &[])?;
            write_json(
                &out.join("latents.json"),
                &json!({"sae": a.sae, "direction": file, "layer": layer, "latents": top}),
            )?;
        }
        return Ok(());
    }
    let (Some(acts), Some(model)) = (&a.acts, &a.model) else {
        bail!("give --direction FILE, or --acts STORE --model MODEL --latent I");
    };
    if a.latent.is_empty() {
        bail!("--latent: name at least one latent");
    }
    let Some(out) = &a.out else {
        bail!("--out: the directory for latents.json and latents.html is required")
    };
    let selection: TokenSelection = a.tokens.parse().map_err(search_flag_error)?;
    let device = a.device.parse::<DeviceChoice>()?.open()?;
    let sae = Sae::from_weights(&weights, &device)?;
    let store = Store::open(acts)?;
    let opts = ContextOptions {
        top: a.top,
        window: a.window,
        selection,
        ..Default::default()
    };
    let found = top_contexts(&sae, &store, &a.latent, &opts).map_err(search_flag_error)?;
    let lm = LanguageModel::load(model, &DeviceChoice::Cpu.open()?)?;
    let decode = |id: u32| {
        lm.tokenizer
            .decode(&[id], false)
            .unwrap_or_else(|_| format!("<{id}>"))
    };
    // The context as the tokenizer decodes the whole window (a word-level vocabulary puts
    // spaces between words; per-token pieces alone do not).
    let text = |ids: &[u32]| {
        lm.tokenizer
            .decode(ids, false)
            .unwrap_or_else(|_| ids.iter().map(|&t| decode(t)).collect())
    };
    let _lock = crate::report::lock_output("--out", out, &[])?;
    let with_text: Vec<_> = found
        .iter()
        .map(|l| {
            let contexts: Vec<_> = l
                .contexts
                .iter()
                .map(|c| {
                    json!({"seq_id": c.seq_id, "position": c.position, "activation": c.activation,
                       "text": text(&c.tokens),
                       "tokens": c.tokens.iter().map(|&t| decode(t)).collect::<Vec<_>>(),
                       "token_ids": c.tokens, "acts": c.acts, "focus": c.focus})
                })
                .collect();
            json!({"latent": l.latent, "density": l.density, "fires": l.fires, "tokens": l.tokens,
                   "max": l.max, "mean_when_firing": l.mean_when_firing, "quantiles": l.quantiles,
                   "contexts": contexts})
        })
        .collect();
    write_json(
        &out.join("latents.json"),
        &json!({"sae": a.sae, "acts": acts, "model": model, "tokens": selection.to_string(), "latents": with_text}),
    )?;
    let title = format!("SAE {} on {}", a.sae.display(), acts.display());
    std::fs::write(
        out.join("latents.html"),
        lantern_search::html::latent_page(&title, &found, &decode),
    )?;
    for l in &found {
        println!(
            "latent {}: density {:.3e}, max {:.4}",
            l.latent, l.density, l.max
        );
        for c in l.contexts.iter().take(3) {
            println!(
                "  {:>8.4}  {}",
                c.activation,
                text(&c.tokens).replace('\n', "⏎")
            );
        }
    }
    println!(
        "wrote {} and {}",
        out.join("latents.json").display(),
        out.join("latents.html").display()
    );
    Ok(())
}

/// The layer to read: the one asked for, else the SAE's hook layer when the file has it,
/// else the file's only layer.
fn pick_layer(d: &Directions, asked: Option<usize>, hook: &str, file: &Path) -> Result<usize> {
    if let Some(l) = asked {
        return Ok(l);
    }
    if let Some(l) = hook
        .parse::<lantern_lm::HookPoint>()
        .ok()
        .and_then(|h| h.layer())
        && d.layers.contains_key(&l)
    {
        return Ok(l);
    }
    if d.layers.len() == 1 {
        return Ok(*d.layers.keys().next().expect("one"));
    }
    bail!(
        "{}: holds layers {}; choose one with --layer",
        file.display(),
        d.layer_list()
    )
}

#[derive(Args)]
pub struct LensArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// The direction file (every layer unless --layer).
    #[arg(long, conflicts_with = "sae")]
    direction: Option<PathBuf>,
    #[arg(long)]
    layer: Option<usize>,
    /// An SAE whose decoder row --latent is read.
    #[arg(long, requires = "latent")]
    sae: Option<PathBuf>,
    #[arg(long)]
    latent: Option<usize>,
    /// Tokens shown at each end.
    #[arg(long, default_value_t = 15)]
    top: usize,
    /// Write lens.json here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn lens(a: LensArgs) -> Result<()> {
    let dev = DeviceChoice::Cpu.open()?;
    // (name, vector) pairs to read out.
    let vectors: Vec<(String, Vec<f32>)> = match (&a.direction, &a.sae, a.latent) {
        (Some(f), None, _) => {
            let d = Directions::read(f, a.layer)?;
            match a.layer {
                Some(l) => vec![(format!("layer {l}"), d.layer(l, f)?.to_vec())],
                None => d
                    .layers
                    .iter()
                    .map(|(l, v)| (format!("layer {l}"), v.clone()))
                    .collect(),
            }
        }
        (None, Some(s), Some(i)) => {
            let (w, _) = lantern_sae::load_sae(s)?;
            if i >= w.cfg.d_sae {
                bail!(
                    "--latent {i}: the SAE {} has {} latents",
                    s.display(),
                    w.cfg.d_sae
                );
            }
            let d = w.cfg.d_in;
            vec![(format!("latent {i}"), w.w_dec[i * d..(i + 1) * d].to_vec())]
        }
        _ => bail!("give --direction FILE or --sae DIR --latent I"),
    };
    let lm = LanguageModel::load(&a.model, &dev)?;
    let d = lm.model.config().d_model;
    let decode = |id: u32| {
        lm.tokenizer
            .decode(&[id], false)
            .unwrap_or_else(|_| format!("<{id}>"))
    };
    let mut out = Vec::new();
    for (name, v) in &vectors {
        if v.len() != d {
            bail!(
                "{name}: the vector has {} values, the model {} has d_model {d}",
                v.len(),
                a.model.display()
            );
        }
        let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [1, d]), &dev);
        let logits = lm
            .model
            .unembed(t)
            .try_into_vec_as::<f32>()
            .map_err(|e| anyhow::anyhow!("reading logits: {e}"))?;
        let (top, bottom) = top_bottom(&logits, a.top);
        let show = |s: &[(u32, f32)]| {
            s.iter()
                .map(|&(i, _)| format!("{:?}", decode(i)))
                .collect::<Vec<_>>()
                .join(" ")
        };
        println!(
            "{name}\n  top:    {}\n  bottom: {}",
            show(&top),
            show(&bottom)
        );
        let js = |s: &[(u32, f32)]| {
            s.iter()
                .map(|&(i, l)| json!({"id": i, "token": decode(i), "logit": l}))
                .collect::<Vec<_>>()
        };
        out.push(json!({"vector": name, "top": js(&top), "bottom": js(&bottom)}));
    }
    if let Some(dir) = &a.out {
        let _lock = crate::report::lock_output("--out", dir, &[])?;
        write_json(
            &dir.join("lens.json"),
            &json!({"model": a.model, "lens": out}),
        )?;
        println!("wrote {}", dir.join("lens.json").display());
    }
    Ok(())
}
