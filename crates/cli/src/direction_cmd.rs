//! `lantern direction` (contrastive directions into a direction file), `lantern direction
//! info`, and `lantern project` (per-sequence projection scores on a direction).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lantern_plot::{LineChart, Series};
use lantern_search::sequences::{layer_of, site_of};
use lantern_search::{
    DirectionMeta, Directions, LayerStore, Method, ProbeOptions, SeqMeans, TokenSelection,
    direction, layer_stores, project_sequences,
};
use serde_json::json;

use crate::report::{finite_or_null, write_json};
use crate::search_flag_error;

#[derive(Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DirectionArgs {
    #[command(subcommand)]
    command: Option<DirectionCommand>,
    /// Store (or multi-hook capture directory) of the positive sequences.
    #[arg(long)]
    pos: Option<PathBuf>,
    /// Store of the negative sequences.
    #[arg(long)]
    neg: Option<PathBuf>,
    /// One labelled store holding both sets (with --pos-label and --neg-label).
    #[arg(long)]
    acts: Option<PathBuf>,
    #[arg(long)]
    pos_label: Option<String>,
    #[arg(long)]
    neg_label: Option<String>,
    /// mean-diff | response-mean | paired-mean | pca-diff | pca-center | probe
    #[arg(long, default_value = "mean-diff")]
    method: String,
    /// all | prompt | answer | last-prompt | first-answer:N, optionally followed by
    /// ,skip-first:N (drop the first N positions, e.g. an attention sink at position 0)
    #[arg(long, default_value = "all")]
    tokens: String,
    /// Only stores at this site (resid_post, resid_pre, ...) of a multi-hook capture.
    #[arg(long)]
    site: Option<String>,
    /// Probe: inverse L2 strength C (scikit-learn's default).
    #[arg(long, default_value_t = 1.0)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    probe_c: f64,
    /// Probe: fraction of each class held out for accuracy and AUC.
    #[arg(long, default_value_t = 0.2)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    test_fraction: f64,
    /// Probe: seed of the held-out split.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// The direction file to write (.safetensors); a summary goes to the same name with
    /// .json, and with several layers a per-layer plot with .png.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum DirectionCommand {
    /// Describe a direction file (or a control vector / .npy export).
    Info {
        file: PathBuf,
        /// The layer of a single unlabelled vector.
        #[arg(long)]
        layer: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// The B vectors of a rank-1 LoRA adapter's residual writers as a direction file (layer L:
    /// the B of the module in block L), to compare with a direction (Soligo et al.).
    LoraB {
        /// The PEFT adapter directory.
        #[arg(long)]
        adapter: PathBuf,
        /// Only modules whose name ends in this (down_proj, o_proj), when a block has two.
        #[arg(long)]
        module: Option<String>,
        /// The direction file to write (.safetensors).
        #[arg(long)]
        out: PathBuf,
    },
}

