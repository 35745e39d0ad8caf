//! Text generation with a KV cache: greedy, temperature and top-p (nucleus) sampling, seeded;
//! batched prompts are left-padded with an attention mask. Hooks apply at every step.
//!
//! Sampling at temperature `T > 0`: `p_i ∝ exp(z_i / T)`; top-p keeps the smallest set of
//! most likely tokens whose mass reaches `top_p`, renormalised. `T = 0` is greedy (argmax,
//! lowest id on ties).

use crate::batch::{Padding, TokenBatch};
use crate::hooks::{HookCache, Hooks};
use crate::model::Model;
use crate::models::LogitsAt;
use crate::models::nn::KvCache;
use crate::{LmError, Result};

/// How to pick each next token.
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 keeps every token.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Ids that end a row (EOS, end-of-turn); the stop id is kept in the output.
    pub stop_ids: Vec<u32>,
    /// Id written into left padding (never attended to).
    pub pad_id: u32,
    /// The sampling seed of each row; empty: row `b` uses `sampling.seed + b`, so a single
    /// prompt samples with `sampling.seed` itself. Each row draws from its own generator, so a
    /// row's text does not depend on which other rows share its batch.
    pub row_seeds: Vec<u64>,
}

/// What [`generate`] returns.
#[derive(Debug)]
pub struct Generation {
    /// The new tokens of each row (a stop id, when one ended the row, is the last).
    pub tokens: Vec<Vec<u32>>,
    /// The hooks' captures, one tensor per step at each point (the prompt pass first).
    pub captures: HookCache,
}

/// Generates up to `max_new_tokens` after each prompt, and never past the model's context
/// length (`max_position`, when known); non-finite logits are an error, not a token (left-padded into one batch: prompt
/// tokens of row `b` sit in columns [`TokenBatch::span`], generated token `s` in column
/// `width + s`). `on_token(row, id)` sees every new token as it is chosen (for streaming).
pub fn generate(
    model: &Model,
    prompts: &[Vec<u32>],
    opts: &GenerateOptions,
    hooks: &mut Hooks<'_>,
    mut on_token: impl FnMut(usize, u32),
) -> Result<Generation> {
    let s = &opts.sampling;
    if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
        return Err(LmError::Setting {
            field: "temperature",
            value: s.temperature.to_string(),
            expected: "a finite value ≥ 0",
        });
    }
    if !(s.top_p > 0.0 && s.top_p <= 1.0) {
        return Err(LmError::Setting {
            field: "top_p",
            value: s.top_p.to_string(),
            expected: "a value in (0, 1]",
        });
    }
    let TokenBatch {
        mut ids,
        mut real,
        width,
        ..
    } = TokenBatch::new(prompts, opts.pad_id, Padding::Left)?;
    let batch = prompts.len();
    if !opts.row_seeds.is_empty() && opts.row_seeds.len() != batch {
        return Err(LmError::Setting {
            field: "row_seeds",
            value: opts.row_seeds.len().to_string(),
            expected: "one seed per prompt (or none)",
        });
    }
    let mut captures = HookCache::default();
    let mut rngs: Vec<SplitMix> = (0..batch)
        .map(|b| {
            SplitMix(
                opts.row_seeds
                    .get(b)
                    .copied()
                    .unwrap_or(s.seed.wrapping_add(b as u64)),
            )
        })
        .collect();
    // Generation ends at the model's context length (when it has one), so an absurd
    // max_new_tokens neither allocates an absurd cache nor runs past the positions it knows.
    let context = model.config().max_position;
    let max_new = if context > 0 {
        opts.max_new_tokens.min(context.saturating_sub(width))
    } else {
        opts.max_new_tokens
    };
    // Fixed slots: the same shapes at every step after the prompt.
    let mut cache = KvCache::with_capacity(width + max_new);
    let mut out = vec![Vec::new(); batch];
    let mut done = vec![false; batch];
    let vocab = model.config().vocab_size;
    for step_index in 0..max_new {
        let step = model.forward(&ids, &real, Some(&mut cache), hooks, LogitsAt::Last)?;
        captures.extend(step.captures);
        let logits = step
            .logits
            .expect("a pass with a KV cache never stops early");
        let host = logits
            .try_into_vec_as::<f32>()
            .map_err(|e| LmError::DeviceRead {
                what: "logits".into(),
                msg: e.to_string(),
            })?;
        ids.clear();
        real.clear();
        for row in 0..batch {
            if done[row] {
                // Finished rows are fed padding that nothing attends to.
                ids.push(opts.pad_id);
                real.push(vec![false]);
                continue;
            }
            let row_logits = &host[row * vocab..(row + 1) * vocab];
            if row_logits.iter().any(|z| !z.is_finite()) {
                return Err(LmError::NonFinite(format!(
                    "the model computed non-finite logits (NaN or infinity) for prompt {row} at \
                     generated token {step_index}: check the weights and the config's numbers \
                     (norm eps, rope base)"
                )));
            }
            let id = pick(row_logits, s, &mut rngs[row]);
            out[row].push(id);
            on_token(row, id);
            done[row] = opts.stop_ids.contains(&id);
            ids.push(id);
            real.push(vec![true]);
        }
        if done.iter().all(|&d| d) {
            break;
        }
    }
    Ok(Generation {
        tokens: out,
        captures,
    })
}

