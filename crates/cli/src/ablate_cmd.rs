//! `lantern ablate`: the ablation table of Soligo et al. (2025) and Arditi et al. (2024) on
//! one model — baseline; the direction projected out at every layer; at its own layer only;
//! a random direction (same norm) at every layer; the weight-space version (the LoRA B vectors
//! ablated when an adapter is given, else every residual writer orthogonalized); and, with a
//! second `--direction`, transfer (another finetune's direction at every layer). Columns:
//! judged rate with a 95 % Wilson interval, incoherent share, perplexity under the unablated
//! model, and CE / KL to the unablated model on neutral text. Writes `ablation.md`,
//! `ablation.json`, `generations.jsonl` and `ablation.png`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Result, bail};
use clap::Args;
use lantern_lm::{HookPoint, LanguageModel, LoraAdapter, Model, read_prompts};
use lantern_plot::{Interval, IntervalChart, interval_chart};
use lantern_sae::DeviceChoice;
use lantern_steer::Judge;
use lantern_steer::experiment::{Condition, GenSettings, run_generations};
use lantern_steer::intervene::{Intervention, Op, Where};
use lantern_steer::score::{NeutralScore, neutral_scores, neutral_scores_vs};
use lantern_steer::strength::Unit;
use lantern_steer::vector::{norm, orthonormal};
use serde_json::json;

use crate::report::{finite_or_null, write_json};
use crate::steer_cmd::one_layer;
use crate::steer_run::{Evaluator, Summary, judge_of, prompt_tokens};

#[derive(Args)]
pub struct AblateArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter merged into the model (its B vectors are the weight-space row).
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The direction to ablate; a second --direction is the transfer row.
    #[arg(long = "direction", required = true)]
    directions: Vec<PathBuf>,
    /// The layer whose vector is used (needed when the file holds several).
    #[arg(long)]
    layer: Option<usize>,
    /// `site`: project out at every layer's resid_post (Soligo et al.); `arditi`: at every
    /// block input, attention output and MLP output (equivalent to the orthogonalized weights).
    #[arg(long, default_value = "site")]
    points: String,
    #[arg(long)]
    prompts: PathBuf,
    #[arg(long)]
    chat: bool,
    /// refusal, keyword:A|B, regex:PATTERN or command:CMD (the first judge fills the table).
    #[arg(long = "judge")]
    judges: Vec<String>,
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    judge_threshold: Option<f64>,
    /// Neutral text (JSONL {"text"}) for the CE and KL columns.
    #[arg(long)]
    neutral: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    samples: usize,
    #[arg(long, default_value_t = 0.0)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    temperature: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long, default_value_t = 64)]
    max_new_tokens: usize,
    #[arg(long, default_value_t = 8)]
    batch: usize,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long)]
    out: PathBuf,
}

/// Projecting `basis` out at `points` of every layer (or one).
fn ablation(basis: &Arc<Vec<Vec<f32>>>, points: &[HookPoint]) -> Intervention {
    Intervention {
        ops: points
            .iter()
            .map(|&point| Op::Ablate {
                point,
                basis: basis.clone(),
                beta: 1.0,
                at: Where::All,
            })
            .collect(),
    }
}

