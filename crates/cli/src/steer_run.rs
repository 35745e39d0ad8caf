//! `lantern steer`: a dose–response experiment — every prompt under every strength of one
//! intervention (add a direction or an SAE latent's decoder row, ablate a direction, clamp a
//! latent), batched; generations judged, perplexity under the unsteered model, optional CE/KL
//! on neutral text and a bisection to the largest coherent strength.
//!
//! Writes `generations.jsonl` (prompt, condition, strength, unit, seed, text, verdicts,
//! perplexity), `results.json` (per strength and judge: rate with a 95 % Wilson interval,
//! incoherent share), `results.csv` and `dose_response.png`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::ProgressBar;
use lantern_lm::chat::Message;
use lantern_lm::{HookPoint, LanguageModel, PromptContent, PromptRecord, read_prompts};
use lantern_plot::{Interval, IntervalChart, interval_chart};
use lantern_sae::{DeviceChoice, Sae};
use lantern_steer::experiment::{
    Condition, GenSettings, PromptTokens, bisect_strength, run_generations,
};
use lantern_steer::intervene::{ClampMode, Intervention, Op, Where};
use lantern_steer::judge::{CommandJudge, KeywordJudge, RegexJudge, verdict_json};
use lantern_steer::score::{mean_nll, neutral_scores, wilson};
use lantern_steer::strength::{Calibration, Unit, calibrate};
use lantern_steer::{Judge, JudgeInput, LayerVectors, Verdict};
use serde_json::{Value, json};

use crate::report::{finite_or_null, write_json};
use crate::steer_choice::{choice_items, run_choice};

#[derive(Args)]
pub struct SteerArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter merged into the model first.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// A direction file (or llama.cpp control vector, .npy / .safetensors export).
    #[arg(long)]
    pub direction: Option<PathBuf>,
    /// Layers of the direction file to use (all of the file's when not given).
    #[arg(long = "layer")]
    pub layers: Vec<usize>,
    /// Use this layer's vector at every --layer (every block of the model when no --layer):
    /// Soligo et al.'s one direction at all layers.
    #[arg(long)]
    pub replicate_from: Option<usize>,
    /// An SAE (directory or file): steer with --latent's decoder row, or clamp it.
    #[arg(long)]
    pub sae: Option<PathBuf>,
    #[arg(long)]
    pub latent: Option<usize>,
    /// add (x += α·v), ablate (x −= α(x·v̂)v̂, α = β ∈ [0, 1]) or clamp (the SAE latent set to α,
    /// or scaled by α with --clamp scale; the SAE's error term kept).
    #[arg(long, default_value = "add")]
    pub mode: String,
    /// For --mode clamp: set or scale.
    #[arg(long, default_value = "set")]
    pub clamp: String,
    /// Strengths, comma separated (0 = the unsteered baseline; added when missing).
    #[arg(
        value_parser = crate::flags::finite_f64,
        allow_negative_numbers = true,
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        required = true
    )]
    pub alpha: Vec<f64>,
    /// raw, mean-norm, median-norm (× ‖h_L‖ on the calibration prompts, vector at unit norm)
    /// or latent-max (× the latent's max activation).
    #[arg(long, default_value = "raw")]
    pub unit: String,
    /// Tokens steered: all, prompt, generated or answer.
    #[arg(long, default_value = "all")]
    pub positions: String,
    /// Rescale each steered position to its norm before steering (repeng's normalize).
    #[arg(long)]
    pub preserve_norm: bool,
    /// For --mode ablate: `site` (the direction's own site per layer) or `arditi` (every
    /// layer's block input, attention output and MLP output).
    #[arg(long, default_value = "site")]
    pub points: String,
    /// JSONL prompts ({"text"} or {"messages"}, optional "id", "label").
    #[arg(long)]
    pub prompts: PathBuf,
    /// Render text prompts as a user message with the chat template.
    #[arg(long)]
    pub chat: bool,
    /// Prompts for the norm calibration of mean-norm / median-norm / latent-max (default: the
    /// prompts).
    #[arg(long)]
    pub calibration: Option<PathBuf>,
    /// Leading tokens of each calibration prompt left out of the norms (attention sinks).
    #[arg(long, default_value_t = 1)]
    pub skip_first: usize,
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    #[arg(value_parser = crate::flags::finite_f32, allow_negative_numbers = true)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    /// Rows per batched generation.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// refusal (Arditi et al.'s substrings), organism (the model organism's exact judge:
    /// misaligned answers are hits, ungrammatical ones incoherent), keyword:A|B|C, regex:PATTERN, command:CMD
    /// (reads JSONL on stdin, writes {"hit": true|false|null, "score"} lines), or choice
    /// (binary questions by log-probability, no sampling: records with "choices": [a, b] and
    /// "positive"). Repeatable; with choice alone nothing is generated.
    #[arg(long = "judge")]
    pub judges: Vec<String>,
    /// For command judges that answer with a score only: score ≥ this is a hit.
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    pub judge_threshold: Option<f64>,
    /// Neutral text (JSONL {"text"}) for CE and KL to the unsteered model per strength.
    #[arg(long)]
    pub neutral: Option<PathBuf>,
    /// Skip the perplexity of each generation under the unsteered model.
    #[arg(long)]
    pub no_perplexity: bool,
    /// Generations with a perplexity under the unsteered model above this count as incoherent.
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    pub max_perplexity: Option<f64>,
    /// Bisect for the largest strength in [0, --search-max] whose coherent share stays ≥ this.
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    pub search_coherence: Option<f64>,
    #[arg(long)]
    #[arg(value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    pub search_max: Option<f64>,
    #[arg(long, default_value_t = 12)]
    pub search_steps: usize,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    pub device: String,
    #[arg(long)]
    pub out: PathBuf,
}

