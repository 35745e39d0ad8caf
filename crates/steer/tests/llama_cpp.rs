//! The control-vector layer mapping against llama.cpp itself: SmolLM2-135M-Instruct's greedy
//! continuations under llama.cpp (llama-cpp-python 0.3.36) with a control vector exported by
//! `lantern cvec export` (`fixtures/llama_cpp/make_llama_cpp_fixture.py`) equal Lantern's,
//! steering with the same file read back — plain and steered. Skipped without the model
//! unless `LANTERN_REQUIRE_SMOLLM2=1`.

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use burn::tensor::Device;
use lantern_lm::{GenerateOptions, Hooks, Model, Sampling, generate};
use lantern_steer::LayerVectors;
use lantern_steer::experiment::{PromptTokens, generation_layout};
use lantern_steer::intervene::{Intervention, Op, Where, install};
use support::fixtures;

fn smollm2() -> Option<PathBuf> {
    let p = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../cache/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    ));
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("LANTERN_REQUIRE_SMOLLM2").is_err(),
        "LANTERN_REQUIRE_SMOLLM2 is set but {} is missing",
        p.display()
    );
    None
}

#[test]
fn greedy_continuations_with_our_control_vector_match_llama_cpp() {
    let Some(path) = smollm2() else { return };
    let model = Model::load(&path, &Device::flex()).unwrap();
    let fx: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures("llama_cpp/continuations.json")).unwrap(),
    )
    .unwrap();
    let cvec = LayerVectors::read(&fixtures("llama_cpp/cvec.gguf"), None).unwrap();
    assert_eq!(
        cvec.layers.keys().copied().collect::<Vec<_>>(),
        (6..=20).collect::<Vec<_>>()
    );
    let steer = Intervention {
        ops: cvec
            .layers
            .iter()
            .map(|(&l, v)| Op::Add {
                point: cvec.site.point(l),
                vector: Arc::new(v.clone()),
                coef: 1.0,
                preserve_norm: false,
                at: Where::All,
            })
            .collect(),
    };
    let ids_of = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    let mut steered_differs = false;
    for case in fx["cases"].as_array().unwrap() {
        let prompt = PromptTokens {
            ids: ids_of(&case["ids"]),
            roles: vec![],
        };
        let n = ids_of(&case["plain"]).len();
        let mut out = Vec::new();
        for iv in [Intervention::none(), steer.clone()] {
            let (layout, _) = generation_layout(&[&prompt]).unwrap();
            let mut hooks = Hooks::new();
            install(&mut hooks, &[iv], &layout, None).unwrap();
            let opts = GenerateOptions {
                max_new_tokens: n,
                sampling: Sampling::default(),
                stop_ids: vec![],
                pad_id: 0,
                row_seeds: vec![],
            };
            out.push(
                generate(
                    &model,
                    std::slice::from_ref(&prompt.ids),
                    &opts,
                    &mut hooks,
                    |_, _| {},
                )
                .unwrap()
                .tokens
                .remove(0),
            );
        }
        // llama.cpp multiplies Q4_1 weights by 8-bit-quantized activations, Lantern runs the
        // dequantized weights in f32: near-ties can flip a greedy token, after which texts part
        // for good. So: where the plain continuations agree in full, the steered ones must too;
        // elsewhere the steered ones must agree at least as far as the plain ones (and 2
        // tokens). A layer off by one changes the steered text from its first token.
        let agree = |a: &[u32], b: &[u32]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let (cpp_plain, cpp_steer) = (ids_of(&case["plain"]), ids_of(&case["steered"]));
        let a_plain = agree(&out[0], &cpp_plain);
        let a_steer = agree(&out[1], &cpp_steer);
        eprintln!(
            "{}: plain agree {a_plain}/{n}, steered agree {a_steer}/{n}",
            case["prompt"]
        );
        if a_plain == n {
            assert_eq!(out[1], cpp_steer, "{}: steered", case["prompt"]);
        } else {
            assert!(
                a_steer >= a_plain.min(n).max(2),
                "{}: steered agree {a_steer}, plain {a_plain}",
                case["prompt"]
            );
        }
        // llama.cpp's steered text leaves its plain one inside the stretch we match.
        steered_differs |= agree(&cpp_plain, &cpp_steer) < a_steer;
    }
    assert!(
        steered_differs,
        "the vector should change a continuation where both agree"
    );
}
