//! Interventions, weight edits and training against PyTorch on the tiny parity checkpoints
//! (`fixtures/make_hook_fixtures.py`):
//! - a per-row, per-column add at `resid_post` and directional ablation at every block input,
//!   attention output and MLP output equal PyTorch forward hooks (logits within 1e-4);
//! - orthogonalizing every residual writer gives the ablated logits without hooks (Arditi et
//!   al.'s equivalence), so the writer list misses nothing;
//! - gradients of the next-token loss under burn's autodiff equal PyTorch's autograd.

mod tensor_support;

use burn::tensor::activation::log_softmax;
use burn::tensor::{Device, Int, Tensor, TensorData};
use lantern_lm::{HookPoint, Hooks, LogitsAt, Model, Positions, Scale};
use tensor_support::{Named, PARITY_CASES as CASES, get, max_err, parity_dir as dir, read};

struct HookRef {
    ids: Vec<u32>,
    rows: usize,
    v: Vec<f32>,
    r: Vec<f32>,
    t: Vec<Named>,
}

fn hook_ref(case: &str) -> HookRef {
    let t = read(&dir(case).join("hooks.safetensors"));
    HookRef {
        rows: 2,
        ids: tensor_support::ids(&t),
        v: get(&t, "v").to_vec(),
        r: get(&t, "r").to_vec(),
        t,
    }
}

fn logits(model: &Model, h: &HookRef, hooks: &mut Hooks<'_>) -> Vec<f32> {
    let real = vec![vec![true; h.ids.len() / h.rows]; h.rows];
    model
        .forward(&h.ids, &real, None, hooks, LogitsAt::All)
        .unwrap()
        .logits
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap()
}

/// The hooks of the reference's directional ablation of `r`.
fn ablation(n_layers: usize, r: &[f32]) -> Hooks<'static> {
    let mut hooks = Hooks::new();
    for l in 0..n_layers {
        for p in [
            HookPoint::ResidPre(l),
            HookPoint::AttnOut(l),
            HookPoint::MlpOut(l),
        ] {
            hooks.project_out(p, r.to_vec(), None);
        }
    }
    hooks
}

#[test]
fn per_row_add_and_ablation_match_pytorch_hooks() {
    for case in CASES {
        let model = Model::load(&dir(case), &Device::flex()).unwrap();
        let h = hook_ref(case);
        let mut hooks = Hooks::new();
        hooks.add(
            HookPoint::ResidPost(1),
            h.v.clone(),
            Scale::PerRow(vec![3.0, -1.5]),
            Positions::PerRow(vec![4..12, 0..6]),
        );
        let e = max_err(&logits(&model, &h, &mut hooks), get(&h.t, "logits_add"));
        assert!(e <= 1e-4, "{case}: steered logits differ by {e}");

        let mut hooks = ablation(model.config().n_layers, &h.r);
        let e = max_err(&logits(&model, &h, &mut hooks), get(&h.t, "logits_ablate"));
        assert!(e <= 1e-4, "{case}: ablated logits differ by {e}");
    }
}

#[test]
fn orthogonalized_weights_equal_ablation_hooks() {
    for case in CASES {
        let mut model = Model::load(&dir(case), &Device::flex()).unwrap();
        let h = hook_ref(case);
        let dev = Device::flex();
        let d = h.r.len();
        let norm = h.r.iter().map(|x| x * x).sum::<f32>().sqrt();
        let u: Vec<f32> = h.r.iter().map(|x| x / norm).collect();
        let u = Tensor::<1>::from_data(TensorData::new(u, [d]), &dev).reshape([d, 1]);
        for mut w in model.residual_writers_mut() {
            let rows = w.rows();
            // W ← W − (W u) uᵀ: each row loses its component along u.
            let along = rows.clone().matmul(u.clone());
            w.set_rows(rows - along.matmul(u.clone().transpose()))
                .unwrap();
        }
        let e = max_err(
            &logits(&model, &h, &mut Hooks::new()),
            get(&h.t, "logits_ablate"),
        );
        assert!(e <= 1e-4, "{case}: orthogonalized model differs by {e}");
    }
}

#[test]
fn a_residual_writer_refuses_rows_of_another_shape() {
    let mut model = Model::load(&dir("gpt2"), &Device::flex()).unwrap();
    let mut writers = model.residual_writers_mut();
    let names: Vec<&str> = writers.iter().map(|w| w.name.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "transformer.wte.weight",
            "transformer.wpe.weight",
            "transformer.h.0.attn.c_proj.weight",
            "transformer.h.0.attn.c_proj.bias",
        ]
    );
    let bias = &mut writers[3];
    let wrong = Tensor::<2>::zeros([2, 32], &Device::flex());
    let e = bias.set_rows(wrong).unwrap_err().to_string();
    assert!(e.contains("c_proj.bias") && e.contains("[2, 32]"), "{e}");
}

