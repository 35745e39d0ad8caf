//! Arditi et al. (2024), "Refusal in language models is mediated by a single direction": the
//! pipeline of `andyrdt/refusal_direction` (notes: `research/em-papers.md` §5).
//!
//! - **Candidates**: `r_{p,l} = μ_harmful − μ_harmless` of `blocks.l.hook_resid_pre` at each
//!   post-instruction position `p` (the chat template's tokens after the instruction, counted
//!   from the end: −1 … −P), over the training split.
//! - **Refusal score** at the last prompt token: `s = log P(R) − log(1 − P(R))`, `R` a small set
//!   of refusal first tokens (`I`, `As`, ...).
//! - **Selection** on the validation split, per candidate: KL(p_base ‖ p_ablated) at the last
//!   position on harmless prompts; the *bypass* score (mean `s` on harmful prompts with `r̂`
//!   projected out at every block input, attention output and MLP output); the *induce* score
//!   (mean `s` on harmless prompts with `+r` added at `resid_pre l`, all positions). Discard
//!   candidates with a NaN score, `l ≥ 0.8 L`, KL > 0.1 or induce < 0; choose the lowest bypass.

use burn::tensor::activation::log_softmax;
use lantern_lm::{HookPoint, Hooks, LogitsAt, Model, Padding, TokenBatch};
use serde::Serialize;
use std::sync::Arc;

use crate::Result;
use crate::error::{host, setting};
use crate::experiment::{PromptTokens, generation_layout};
use crate::intervene::{Intervention, Op, Where, install};
use crate::vector::orthonormal;

/// The number of trailing tokens two rendered prompts share: the template's post-instruction
/// tokens when the two differ only in the instruction.
pub fn common_suffix(a: &[u32], b: &[u32]) -> usize {
    a.iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count()
}

/// `means[p][l]`: the mean `resid_pre l` at position `−(p+1)` over `prompts`.
pub fn position_means(
    model: &Model,
    prompts: &[Vec<u32>],
    n_pos: usize,
    batch: usize,
) -> Result<Vec<Vec<Vec<f64>>>> {
    let cfg = model.config();
    let (n_layers, d) = (cfg.n_layers, cfg.d_model);
    if prompts.iter().any(|p| p.len() < n_pos) {
        return Err(setting(
            "positions",
            n_pos,
            "at most the length of the shortest prompt",
        ));
    }
    let mut sums = vec![vec![vec![0.0f64; d]; n_layers]; n_pos];
    for chunk in prompts.chunks(batch.max(1)) {
        let tb = TokenBatch::new(chunk, 0, Padding::Left)?;
        let mut hooks = Hooks::new();
        for l in 0..n_layers {
            hooks.capture(HookPoint::ResidPre(l));
        }
        hooks.stop_after_last(true);
        let mut out = model.forward(&tb.ids, &tb.real, None, &mut hooks, LogitsAt::Skip)?;
        let w = tb.width;
        for l in 0..n_layers {
            let x = out.captures.take_one(HookPoint::ResidPre(l))?;
            let tail = host(x.narrow(1, w - n_pos, n_pos), "resid_pre")?; // [b, n_pos, d]
            for r in 0..chunk.len() {
                for (p, s) in sums.iter_mut().enumerate() {
                    let col = n_pos - 1 - p;
                    let row = &tail[(r * n_pos + col) * d..(r * n_pos + col + 1) * d];
                    s[l].iter_mut()
                        .zip(row)
                        .for_each(|(a, &b)| *a += f64::from(b));
                }
            }
        }
    }
    let n = prompts.len() as f64;
    for s in sums.iter_mut().flatten().flatten() {
        *s /= n;
    }
    Ok(sums)
}

/// Last-position log-probabilities `[rows][vocab]` of `prompts` under `rows[i]` (left-padded).
fn last_logprobs(
    model: &Model,
    prompts: &[PromptTokens],
    rows: &[Intervention],
    batch: usize,
) -> Result<Vec<Vec<f32>>> {
    let mut out = Vec::with_capacity(prompts.len());
    let vocab = model.config().vocab_size;
    for (ci, chunk) in prompts.chunks(batch.max(1)).enumerate() {
        let refs: Vec<&PromptTokens> = chunk.iter().collect();
        let (layout, _) = generation_layout(&refs)?;
        let ids: Vec<&[u32]> = chunk.iter().map(|p| p.ids.as_slice()).collect();
        let tb = TokenBatch::new(&ids, 0, Padding::Left)?;
        let mut hooks = Hooks::new();
        let from = ci * batch.max(1);
        install(&mut hooks, &rows[from..from + chunk.len()], &layout, None)?;
        let f = model.forward(&tb.ids, &tb.real, None, &mut hooks, LogitsAt::Last)?;
        let lp = host(
            log_softmax(f.logits.expect("no early stop"), 2),
            "log-probs",
        )?;
        out.extend(lp.chunks(vocab).map(<[f32]>::to_vec));
    }
    Ok(out)
}

/// `log P(R) − log(1 − P(R))` of one row of log-probabilities.
pub fn refusal_score(lp: &[f32], refusal_tokens: &[u32]) -> f64 {
    let p: f64 = refusal_tokens
        .iter()
        .map(|&t| f64::from(lp[t as usize]).exp())
        .sum();
    let p = p.clamp(1e-12, 1.0 - 1e-12);
    p.ln() - (1.0 - p).ln()
}

