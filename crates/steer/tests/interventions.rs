//! Every intervention against PyTorch on lm's tiny parity checkpoints
//! (`fixtures/make_steer_fixtures.py`, forward hooks and weight edits in transformers), logits
//! within 1e-4:
//! - a norm-preserving add with a strength and a column range per row;
//! - a two-dimensional subspace ablation at β = 0.5 at every layer's output;
//! - an SAE latent clamped in the delta form (set in one row, scaled in the other);
//! - weight orthogonalization (and its equivalence with hook ablation at every block input,
//!   attention output and MLP output).
//!
//! Then, on one checkpoint: a batched dose–response generation equals the same rows generated
//! one at a time, and generation with the KV cache equals generation without it.

mod support;

use std::sync::Arc;

use burn::tensor::Device;
use lantern_lm::{GenerateOptions, HookPoint, Hooks, LogitsAt, Model, Sampling, generate};
use lantern_sae::Sae;
use lantern_steer::experiment::{PromptTokens, generation_layout};
use lantern_steer::intervene::{ClampMode, Intervention, Op, RowLayout, Where, install};
use lantern_steer::orthogonalize::orthogonalize;
use support::{fixture_subspace_ablation, fixtures, get, max_abs, parity_dir, read};

const CASES: [&str; 3] = ["llama_gqa", "llama_tied_rope3", "gpt2"];
const T: usize = 12;

struct Case {
    model: Model,
    ids: Vec<u32>,
    t: Vec<(String, Vec<f32>)>,
}

fn case(name: &str) -> Case {
    let model = Model::load(&parity_dir(name), &Device::flex()).unwrap();
    let t = read(&fixtures(name).join("steer.safetensors"));
    let ids = get(&t, "input_ids").iter().map(|&x| x as u32).collect();
    Case { model, ids, t }
}

fn logits(model: &Model, ids: &[u32], hooks: &mut Hooks<'_>) -> Vec<f32> {
    let real = vec![vec![true; T]; 2];
    model
        .forward(ids, &real, None, hooks, LogitsAt::All)
        .unwrap()
        .logits
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap()
}

/// Rows whose "prompt" columns are the given ranges (so `Where::Prompt` selects them).
fn layout(ranges: [std::ops::Range<usize>; 2]) -> Vec<RowLayout> {
    ranges
        .into_iter()
        .map(|r| RowLayout {
            prompt: r,
            answer_start: T,
            generated_start: T,
        })
        .collect()
}

#[test]
fn norm_preserving_add_matches_pytorch() {
    for name in CASES {
        let c = case(name);
        let v = Arc::new(get(&c.t, "v").to_vec());
        let row = |coef| Intervention {
            ops: vec![Op::Add {
                point: HookPoint::ResidPost(1),
                vector: v.clone(),
                coef,
                preserve_norm: true,
                at: Where::Prompt,
            }],
        };
        let mut hooks = Hooks::new();
        install(
            &mut hooks,
            &[row(3.0), row(-1.5)],
            &layout([4..12, 0..6]),
            None,
        )
        .unwrap();
        let err = max_abs(
            &logits(&c.model, &c.ids, &mut hooks),
            get(&c.t, "logits_add_norm"),
        );
        assert!(err < 1e-4, "{name}: max |Δlogit| {err}");
    }
}

#[test]
fn subspace_ablation_at_half_strength_matches_pytorch() {
    for name in CASES {
        let c = case(name);
        let row = fixture_subspace_ablation(&c.t, c.model.config().n_layers);
        let mut hooks = Hooks::new();
        install(&mut hooks, &[row.clone(), row], &layout([0..T, 0..T]), None).unwrap();
        let err = max_abs(
            &logits(&c.model, &c.ids, &mut hooks),
            get(&c.t, "logits_subspace"),
        );
        assert!(err < 1e-4, "{name}: max |Δlogit| {err}");
    }
}

#[test]
fn clamping_a_latent_keeps_the_error_term_as_pytorch_does() {
    for name in CASES {
        let c = case(name);
        let (w, _) = lantern_sae::load_sae(&fixtures(name).join("sae")).unwrap();
        let sae = Sae::from_weights(&w, &Device::flex()).unwrap();
        let clamp = |mode, value| Intervention {
            ops: vec![Op::Clamp {
                point: HookPoint::ResidPost(1),
                latent: 3,
                mode,
                value,
                at: Where::All,
            }],
        };
        let rows = [clamp(ClampMode::Set, 5.0), clamp(ClampMode::Scale, 2.0)];
        let mut hooks = Hooks::new();
        install(&mut hooks, &rows, &layout([0..T, 0..T]), Some(&sae)).unwrap();
        let err = max_abs(
            &logits(&c.model, &c.ids, &mut hooks),
            get(&c.t, "logits_clamp"),
        );
        assert!(err < 1e-4, "{name}: max |Δlogit| {err}");
    }
}