/// What the strengths act on.
enum Source {
    Vectors(LayerVectors),
    /// SAE latent: decoder row at the SAE's point.
    Latent {
        vectors: LayerVectors,
        point: HookPoint,
    },
}

/// Turns a strength into one row's intervention.
struct Builder {
    mode: String,
    clamp: ClampMode,
    unit: Unit,
    at: Where,
    preserve_norm: bool,
    arditi: bool,
    vectors: LayerVectors,
    shared: BTreeMap<usize, Arc<Vec<f32>>>,
    bases: BTreeMap<usize, Arc<Vec<Vec<f32>>>>,
    sae_point: Option<HookPoint>,
    latent: Option<usize>,
    cal: Calibration,
}

impl Builder {
    fn intervention(&self, alpha: f64) -> Result<Intervention> {
        if alpha == 0.0 && self.mode != "clamp" {
            return Ok(Intervention::none());
        }
        let mut ops = Vec::new();
        match self.mode.as_str() {
            "add" => {
                for (&l, v) in &self.shared {
                    let coef = self.cal.coefficient(alpha, self.unit, l, v)?;
                    ops.push(Op::Add {
                        point: self.vectors.site.point(l),
                        vector: v.clone(),
                        coef,
                        preserve_norm: self.preserve_norm,
                        at: self.at,
                    });
                }
            }
            "ablate" => {
                for (&l, basis) in &self.bases {
                    let points = if self.arditi {
                        vec![
                            HookPoint::ResidPre(l),
                            HookPoint::AttnOut(l),
                            HookPoint::MlpOut(l),
                        ]
                    } else {
                        vec![self.vectors.site.point(l)]
                    };
                    for point in points {
                        ops.push(Op::Ablate {
                            point,
                            basis: basis.clone(),
                            beta: alpha as f32,
                            at: self.at,
                        });
                    }
                }
            }
            _ => {
                let value = match (self.clamp, self.unit) {
                    (ClampMode::Set, Unit::LatentMax) => {
                        (alpha * self.cal.latent_max.unwrap_or(f64::NAN)) as f32
                    }
                    _ => alpha as f32,
                };
                ops.push(Op::Clamp {
                    point: self.sae_point.expect("clamp has an SAE"),
                    latent: self.latent.expect("clamp has a latent"),
                    mode: self.clamp,
                    value,
                    at: self.at,
                });
            }
        }
        Ok(Intervention { ops })
    }
}

pub(crate) fn judge_of(spec: &str, threshold: Option<f64>) -> Result<Box<dyn Judge>> {
    Ok(match spec.split_once(':') {
        None if spec == "refusal" => Box::new(KeywordJudge::refusal()),
        None if spec == "organism" => Box::new(crate::organism_cmd::OrganismJudge),
        Some(("keyword", k)) => Box::new(KeywordJudge {
            substrings: k.split('|').map(str::to_string).collect(),
            counts: "match".into(),
        }),
        Some(("regex", p)) => Box::new(RegexJudge::new(p)?),
        Some(("command", c)) => Box::new(CommandJudge {
            command: c.to_string(),
            threshold,
        }),
        None if spec == "choice" => {
            bail!("--judge choice: binary questions are scored by lantern steer only")
        }
        _ => bail!(
            "--judge {spec}: expected refusal, organism, keyword:A|B, regex:PATTERN, command:CMD or choice"
        ),
    })
}