/// A seeded Gaussian vector of `norm_to` norm (SplitMix64 + Box–Muller).
fn random_like(d: usize, norm_to: f32, seed: u64) -> Vec<f32> {
    let mut s = lantern_lm::generate::SplitMix(seed);
    let v: Vec<f32> = (0..d)
        .map(|_| {
            let (u1, u2) = (s.uniform().max(1e-300), s.uniform());
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    let n = norm(&v);
    v.iter().map(|x| x * norm_to / n).collect()
}

pub fn run(a: AblateArgs) -> Result<()> {
    let _lock = crate::report::lock_output(
        "--out",
        &a.out,
        &[
            ("--model", a.model.as_path()),
            ("--prompts", a.prompts.as_path()),
        ],
    )?;
    if a.directions.len() > 2 {
        bail!("--direction: give one (or two, the second for the transfer row)");
    }
    let device = a.device.parse::<DeviceChoice>()?.open()?;
    let lm = LanguageModel::load_with_adapter(&a.model, a.adapter.as_deref(), &device)?;
    let cfg = lm.model.config().clone();
    let (layer, v) = one_layer(&a.directions[0], a.layer)?;
    v.check(cfg.n_layers, cfg.d_model)?;
    let r = v.layers[&layer].clone();
    let every: Vec<HookPoint> = match a.points.as_str() {
        "site" => (0..cfg.n_layers).map(|l| v.site.point(l)).collect(),
        "arditi" => (0..cfg.n_layers)
            .flat_map(|l| {
                [
                    HookPoint::ResidPre(l),
                    HookPoint::AttnOut(l),
                    HookPoint::MlpOut(l),
                ]
            })
            .collect(),
        o => bail!("--points {o}: expected site or arditi"),
    };
    let basis = Arc::new(orthonormal(std::slice::from_ref(&r)));
    let random = Arc::new(orthonormal(&[random_like(
        cfg.d_model,
        norm(&r),
        a.seed ^ 0xA5A5,
    )]));
    let mut conditions = vec![
        Condition::baseline(),
        named("all layers", ablation(&basis, &every)),
        named(
            &format!("layer {layer} only"),
            ablation(&basis, &[v.site.point(layer)]),
        ),
        named("random direction, all layers", ablation(&random, &every)),
    ];
    let mut transfer_layer = None;
    if let Some(t) = a.directions.get(1) {
        let (tl, tv) = one_layer(t, a.layer)?;
        tv.check(cfg.n_layers, cfg.d_model)?;
        let tb = Arc::new(orthonormal(std::slice::from_ref(&tv.layers[&tl])));
        let short = t.file_name().map_or_else(
            || t.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        conditions.push(named(&format!("transfer ({short})"), ablation(&tb, &every)));
        transfer_layer = Some(tl);
    }
    // The weight-space model.
    let (weight_name, weight_model) = match &a.adapter {
        Some(dir) => {
            let mut adapter = LoraAdapter::load(dir)?;
            lantern_steer::orthogonalize::ablate_lora_b(&mut adapter, &r)?;
            let m = Model::load_with_adapter(&a.model, Some(adapter), &device)?;
            ("weight space (LoRA B ablated)".to_string(), m)
        }
        None => {
            let mut m = Model::load(&a.model, &device)?;
            lantern_steer::orthogonalize::orthogonalize(&mut m, &r)?;
            ("weight space (orthogonalized)".to_string(), m)
        }
    };

    let records = read_prompts(&a.prompts)?;
    let mut prompts = Vec::new();
    let mut questions = Vec::new();
    for rec in &records {
        let (p, q) = prompt_tokens(&lm, rec, a.chat, &a.prompts)?;
        prompts.push(p);
        questions.push(q);
    }
    let mut judges: Vec<Box<dyn Judge>> = a
        .judges
        .iter()
        .map(|j| judge_of(j, a.judge_threshold))
        .collect::<Result<_>>()?;
    if judges.is_empty() {
        judges.push(Box::new(lantern_steer::judge::KeywordJudge::refusal()));
    }
    let settings = GenSettings {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: 1.0,
        seed: a.seed,
        samples: a.samples,
        batch: a.batch,
        stop_ids: lm.stop_ids(),
        pad_id: lm.pad_id(),
    };
    let eval = Evaluator {
        lm: &lm,
        prompts: &prompts,
        questions: &questions,
        records: &records,
        settings: &settings,
        perplexity: true,
        max_ppl: None,
    };
    let bar =
        indicatif::ProgressBar::new((prompts.len() * (conditions.len() + 1) * a.samples) as u64);
    let gens = run_generations(&lm.model, &prompts, &conditions, &settings, None, |d, _| {
        bar.set_position(d as u64)
    })?;
    let done = gens.len() as u64;
    let mut scored = eval.score(&gens, &conditions, &mut judges)?;
    let weight_cond = Condition {
        name: weight_name.clone(),
        strength: None,
        unit: Unit::Raw,
        intervention: Intervention::none(),
    };
    let wgens = run_generations(
        &weight_model,
        &prompts,
        std::slice::from_ref(&weight_cond),
        &settings,
        None,
        |d, _| bar.set_position(done + d as u64),
    )?;
    bar.finish_and_clear();
    let wi = conditions.len();
    let mut wscored = eval.score(&wgens, std::slice::from_ref(&weight_cond), &mut judges)?;
    for s in &mut wscored {
        s.condition = wi;
        s.json["condition"] = json!(weight_name);
    }
    scored.extend(wscored);
    conditions.push(weight_cond);

    let neutral: Option<Vec<NeutralScore>> = match &a.neutral {
        Some(p) => {
            let texts: Vec<Vec<u32>> = read_prompts(p)?
                .iter()
                .map(|rec| prompt_tokens(&lm, rec, false, p).map(|x| x.0.ids))
                .collect::<Result<_>>()?;
            let ivs: Vec<Intervention> = conditions[..wi]
                .iter()
                .map(|c| c.intervention.clone())
                .collect();
            let mut n = neutral_scores(&lm.model, &texts, &ivs, None, a.batch)?;
            n.extend(neutral_scores_vs(
                &lm.model,
                &[&weight_model],
                &texts,
                a.batch,
            )?);
            Some(n)
        }
        None => None,
    };

    let mut f = std::io::BufWriter::new(std::fs::File::create(a.out.join("generations.jsonl"))?);
    for g in &scored {
        writeln!(f, "{}", serde_json::to_string(&g.json)?)?;
    }
    f.flush()?;
    let counts = judges[0].counts();
    let jname = judges[0].name();
    let mut md = format!(
        "# Ablation of {} (layer {layer}, {}) on {}\n\nJudge: `{jname}` ({counts} rate among judged answers, 95 % Wilson interval); {} prompts × {} samples; points: {}.\n\n| condition | {counts} rate | 95 % interval | incoherent | perplexity | CE (nats) | KL (nats) |\n|---|---|---|---|---|---|---|\n",
        a.directions[0].display(),
        v.site,
        a.model.display(),
        prompts.len(),
        a.samples,
        a.points
    );
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for (ci, c) in conditions.iter().enumerate() {
        let mine: Vec<_> = scored.iter().filter(|g| g.condition == ci).collect();
        let s = Summary::of(
            mine.iter().map(|g| &g.verdicts[0]),
            mine.iter().map(|g| g.coherent),
        );
        let ppl: Vec<f64> = mine
            .iter()
            .map(|g| g.perplexity)
            .filter(|p| p.is_finite())
            .collect();
        let ppl = ppl.iter().sum::<f64>() / ppl.len().max(1) as f64;
        let (ce, kl) = neutral
            .as_ref()
            .map_or((f64::NAN, f64::NAN), |n| (n[ci].ce, n[ci].kl));
        let fmt = |x: f64, p: usize| {
            if x.is_finite() {
                format!("{x:.p$}")
            } else {
                "–".into()
            }
        };
        md.push_str(&format!(
            "| {} | {} | [{}, {}] | {}/{} | {} | {} | {} |\n",
            c.name,
            fmt(s.rate, 3),
            fmt(s.lo, 3),
            fmt(s.hi, 3),
            s.incoherent,
            s.n,
            fmt(ppl, 2),
            fmt(ce, 3),
            fmt(kl, 4)
        ));
        let mut per_judge = serde_json::Map::new();
        for (ji, j) in judges.iter().enumerate() {
            let sj = Summary::of(
                mine.iter().map(|g| &g.verdicts[ji]),
                mine.iter().map(|g| g.coherent),
            );
            per_judge.insert(j.name(), sj.json());
        }
        rows.push(
            json!({"condition": c.name, "judges": per_judge, "perplexity_mean": finite_or_null(ppl),
            "ce": finite_or_null(ce), "kl": finite_or_null(kl)}),
        );
        items.push(Interval {
            label: c.name.clone(),
            value: s.rate,
            lo: s.lo,
            hi: s.hi,
        });
    }
    std::fs::write(a.out.join("ablation.md"), &md)?;
    write_json(
        &a.out.join("ablation.json"),
        &json!({"model": a.model, "adapter": a.adapter, "directions": a.directions, "layer": layer,
            "transfer_layer": transfer_layer, "site": v.site.to_string(), "points": a.points,
            "random_norm": norm(&r), "judges": judges.iter().map(|j| j.name()).collect::<Vec<_>>(),
            "samples": a.samples, "temperature": a.temperature, "seed": a.seed, "rows": rows}),
    )?;
    let y = format!("{counts} rate ({jname})");
    interval_chart(
        &a.out.join("ablation.png"),
        &IntervalChart {
            title: "Ablation",
            x_label: "condition",
            y_label: &y,
            items: &items,
        },
    )?;
    print!("{md}");
    println!("wrote {}", a.out.display());
    Ok(())
}

fn named(name: &str, intervention: Intervention) -> Condition {
    Condition {
        name: name.into(),
        strength: Some(1.0),
        unit: Unit::Raw,
        intervention,
    }
}
