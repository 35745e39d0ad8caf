//! Generation experiments: every prompt under every condition (an intervention with its
//! strength), `samples` times, in batched generations where each row carries its own
//! intervention — a dose–response sweep of eight strengths is one batched generation.
//!
//! Sample `s` of prompt `p` is drawn with seed `derive(seed, p, s)` under *every* condition
//! (common random numbers: strengths differ only by the intervention, not by the dice), and
//! each row samples from its own generator, so a row's text does not depend on its batch.

use lantern_lm::{GenerateOptions, Hooks, Model, Padding, Sampling, TokenBatch, generate};
use lantern_sae::Sae;
use serde::Serialize;

use crate::Result;
use crate::error::setting;
use crate::intervene::{Intervention, RowLayout, install};
use crate::strength::Unit;

/// A prompt as the model reads it: ids and roles (1 = assistant tokens already present).
#[derive(Clone, Debug, PartialEq)]
pub struct PromptTokens {
    pub ids: Vec<u32>,
    pub roles: Vec<u8>,
}

/// One condition of an experiment: a named intervention at a strength.
#[derive(Clone, Debug)]
pub struct Condition {
    /// `baseline`, `add α=0.25 median-norm`, `ablate all layers`, ...
    pub name: String,
    pub strength: Option<f64>,
    pub unit: Unit,
    pub intervention: Intervention,
}

impl Condition {
    pub fn baseline() -> Self {
        Self {
            name: "baseline".into(),
            strength: None,
            unit: Unit::Raw,
            intervention: Intervention::none(),
        }
    }
}

/// How to generate.
#[derive(Clone, Debug)]
pub struct GenSettings {
    pub max_new_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub samples: usize,
    /// Rows per batched generation.
    pub batch: usize,
    pub stop_ids: Vec<u32>,
    pub pad_id: u32,
}

/// One generation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GenRecord {
    pub prompt: usize,
    pub condition: usize,
    pub sample: usize,
    pub seed: u64,
    /// New tokens (a stop id, when one ended the row, is the last).
    pub tokens: Vec<u32>,
}