pub fn run(a: DirectionArgs) -> Result<()> {
    match a.command {
        Some(DirectionCommand::Info { file, layer, json }) => return info(&file, layer, json),
        Some(DirectionCommand::LoraB {
            adapter,
            module,
            out,
        }) => return lora_b(&adapter, module.as_deref(), &out),
        None => {}
    }
    let method: Method = a.method.parse().map_err(search_flag_error)?;
    let tokens: TokenSelection = a.tokens.parse().map_err(search_flag_error)?;
    let Some(out) = a.out.clone() else {
        bail!("--out: the direction file to write is required");
    };
    // (layer stores of the positive side, of the negative side, label filters)
    let (pos, neg, labels) = match (&a.pos, &a.neg, &a.acts) {
        (Some(p), Some(n), None) => (
            layer_stores(p, a.site.as_deref())?,
            layer_stores(n, a.site.as_deref())?,
            None,
        ),
        (None, None, Some(acts)) => {
            let (Some(pl), Some(nl)) = (&a.pos_label, &a.neg_label) else {
                bail!("--acts needs --pos-label and --neg-label");
            };
            let s = layer_stores(acts, a.site.as_deref())?;
            let first = &s[0].store;
            let ids = (first.label_index(pl)?, first.label_index(nl)?);
            let again = layer_stores(acts, a.site.as_deref())?;
            (s, again, Some(ids))
        }
        _ => bail!(
            "give either --pos STORE and --neg STORE, or --acts STORE with --pos-label and --neg-label"
        ),
    };
    let pos_layers: Vec<usize> = pos.iter().map(|s| layer_of(s.hook)).collect();
    let neg_layers: Vec<usize> = neg.iter().map(|s| layer_of(s.hook)).collect();
    if pos_layers != neg_layers || site_of(pos[0].hook) != site_of(neg[0].hook) {
        bail!(
            "{}: hooks {} differ from the positive side's {}",
            a.neg.as_ref().unwrap_or(&PathBuf::new()).display(),
            hooks(&neg),
            hooks(&pos)
        );
    }
    let probe = ProbeOptions {
        c: a.probe_c,
        test_fraction: a.test_fraction,
        seed: a.seed,
    };
    let mut dirs = Directions {
        layers: Default::default(),
        meta: DirectionMeta {
            hook: site_of(pos[0].hook).to_string(),
            model: pos[0].store.manifest().model.clone(),
            method: method.to_string(),
            tokens: tokens.to_string(),
            normalized: method.normalized(),
            ..Default::default()
        },
    };
    let mut layers_json = Vec::new();
    for (p, n) in pos.iter().zip(&neg) {
        let layer = layer_of(p.hook);
        let ps = SeqMeans::collect(&p.store, labels.map(|l| l.0), tokens)?;
        let ns = SeqMeans::collect(&n.store, labels.map(|l| l.1), tokens)?;
        let fit = direction(method, &ps, &ns, &probe).map_err(search_flag_error)?;
        let norm = lantern_search::linalg::norm(&fit.vector);
        let mut row = json!({
            "layer": layer,
            "hook": p.hook.to_string(),
            "norm": norm,
            "pos_projection": fit.pos_projection,
            "neg_projection": fit.neg_projection,
            "n_pos": ps.len(), "n_neg": ns.len(),
            "tokens_pos": ps.tokens(), "tokens_neg": ns.tokens(),
            "skipped_pos": ps.skipped, "skipped_neg": ns.skipped,
        });
        if let Some(f) = &fit.probe {
            row["probe"] = json!({
                "train_accuracy": f.train_accuracy,
                "heldout_accuracy": finite_or_null(f.test_accuracy),
                "heldout_auc": finite_or_null(f.test_auc),
                "n_train": f.n_train, "n_test": f.n_test,
                "bias": f.bias,
                "weight_norm": lantern_search::linalg::norm(&f.weights),
                "iterations": f.iterations,
            });
            let e = &mut dirs.meta.extra;
            e.insert(
                format!("heldout_accuracy.{layer}"),
                f.test_accuracy.to_string(),
            );
            e.insert(format!("heldout_auc.{layer}"), f.test_auc.to_string());
            e.insert(
                format!("train_accuracy.{layer}"),
                f.train_accuracy.to_string(),
            );
            e.insert(format!("probe_bias.{layer}"), f.bias.to_string());
            e.insert(
                format!("probe_weight_norm.{layer}"),
                lantern_search::linalg::norm(&f.weights).to_string(),
            );
        }
        dirs.meta.n_pos = ps.len() as u64;
        dirs.meta.n_neg = ns.len() as u64;
        dirs.meta
            .extra
            .insert("tokens_pos".into(), ps.tokens().to_string());
        dirs.meta
            .extra
            .insert("tokens_neg".into(), ns.tokens().to_string());
        print_layer(&row);
        layers_json.push(row);
        dirs.layers.insert(layer, fit.vector);
    }
    if method == Method::Probe {
        dirs.meta
            .extra
            .insert("probe_c".into(), a.probe_c.to_string());
        dirs.meta
            .extra
            .insert("test_fraction".into(), a.test_fraction.to_string());
        dirs.meta
            .extra
            .insert("split_seed".into(), a.seed.to_string());
    }
    dirs.write(&out)?;
    let summary = out.with_extension("json");
    let j = json!({
        "file": out, "method": method.to_string(), "tokens": tokens.to_string(),
        "hook": dirs.meta.hook, "model": dirs.meta.model, "normalized": dirs.meta.normalized,
        "layers": layers_json,
    });
    write_json(&summary, &j)?;
    let mut files = vec![out.display().to_string(), summary.display().to_string()];
    if layers_json.len() > 1 {
        let png = out.with_extension("png");
        plot_layers(&png, &j, method)?;
        files.push(png.display().to_string());
    }
    println!("wrote {}", files.join(", "));
    Ok(())
}

