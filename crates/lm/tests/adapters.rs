//! PEFT LoRA adapters merged at load equal PEFT's own forward pass on the tiny parity
//! checkpoints (`fixtures/make_adapter_fixtures.py`): rank 1 on one `down_proj`, rank 4 on
//! every linear module, rslora with `modules_to_save`, and GPT-2's `fan_in_fan_out` Conv1D.

mod tensor_support;

use burn::tensor::Device;
use lantern_lm::{Hooks, LogitsAt, LoraAdapter, Model};
use tensor_support::{fixtures, max_err};

const CASES: [(&str, &str); 4] = [
    ("llama_rank1_down_proj", "llama_gqa"),
    ("llama_rank4_all", "llama_gqa"),
    ("llama_rslora_head", "llama_gqa"),
    ("gpt2_rank4_fan_in", "gpt2"),
];

fn reference(case: &str) -> (Vec<u32>, Vec<f32>) {
    let t = tensor_support::read(
        &fixtures("adapters")
            .join(case)
            .join("reference.safetensors"),
    );
    (
        tensor_support::ids(&t),
        tensor_support::get(&t, "logits").to_vec(),
    )
}

fn logits(model: &Model, ids: &[u32]) -> Vec<f32> {
    let real = vec![vec![true; ids.len() / 2]; 2];
    model
        .forward(ids, &real, None, &mut Hooks::new(), LogitsAt::All)
        .unwrap()
        .logits
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap()
}

#[test]
fn merged_adapters_match_peft() {
    for (case, base) in CASES {
        let adapter = LoraAdapter::load(&fixtures("adapters").join(case)).unwrap();
        let base_dir = fixtures("parity").join(base);
        let model = Model::load_with_adapter(&base_dir, Some(adapter), &Device::flex()).unwrap();
        let (ids, want) = reference(case);
        let e = max_err(&logits(&model, &ids), &want);
        assert!(e <= 1e-4, "{case}: logits differ from PEFT's by {e}");
        // The adapter matters: the base model alone is far off.
        let plain = Model::load(&base_dir, &Device::flex()).unwrap();
        let e = max_err(&logits(&plain, &ids), &want);
        assert!(e > 1e-2, "{case}: the adapter changes nothing ({e})");
    }
}

#[test]
fn a_rank_one_adapter_exposes_its_b_vector() {
    let a = LoraAdapter::load(&fixtures("adapters/llama_rank1_down_proj")).unwrap();
    assert_eq!(a.layers.len(), 1);
    let l = a.layer("model.layers.1.mlp.down_proj").unwrap();
    assert_eq!(
        (l.rank(), l.b.shape.clone(), l.scale),
        (1, vec![32, 1], 2.0)
    );
    let r = LoraAdapter::load(&fixtures("adapters/llama_rslora_head")).unwrap();
    // rslora: s = α/√r = 3/√2.
    assert!((r.layers[0].scale - 3.0 / 2f64.sqrt()).abs() < 1e-12);
    assert!(r.replaced.contains_key("lm_head.weight"));
}

#[test]
fn bad_adapters_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures("adapters/llama_rank1_down_proj");
    for f in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(src.join(f), tmp.path().join(f)).unwrap();
    }
    // An adapter for a module the model lacks (GPT-2 has no down_proj).
    let a = LoraAdapter::load(tmp.path()).unwrap();
    let e = Model::load_with_adapter(&fixtures("parity/gpt2"), Some(a), &Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("down_proj.weight") && e.contains("no such weight") && !e.contains('\n'),
        "{e}"
    );
    // DoRA is not a plain low-rank delta.
    let cfg = std::fs::read_to_string(src.join("adapter_config.json")).unwrap();
    std::fs::write(
        tmp.path().join("adapter_config.json"),
        cfg.replace("\"use_dora\": false", "\"use_dora\": true"),
    )
    .unwrap();
    let e = LoraAdapter::load(tmp.path()).unwrap_err().to_string();
    assert!(
        e.contains("use_dora") && e.contains("adapter_config.json"),
        "{e}"
    );
    // No adapter files at all.
    let e = LoraAdapter::load(&fixtures("")).unwrap_err().to_string();
    assert!(e.contains("adapter_config.json"), "{e}");
}