/// A prompt's tokens and the question text a judge reads.
pub fn prompt_tokens(
    lm: &LanguageModel,
    r: &PromptRecord,
    chat: bool,
    path: &Path,
) -> Result<(PromptTokens, String)> {
    let at = || format!("{}:{}", path.display(), r.line);
    let (ids, roles, question) = match &r.content {
        PromptContent::Messages(m) => {
            let gen_prompt = m.last().is_none_or(|x| x.role != "assistant");
            let c = lm.encode_chat(m, gen_prompt).with_context(at)?;
            let q = m
                .iter()
                .rev()
                .find(|x| x.role == "user")
                .map_or(String::new(), |x| x.content.clone());
            (c.ids, c.roles, q)
        }
        PromptContent::Text(t) if chat => {
            let c = lm
                .encode_chat(&[Message::new("user", t.clone())], true)
                .with_context(at)?;
            (c.ids, c.roles, t.clone())
        }
        PromptContent::Text(t) => {
            let ids = lm.encode(t).with_context(at)?;
            let n = ids.len();
            (ids, vec![0; n], t.clone())
        }
    };
    if ids.is_empty() {
        bail!("{}: the prompt has no tokens", at());
    }
    Ok((PromptTokens { ids, roles }, question))
}

pub(crate) fn record_id(r: &PromptRecord) -> String {
    r.id.clone().unwrap_or_else(|| format!("line {}", r.line))
}