fn lora_b(adapter: &Path, module: Option<&str>, out: &Path) -> Result<()> {
    let a = lantern_lm::LoraAdapter::load(adapter)
        .with_context(|| format!("--adapter {}", adapter.display()))?;
    let vectors = lantern_steer::orthogonalize::lora_b_vectors(&a, module)?;
    let mut dirs = Directions {
        layers: Default::default(),
        meta: DirectionMeta {
            hook: "resid_post".into(),
            model: adapter.display().to_string(),
            method: "lora-b".into(),
            ..Default::default()
        },
    };
    for (l, (name, v)) in vectors {
        println!(
            "layer {l:>3}  {name}  norm {:.4}",
            lantern_search::linalg::norm(&v)
        );
        dirs.meta.extra.insert(format!("module.{l}"), name);
        dirs.layers.insert(l, v);
    }
    dirs.write(out)?;
    println!("wrote {}", out.display());
    Ok(())
}

fn hooks(s: &[LayerStore]) -> String {
    s.iter()
        .map(|s| s.hook.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn print_layer(row: &serde_json::Value) {
    let mut line = format!(
        "layer {:>3}  norm {:>10.4}  proj pos {:>10.4} neg {:>10.4}  sequences {}/{}",
        row["layer"].as_u64().unwrap_or(0),
        row["norm"].as_f64().unwrap_or(f64::NAN),
        row["pos_projection"].as_f64().unwrap_or(f64::NAN),
        row["neg_projection"].as_f64().unwrap_or(f64::NAN),
        row["n_pos"].as_u64().unwrap_or(0),
        row["n_neg"].as_u64().unwrap_or(0)
    );
    if let Some(p) = row.get("probe") {
        line += &format!(
            "  probe train {:.3} held-out {} auc {}",
            p["train_accuracy"].as_f64().unwrap_or(f64::NAN),
            p["heldout_accuracy"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.3}")),
            p["heldout_auc"]
                .as_f64()
                .map_or("-".into(), |x| format!("{x:.3}")),
        );
    }
    println!("{line}");
}

fn plot_layers(png: &Path, j: &serde_json::Value, method: Method) -> Result<()> {
    let layers = j["layers"].as_array().expect("array");
    let series = |key: &dyn Fn(&serde_json::Value) -> Option<f64>, name: &str| Series {
        name: name.into(),
        points: layers
            .iter()
            .filter_map(|r| Some((r["layer"].as_f64()?, key(r)?)))
            .collect(),
    };
    let (title, y, s) = if method == Method::Probe {
        (
            "probe held-out accuracy per layer",
            "accuracy",
            vec![
                series(
                    &|r| r["probe"]["heldout_accuracy"].as_f64(),
                    "held-out accuracy",
                ),
                series(&|r| r["probe"]["heldout_auc"].as_f64(), "held-out AUC"),
                series(&|r| r["probe"]["train_accuracy"].as_f64(), "train accuracy"),
            ],
        )
    } else {
        (
            "direction norm and separation per layer",
            "value",
            vec![
                series(&|r| r["norm"].as_f64(), "‖v‖"),
                series(
                    &|r| Some(r["pos_projection"].as_f64()? - r["neg_projection"].as_f64()?),
                    "mean projection pos − neg",
                ),
            ],
        )
    };
    lantern_plot::line_chart(
        png,
        &LineChart {
            title,
            x_label: "layer",
            y_label: y,
            log_y: false,
            series: &s,
        },
    )?;
    Ok(())
}

fn info(file: &Path, layer: Option<usize>, json: bool) -> Result<()> {
    let d = Directions::read(file, layer)?;
    let layers: Vec<serde_json::Value> = d
        .layers
        .iter()
        .map(|(l, v)| json!({"layer": l, "norm": lantern_search::linalg::norm(v)}))
        .collect();
    let m = &d.meta;
    if json {
        let j = json!({
            "file": file, "d_model": d.d_model(), "hook": m.hook, "model": m.model,
            "method": m.method, "tokens": m.tokens, "n_pos": m.n_pos, "n_neg": m.n_neg,
            "normalized": m.normalized, "extra": m.extra, "layers": layers,
        });
        println!("{}", serde_json::to_string_pretty(&j)?);
        return Ok(());
    }
    println!("file        {}", file.display());
    println!("d_model     {}", d.d_model());
    println!("hook        {}", m.hook);
    println!("model       {}", m.model);
    println!("method      {}", m.method);
    println!("tokens      {}", m.tokens);
    println!("n_pos/neg   {}/{}", m.n_pos, m.n_neg);
    println!("normalized  {}", m.normalized);
    for (k, v) in &m.extra {
        println!("{k:<11} {v}");
    }
    for l in &layers {
        println!(
            "layer {:>3}   norm {:.6}",
            l["layer"],
            l["norm"].as_f64().unwrap_or(f64::NAN)
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct ProjectArgs {
    /// A direction file (or a control vector / .npy export).
    #[arg(long)]
    direction: PathBuf,
    /// The store (or a multi-hook capture directory, with --layer).
    #[arg(long)]
    acts: PathBuf,
    /// Which layer's vector and store (default: the store's own layer).
    #[arg(long)]
    layer: Option<usize>,
    /// all | prompt | answer | last-prompt | first-answer:N, optionally followed by
    /// ,skip-first:N (drop the first N positions, e.g. an attention sink at position 0)
    #[arg(long, default_value = "all")]
    tokens: String,
    /// Directory for projection.json and projection.csv (default: print the CSV).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn project(a: ProjectArgs) -> Result<()> {
    let tokens: TokenSelection = a.tokens.parse().map_err(search_flag_error)?;
    let dirs = Directions::read(&a.direction, a.layer)?;
    let stores = layer_stores(&a.acts, Some(&dirs.meta.hook))?;
    let chosen = match a.layer {
        Some(l) => stores
            .into_iter()
            .find(|s| layer_of(s.hook) == l)
            .with_context(|| {
                format!(
                    "{}: no store at layer {l} and site {}",
                    a.acts.display(),
                    dirs.meta.hook
                )
            })?,
        None if stores.len() == 1 => stores.into_iter().next().expect("one"),
        None => bail!(
            "{}: holds several layers; choose one with --layer",
            a.acts.display()
        ),
    };
    let layer = layer_of(chosen.hook);
    let v = dirs.layer(layer, &a.direction)?;
    if v.len() != chosen.store.d_model() {
        bail!(
            "{}: the direction has d_model {}, the store {} has {}",
            a.direction.display(),
            v.len(),
            chosen.store.dir().display(),
            chosen.store.d_model()
        );
    }
    let scores = project_sequences(&chosen.store, v, tokens)?;
    let mut csv = String::from("seq_id,label,tokens,score\n");
    for s in &scores {
        csv += &format!(
            "{},{},{},{}\n",
            s.seq_id,
            s.label.as_deref().unwrap_or(""),
            s.tokens,
            s.score
        );
    }
    match &a.out {
        None => print!("{csv}"),
        Some(out) => {
            let _lock = crate::report::lock_output("--out", out, &[])?;
            // Per-label summaries make a monitoring result readable at a glance.
            let mut by_label: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
            for s in &scores {
                let e = by_label
                    .entry(s.label.clone().unwrap_or_default())
                    .or_default();
                e.0 += s.score;
                e.1 += 1;
            }
            let summary: Vec<_> = by_label
                .iter()
                .map(|(l, (sum, n))| json!({"label": l, "sequences": n, "mean_score": sum / *n as f64}))
                .collect();
            write_json(
                &out.join("projection.json"),
                &json!({
                    "direction": a.direction, "acts": chosen.store.dir(), "layer": layer,
                    "hook": chosen.hook.to_string(), "tokens": tokens.to_string(),
                    "by_label": summary, "sequences": scores,
                }),
            )?;
            std::fs::write(out.join("projection.csv"), csv)?;
            println!(
                "{} sequences scored on layer {layer} → {}",
                scores.len(),
                out.join("projection.json").display()
            );
        }
    }
    Ok(())
}