/// Picks the next token from one row of logits.
pub fn pick(logits: &[f32], s: &Sampling, rng: &mut SplitMix) -> u32 {
    if s.temperature == 0.0 {
        let mut best = 0;
        for (i, &z) in logits.iter().enumerate() {
            if z > logits[best] {
                best = i;
            }
        }
        return best as u32;
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &z)| (i as u32, f64::from((z - max) / s.temperature).exp()))
        .collect();
    let total: f64 = probs.iter().map(|p| p.1).sum();
    if s.top_p < 1.0 {
        probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut mass = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            mass += p.1 / total;
            if mass >= f64::from(s.top_p) {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let kept: f64 = probs.iter().map(|p| p.1).sum();
    let mut u = rng.uniform() * kept;
    for &(id, p) in &probs {
        if u < p {
            return id;
        }
        u -= p;
    }
    probs.last().map_or(0, |p| p.0)
}

/// SplitMix64: a small seeded generator for sampling.
#[derive(Clone, Debug)]
pub struct SplitMix(pub u64);

impl SplitMix {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> Model {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/parity/llama_gqa");
        Model::load(&dir, &burn::tensor::Device::flex()).unwrap()
    }

    fn greedy(max_new_tokens: usize) -> GenerateOptions {
        GenerateOptions {
            max_new_tokens,
            sampling: Sampling::default(),
            stop_ids: vec![],
            pad_id: 0,
            row_seeds: vec![],
        }
    }

    #[test]
    fn generation_stops_at_the_context_length_however_many_tokens_are_asked() {
        // Issue 15: --max-new-tokens 1e9 aborted allocating a KV cache of that size.
        let model = tiny();
        assert_eq!(model.config().max_position, 64);
        let g = generate(
            &model,
            &[vec![1, 2, 3]],
            &greedy(1 << 40),
            &mut Hooks::new(),
            |_, _| {},
        )
        .unwrap();
        assert_eq!(g.tokens[0].len(), 64 - 3);
    }

    #[test]
    fn non_finite_logits_are_an_error_not_a_token() {
        // Issue 15: a model with NaN weights printed empty text and exited 0.
        let mut model = tiny();
        let mut w = model.residual_writers_mut().into_iter().next().unwrap();
        let rows = w.rows();
        let nan = rows.clone().mul_scalar(f32::NAN);
        w.set_rows(nan).unwrap();
        let e = generate(
            &model,
            &[vec![1, 2, 3]],
            &greedy(4),
            &mut Hooks::new(),
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("non-finite logits") && e.contains("prompt 0"),
            "{e}"
        );
    }

    #[test]
    fn greedy_takes_the_first_maximum() {
        let s = Sampling::default();
        assert_eq!(pick(&[0.1, 3.0, 3.0, -1.0], &s, &mut SplitMix(0)), 1);
    }

    #[test]
    fn sampling_frequencies_follow_the_softmax_and_top_p_cuts_the_tail() {
        let logits = [2.0f32, 1.0, 0.0, -5.0];
        let s = Sampling {
            temperature: 1.0,
            top_p: 1.0,
            seed: 3,
        };
        let mut rng = SplitMix(s.seed);
        let n = 200_000;
        let mut counts = [0usize; 4];
        for _ in 0..n {
            counts[pick(&logits, &s, &mut rng) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&l| f64::from(l).exp()).sum();
        for (i, &c) in counts.iter().enumerate() {
            let p = f64::from(logits[i]).exp() / z;
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!(
                (c as f64 / n as f64 - p).abs() < 5.0 * sd + 1e-4,
                "token {i}"
            );
        }
        // p = [0.665, 0.245, 0.090, 0.0006]: top-p 0.8 keeps the first two only.
        let s = Sampling { top_p: 0.8, ..s };
        for _ in 0..10_000 {
            assert!(pick(&logits, &s, &mut rng) < 2);
        }
    }
}