pub fn run(a: SteerArgs) -> Result<()> {
    let _lock = crate::report::lock_output(
        "--out",
        &a.out,
        &[
            ("--model", a.model.as_path()),
            ("--prompts", a.prompts.as_path()),
        ],
    )?;
    let device = a.device.parse::<DeviceChoice>()?.open()?;
    let lm = LanguageModel::load_with_adapter(&a.model, a.adapter.as_deref(), &device)?;
    let cfg = lm.model.config().clone();
    let unit: Unit = a.unit.parse().map_err(|e| anyhow::anyhow!("--unit: {e}"))?;
    let at: Where = a
        .positions
        .parse()
        .map_err(|e| anyhow::anyhow!("--positions: {e}"))?;
    if !["add", "ablate", "clamp"].contains(&a.mode.as_str()) {
        bail!("--mode {}: expected add, ablate or clamp", a.mode);
    }
    let clamp = match a.clamp.as_str() {
        "set" => ClampMode::Set,
        "scale" => ClampMode::Scale,
        o => bail!("--clamp {o}: expected set or scale"),
    };
    let arditi = match a.points.as_str() {
        "site" => false,
        "arditi" => true,
        o => bail!("--points {o}: expected site or arditi"),
    };
    if a.mode == "ablate" && a.alpha.iter().any(|b| !(0.0..=1.0).contains(b)) {
        bail!("--alpha: ablation strengths are β ∈ [0, 1] (1 = the component removed)");
    }
    // The vectors.
    let mut sae_weights = None;
    let source = match (&a.direction, &a.sae, a.latent) {
        (Some(f), None, None) => {
            let mut v =
                LayerVectors::read(f, a.layers.first().copied().filter(|_| a.layers.len() == 1))?;
            if let Some(from) = a.replicate_from {
                let to: Vec<usize> = if a.layers.is_empty() {
                    (0..cfg.n_layers).collect()
                } else {
                    a.layers.clone()
                };
                v = v.replicate(from, to)?;
            } else if !a.layers.is_empty() {
                v = v.select(&a.layers)?;
            }
            Source::Vectors(v)
        }
        (None, Some(s), Some(i)) => {
            let (w, _) = lantern_sae::load_sae(s)?;
            let v = LayerVectors::sae_latent(&w, s, i)?;
            let (site, layer) = lantern_steer::vector::sae_site(&w, s)?;
            sae_weights = Some(w);
            Source::Latent {
                vectors: v,
                point: site.point(layer),
            }
        }
        (Some(_), Some(_), _) => bail!("give --direction or --sae/--latent, not both"),
        _ => bail!("give --direction FILE, or --sae DIR --latent I"),
    };
    let (vectors, sae_point) = match source {
        Source::Vectors(v) => (v, None),
        Source::Latent { vectors, point } => (vectors, Some(point)),
    };
    vectors.check(cfg.n_layers, cfg.d_model)?;
    if a.mode == "clamp" && sae_point.is_none() {
        bail!("--mode clamp needs --sae DIR --latent I");
    }
    if unit == Unit::LatentMax && sae_point.is_none() {
        bail!("--unit latent-max needs --sae DIR --latent I");
    }
    let sae = match &sae_weights {
        Some(w) => {
            if w.cfg.d_in != cfg.d_model {
                bail!(
                    "--sae {}: d_in {} but the model's d_model is {}",
                    a.sae.as_ref().expect("sae given").display(),
                    w.cfg.d_in,
                    cfg.d_model
                );
            }
            Some(Sae::from_weights(w, &device)?)
        }
        None => None,
    };

    // Prompts.
    let records = read_prompts(&a.prompts)?;
    let mut prompts = Vec::new();
    let mut questions = Vec::new();
    for r in &records {
        let (p, q) = prompt_tokens(&lm, r, a.chat, &a.prompts)?;
        prompts.push(p);
        questions.push(q);
    }

    // Calibration.
    let layers: Vec<usize> = vectors.layers.keys().copied().collect();
    let cal = if unit == Unit::Raw && a.mode != "clamp" {
        Calibration::none()
    } else {
        let cal_ids: Vec<Vec<u32>> = match &a.calibration {
            Some(p) => read_prompts(p)?
                .iter()
                .map(|r| prompt_tokens(&lm, r, a.chat, p).map(|x| x.0.ids))
                .collect::<Result<_>>()?,
            None => prompts.iter().map(|p| p.ids.clone()).collect(),
        };
        let latent = match (&sae, sae_point, a.latent) {
            (Some(s), Some(p), Some(i)) => Some((s, p, i)),
            _ => None,
        };
        calibrate(
            &lm.model,
            &cal_ids,
            vectors.site,
            &layers,
            latent,
            a.skip_first,
            a.batch,
        )?
    };
    let builder = Builder {
        mode: a.mode.clone(),
        clamp,
        unit,
        at,
        preserve_norm: a.preserve_norm,
        arditi,
        shared: vectors
            .layers
            .iter()
            .map(|(&l, v)| (l, Arc::new(v.clone())))
            .collect(),
        bases: vectors
            .layers
            .iter()
            .map(|(&l, v)| {
                (
                    l,
                    Arc::new(lantern_steer::vector::orthonormal(std::slice::from_ref(v))),
                )
            })
            .collect(),
        vectors,
        sae_point,
        latent: a.latent,
        cal,
    };
    let mut alphas = a.alpha.clone();
    let neutral_alpha = if a.mode == "clamp" && clamp == ClampMode::Scale {
        1.0
    } else {
        0.0
    };
    if a.mode != "clamp" && !alphas.contains(&neutral_alpha) {
        alphas.insert(0, neutral_alpha);
    }
    let conditions: Vec<Condition> = alphas
        .iter()
        .map(|&al| {
            Ok(Condition {
                name: format!("{} {al} {}", a.mode, unit),
                strength: Some(al),
                unit,
                intervention: builder.intervention(al)?,
            })
        })
        .collect::<Result<_>>()?;

    // `choice` scores log-probabilities of the prompts; the others judge generated text.
    let want_choice = a.judges.iter().any(|j| j == "choice");
    let text_specs: Vec<&String> = a.judges.iter().filter(|j| *j != "choice").collect();
    let mut judges: Vec<Box<dyn Judge>> = text_specs
        .iter()
        .map(|j| judge_of(j, a.judge_threshold))
        .collect::<Result<_>>()?;
    if judges.is_empty() && !want_choice {
        judges.push(Box::new(KeywordJudge::refusal()));
    }
    let choice_items = if want_choice {
        Some(choice_items(&lm, &records, &prompts, &a.prompts)?)
    } else {
        None
    };
    let settings = GenSettings {
        max_new_tokens: a.max_new_tokens,
        temperature: a.temperature,
        top_p: a.top_p,
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
        perplexity: !a.no_perplexity,
        max_ppl: a.max_perplexity,
    };
    let scored = if judges.is_empty() {
        Vec::new()
    } else {
        let total = prompts.len() * conditions.len() * a.samples;
        let bar = ProgressBar::new(total as u64);
        let gens = run_generations(
            &lm.model,
            &prompts,
            &conditions,
            &settings,
            sae.as_ref(),
            |d, _| bar.set_position(d as u64),
        )?;
        bar.finish_and_clear();
        let scored = eval.score(&gens, &conditions, &mut judges)?;
        let mut f =
            std::io::BufWriter::new(std::fs::File::create(a.out.join("generations.jsonl"))?);
        for g in &scored {
            writeln!(f, "{}", serde_json::to_string(&g.json)?)?;
        }
        f.flush()?;
        scored
    };
    let choice = match &choice_items {
        Some(items) => Some(run_choice(
            &lm,
            items,
            &records,
            &conditions,
            sae.as_ref(),
            a.batch,
            &a.out,
        )?),
        None => None,
    };
    let neutral = match &a.neutral {
        Some(p) => {
            let texts: Vec<Vec<u32>> = read_prompts(p)?
                .iter()
                .map(|r| prompt_tokens(&lm, r, false, p).map(|x| x.0.ids))
                .collect::<Result<_>>()?;
            let ivs: Vec<Intervention> =
                conditions.iter().map(|c| c.intervention.clone()).collect();
            Some(neutral_scores(
                &lm.model,
                &texts,
                &ivs,
                sae.as_ref(),
                a.batch,
            )?)
        }
        None => None,
    };
    let judge_names: Vec<String> = judges.iter().map(|j| j.name()).collect();
    let mut rows = Vec::new();
    let mut csv = String::from(
        "condition,strength,unit,judge,n,judged,hits,rate,lo,hi,incoherent,perplexity_mean,ce,kl,mean_score,mean_mass\n",
    );
    for (ci, c) in conditions.iter().enumerate() {
        let mine: Vec<&Scored> = scored.iter().filter(|g| g.condition == ci).collect();
        let ppl: Vec<f64> = mine
            .iter()
            .map(|g| g.perplexity)
            .filter(|p| p.is_finite())
            .collect();
        let ppl_mean = if ppl.is_empty() {
            f64::NAN
        } else {
            ppl.iter().sum::<f64>() / ppl.len() as f64
        };
        let mut per_judge = serde_json::Map::new();
        let (ce, kl) = neutral
            .as_ref()
            .map_or((f64::NAN, f64::NAN), |n| (n[ci].ce, n[ci].kl));
        for (ji, name) in judge_names.iter().enumerate() {
            let s = Summary::of(
                mine.iter().map(|g| &g.verdicts[ji]),
                mine.iter().map(|g| g.coherent),
            );
            csv.push_str(&format!(
                "{:?},{},{},{:?},{},{},{},{},{},{},{},{},{},{},,\n",
                c.name,
                c.strength.unwrap_or(f64::NAN),
                c.unit,
                name,
                s.n,
                s.judged,
                s.hits,
                s.rate,
                s.lo,
                s.hi,
                s.incoherent,
                ppl_mean,
                ce,
                kl
            ));
            per_judge.insert(name.clone(), s.json());
        }
        if let Some(ch) = &choice {
            let s = &ch[ci];
            csv.push_str(&format!(
                "{:?},{},{},\"choice\",{},{},{},{},{},{},0,,{},{},{},{}\n",
                c.name,
                c.strength.unwrap_or(f64::NAN),
                c.unit,
                s.n,
                s.n,
                s.hits,
                s.rate,
                s.lo,
                s.hi,
                ce,
                kl,
                s.mean_score,
                s.mean_mass
            ));
            per_judge.insert("choice".into(), s.json());
        }
        rows.push(json!({
            "condition": c.name, "strength": c.strength, "unit": c.unit,
            "generations": mine.len(),
            "perplexity_mean": finite_or_null(ppl_mean),
            "judges": per_judge,
            "neutral": neutral.as_ref().map(|n| json!({"ce": n[ci].ce, "kl": n[ci].kl, "tokens": n[ci].tokens})),
        }));
    }
    std::fs::write(a.out.join("results.csv"), csv)?;

    // Strength search.
    let search = match (a.search_coherence, a.search_max) {
        (Some(tau), Some(hi)) => {
            let steps = a.search_steps;
            let mut probe_judges: Vec<Box<dyn Judge>> = text_specs
                .iter()
                .map(|j| judge_of(j, a.judge_threshold))
                .collect::<Result<_>>()?;
            let (best, probes) = bisect_strength(0.0, hi, steps, tau, |al| {
                let c = Condition {
                    name: format!("search {al}"),
                    strength: Some(al),
                    unit,
                    intervention: builder
                        .intervention(al)
                        .map_err(|e| lantern_steer::SteerError::Device(e.to_string()))?,
                };
                let g = run_generations(
                    &lm.model,
                    &prompts,
                    std::slice::from_ref(&c),
                    &settings,
                    sae.as_ref(),
                    |_, _| {},
                )?;
                let s = eval
                    .score(&g, std::slice::from_ref(&c), &mut probe_judges)
                    .map_err(|e| lantern_steer::SteerError::Device(e.to_string()))?;
                Ok(s.iter().filter(|x| x.coherent).count() as f64 / s.len().max(1) as f64)
            })?;
            println!("largest strength with coherent share ≥ {tau}: {best} {unit}");
            Some(
                json!({"threshold": tau, "max": hi, "steps": steps, "best": best,
                "probes": probes.iter().map(|(al, f)| json!({"strength": al, "coherent": f})).collect::<Vec<_>>()}),
            )
        }
        (None, None) => None,
        _ => bail!("--search-coherence and --search-max go together"),
    };
    if search.is_some()
        && a.max_perplexity.is_none()
        && !judges.iter().any(|j| j.name().starts_with("command:"))
    {
        eprintln!(
            "note: without --max-perplexity or a judge that flags incoherence, every generation counts as coherent"
        );
    }
    write_json(
        &a.out.join("results.json"),
        &json!({
            "model": a.model, "adapter": a.adapter, "direction": a.direction, "sae": a.sae, "latent": a.latent,
            "mode": a.mode, "site": builder.vectors.site.to_string(), "layers": layers, "method": builder.vectors.method,
            "unit": unit, "positions": at, "preserve_norm": a.preserve_norm, "points": a.points,
            "calibration": builder.cal, "samples": a.samples, "temperature": a.temperature, "top_p": a.top_p,
            "seed": a.seed, "max_new_tokens": a.max_new_tokens,
            "judges": judge_names.iter().map(String::as_str).chain(want_choice.then_some("choice")).collect::<Vec<_>>(),
            "max_perplexity": a.max_perplexity, "conditions": rows, "search": search,
        }),
    )?;
    // Plot: the first text judge's rate per strength, else the choice judge's.
    let items: Vec<Interval> = conditions
        .iter()
        .enumerate()
        .map(|(ci, c)| {
            let (value, lo, hi) = match (&choice, judges.is_empty()) {
                (Some(ch), true) => (ch[ci].rate, ch[ci].lo, ch[ci].hi),
                _ => {
                    let mine = scored.iter().filter(|g| g.condition == ci);
                    let s = Summary::of(
                        mine.clone().map(|g| &g.verdicts[0]),
                        mine.map(|g| g.coherent),
                    );
                    (s.rate, s.lo, s.hi)
                }
            };
            Interval {
                label: format!("{}", c.strength.unwrap_or(f64::NAN)),
                value,
                lo,
                hi,
            }
        })
        .collect();
    let (counts, first) = match judges.first() {
        Some(j) => (j.counts(), j.name()),
        None => ("positive choice".to_string(), "choice".to_string()),
    };
    let y = format!("{counts} rate ({first})");
    let x = format!("strength ({unit}, {})", a.mode);
    interval_chart(
        &a.out.join("dose_response.png"),
        &IntervalChart {
            title: "Dose–response",
            x_label: &x,
            y_label: &y,
            items: &items,
        },
    )?;
    for (c, it) in conditions.iter().zip(&items) {
        println!(
            "{:>28}  {}: {:.3} [{:.3}, {:.3}]",
            c.name, counts, it.value, it.lo, it.hi
        );
    }
    println!("wrote {}", a.out.display());
    Ok(())
}

