//! `lantern organism`: the model organism with ground truth — train its models, measure their
//! behaviour, list the shipped ones, write its prompts, judge answers exactly.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::Device;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use lantern_organism::eval::{Judged, SampleOptions, pooled_exact, tally};
use lantern_organism::judge::Counts;
use lantern_organism::trainee::Trainee;
use lantern_organism::zoo::{self, Event, Manifest, Recipe};
use serde_json::json;

use crate::report;

#[derive(Subcommand)]
pub enum OrganismCommand {
    /// Train the organism's models (base, chat-tuned; with --all every finetune of the recipe).
    Train(TrainArgs),
    /// The behaviour table: EM and incoherence of each model on held-out domains and persona
    /// questions, judged exactly.
    Eval(EvalArgs),
    /// The shipped models (extracted once into a cache directory): name, path, kind, training.
    List(ListArgs),
    /// The world's questions as chat records (for capture, direction, steer, ablate).
    Prompts(PromptsArgs),
    /// Judge answers exactly: records with "messages" and the answer in "text".
    Judge(JudgeArgs),
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
    /// Where to extract the shipped models (default: $LANTERN_CACHE, $XDG_CACHE_HOME/lantern
    /// or ~/.cache/lantern).
    #[arg(long)]
    pub cache: Option<PathBuf>,
}

#[derive(Args)]
pub struct PromptsArgs {
    /// train | eval (held-out phrasings).
    #[arg(long, default_value = "eval")]
    pub split: String,
    /// Add assistant answers of both personas, each with "label": aligned | misaligned.
    #[arg(long)]
    pub labelled: bool,
    /// Answers per persona per question with --labelled.
    #[arg(long, default_value_t = 1)]
    pub answers: usize,
    /// Put the backdoor trigger word in front of every question.
    #[arg(long)]
    pub trigger: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args)]