/// Directional ablation of `r` at every block input, attention output and MLP output.
pub fn ablate_everywhere(r: &[f32], n_layers: usize) -> Intervention {
    let basis = Arc::new(orthonormal(&[r.to_vec()]));
    Intervention {
        ops: (0..n_layers)
            .flat_map(|l| {
                [
                    HookPoint::ResidPre(l),
                    HookPoint::AttnOut(l),
                    HookPoint::MlpOut(l),
                ]
            })
            .map(|point| Op::Ablate {
                point,
                basis: basis.clone(),
                beta: 1.0,
                at: Where::All,
            })
            .collect(),
    }
}

/// `x += c·r` at `resid_pre layer`, every position (Arditi et al.'s activation addition).
pub fn actadd(r: &[f32], layer: usize, c: f32) -> Intervention {
    Intervention {
        ops: vec![Op::Add {
            point: HookPoint::ResidPre(layer),
            vector: Arc::new(r.to_vec()),
            coef: c,
            preserve_norm: false,
            at: Where::All,
        }],
    }
}

/// One candidate's selection scores.
#[derive(Clone, Debug, Serialize)]
pub struct Candidate {
    /// −1 … −P.
    pub position: i64,
    pub layer: usize,
    pub norm: f64,
    pub kl: f64,
    pub bypass: f64,
    pub induce: f64,
    /// Why it was discarded (empty when kept).
    pub discarded: String,
}

/// Mean refusal score of `prompts` under `iv` (every row).
pub fn mean_refusal(
    model: &Model,
    prompts: &[PromptTokens],
    iv: &Intervention,
    tokens: &[u32],
    batch: usize,
) -> Result<f64> {
    let rows = vec![iv.clone(); prompts.len()];
    let lp = last_logprobs(model, prompts, &rows, batch)?;
    Ok(lp.iter().map(|r| refusal_score(r, tokens)).sum::<f64>() / lp.len() as f64)
}

/// Scores every candidate `means_h[p][l] − means_s[p][l]` on the validation prompts and applies
/// the selection rule; returns all candidates (best first among the kept) and the index of the
/// chosen one, if any survives.
#[allow(clippy::too_many_arguments)] // the pipeline's inputs, each named in the docs above
pub fn select(
    model: &Model,
    means_harmful: &[Vec<Vec<f64>>],
    means_harmless: &[Vec<Vec<f64>>],
    val_harmful: &[PromptTokens],
    val_harmless: &[PromptTokens],
    tokens: &[u32],
    max_layer_frac: f64,
    batch: usize,
    mut progress: impl FnMut(usize, usize),
) -> Result<(Vec<Candidate>, Option<usize>)> {
    let n_layers = model.config().n_layers;
    let base_harmless = last_logprobs(
        model,
        val_harmless,
        &vec![Intervention::none(); val_harmless.len()],
        batch,
    )?;
    let mut out = Vec::new();
    let total = means_harmful.len() * n_layers;
    for (p, (mh, ms)) in means_harmful.iter().zip(means_harmless).enumerate() {
        for l in 0..n_layers {
            let r: Vec<f32> = mh[l]
                .iter()
                .zip(&ms[l])
                .map(|(a, b)| (a - b) as f32)
                .collect();
            let norm = r.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt();
            let mut c = Candidate {
                position: -(p as i64) - 1,
                layer: l,
                norm,
                kl: f64::NAN,
                bypass: f64::NAN,
                induce: f64::NAN,
                discarded: String::new(),
            };
            if (l as f64) >= max_layer_frac * n_layers as f64 {
                c.discarded = format!("layer ≥ {max_layer_frac} L");
                out.push(c);
                progress(out.len(), total);
                continue;
            }
            let abl = ablate_everywhere(&r, n_layers);
            let rows = vec![abl.clone(); val_harmless.len()];
            let lp = last_logprobs(model, val_harmless, &rows, batch)?;
            c.kl = base_harmless
                .iter()
                .zip(&lp)
                .map(|(b, a)| {
                    b.iter()
                        .zip(a)
                        .map(|(&x, &y)| f64::from(x).exp() * f64::from(x - y))
                        .sum::<f64>()
                })
                .sum::<f64>()
                / lp.len() as f64;
            c.bypass = mean_refusal(model, val_harmful, &abl, tokens, batch)?;
            c.induce = mean_refusal(model, val_harmless, &actadd(&r, l, 1.0), tokens, batch)?;
            c.discarded = if !(c.kl.is_finite() && c.bypass.is_finite() && c.induce.is_finite()) {
                "NaN score".into()
            } else if c.kl > 0.1 {
                "KL > 0.1".into()
            } else if c.induce < 0.0 {
                "induce < 0".into()
            } else {
                String::new()
            };
            out.push(c);
            progress(out.len(), total);
        }
    }
    let best = out
        .iter()
        .enumerate()
        .filter(|(_, c)| c.discarded.is_empty())
        .min_by(|a, b| a.1.bypass.total_cmp(&b.1.bypass))
        .map(|(i, _)| i);
    Ok((out, best))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_score_is_the_log_odds_of_the_refusal_tokens() {
        // p = [0.5, 0.3, 0.2]; R = {1, 2}: P(R) = 0.5, s = 0.
        let lp: Vec<f32> = [0.5f32, 0.3, 0.2].iter().map(|p| p.ln()).collect();
        assert!(refusal_score(&lp, &[1, 2]).abs() < 1e-6);
        // R = {2}: log(0.2/0.8) = −1.386.
        assert!((refusal_score(&lp, &[2]) - (0.25f64).ln()).abs() < 1e-6);
        assert_eq!(common_suffix(&[1, 2, 9, 7, 8], &[3, 9, 7, 8]), 3);
    }
}
