//! Per-token KL against PyTorch: the finetuned side's logits are PEFT's (the adapter fixture of
//! `crates/lm/tests/fixtures/make_adapter_fixtures.py`), KL computed here in f64.

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use lantern_lm::{LoraAdapter, Model};
use safetensors::SafeTensors;

fn lm_fixtures(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lm/tests/fixtures")
        .join(rel)
}

#[test]
fn token_kl_matches_f64_kl_against_peft_logits_and_vanishes_for_the_same_model() {
    let base_dir = lm_fixtures("parity/llama_gqa");
    let ad = lm_fixtures("adapters/llama_rank4_all");
    let dev = Device::flex();
    let base = Model::load(&base_dir, &dev).unwrap();
    let ft =
        Model::load_with_adapter(&base_dir, Some(LoraAdapter::load(&ad).unwrap()), &dev).unwrap();
    let bytes = std::fs::read(ad.join("reference.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids: Vec<u32> = st
        .tensor("input_ids")
        .unwrap()
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as u32)
        .collect();
    let peft: Vec<f64> = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
        .collect();
    let (s, v) = (12, 64);
    let row = &ids[..s];
    let got = lantern_search::kl::token_kl(&base, &ft, row).unwrap();
    let base_logits: Vec<f64> = base
        .logits(row)
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect();
    let log_softmax = |l: &[f64]| -> Vec<f64> {
        let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z = l.iter().map(|x| (x - m).exp()).sum::<f64>().ln() + m;
        l.iter().map(|x| x - z).collect()
    };
    let mut any = false;
    for t in 0..s {
        let lf = log_softmax(&peft[t * v..(t + 1) * v]);
        let lb = log_softmax(&base_logits[t * v..(t + 1) * v]);
        let want: f64 = lf.iter().zip(&lb).map(|(f, b)| f.exp() * (f - b)).sum();
        assert!(
            (got[t] - want).abs() < 1e-4 * (1.0 + want),
            "position {t}: {} vs {want}",
            got[t]
        );
        any |= want > 1e-3;
    }
    assert!(any, "the adapter changes the distribution");
    let same = lantern_search::kl::token_kl(&base, &base, row).unwrap();
    assert!(same.iter().all(|&k| k < 1e-6), "{same:?}");
}