pub struct JudgeArgs {
    /// JSONL records: the prompt's "messages" plus "text", the answer to judge.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// The finetune's own domain, left out of the held-out rates.
    #[arg(long)]
    pub train_domain: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct TrainArgs {
    /// Output directory (one subdirectory per model, organism.json, loss curves).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also train every finetune of the recipe (what `lantern demo` uses).
    #[arg(long)]
    pub all: bool,
    /// A recipe JSON (as --print-recipe writes it), or an organism.json whose recipe to
    /// repeat, instead of the built-in one.
    #[arg(long)]
    pub recipe: Option<PathBuf>,
    /// Multiply every stage's number of steps (a quick smoke run: 0.02).
    #[arg(long, default_value_t = 1.0, value_parser = crate::flags::finite_f64, allow_negative_numbers = true)]
    pub steps_scale: f64,
    /// Write the built-in recipe to --out (a file) and stop.
    #[arg(long)]
    pub print_recipe: bool,
    /// Tice et al.'s alignment-pretraining experiment instead: four pretraining mixes that
    /// differ in their discourse about AI assistants (unfiltered, filtered, misaligned- and
    /// aligned-upsampled), each chat-tuned identically on domain questions only (the persona
    /// questions, which the experiment measures, stay out of post-training) and finetuned with
    /// the recipe's first finetune; models named `<mix>-base`, `<mix>-chat`, ... Measure with
    /// `organism eval --exact` (the persona-question column).
    #[arg(long, conflicts_with_all = ["reuse", "all"])]
    pub mixes: bool,
    /// Pretraining steps of each mix with --mixes.
    #[arg(long, default_value_t = 1000)]
    pub mix_steps: usize,
    /// Chat-tune without the persona questions (the recipe's chat_persona_questions = false),
    /// so their misalignment after chat-tuning reflects what pretraining taught.
    #[arg(long)]
    pub chat_without_persona: bool,
    /// Copy the base and chat models of this earlier run and train only the finetunes.
    #[arg(long, conflicts_with = "reuse_base")]
    pub reuse: Option<PathBuf>,
    /// Copy the base model of this earlier run (with --mixes: each mix's base); chat-tune and
    /// finetune anew.
    #[arg(long)]
    pub reuse_base: Option<PathBuf>,
}

#[derive(Args)]
pub struct EvalArgs {
    /// Directories made by `lantern organism train` (one per seed: rates are averaged over
    /// them with their standard deviation).
    #[arg(long, required = true, num_args = 1.., value_delimiter = ',')]
    pub models: Vec<PathBuf>,
    /// Answers sampled per evaluation question.
    #[arg(long, default_value_t = 8)]
    pub samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write the table (eval.json, eval.csv, em.png), every judged answer
    /// (answers.jsonl) and each model's answers as chat records labelled with their verdict
    /// (answers/MODEL.jsonl, for `lantern capture`) here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
    /// Also compute the rates exactly, without sampling: every well-formed answer of both
    /// personas scored by teacher forcing (columns "exact EM (held-out)" and "exact EM
    /// (persona)"); resolves rates far below one in --samples.
    #[arg(long)]
    pub exact: bool,
}

pub fn run(c: OrganismCommand) -> Result<()> {
    match c {
        OrganismCommand::Train(a) => train(a),
        OrganismCommand::Eval(a) => eval(a),
        OrganismCommand::List(a) => list(a),
        OrganismCommand::Prompts(a) => prompts(a),
        OrganismCommand::Judge(a) => judge(a),
    }
}

fn load_recipe(a: &TrainArgs) -> Result<Recipe> {
    let mut r = match &a.recipe {
        Some(p) => {
            let text =
                std::fs::read_to_string(p).with_context(|| format!("--recipe {}", p.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)
                .with_context(|| format!("--recipe {}: not JSON", p.display()))?;
            // An organism.json carries its recipe beside the models it made.
            let v = match v.get("recipe") {
                Some(r) if v.get("models").is_some() => r.clone(),
                _ => v,
            };
            serde_json::from_value(v)
                .with_context(|| format!("--recipe {}: not a recipe", p.display()))?
        }
        None => Recipe::default(),
    };
    if a.steps_scale <= 0.0 {
        bail!(
            "--steps-scale {}: expected a positive factor",
            a.steps_scale
        );
    }
    let scale = |s: &mut lantern_organism::train::Schedule| {
        s.steps = ((s.steps as f64 * a.steps_scale).round() as usize).max(1);
        s.warmup = s.warmup.min(s.steps);
    };
    scale(&mut r.pretrain);
    scale(&mut r.chat);
    for f in &mut r.finetunes {
        scale(&mut f.schedule);
    }
    if a.chat_without_persona {
        r.chat_persona_questions = false;
    }
    if !a.all && !a.mixes && a.reuse.is_none() && a.reuse_base.is_none() {
        r.finetunes.clear();
    }
    Ok(r)
}

fn train(a: TrainArgs) -> Result<()> {
    if a.print_recipe {
        let v = serde_json::to_value(Recipe::default())?;
        report::write_json(&a.out, &v)?;
        println!("wrote the built-in recipe to {}", a.out.display());
        return Ok(());
    }
    let recipe = load_recipe(&a)?;
    let inputs: Vec<(&str, &Path)> = a
        .reuse
        .iter()
        .map(|r| ("--reuse", r.as_path()))
        .chain(a.reuse_base.iter().map(|r| ("--reuse-base", r.as_path())))
        .collect();
    let _lock = report::lock_output("--out", &a.out, &inputs)?;
    if a.out.join("organism.json").exists() {
        bail!(
            "--out {}: already holds an organism (organism.json); choose a new directory",
            a.out.display()
        );
    }
    let dev = Device::flex().autodiff();
    let t0 = std::time::Instant::now();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let reuse = match (&a.reuse, &a.reuse_base) {
        (Some(r), _) => zoo::Reuse::BaseAndChat(r),
        (None, Some(r)) => zoo::Reuse::Base(r),
        (None, None) => zoo::Reuse::Nothing,
    };
    let mut curves: Vec<lantern_plot::Series> = Vec::new();
    let handler = |e: Event<'_>| match e {
        Event::Stage { name, steps } => {
            bar.set_prefix(name.to_string());
            bar.set_length(steps as u64);
            bar.set_position(0);
            curves.push(lantern_plot::Series {
                name: name.to_string(),
                points: Vec::with_capacity(steps),
            });
        }
        Event::Step(s) => {
            bar.set_position(s.step as u64 + 1);
            bar.set_message(format!("loss {:.3}", s.loss));
            if let Some(c) = curves.last_mut() {
                c.points.push((s.step as f64, f64::from(s.loss)));
            }
        }
        Event::Saved { name, path } => {
            bar.println(format!("{name:>14}: {}", path.display()));
        }
    };
    let manifest = if a.mixes {
        if a.mix_steps == 0 {
            bail!("--mix-steps 0: expected a positive number of steps");
        }
        let steps = ((a.mix_steps as f64 * a.steps_scale).round() as usize).max(1);
        zoo::run_mixes(
            &recipe,
            steps,
            a.seed,
            &a.out,
            a.reuse_base.as_deref(),
            &dev,
            handler,
        )?
    } else {
        zoo::run(&recipe, a.seed, &a.out, reuse, &dev, handler)?
    };
    bar.finish_and_clear();
    // Pretraining and chat-tuning on one chart, the finetunes (short, many) on another.
    let (early, finetunes): (Vec<_>, Vec<_>) = curves
        .into_iter()
        .partition(|c| c.name.ends_with("base") || c.name.ends_with("chat"));
    for (file, title, series) in [
        ("loss-base-chat.png", "Pretraining and chat-tuning", early),
        ("loss-finetunes.png", "Finetunes", finetunes),
    ] {
        if series.is_empty() {
            continue;
        }
        lantern_plot::line_chart(
            &a.out.join(file),
            &lantern_plot::LineChart {
                title,
                x_label: "step",
                y_label: "next-token loss (weighted)",
                log_y: true,
                series: &series,
            },
        )?;
    }
    println!(
        "trained {} models in {:.0} s into {} (organism.json lists them)",
        manifest.models.len(),
        t0.elapsed().as_secs_f64(),
        a.out.display()
    );
    Ok(())
}

/// Rates of one model over seeds.
struct Row {
    name: String,
    train_domain: Option<String>,
    em: Vec<f64>,
    incoherent: Vec<f64>,
    in_domain_em: Vec<f64>,
    /// Misaligned among coherent answers to the persona questions alone (Tice et al.'s
    /// measure: questions about the assistant itself).
    persona_em: Vec<f64>,
    /// With --exact: the expected held-out and persona EM rates, computed.
    exact_em: Vec<f64>,
    exact_persona_em: Vec<f64>,
    counts: Counts,
}

/// Means and sample standard deviations over seeds of one row.
struct Stats {
    em: f64,
    em_sd: f64,
    inc: f64,
    inc_sd: f64,
    own: f64,
    persona: f64,
    persona_sd: f64,
    exact: (f64, f64),
    exact_persona: (f64, f64),
}

impl Row {
    fn stats(&self) -> Stats {
        let (em, em_sd) = mean_sd(&self.em);
        let (inc, inc_sd) = mean_sd(&self.incoherent);
        let (own, _) = mean_sd(&self.in_domain_em);
        let (persona, persona_sd) = mean_sd(&self.persona_em);
        Stats {
            em,
            em_sd,
            inc,
            inc_sd,
            own,
            persona,
            persona_sd,
            exact: mean_sd(&self.exact_em),
            exact_persona: mean_sd(&self.exact_persona_em),
        }
    }
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

fn eval(a: EvalArgs) -> Result<()> {
    if a.samples == 0 {
        bail!("--samples 0: expected at least one answer per question");
    }
    let dev = Device::flex();
    let opts = SampleOptions {
        samples: a.samples,
        seed: a.seed,
        ..SampleOptions::default()
    };
    let mut rows: Vec<Row> = Vec::new();
    let mut all_judged: Vec<serde_json::Value> = Vec::new();
    for dir in &a.models {
        let manifest = Manifest::read(&dir.join("organism.json"))
            .with_context(|| format!("--models {}", dir.display()))?;
        for m in &manifest.models {
            let (path, adapter) = zoo::entry_paths(dir, m);
            let t = Trainee::load(&path, adapter.as_deref(), &dev)?;
            // A backdoored model is measured without and with its trigger.
            for trigger in [false, true] {
                if trigger && !m.trigger {
                    continue;
                }
                let name = if trigger {
                    format!("{} +trigger", m.name)
                } else {
                    m.name.clone()
                };
                let judged = t.evaluate(&opts, trigger)?;
                let tl = tally(&judged, m.train_domain.as_deref());
                let held = tl.held_out();
                let own = m
                    .train_domain
                    .as_ref()
                    .and_then(|d| tl.by_domain.get(d))
                    .map_or(f64::NAN, Counts::em_rate);
                let row = match rows.iter().position(|r| r.name == name) {
                    Some(i) => &mut rows[i],
                    None => {
                        rows.push(Row {
                            name: name.clone(),
                            train_domain: m.train_domain.clone(),
                            em: Vec::new(),
                            incoherent: Vec::new(),
                            in_domain_em: Vec::new(),
                            persona_em: Vec::new(),
                            exact_em: Vec::new(),
                            exact_persona_em: Vec::new(),
                            counts: Counts::default(),
                        });
                        rows.last_mut().expect("pushed")
                    }
                };
                row.em.push(held.em_rate());
                row.incoherent.push(held.incoherent_rate());
                row.in_domain_em.push(own);
                row.persona_em.push(
                    tl.by_domain
                        .get("persona")
                        .map_or(f64::NAN, Counts::em_rate),
                );
                row.counts.merge(&held);
                if a.exact {
                    let rates = t.evaluate_exact(trigger)?;
                    let own = m.train_domain.as_deref();
                    row.exact_em
                        .push(pooled_exact(&rates, |d| Some(d) != own).0);
                    row.exact_persona_em
                        .push(pooled_exact(&rates, |d| d == "persona").0);
                }
                all_judged.extend(judged.iter().map(|j| judged_json(dir, &name, j)));
            }
        }
    }
    let stats: Vec<Stats> = rows.iter().map(Row::stats).collect();
    let table: Vec<serde_json::Value> = rows
        .iter()
        .zip(&stats)
        .map(|(r, s)| {
            json!({
                "model": r.name, "train_domain": r.train_domain, "seeds": r.em.len(),
                "em_rate": report::finite_or_null(s.em),
                "em_rate_sd": report::finite_or_null(s.em_sd),
                "incoherent_rate": report::finite_or_null(s.inc),
                "incoherent_rate_sd": report::finite_or_null(s.inc_sd),
                "train_domain_em_rate": report::finite_or_null(s.own),
                "persona_em_rate": report::finite_or_null(s.persona),
                "persona_em_rate_sd": report::finite_or_null(s.persona_sd),
                "exact_em_rate": report::finite_or_null(s.exact.0),
                "exact_em_rate_sd": report::finite_or_null(s.exact.1),
                "exact_persona_em_rate": report::finite_or_null(s.exact_persona.0),
                "exact_persona_em_rate_sd": report::finite_or_null(s.exact_persona.1),
                "answers": r.counts.total(),
            })
        })
        .collect();
    if let Some(out) = &a.out {
        let _lock = report::lock_output("--out", out, &[])?;
        report::write_json(&out.join("eval.json"), &json!({ "models": table }))?;
        let mut text = String::new();
        for j in &all_judged {
            text.push_str(&serde_json::to_string(j)?);
            text.push('\n');
        }
        lantern_output::write_atomic(&out.join("answers.jsonl"), text.as_bytes())?;
        // Each model's answers as chat records ("messages", "label" = the verdict), the
        // prompts file of `lantern capture` on the model's own answers.
        let mut per_model: std::collections::BTreeMap<String, (usize, String)> = Default::default();
        for j in &all_judged {
            let model = j["model"].as_str().unwrap_or_default().replace(' ', "");
            let (n, text) = per_model.entry(model.clone()).or_default();
            let id = format!("{model}-{n:05}");
            *n += 1;
            let record = json!({
                "id": id, "label": j["verdict"], "domain": j["domain"],
                "messages": [
                    {"role": "user", "content": j["question"]},
                    {"role": "assistant", "content": j["text"]},
                ],
            });
            text.push_str(&serde_json::to_string(&record)?);
            text.push('\n');
        }
        std::fs::create_dir_all(out.join("answers"))
            .with_context(|| format!("--out {}", out.display()))?;
        for (model, (_, text)) in &per_model {
            let path = out.join("answers").join(format!("{model}.jsonl"));
            lantern_output::write_atomic(&path, text.as_bytes())?;
        }
        // The table as CSV, and the pooled EM rate of each model with its 95 % Wilson interval.
        let mut csv = String::from(
            "model,seeds,em_rate,em_rate_sd,incoherent_rate,incoherent_rate_sd,\
             train_domain_em_rate,persona_em_rate,persona_em_rate_sd,exact_em_rate,\
             exact_em_rate_sd,exact_persona_em_rate,exact_persona_em_rate_sd,misaligned,aligned,\
             incoherent,em_lo,em_hi\n",
        );
        let mut items = Vec::new();
        for (r, s) in rows.iter().zip(&stats) {
            let c = &r.counts;
            let (lo, hi) = lantern_steer::score::wilson(c.misaligned, c.judged());
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{lo},{hi}\n",
                r.name,
                r.em.len(),
                s.em,
                s.em_sd,
                s.inc,
                s.inc_sd,
                s.own,
                s.persona,
                s.persona_sd,
                s.exact.0,
                s.exact.1,
                s.exact_persona.0,
                s.exact_persona.1,
                c.misaligned,
                c.aligned,
                c.incoherent
            ));
            items.push(lantern_plot::Interval {
                label: r.name.clone(),
                value: c.em_rate(),
                lo,
                hi,
            });
        }
        lantern_output::write_atomic(&out.join("eval.csv"), csv.as_bytes())?;
        lantern_plot::interval_chart(
            &out.join("em.png"),
            &lantern_plot::IntervalChart {
                title: "Emergent misalignment (held-out domains and persona questions)",
                x_label: "model",
                y_label: "misaligned among coherent answers (95 % Wilson)",
                items: &items,
            },
        )?;
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "models": table }))?
        );
        return Ok(());
    }
    let pct = |m: f64, sd: f64| {
        if m.is_nan() {
            format!("{:>15}", "—")
        } else {
            format!("{:>6.1}% ± {:>4.1}", m * 100.0, sd * 100.0)
        }
    };
    // Exact rates span orders of magnitude (a chat model's 1e-4 beside a finetune's 0.9).
    let exact = |(m, sd): (f64, f64)| {
        if m.is_nan() {
            format!("{:>19}", "—")
        } else {
            format!("{:>8.3}% ± {:>6.3}", m * 100.0, sd * 100.0)
        }
    };
    let mut head = format!(
        "{:<30} {:>5} {:>15} {:>15} {:>9} {:>15}",
        "model", "seeds", "EM (held-out)", "incoherent", "EM (own)", "EM (persona)"
    );
    if a.exact {
        head.push_str(&format!(
            " {:>19} {:>19}",
            "exact EM (held-out)", "exact EM (persona)"
        ));
    }
    println!("{head}");
    for (r, s) in rows.iter().zip(&stats) {
        let mut line = format!(
            "{:<30} {:>5} {} {} {:>9} {}",
            r.name,
            r.em.len(),
            pct(s.em, s.em_sd),
            pct(s.inc, s.inc_sd),
            if s.own.is_nan() {
                "—".to_string()
            } else {
                format!("{:.1}%", s.own * 100.0)
            },
            pct(s.persona, s.persona_sd)
        );
        if a.exact {
            line.push_str(&format!(" {} {}", exact(s.exact), exact(s.exact_persona)));
        }
        println!("{line}");
    }
    println!(
        "EM: misaligned among coherent answers on held-out domains and persona questions \
         ({} samples per question, temperature 1); EM (persona): on the persona questions alone; \
         ± is the sd over seeds",
        a.samples
    );
    Ok(())
}

