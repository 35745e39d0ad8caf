//! Teacher-forced scores under interventions: the coherence proxies of a steering run and the
//! CE/KL columns of an ablation table.
//!
//! - perplexity of a generation under the *unsteered* model: `exp(−(1/n) Σ_j log p(t_j | t_<j))`
//!   over the generated tokens `j` (steered text the plain model finds unlikely is what a
//!   coherence judge flags);
//! - cross-entropy on neutral text under the intervention: `−(1/N) Σ log p_steer(t_{j+1} | t_≤j)`
//!   (Arditi et al. report it on the Pile: ablation costs almost nothing, actadd +0.1 … +0.37
//!   nats);
//! - KL to the unsteered model on the same text: `(1/N) Σ_j KL(p_base(·|t_≤j) ‖ p_steer(·|t_≤j))`
//!   over every position (Arditi et al. select directions with KL < 0.1 at the last position).

use burn::tensor::{Int, Tensor, TensorData, activation::log_softmax};
use lantern_lm::{Hooks, LogitsAt, Model, Padding, TokenBatch};
use lantern_sae::Sae;
use serde::Serialize;

use crate::Result;
use crate::error::{host, setting};
use crate::intervene::{Intervention, RowLayout, install};

/// Row layouts of right-padded sequences whose first `start` tokens are the prompt.
pub fn scoring_layout(lens_starts: &[(usize, usize)]) -> Vec<RowLayout> {
    lens_starts
        .iter()
        .map(|&(_, start)| RowLayout {
            prompt: 0..start,
            answer_start: start,
            generated_start: start,
        })
        .collect()
}

/// `log p` of every next token: `[b, t]` host values (the last column, with no next token,
/// holds the log-prob of the padding id and is never read), plus the device log-softmax.
fn next_token_logprobs(
    model: &Model,
    tb: &TokenBatch,
    hooks: &mut Hooks<'_>,
) -> Result<(Vec<f32>, Tensor<3>)> {
    let out = model.forward(&tb.ids, &tb.real, None, hooks, LogitsAt::All)?;
    let logits = out.logits.expect("no early stop without stop_after_last");
    let [b, t, _] = logits.dims();
    let lp = log_softmax(logits, 2);
    let mut next = vec![0i64; b * t];
    for r in 0..b {
        for c in 0..t - 1 {
            next[r * t + c] = i64::from(tb.ids[r * t + c + 1]);
        }
    }
    let dev = lp.device();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(next, [b * t]), &dev).reshape([b, t, 1]);
    let picked = host(lp.clone().gather(2, idx), "log-probs")?;
    Ok((picked, lp))
}

/// Per sequence, the mean negative log-likelihood of tokens `start..` (each `(ids, start)`,
/// `start ≥ 1`), with row `i` under `rows[i]` (all `None`: the plain model).
pub fn mean_nll(
    model: &Model,
    seqs: &[(Vec<u32>, usize)],
    rows: Option<&[Intervention]>,
    sae: Option<&Sae>,
    batch: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(seqs.len());
    for (ci, chunk) in seqs.chunks(batch.max(1)).enumerate() {
        let ids: Vec<&[u32]> = chunk.iter().map(|(s, _)| s.as_slice()).collect();
        let tb = TokenBatch::new(&ids, 0, Padding::Right)?;
        let mut hooks = Hooks::new();
        if let Some(rows) = rows {
            let layout = scoring_layout(
                &chunk
                    .iter()
                    .map(|(s, st)| (s.len(), *st))
                    .collect::<Vec<_>>(),
            );
            let from = ci * batch.max(1);
            install(&mut hooks, &rows[from..from + chunk.len()], &layout, sae)?;
        }
        let (lp, _) = next_token_logprobs(model, &tb, &mut hooks)?;
        let t = tb.width;
        for (r, (s, start)) in chunk.iter().enumerate() {
            if *start == 0 || *start >= s.len() {
                out.push(f64::NAN);
                continue;
            }
            let sum: f64 = (*start..s.len())
                .map(|j| -f64::from(lp[r * t + j - 1]))
                .sum();
            out.push(sum / (s.len() - start) as f64);
        }
    }
    Ok(out)
}

/// Cross-entropy and KL to the plain model on neutral text, for one intervention.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct NeutralScore {
    /// Mean next-token cross-entropy (nats) under the intervention.
    pub ce: f64,
    /// Mean KL(p_plain ‖ p_intervened) over positions (nats).
    pub kl: f64,
    /// Tokens the means run over.
    pub tokens: usize,
}

