//! The refusal pipeline's pieces against naive computations on lm's tiny parity checkpoints:
//! - candidate means `μ[p][l]` (batched, left-padded, positions counted from the end) equal
//!   the mean over prompts run one at a time, read at column `len − 1 − p`;
//! - the mean refusal score under an intervention equals the log-odds of the refusal tokens
//!   computed from each prompt's own last-position logits, with the same hooks placed by hand.

mod support;

use burn::tensor::Device;
use burn::tensor::activation::log_softmax;
use lantern_lm::{HookPoint, Hooks, LogitsAt, Model};
use lantern_steer::experiment::PromptTokens;
use lantern_steer::refusal::{actadd, mean_refusal, position_means, refusal_score};
use support::parity_dir;

/// Prompts of different lengths (so left padding differs per batch row).
fn prompts() -> Vec<Vec<u32>> {
    [9usize, 5, 12, 7, 6]
        .iter()
        .enumerate()
        .map(|(i, &n)| (0..n).map(|j| ((i * 17 + j * 5 + 3) % 64) as u32).collect())
        .collect()
}

#[test]
fn candidate_means_equal_one_prompt_at_a_time() {
    for name in ["llama_gqa", "gpt2"] {
        let model = Model::load(&parity_dir(name), &Device::flex()).unwrap();
        let (n_layers, d) = (model.config().n_layers, model.config().d_model);
        let ps = prompts();
        let n_pos = 4;
        let got = position_means(&model, &ps, n_pos, 2).unwrap();
        let mut want = vec![vec![vec![0.0f64; d]; n_layers]; n_pos];
        for p in &ps {
            let mut hooks = Hooks::new();
            for l in 0..n_layers {
                hooks.capture(HookPoint::ResidPre(l));
            }
            let mut out = model
                .forward(p, &[vec![true; p.len()]], None, &mut hooks, LogitsAt::Skip)
                .unwrap();
            for l in 0..n_layers {
                let x: Vec<f32> = out
                    .captures
                    .take_one(HookPoint::ResidPre(l))
                    .unwrap()
                    .try_into_vec_as::<f32>()
                    .unwrap();
                for (q, w) in want.iter_mut().enumerate() {
                    let col = p.len() - 1 - q;
                    for (a, &b) in w[l].iter_mut().zip(&x[col * d..(col + 1) * d]) {
                        *a += f64::from(b) / ps.len() as f64;
                    }
                }
            }
        }
        for (q, (g, w)) in got.iter().zip(&want).enumerate() {
            for l in 0..n_layers {
                let err = g[l]
                    .iter()
                    .zip(&w[l])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(err < 1e-4, "{name} position −{} layer {l}: {err}", q + 1);
            }
        }
        // Asking for more positions than the shortest prompt has is refused.
        assert!(position_means(&model, &ps, 6, 2).is_err());
    }
}

#[test]
fn mean_refusal_score_equals_the_log_odds_of_each_prompt_alone() {
    let model = Model::load(&parity_dir("llama_gqa"), &Device::flex()).unwrap();
    let d = model.config().d_model;
    let r: Vec<f32> = (0..d).map(|i| ((i * 3 + 1) as f32 * 0.37).sin()).collect();
    let ps = prompts();
    let tokens = [3u32, 11, 40];
    let items: Vec<PromptTokens> = ps
        .iter()
        .map(|p| PromptTokens {
            ids: p.clone(),
            roles: vec![0; p.len()],
        })
        .collect();
    let got = mean_refusal(&model, &items, &actadd(&r, 1, 2.0), &tokens, 3).unwrap();
    let mut want = 0.0;
    for p in &ps {
        let mut hooks = Hooks::new();
        hooks.add(HookPoint::ResidPre(1), r.clone(), 2.0f32, None);
        let f = model
            .forward(p, &[vec![true; p.len()]], None, &mut hooks, LogitsAt::Last)
            .unwrap();
        let lp: Vec<f32> = log_softmax(f.logits.unwrap(), 2)
            .try_into_vec_as::<f32>()
            .unwrap();
        // The log-odds by hand: p(R) = Σ p(t), s = ln p(R) − ln(1 − p(R)).
        let pr: f64 = tokens
            .iter()
            .map(|&t| f64::from(lp[t as usize]).exp())
            .sum();
        let s = pr.ln() - (1.0 - pr).ln();
        assert!((s - refusal_score(&lp, &tokens)).abs() < 1e-9);
        want += s / ps.len() as f64;
    }
    assert!(
        (got - want).abs() < 1e-4,
        "batched {got} vs one at a time {want}"
    );
}