/// The seed of sample `s` of prompt `p` (SplitMix64 of the three, so neighbouring seeds do not
/// give neighbouring streams).
pub fn derive_seed(seed: u64, p: usize, s: usize) -> u64 {
    let mut z = seed
        ^ (p as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (s as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The layout of left-padded generation rows: prompt `b` in its span, generated tokens from
/// the batch width on, answer tokens from the prompt's first assistant token.
pub fn generation_layout(prompts: &[&PromptTokens]) -> Result<(Vec<RowLayout>, usize)> {
    let ids: Vec<&[u32]> = prompts.iter().map(|p| p.ids.as_slice()).collect();
    let tb = TokenBatch::new(&ids, 0, Padding::Left)?;
    let w = tb.width;
    let layout = prompts
        .iter()
        .enumerate()
        .map(|(b, p)| {
            let span = tb.span(b);
            let answer = p
                .roles
                .iter()
                .position(|&r| r == 1)
                .map_or(w, |i| span.start + i);
            RowLayout {
                prompt: span,
                answer_start: answer,
                generated_start: w,
            }
        })
        .collect();
    Ok((layout, w))
}

/// Runs every (prompt, condition, sample) and returns the generations in that order
/// (prompt-major). `progress(done, total)` is called after each batch.
pub fn run_generations(
    model: &Model,
    prompts: &[PromptTokens],
    conditions: &[Condition],
    s: &GenSettings,
    sae: Option<&Sae>,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<GenRecord>> {
    if prompts.is_empty() || conditions.is_empty() || s.samples == 0 {
        return Err(setting(
            "samples",
            format!(
                "{} prompts × {} conditions × {}",
                prompts.len(),
                conditions.len(),
                s.samples
            ),
            "at least one prompt, condition and sample",
        ));
    }
    let mut jobs = Vec::new();
    for p in 0..prompts.len() {
        for c in 0..conditions.len() {
            for k in 0..s.samples {
                jobs.push((p, c, k));
            }
        }
    }
    let total = jobs.len();
    let mut out = Vec::with_capacity(total);
    for chunk in jobs.chunks(s.batch.max(1)) {
        let rows: Vec<&PromptTokens> = chunk.iter().map(|&(p, _, _)| &prompts[p]).collect();
        let (layout, _) = generation_layout(&rows)?;
        let ivs: Vec<Intervention> = chunk
            .iter()
            .map(|&(_, c, _)| conditions[c].intervention.clone())
            .collect();
        let seeds: Vec<u64> = chunk
            .iter()
            .map(|&(p, _, k)| derive_seed(s.seed, p, k))
            .collect();
        let mut hooks = Hooks::new();
        install(&mut hooks, &ivs, &layout, sae)?;
        let opts = GenerateOptions {
            max_new_tokens: s.max_new_tokens,
            sampling: Sampling {
                temperature: s.temperature,
                top_p: s.top_p,
                seed: s.seed,
            },
            stop_ids: s.stop_ids.clone(),
            pad_id: s.pad_id,
            row_seeds: seeds.clone(),
        };
        let ids: Vec<Vec<u32>> = rows.iter().map(|p| p.ids.clone()).collect();
        let g = generate(model, &ids, &opts, &mut hooks, |_, _| {})?;
        for ((&(p, c, k), tokens), seed) in chunk.iter().zip(g.tokens).zip(seeds) {
            out.push(GenRecord {
                prompt: p,
                condition: c,
                sample: k,
                seed,
                tokens,
            });
        }
        progress(out.len(), total);
    }
    Ok(out)
}

/// Bisection for the largest strength in `[lo, hi]` whose coherent fraction (`coherent(α)`,
/// e.g. the share of generations a judge finds coherent) stays ≥ `threshold`, in `steps`
/// halvings (the activation-difference lens uses 12 steps, 10 samples, τ = 0.75). Returns the
/// best passing strength (`lo` when none passes) and every probe `(α, fraction)`.
pub fn bisect_strength(
    lo: f64,
    hi: f64,
    steps: usize,
    threshold: f64,
    mut coherent: impl FnMut(f64) -> Result<f64>,
) -> Result<(f64, Vec<(f64, f64)>)> {
    if !(lo.is_finite() && hi.is_finite() && hi > lo) {
        return Err(setting(
            "search_range",
            format!("[{lo}, {hi}]"),
            "a finite range with hi > lo",
        ));
    }
    let (mut a, mut b) = (lo, hi);
    let mut probes = Vec::new();
    // The top of the range first: when it passes, no search is needed.
    let top = coherent(hi)?;
    probes.push((hi, top));
    if top >= threshold {
        return Ok((hi, probes));
    }
    for _ in 0..steps {
        let mid = 0.5 * (a + b);
        let f = coherent(mid)?;
        probes.push((mid, f));
        if f >= threshold {
            a = mid;
        } else {
            b = mid;
        }
    }
    Ok((a, probes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_finds_the_coherence_edge() {
        // Coherent fraction falls from 1 to 0 at α = 0.3.
        let (best, probes) =
            bisect_strength(0.0, 1.0, 12, 0.75, |a| Ok(if a <= 0.3 { 1.0 } else { 0.0 })).unwrap();
        assert!(
            (best - 0.3).abs() < 1.0 / 4096.0 + 1e-12 && best <= 0.3,
            "{best}"
        );
        assert_eq!(probes.len(), 13);
        let (best, probes) = bisect_strength(0.0, 2.0, 12, 0.5, |_| Ok(1.0)).unwrap();
        assert_eq!((best, probes.len()), (2.0, 1));
    }

    #[test]
    fn seeds_differ_by_prompt_and_sample_but_not_by_condition() {
        let a = derive_seed(7, 0, 0);
        assert_ne!(a, derive_seed(7, 1, 0));
        assert_ne!(a, derive_seed(7, 0, 1));
        assert_ne!(derive_seed(7, 1, 0), derive_seed(7, 0, 1));
    }
}