#[test]
fn orthogonalized_weights_match_pytorch_and_hook_ablation() {
    for name in CASES {
        let mut c = case(name);
        let r = get(&c.t, "r").to_vec();
        let n = c.model.config().n_layers;
        let mut hooks = Hooks::new();
        for l in 0..n {
            for p in [
                HookPoint::ResidPre(l),
                HookPoint::AttnOut(l),
                HookPoint::MlpOut(l),
            ] {
                hooks.project_out(p, r.clone(), None);
            }
        }
        let ablated = logits(&c.model, &c.ids, &mut hooks);
        let changed = orthogonalize(&mut c.model, &r).unwrap();
        assert_eq!(
            changed.len(),
            2 * n + if name == "gpt2" { 2 + 2 * n } else { 1 },
            "{changed:?}"
        );
        let orth = logits(&c.model, &c.ids, &mut Hooks::new());
        let want = get(&c.t, "logits_orth");
        let err = max_abs(&orth, want);
        assert!(err < 1e-4, "{name}: orthogonalized vs PyTorch {err}");
        let err = max_abs(&ablated, &orth);
        assert!(err < 1e-4, "{name}: hook ablation vs orthogonalized {err}");
    }
}

fn greedy(model: &Model, prompts: &[Vec<u32>], hooks: &mut Hooks<'_>, new: usize) -> Vec<Vec<u32>> {
    let opts = GenerateOptions {
        max_new_tokens: new,
        sampling: Sampling::default(),
        stop_ids: vec![],
        pad_id: 0,
        row_seeds: vec![],
    };
    generate(model, prompts, &opts, hooks, |_, _| {})
        .unwrap()
        .tokens
}

#[test]
fn batched_sweep_equals_one_at_a_time_and_the_kv_cache_changes_nothing() {
    let c = case("llama_gqa");
    let v = Arc::new(get(&c.t, "v").to_vec());
    let prompts = [c.ids[..5].to_vec(), c.ids[T..T + 9].to_vec()];
    let strengths = [0.0f32, 2.0, -3.0, 6.0];
    let add = |coef: f32, at: Where| Intervention {
        ops: vec![Op::Add {
            point: HookPoint::ResidPost(0),
            vector: v.clone(),
            coef,
            preserve_norm: false,
            at,
        }],
    };
    for at in [Where::All, Where::Generated, Where::Prompt] {
        // 2 prompts × 4 strengths in one batch.
        let mut rows = Vec::new();
        let mut ptoks = Vec::new();
        for p in &prompts {
            for &s in &strengths {
                rows.push(add(s, at));
                ptoks.push(PromptTokens {
                    ids: p.clone(),
                    roles: vec![],
                });
            }
        }
        let refs: Vec<&PromptTokens> = ptoks.iter().collect();
        let (lay, _) = generation_layout(&refs).unwrap();
        let mut hooks = Hooks::new();
        install(&mut hooks, &rows, &lay, None).unwrap();
        let ids: Vec<Vec<u32>> = ptoks.iter().map(|p| p.ids.clone()).collect();
        let batched = greedy(&c.model, &ids, &mut hooks, 6);
        let mut distinct = batched.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 2,
            "{at}: steering changed nothing: {batched:?}"
        );
        for (b, (row, p)) in rows.iter().zip(&ptoks).enumerate() {
            // One at a time, with the KV cache.
            let (lay1, _) = generation_layout(&[p]).unwrap();
            let mut h = Hooks::new();
            install(&mut h, std::slice::from_ref(row), &lay1, None).unwrap();
            let single = greedy(&c.model, std::slice::from_ref(&p.ids), &mut h, 6);
            assert_eq!(single[0], batched[b], "{at}: row {b} batched vs alone");
            // Without a cache: the whole sequence again at every step.
            let mut seq = p.ids.clone();
            for _ in 0..6 {
                let mut h = Hooks::new();
                install(&mut h, std::slice::from_ref(row), &lay1, None).unwrap();
                let real = vec![vec![true; seq.len()]];
                let out = c
                    .model
                    .forward(&seq, &real, None, &mut h, LogitsAt::Last)
                    .unwrap();
                let l = out.logits.unwrap().try_into_vec_as::<f32>().unwrap();
                let best = (0..l.len()).fold(0, |b, i| if l[i] > l[b] { i } else { b });
                seq.push(best as u32);
            }
            assert_eq!(
                seq[p.ids.len()..],
                single[0][..],
                "{at}: row {b} cache vs no cache"
            );
        }
    }
}