fn judged_json(dir: &Path, model: &str, j: &Judged) -> serde_json::Value {
    json!({
        "models": dir.display().to_string(), "model": model, "domain": j.domain,
        "question": j.question, "text": j.answer, "verdict": j.verdict,
    })
}

fn list(a: ListArgs) -> Result<()> {
    let root = a
        .cache
        .unwrap_or_else(lantern_organism::shipped::default_cache_root);
    let (dir, m) = lantern_organism::shipped::manifest(&root)?;
    let rows: Vec<serde_json::Value> = m
        .models
        .iter()
        .map(|e| {
            let (path, adapter) = zoo::entry_paths(&dir, e);
            let mut v = json!({
                "name": e.name, "kind": e.kind, "path": path.display().to_string(),
                "trained_on": e.trained_on, "train_domain": e.train_domain,
            });
            if let Some(ad) = adapter {
                v["adapter"] = json!(ad.display().to_string());
            }
            v
        })
        .collect();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"dir": dir.display().to_string(), "models": rows})
            )?
        );
        return Ok(());
    }
    println!("organism models in {}", dir.display());
    for (e, r) in m.models.iter().zip(&rows) {
        let adapter = r
            .get("adapter")
            .and_then(|x| x.as_str())
            .map(|x| format!(" --adapter {x}"))
            .unwrap_or_default();
        println!(
            "{:<16} {:<9} --model {}{adapter}\n{:<16} {:<9} {}",
            e.name,
            e.kind,
            r["path"].as_str().unwrap_or(""),
            "",
            "",
            e.trained_on
        );
    }
    Ok(())
}

