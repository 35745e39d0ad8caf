//! The log-prob judge for binary questions against PyTorch's logits on lm's tiny parity
//! checkpoints (`fixtures/make_steer_fixtures.py`).
//!
//! Every intervention of the references acts on every position of a causal model, so the
//! logits of a prefix `ids[..t]` at its last token are the reference's logits at column `t − 1`.
//! The test scores prefixes of different lengths from both fixture rows, left-padded together
//! in one batch (and split over several batches), and compares
//! `score = p(t_pos)/(p(t_a) + p(t_b))` and `mass = p(t_a) + p(t_b)` with the same quantities
//! computed in f64 from the reference logits:
//! - the plain model under a 2-D subspace ablation at β = 0.5 at every layer's output
//!   (`logits_subspace`);
//! - the orthogonalized model with no intervention (`logits_orth`).

mod support;

use burn::tensor::Device;
use lantern_lm::Model;
use lantern_steer::choice::{ChoiceItem, choice_scores};
use lantern_steer::experiment::PromptTokens;
use lantern_steer::intervene::Intervention;
use lantern_steer::orthogonalize::orthogonalize;
use support::{fixture_subspace_ablation, fixtures, get, parity_dir, read};

const T: usize = 12;
const VOCAB: usize = 64;

/// (row, prefix length, options, positive).
const ITEMS: [(usize, usize, [u32; 2], usize); 5] = [
    (0, 3, [5, 9], 0),
    (0, 12, [1, 2], 1),
    (1, 7, [30, 4], 0),
    (1, 1, [63, 0], 1),
    (0, 9, [17, 40], 0),
];

fn items(ids: &[f32]) -> Vec<ChoiceItem> {
    ITEMS
        .iter()
        .map(|&(row, len, options, positive)| ChoiceItem {
            prompt: PromptTokens {
                ids: ids[row * T..row * T + len]
                    .iter()
                    .map(|&x| x as u32)
                    .collect(),
                roles: vec![0; len],
            },
            options,
            positive,
        })
        .collect()
}

/// `(score, mass)` of each item from reference logits `[2, T, VOCAB]`, in f64.
fn expected(logits: &[f32]) -> Vec<(f64, f64)> {
    ITEMS
        .iter()
        .map(|&(row, len, [a, b], positive)| {
            let at = (row * T + len - 1) * VOCAB;
            let l: Vec<f64> = logits[at..at + VOCAB]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let m = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = l.iter().map(|x| (x - m).exp()).sum();
            let p = |t: u32| (l[t as usize] - m).exp() / z;
            let mass = p(a) + p(b);
            let pos = if positive == 0 { p(a) } else { p(b) };
            (pos / mass, mass)
        })
        .collect()
}

fn check(name: &str, what: &str, got: &[lantern_steer::choice::ChoiceScore], want: &[(f64, f64)]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, &(score, mass))) in got.iter().zip(want).enumerate() {
        assert!(
            (g.score - score).abs() < 1e-4 && (g.mass - mass).abs() < 1e-4 * mass.max(1e-3),
            "{name} {what} item {i}: got score {} mass {}, PyTorch {score} {mass}",
            g.score,
            g.mass
        );
    }
}

#[test]
fn choice_scores_are_pytorch_softmax_ratios_at_the_last_prompt_token() {
    for name in ["llama_gqa", "llama_tied_rope3", "gpt2"] {
        let mut model = Model::load(&parity_dir(name), &Device::flex()).unwrap();
        let t = read(&fixtures(name).join("steer.safetensors"));
        let items = items(get(&t, "input_ids"));
        let subspace = fixture_subspace_ablation(&t, model.config().n_layers);
        let want = expected(get(&t, "logits_subspace"));
        // One batch holding every length, then batches of two (the rows of a batch change).
        for batch in [8, 2] {
            let got = choice_scores(&model, &items, std::slice::from_ref(&subspace), None, batch)
                .unwrap();
            check(name, &format!("subspace, batch {batch}"), &got[0], &want);
        }
        orthogonalize(&mut model, get(&t, "r")).unwrap();
        let got = choice_scores(&model, &items, &[Intervention::none()], None, 3).unwrap();
        check(
            name,
            "orthogonalized",
            &got[0],
            &expected(get(&t, "logits_orth")),
        );
    }
}

#[test]
fn choice_items_that_cannot_be_scored_are_refused() {
    let model = Model::load(&parity_dir("llama_gqa"), &Device::flex()).unwrap();
    let prompt = PromptTokens {
        ids: vec![1, 2, 3],
        roles: vec![0; 3],
    };
    let none = [Intervention::none()];
    let bad = |options, positive| ChoiceItem {
        prompt: prompt.clone(),
        options,
        positive,
    };
    for item in [bad([3, 3], 0), bad([1, 64], 0), bad([1, 2], 2)] {
        let e = choice_scores(&model, &[item], &none, None, 4)
            .unwrap_err()
            .to_string();
        assert!(e.contains("two different option tokens"), "{e}");
    }
    assert!(choice_scores(&model, &[], &none, None, 4).is_err());
}