/// [`NeutralScore`] of each intervention on `texts` (token ids with BOS; every text needs two
/// tokens). The plain model's distribution is computed once per batch of texts.
pub fn neutral_scores(
    model: &Model,
    texts: &[Vec<u32>],
    interventions: &[Intervention],
    sae: Option<&Sae>,
    batch: usize,
) -> Result<Vec<NeutralScore>> {
    let variants: Vec<Variant<'_>> = interventions
        .iter()
        .map(|iv| Variant::Hooked(model, iv))
        .collect();
    neutral_scores_of(model, texts, &variants, sae, batch)
}

/// [`NeutralScore`]s of other models (a weight-edited copy) against `base` on `texts`.
pub fn neutral_scores_vs(
    base: &Model,
    others: &[&Model],
    texts: &[Vec<u32>],
    batch: usize,
) -> Result<Vec<NeutralScore>> {
    let variants: Vec<Variant<'_>> = others.iter().map(|m| Variant::Model(m)).collect();
    neutral_scores_of(base, texts, &variants, None, batch)
}

/// What is compared with the plain model: the same model under an intervention, or another
/// model.
enum Variant<'a> {
    Hooked(&'a Model, &'a Intervention),
    Model(&'a Model),
}

fn neutral_scores_of(
    base: &Model,
    texts: &[Vec<u32>],
    variants: &[Variant<'_>],
    sae: Option<&Sae>,
    batch: usize,
) -> Result<Vec<NeutralScore>> {
    if texts.iter().any(|t| t.len() < 2) {
        return Err(setting(
            "neutral_text",
            "a text of < 2 tokens",
            "texts of at least 2 tokens",
        ));
    }
    let mut ce = vec![0.0f64; variants.len()];
    let mut kl = vec![0.0f64; variants.len()];
    let (mut n_ce, mut n_kl) = (0usize, 0usize);
    for chunk in texts.chunks(batch.max(1)) {
        let tb = TokenBatch::new(chunk, 0, Padding::Right)?;
        let t = tb.width;
        let (base_picked, base_lp) = next_token_logprobs(base, &tb, &mut Hooks::new())?;
        let layout = scoring_layout(&chunk.iter().map(|s| (s.len(), s.len())).collect::<Vec<_>>());
        for (k, var) in variants.iter().enumerate() {
            let run = match var {
                Variant::Hooked(_, iv) if iv.is_none() => None,
                Variant::Hooked(m, iv) => {
                    let mut hooks = Hooks::new();
                    let rows = vec![(*iv).clone(); chunk.len()];
                    install(&mut hooks, &rows, &layout, sae)?;
                    Some(next_token_logprobs(m, &tb, &mut hooks)?)
                }
                Variant::Model(m) => Some(next_token_logprobs(m, &tb, &mut Hooks::new())?),
            };
            let (picked, kl_pos) = match run {
                None => (base_picked.clone(), vec![0.0f32; chunk.len() * t]),
                Some((picked, lp)) => {
                    let klp = (base_lp.clone().exp() * (base_lp.clone() - lp)).sum_dim(2);
                    (picked, host(klp, "KL per position")?)
                }
            };
            for (r, s) in chunk.iter().enumerate() {
                for c in 0..s.len() {
                    kl[k] += f64::from(kl_pos[r * t + c]);
                    if c + 1 < s.len() {
                        ce[k] -= f64::from(picked[r * t + c]);
                    }
                }
            }
        }
        n_ce += chunk.iter().map(|s| s.len() - 1).sum::<usize>();
        n_kl += chunk.iter().map(Vec::len).sum::<usize>();
    }
    Ok(ce
        .iter()
        .zip(&kl)
        .map(|(c, k)| NeutralScore {
            ce: c / n_ce as f64,
            kl: k / n_kl as f64,
            tokens: n_ce,
        })
        .collect())
}

/// A 95 % Wilson score interval for `k` hits in `n` trials (`(NaN, NaN)` when `n = 0`):
/// `(p̂ + z²/2n ± z√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)`, `z = 1.96`.
pub fn wilson(k: usize, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let z = 1.959_963_984_540_054_f64;
    let (k, n) = (k as f64, n as f64);
    let p = k / n;
    let den = 1.0 + z * z / n;
    let mid = p + z * z / (2.0 * n);
    let half = z * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    (((mid - half) / den).max(0.0), ((mid + half) / den).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::wilson;

    #[test]
    fn wilson_matches_statsmodels() {
        // statsmodels.stats.proportion.proportion_confint(3, 10, method="wilson") = (0.1077913, 0.6032219)
        let (lo, hi) = wilson(3, 10);
        assert!(
            (lo - 0.107_791_3).abs() < 1e-6 && (hi - 0.603_221_9).abs() < 1e-6,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(0, 20);
        assert!(lo == 0.0 && (hi - 0.161_125_1).abs() < 1e-6, "{hi}");
        assert!(wilson(0, 0).0.is_nan());
    }
}