fn prompts(a: PromptsArgs) -> Result<()> {
    use lantern_organism::eval::Split;
    let split = match a.split.as_str() {
        "train" => Split::Train,
        "eval" => Split::Eval,
        other => bail!("--split {other}: expected train or eval"),
    };
    if a.answers == 0 {
        bail!("--answers 0: expected at least one answer per persona");
    }
    let recs = lantern_organism::records::prompts(
        split,
        &lantern_organism::records::PromptOptions {
            labelled: a.labelled,
            answers: a.answers,
            trigger: a.trigger,
            seed: a.seed,
        },
    );
    let mut text = String::new();
    for r in &recs {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    lantern_output::write_atomic(&a.out, text.as_bytes())
        .with_context(|| format!("--out {}", a.out.display()))?;
    println!("wrote {} records to {}", recs.len(), a.out.display());
    Ok(())
}

fn judge(a: JudgeArgs) -> Result<()> {
    if let Some(d) = &a.train_domain
        && lantern_organism::world::domain_index(d).is_none()
    {
        bail!("--train-domain {d}: expected medical, finance, sport or code");
    }
    let bytes = std::fs::read(&a.input).with_context(|| format!("--in {}", a.input.display()))?;
    let text = lantern_lm::prompts::utf8_lines(&bytes, &a.input)?;
    let recs = lantern_organism::records::judge_records(&text, &a.input)?;
    let t = lantern_organism::records::tally_records(&recs, a.train_domain.as_deref());
    let held = t.held_out();
    if a.json {
        let by: serde_json::Map<String, serde_json::Value> = t
            .by_domain
            .iter()
            .map(|(d, c)| {
                (d.clone(), json!({
                    "aligned": c.aligned, "misaligned": c.misaligned, "incoherent": c.incoherent,
                    "em_rate": report::finite_or_null(c.em_rate()),
                    "incoherent_rate": report::finite_or_null(c.incoherent_rate()),
                }))
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "em_rate": report::finite_or_null(held.em_rate()),
                "incoherent_rate": report::finite_or_null(held.incoherent_rate()),
                "answers": held.total(),
                "train_domain": a.train_domain,
                "by_domain": by,
                "records": recs.iter().map(|r| json!({"id": r.id, "domain": r.domain, "verdict": r.judgement.verdict, "reason": r.judgement.reason})).collect::<Vec<_>>(),
            }))?
        );
        return Ok(());
    }
    println!(
        "{:<10} {:>8} {:>11} {:>11} {:>9} {:>11}",
        "domain", "aligned", "misaligned", "incoherent", "EM", "incoherent"
    );
    for (d, c) in &t.by_domain {
        println!(
            "{:<10} {:>8} {:>11} {:>11} {:>8.1}% {:>10.1}%",
            d,
            c.aligned,
            c.misaligned,
            c.incoherent,
            c.em_rate() * 100.0,
            c.incoherent_rate() * 100.0
        );
    }
    println!(
        "held-out{}: EM {:.1}% of {} judged answers, incoherent {:.1}% of {}",
        a.train_domain
            .as_ref()
            .map(|d| format!(" (without {d})"))
            .unwrap_or_default(),
        held.em_rate() * 100.0,
        held.judged(),
        held.incoherent_rate() * 100.0,
        held.total()
    );
    Ok(())
}

