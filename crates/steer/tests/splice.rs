//! Spliced-in SAE evaluation against PyTorch: `fixtures/make_splice_fixtures.py` runs each
//! parity checkpoint with the fixture SAE's reconstruction, zero, and reconstruction + error
//! spliced in at `blocks.1.hook_resid_post` (forward hooks in transformers, one sequence at a
//! time, f64 statistics) and records CE, KL, the scores and the reconstruction statistics.
//! Here the two sequences (12 and 9 tokens) run as one right-padded batch.

mod support;

use burn::tensor::Device;
use lantern_lm::{HookPoint, Model};
use lantern_sae::Sae;
use lantern_steer::splice::{SpliceOptions, splice_eval};
use support::{fixtures, get, parity_dir, read};

const CASES: [&str; 3] = ["llama_gqa", "llama_tied_rope3", "gpt2"];
const T: usize = 12;

fn close(name: &str, what: &str, got: f64, want: f64, tol: f64) {
    assert!(
        (got - want).abs() <= tol * want.abs().max(1.0),
        "{name} {what}: {got} vs PyTorch {want}"
    );
}

#[test]
fn splice_eval_matches_pytorch() {
    let dev = Device::flex();
    for name in CASES {
        let model = Model::load(&parity_dir(name), &dev).unwrap();
        let (w, _) = lantern_sae::load_sae(&fixtures(name).join("sae")).unwrap();
        let sae = Sae::from_weights(&w, &dev).unwrap();
        let point: HookPoint = w.cfg.hook_name.parse().unwrap();
        let want: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures(name).join("splice.json")).unwrap(),
        )
        .unwrap();
        let ids: Vec<u32> = get(
            &read(&fixtures(name).join("steer.safetensors")),
            "input_ids",
        )
        .iter()
        .map(|&x| x as u32)
        .collect();
        let texts = vec![ids[..T].to_vec(), ids[T..T + 9].to_vec()];
        for (key, splice_first) in [("keep_first", false), ("splice_first", true)] {
            let w = &want[key];
            let r = splice_eval(
                &model,
                &sae,
                point,
                &texts,
                &SpliceOptions {
                    splice_first,
                    batch: 2,
                },
                |_| {},
            )
            .unwrap();
            let num = |k: &str| w[k].as_f64().unwrap();
            assert_eq!(
                r.spliced_tokens as u64,
                w["spliced_tokens"].as_u64().unwrap()
            );
            assert_eq!((r.tokens, r.predictions), (21, 19));
            for (k, got) in [
                ("ce_clean", r.ce_clean),
                ("ce_sae", r.ce_sae),
                ("ce_zero", r.ce_zero),
                ("ce_sae_plus_error", r.ce_sae_plus_error),
                ("kl_sae", r.kl_sae),
                ("kl_zero", r.kl_zero),
                ("ce_loss_score", r.ce_loss_score),
                ("kl_div_score", r.kl_div_score),
                ("mse", r.recon.mse),
                ("explained_variance", r.recon.explained_variance),
                (
                    "explained_variance_legacy",
                    r.recon.explained_variance_legacy,
                ),
                ("cossim", r.recon.cossim),
                ("l2_ratio", r.recon.l2_ratio),
                (
                    "relative_reconstruction_bias",
                    r.recon.relative_reconstruction_bias,
                ),
                ("l0", r.recon.l0),
            ] {
                close(name, &format!("{key} {k}"), got, num(k), 1e-4);
            }
            // The error added back reproduces the clean run.
            assert!(
                r.kl_sae_plus_error < 1e-6,
                "{name}: {}",
                r.kl_sae_plus_error
            );
            close(name, "ce with error", r.ce_sae_plus_error, r.ce_clean, 1e-5);
            for (i, (d, c)) in r.density.iter().zip(&r.consistent_activation).enumerate() {
                close(
                    name,
                    &format!("density {i}"),
                    *d,
                    w["density"][i].as_f64().unwrap(),
                    1e-6,
                );
                match w["consistent_activation"][i].as_f64() {
                    Some(v) => close(name, &format!("cah {i}"), *c, v, 1e-6),
                    None => assert!(c.is_nan()),
                }
            }
        }
    }
}