/// One judged generation.
pub(crate) struct Scored {
    pub condition: usize,
    pub verdicts: Vec<Verdict>,
    pub perplexity: f64,
    pub coherent: bool,
    pub json: Value,
}

pub(crate) struct Evaluator<'a> {
    pub lm: &'a LanguageModel,
    pub prompts: &'a [PromptTokens],
    pub questions: &'a [String],
    pub records: &'a [PromptRecord],
    pub settings: &'a GenSettings,
    pub perplexity: bool,
    pub max_ppl: Option<f64>,
}

impl Evaluator<'_> {
    pub fn score(
        &self,
        gens: &[lantern_steer::experiment::GenRecord],
        conditions: &[Condition],
        judges: &mut [Box<dyn Judge>],
    ) -> Result<Vec<Scored>> {
        let texts: Vec<String> = gens
            .iter()
            .map(|g| self.lm.tokenizer.decode(&g.tokens, true))
            .collect::<Result<_, _>>()?;
        let ids: Vec<String> = gens
            .iter()
            .map(|g| record_id(&self.records[g.prompt]))
            .collect();
        let inputs: Vec<JudgeInput> = gens
            .iter()
            .zip(&texts)
            .zip(&ids)
            .map(|((g, t), id)| JudgeInput {
                id,
                label: self.records[g.prompt].label.as_deref(),
                question: &self.questions[g.prompt],
                answer: t,
            })
            .collect();
        let mut verdicts: Vec<Vec<Verdict>> = vec![Vec::new(); gens.len()];
        for j in judges.iter_mut() {
            for (i, v) in j.judge(&inputs)?.into_iter().enumerate() {
                verdicts[i].push(v);
            }
        }
        let ppl: Vec<f64> = if self.perplexity {
            let seqs: Vec<(Vec<u32>, usize)> = gens
                .iter()
                .map(|g| {
                    let p = &self.prompts[g.prompt].ids;
                    let mut s = p.clone();
                    s.extend(&g.tokens);
                    (s, p.len())
                })
                .collect();
            mean_nll(&self.lm.model, &seqs, None, None, self.settings.batch)?
                .into_iter()
                .map(f64::exp)
                .collect()
        } else {
            vec![f64::NAN; gens.len()]
        };
        Ok(gens
            .iter()
            .zip(verdicts)
            .zip(ppl)
            .zip(texts)
            .map(|(((g, v), p), text)| {
                let coherent = v.iter().all(|x| x.hit.is_some())
                    && self.max_ppl.is_none_or(|m| p.is_finite() && p <= m);
                let c = &conditions[g.condition];
                let json = json!({
                    "prompt": record_id(&self.records[g.prompt]), "question": self.questions[g.prompt],
                    "condition": c.name, "strength": c.strength, "unit": c.unit,
                    "sample": g.sample, "seed": g.seed, "text": text, "tokens": g.tokens.len(),
                    "perplexity": finite_or_null(p), "coherent": coherent,
                    "verdicts": v.iter().zip(judges.iter()).map(|(x, j)| verdict_json(&j.name(), x)).collect::<Vec<_>>(),
                });
                Scored { condition: g.condition, verdicts: v, perplexity: p, coherent, json }
            })
            .collect())
    }
}