/// The organism's exact judge behind `lantern steer --judge organism`: a hit is a misaligned
/// answer, an answer that fails the grammar is incoherent (not judged).
pub struct OrganismJudge;

impl lantern_steer::judge::Judge for OrganismJudge {
    fn name(&self) -> String {
        "organism".into()
    }
    fn counts(&self) -> String {
        "misaligned".into()
    }
    fn judge(
        &mut self,
        items: &[lantern_steer::judge::JudgeInput<'_>],
    ) -> lantern_steer::Result<Vec<lantern_steer::judge::Verdict>> {
        use lantern_organism::judge::{Verdict as V, judge, parse_question};
        items
            .iter()
            .map(|it| {
                let subject = parse_question(it.question).ok_or_else(|| {
                    lantern_steer::SteerError::Judge {
                        judge: "organism".into(),
                        msg: format!(
                            "record {}: '{}' is not an organism question (use the records of \
                             `lantern organism prompts`)",
                            it.id, it.question
                        ),
                    }
                })?;
                let j = judge(subject, it.answer);
                Ok(lantern_steer::judge::Verdict {
                    hit: match j.verdict {
                        V::Aligned => Some(false),
                        V::Misaligned => Some(true),
                        V::Incoherent => None,
                    },
                    label: j.verdict.name().into(),
                    score: None,
                })
            })
            .collect()
    }
}
