//! `lantern steer --judge choice`: binary questions scored by log-probability, without
//! sampling (CAA's A/B evaluation; the library side is `lantern_steer::choice`).
//!
//! Each prompt record carries `"choices": [a, b]` (the two answers' texts; each is scored by
//! its first token, encoded on its own, so write `" A"` where the answer follows a space) and
//! `"positive"`: the index (0 or 1) or the text of the option whose choice counts as a hit.
//! Per condition: `score = p(t_pos)/(p(t_a) + p(t_b))` at the last prompt token, a hit when
//! `score > 1/2`, and `mass = p(t_a) + p(t_b)`, the share of the distribution the options hold.

use std::io::Write;
use std::path::Path;

use anyhow::{Result, bail};
use lantern_lm::{LanguageModel, PromptRecord};
use lantern_sae::Sae;
use lantern_steer::choice::{ChoiceItem, ChoiceScore, choice_scores};
use lantern_steer::experiment::{Condition, PromptTokens};
use lantern_steer::score::wilson;
use serde_json::{Value, json};

use crate::report::finite_or_null;
use crate::steer_run::record_id;

/// The binary question of every record, or a one-line error naming the file and line.
pub fn choice_items(
    lm: &LanguageModel,
    records: &[PromptRecord],
    prompts: &[PromptTokens],
    path: &Path,
) -> Result<Vec<ChoiceItem>> {
    records
        .iter()
        .zip(prompts)
        .map(|(r, p)| {
            let at = format!("{}:{}", path.display(), r.line);
            let choices: Vec<&str> = match r.extra.get("choices").and_then(Value::as_array) {
                Some(c) => c.iter().filter_map(Value::as_str).collect(),
                None => bail!("{at}: --judge choice needs \"choices\": [two answer texts]"),
            };
            if choices.len() != 2 {
                bail!("{at}: \"choices\" must hold two strings, got {choices:?}");
            }
            let positive = match r.extra.get("positive") {
                Some(Value::Number(n)) => n.as_u64().filter(|&i| i < 2).map(|i| i as usize),
                Some(Value::String(s)) => choices.iter().position(|c| c == s),
                _ => None,
            };
            let Some(positive) = positive else {
                bail!(
                    "{at}: \"positive\" must be 0, 1 or one of the choices {choices:?}, got {}",
                    r.extra
                        .get("positive")
                        .map_or("nothing".to_string(), Value::to_string)
                );
            };
            let mut options = [0u32; 2];
            for (o, text) in options.iter_mut().zip(&choices) {
                *o = match lm.tokenizer.encode(text, false)?.first() {
                    Some(&t) => t,
                    None => bail!("{at}: the choice {text:?} has no token"),
                };
            }
            if options[0] == options[1] {
                bail!(
                    "{at}: the choices {choices:?} start with the same token ({}); they cannot be told apart",
                    options[0]
                );
            }
            Ok(ChoiceItem {
                prompt: p.clone(),
                options,
                positive,
            })
        })
        .collect()
}

/// One condition's choice statistics.
pub struct ChoiceSummary {
    pub n: usize,
    pub hits: usize,
    pub rate: f64,
    pub lo: f64,
    pub hi: f64,
    pub mean_score: f64,
    pub mean_mass: f64,
}

impl ChoiceSummary {
    fn of(scores: &[ChoiceScore]) -> Self {
        let n = scores.len();
        let hits = scores.iter().filter(|s| s.score > 0.5).count();
        let (lo, hi) = wilson(hits, n);
        let mean = |f: fn(&ChoiceScore) -> f64| scores.iter().map(f).sum::<f64>() / n as f64;
        Self {
            n,
            hits,
            rate: hits as f64 / n as f64,
            lo,
            hi,
            mean_score: mean(|s| s.score),
            mean_mass: mean(|s| s.mass),
        }
    }

    pub fn json(&self) -> Value {
        json!({"n": self.n, "hits": self.hits, "rate": finite_or_null(self.rate),
            "lo": finite_or_null(self.lo), "hi": finite_or_null(self.hi),
            "mean_score": finite_or_null(self.mean_score), "mean_mass": finite_or_null(self.mean_mass)})
    }
}

/// Scores every item under every condition, writes `choices.jsonl` into `out` and returns one
/// summary per condition.
pub fn run_choice(
    lm: &LanguageModel,
    items: &[ChoiceItem],
    records: &[PromptRecord],
    conditions: &[Condition],
    sae: Option<&Sae>,
    batch: usize,
    out: &Path,
) -> Result<Vec<ChoiceSummary>> {
    let ivs: Vec<_> = conditions.iter().map(|c| c.intervention.clone()).collect();
    let scores = choice_scores(&lm.model, items, &ivs, sae, batch)?;
    let mut f = std::io::BufWriter::new(std::fs::File::create(out.join("choices.jsonl"))?);
    for (c, per_item) in conditions.iter().zip(&scores) {
        for ((r, it), s) in records.iter().zip(items).zip(per_item) {
            writeln!(
                f,
                "{}",
                json!({"prompt": record_id(r), "condition": c.name, "strength": c.strength,
                    "unit": c.unit, "options": it.options, "positive": it.positive,
                    "score": finite_or_null(s.score), "mass": finite_or_null(s.mass),
                    "hit": s.score > 0.5})
            )?;
        }
    }
    f.flush()?;
    Ok(scores.iter().map(|s| ChoiceSummary::of(s)).collect())
}