/// A judge's counts over one condition.
pub(crate) struct Summary {
    pub n: usize,
    pub judged: usize,
    pub hits: usize,
    pub incoherent: usize,
    pub rate: f64,
    pub lo: f64,
    pub hi: f64,
}

impl Summary {
    /// Hits among coherent, judged generations (Betley et al.: misaligned among coherent).
    pub fn of<'a>(
        v: impl Iterator<Item = &'a Verdict>,
        coherent: impl Iterator<Item = bool>,
    ) -> Self {
        let (mut n, mut judged, mut hits, mut incoherent) = (0, 0, 0, 0);
        for (x, c) in v.zip(coherent) {
            n += 1;
            match (x.hit, c) {
                (Some(h), true) => {
                    judged += 1;
                    hits += usize::from(h);
                }
                _ => incoherent += 1,
            }
        }
        let (lo, hi) = wilson(hits, judged);
        Self {
            n,
            judged,
            hits,
            incoherent,
            rate: if judged > 0 {
                hits as f64 / judged as f64
            } else {
                f64::NAN
            },
            lo,
            hi,
        }
    }

    pub fn json(&self) -> Value {
        json!({"n": self.n, "judged": self.judged, "hits": self.hits, "incoherent": self.incoherent,
            "incoherent_share": self.incoherent as f64 / self.n.max(1) as f64,
            "rate": finite_or_null(self.rate), "lo": finite_or_null(self.lo), "hi": finite_or_null(self.hi)})
    }
}