#[test]
fn a_borrowing_edit_equals_the_same_add() {
    let model = Model::load(&dir("llama_gqa"), &Device::flex()).unwrap();
    let h = hook_ref("llama_gqa");
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPre(1), h.v.clone(), 2.0, None);
    let want = logits(&model, &h, &mut hooks);
    // The closure borrows a device vector and a call counter from this scope.
    let v = Tensor::<1>::from_data(TensorData::new(h.v.clone(), [h.v.len()]), &Device::flex())
        .reshape([1, 1, h.v.len()]);
    let mut calls = Vec::new();
    let mut hooks = Hooks::new();
    hooks.edit(HookPoint::ResidPre(1), |x, pos0| {
        calls.push(pos0);
        x + v.clone() * 2.0
    });
    let got = logits(&model, &h, &mut hooks);
    drop(hooks);
    assert_eq!(calls, [0]);
    assert!(max_err(&got, &want) <= 1e-6);
}

#[test]
fn per_row_settings_of_the_wrong_length_are_refused() {
    let model = Model::load(&dir("gpt2"), &Device::flex()).unwrap();
    let h = hook_ref("gpt2");
    let real = vec![vec![true; 12]; 2];
    let mut hooks = Hooks::new();
    hooks.add(
        HookPoint::ResidPost(0),
        h.v.clone(),
        Scale::PerRow(vec![1.0; 3]),
        None,
    );
    let e = model
        .forward(&h.ids, &real, None, &mut hooks, LogitsAt::All)
        .unwrap_err()
        .to_string();
    assert!(e.contains("3 rows") && e.contains("batch has 2"), "{e}");
}

#[test]
fn gradients_under_autodiff_match_pytorch_autograd() {
    for case in ["llama_gqa", "llama_tied_rope3", "gpt2"] {
        let dev = Device::flex().autodiff();
        let model = Model::load(&dir(case), &dev).unwrap();
        let g = read(&dir(case).join("grads.safetensors"));
        let h = hook_ref(case);
        let (b, t) = (h.rows, h.ids.len() / h.rows);
        let real = vec![vec![true; t]; b];
        let logits = model
            .forward(&h.ids, &real, None, &mut Hooks::new(), LogitsAt::All)
            .unwrap()
            .logits
            .unwrap();
        let vocab = logits.dims()[2];
        // Mean next-token cross-entropy: −log p(ids[b, i+1] | ids[b, ..=i]).
        let logp = log_softmax(logits.narrow(1, 0, t - 1).reshape([b * (t - 1), vocab]), 1);
        let targets: Vec<i32> = (0..b)
            .flat_map(|row| h.ids[row * t + 1..(row + 1) * t].iter().map(|&i| i as i32))
            .collect();
        let targets = Tensor::<1, Int>::from_data(TensorData::new(targets, [b * (t - 1)]), &dev)
            .reshape([b * (t - 1), 1]);
        let loss = logp.gather(1, targets).mean().neg();
        let got_loss = loss.clone().into_scalar::<f32>();
        let want_loss = get(&g, "loss")[0];
        assert!(
            (got_loss - want_loss).abs() <= 1e-5 * (1.0 + want_loss.abs()),
            "{case}: loss {got_loss} vs {want_loss}"
        );
        let grads = loss.backward();
        let params = model.named_parameters(Some(&grads));
        let host = |name: &str| -> Vec<f32> {
            let p = params.iter().find(|p| p.name == name).unwrap();
            p.grad
                .clone()
                .unwrap_or_else(|| panic!("{case}: no gradient for {name}"))
                .try_into_vec_as::<f32>()
                .unwrap()
        };
        // Tied weights appear once in PyTorch; Lantern keeps the unembedding as its own copy.
        let tied_embed = match case {
            "gpt2" => Some("transformer.wte.weight"),
            "llama_tied_rope3" => Some("model.embed_tokens.weight"),
            _ => None,
        };
        let mut compared = 0;
        for (name, _, want) in g.iter().filter(|x| x.0.starts_with("grad.")) {
            let name = &name["grad.".len()..];
            let mut got = host(name);
            if Some(name) == tied_embed {
                for (a, b) in got.iter_mut().zip(host("lm_head.weight")) {
                    *a += b;
                }
            }
            let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let e = got
                .iter()
                .zip(want)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                e <= 1e-4 * scale + 1e-7,
                "{case}: gradient of {name} differs by {e} (largest entry {scale})"
            );
            compared += 1;
        }
        // Every Lantern parameter is compared (the tied unembedding through its sum).
        let extra = usize::from(tied_embed.is_some());
        assert_eq!(compared + extra, params.len(), "{case}: parameter count");
    }
}
