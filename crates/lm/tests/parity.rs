//! Parity with Hugging Face transformers on tiny random checkpoints
//! (`fixtures/make_parity_fixtures.py`): logits, every `hook_resid_post` and the final norm
//! match within 1e-4 in f32, also with left padding and with a KV cache.

mod tensor_support;

use burn::tensor::{Device, DeviceType, Tensor};
use lantern_lm::models::nn::KvCache;
use lantern_lm::{HookPoint, Hooks, LogitsAt, Model};
use tensor_support::{Named, PARITY_CASES as CASES, max_err, parity_dir as dir};

struct Reference {
    ids: Vec<Vec<u32>>,
    tensors: Vec<Named>,
}

impl Reference {
    fn load(case: &str) -> Self {
        let tensors = tensor_support::read(&dir(case).join("reference.safetensors"));
        let flat = tensor_support::ids(&tensors);
        let t = tensors.iter().find(|x| x.0 == "input_ids").unwrap().1[1];
        let ids = flat.chunks(t).map(<[u32]>::to_vec).collect();
        Self { ids, tensors }
    }

    fn get(&self, name: &str) -> &[f32] {
        tensor_support::get(&self.tensors, name)
    }
}

fn host(t: Tensor<3>) -> Vec<f32> {
    t.try_into_vec_as::<f32>().unwrap()
}

/// Runs the reference batch with captures at every resid_post and the final norm.
fn run_full(model: &Model, r: &Reference) -> (Vec<f32>, Vec<(String, Vec<f32>)>) {
    let n = model.config().n_layers;
    let mut hooks = Hooks::new();
    for l in 0..n {
        hooks.capture(HookPoint::ResidPost(l));
    }
    hooks.capture(HookPoint::LnFinal);
    let ids: Vec<u32> = r.ids.concat();
    let real = vec![vec![true; r.ids[0].len()]; r.ids.len()];
    let mut out = model
        .forward(&ids, &real, None, &mut hooks, LogitsAt::All)
        .unwrap();
    let mut caps = Vec::new();
    for l in 0..n {
        let t = out.captures.take_one(HookPoint::ResidPost(l)).unwrap();
        caps.push((format!("resid_post.{l}"), host(t)));
    }
    caps.push((
        "ln_final".into(),
        host(out.captures.take_one(HookPoint::LnFinal).unwrap()),
    ));
    (host(out.logits.unwrap()), caps)
}

fn check_case(case: &str, dev: &Device) {
    let model = Model::load(&dir(case), dev).unwrap();
    let r = Reference::load(case);
    let (logits, caps) = run_full(&model, &r);
    let e = max_err(&logits, r.get("logits"));
    assert!(e <= 1e-4, "{case}: logits differ by {e}");
    for (name, got) in &caps {
        let e = max_err(got, r.get(name));
        assert!(e <= 1e-4, "{case}: {name} differs by {e}");
    }
}

#[test]
fn logits_and_residual_stream_match_transformers_on_cpu() {
    for case in CASES {
        check_case(case, &Device::flex());
    }
}

#[test]
fn logits_match_transformers_on_wgpu() {
    let Some(dev) = Device::enumerate(DeviceType::Wgpu)
        .into_vec()
        .into_iter()
        .next()
    else {
        assert!(
            std::env::var("LANTERN_REQUIRE_WGPU").is_err(),
            "LANTERN_REQUIRE_WGPU is set but no wgpu adapter was found"
        );
        eprintln!("skipping: no wgpu adapter");
        return;
    };
    for case in ["llama_gqa", "gpt2"] {
        check_case(case, &dev);
    }
}

#[test]
fn left_padding_leaves_real_tokens_unchanged() {
    for case in CASES {
        let model = Model::load(&dir(case), &Device::flex()).unwrap();
        let r = Reference::load(case);
        let t = r.ids[0].len();
        let vocab = model.config().vocab_size;
        // Row 0 as is; row 1 shortened to its last t−3 tokens and padded on the left.
        let pad = 3;
        let mut ids = r.ids[0].clone();
        ids.extend(std::iter::repeat_n(0, pad));
        ids.extend(&r.ids[1][..t - pad]);
        let real = vec![
            vec![true; t],
            (0..t).map(|i| i >= pad).collect::<Vec<bool>>(),
        ];
        let logits = host(
            model
                .forward(&ids, &real, None, &mut Hooks::new(), LogitsAt::All)
                .unwrap()
                .logits
                .unwrap(),
        );
        // Reference for the shortened row: an unpadded run of it alone.
        let short = host(
            model
                .forward(
                    &r.ids[1][..t - pad],
                    &[vec![true; t - pad]],
                    None,
                    &mut Hooks::new(),
                    LogitsAt::All,
                )
                .unwrap()
                .logits
                .unwrap(),
        );
        let row0 = &logits[..t * vocab];
        assert!(
            max_err(row0, &r.get("logits")[..t * vocab]) <= 1e-4,
            "{case}: row 0"
        );
        let row1 = &logits[(t + pad) * vocab..];
        let e = max_err(row1, &short);
        assert!(e <= 1e-4, "{case}: padded row differs by {e}");
    }
}

#[test]
fn kv_cache_steps_match_the_full_pass() {
    // A growing cache, and one with fixed slots (more than needed: the spare ones are masked).
    for (case, capacity) in CASES.iter().flat_map(|c| [(*c, None), (*c, Some(15))]) {
        let model = Model::load(&dir(case), &Device::flex()).unwrap();
        let r = Reference::load(case);
        let (b, t) = (r.ids.len(), r.ids[0].len());
        let vocab = model.config().vocab_size;
        let want = r.get("logits");
        let mut cache = KvCache {
            capacity,
            ..KvCache::default()
        };
        let prefix = 7;
        let ids: Vec<u32> = r
            .ids
            .iter()
            .flat_map(|row| row[..prefix].to_vec())
            .collect();
        let first = host(
            model
                .forward(
                    &ids,
                    &vec![vec![true; prefix]; b],
                    Some(&mut cache),
                    &mut Hooks::new(),
                    LogitsAt::Last,
                )
                .unwrap()
                .logits
                .unwrap(),
        );
        let mut got = vec![(prefix - 1, first)];
        for pos in prefix..t {
            let step: Vec<u32> = r.ids.iter().map(|row| row[pos]).collect();
            let l = host(
                model
                    .forward(
                        &step,
                        &vec![vec![true]; b],
                        Some(&mut cache),
                        &mut Hooks::new(),
                        LogitsAt::Last,
                    )
                    .unwrap()
                    .logits
                    .unwrap(),
            );
            got.push((pos, l));
        }
        assert_eq!(cache.len(), t);
        for (pos, l) in got {
            for row in 0..b {
                let w = &want[(row * t + pos) * vocab..(row * t + pos + 1) * vocab];
                let e = max_err(&l[row * vocab..(row + 1) * vocab], w);
                assert!(
                    e <= 1e-4,
                    "{case} (capacity {capacity:?}): row {row} position {pos} differs by {e}"
                );
            }
        }
    }
}

#[test]
fn early_stop_returns_the_same_capture_without_logits() {
    let model = Model::load(&dir("llama_gqa"), &Device::flex()).unwrap();
    let r = Reference::load("llama_gqa");
    let ids: Vec<u32> = r.ids.concat();
    let real = vec![vec![true; r.ids[0].len()]; r.ids.len()];
    let mut hooks = Hooks::new();
    hooks.capture(HookPoint::ResidPost(0)).stop_after_last(true);
    let mut out = model
        .forward(&ids, &real, None, &mut hooks, LogitsAt::All)
        .unwrap();
    assert!(out.logits.is_none());
    let got = host(out.captures.take_one(HookPoint::ResidPost(0)).unwrap());
    assert!(max_err(&got, r.get("resid_post.0")) <= 1e-4);
}

#[test]
fn adding_at_resid_post_equals_adding_at_the_next_resid_pre() {
    let model = Model::load(&dir("qwen2_bias_bf16"), &Device::flex()).unwrap();
    let r = Reference::load("qwen2_bias_bf16");
    let ids: Vec<u32> = r.ids.concat();
    let real = vec![vec![true; r.ids[0].len()]; r.ids.len()];
    let v: Vec<f32> = (0..32).map(|i| (i as f32 * 0.7).cos()).collect();
    let run = |point| {
        let mut hooks = Hooks::new();
        hooks.add(point, v.clone(), 3.0, Some(4..9));
        host(
            model
                .forward(&ids, &real, None, &mut hooks, LogitsAt::All)
                .unwrap()
                .logits
                .unwrap(),
        )
    };
    let a = run(HookPoint::ResidPost(0));
    let b = run(HookPoint::ResidPre(1));
    assert_eq!(a, b);
    // ... and it changes the logits only from position 4 on.
    let base = r.get("logits");
    let (t, vocab) = (r.ids[0].len(), model.config().vocab_size);
    for row in 0..2 {
        for pos in 0..t {
            let s = (row * t + pos) * vocab..(row * t + pos + 1) * vocab;
            let e = max_err(&a[s.clone()], &base[s]);
            if pos < 4 {
                assert!(e <= 1e-4, "position {pos} changed by {e}");
            } else {
                assert!(e > 1e-3, "position {pos} unchanged");
            }
        }
    }
}

#[test]
fn bad_models_and_hooks_fail_with_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let e = Model::load(tmp.path(), &Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("config.json") && !e.contains('\n'), "{e}");
    // A config whose hidden size disagrees with the weights.
    let src = dir("llama_gqa");
    for f in std::fs::read_dir(&src).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
    }
    let cfg = std::fs::read_to_string(src.join("config.json")).unwrap();
    std::fs::write(
        tmp.path().join("config.json"),
        cfg.replace("\"intermediate_size\": 48", "\"intermediate_size\": 50"),
    )
    .unwrap();
    let e = Model::load(tmp.path(), &Device::flex())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("gate_proj.weight") && e.contains("[50, 32]"),
        "{e}"
    );
    // Issue 15: fewer layers in the config than in the weights ran a shorter model; a zero
    // eps or rope base made every logit NaN. Each is refused on load, naming the value.
    for (from, to, needle) in [
        (
            "\"num_hidden_layers\": 2",
            "\"num_hidden_layers\": 1",
            "hold a layer 1",
        ),
        (
            "\"rms_norm_eps\": 1e-05",
            "\"rms_norm_eps\": 0.0",
            "norm eps 0",
        ),
        (
            "\"rope_theta\": 10000.0",
            "\"rope_theta\": 0.0",
            "rope_theta 0",
        ),
    ] {
        assert!(cfg.contains(from), "{from}");
        std::fs::write(tmp.path().join("config.json"), cfg.replace(from, to)).unwrap();
        let e = Model::load(tmp.path(), &Device::flex())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(needle) && !e.contains('\n'), "{to}: {e}");
    }

    let model = Model::load(&src, &Device::flex()).unwrap();
    let mut hooks = Hooks::new();
    hooks.capture(HookPoint::ResidPost(2));
    let e = model
        .forward(
            &[3, 4],
            &[vec![true, true]],
            None,
            &mut hooks,
            LogitsAt::All,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("blocks.2.hook_resid_post") && e.contains("out of range"),
        "{e}"
    );
    let e = model
        .forward(
            &[3, 999],
            &[vec![true, true]],
            None,
            &mut Hooks::new(),
            LogitsAt::All,
        )
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("999"), "{e}");
}

#[test]
fn hooks_apply_at_every_generation_step() {
    use lantern_lm::{GenerateOptions, Sampling, generate};
    let model = Model::load(&dir("llama_gqa"), &Device::flex()).unwrap();
    let r = Reference::load("llama_gqa");
    let prompt = r.ids[0][..5].to_vec();
    let opts = GenerateOptions {
        max_new_tokens: 6,
        sampling: Sampling::default(),
        stop_ids: vec![],
        pad_id: 0,
        row_seeds: Vec::new(),
    };
    let run = |hooks: &mut Hooks| {
        generate(
            &model,
            std::slice::from_ref(&prompt),
            &opts,
            hooks,
            |_, _| {},
        )
        .unwrap()
    };
    let plain = run(&mut Hooks::new()).tokens;
    // A capture sees the prompt pass, then one position per later step.
    let mut hooks = Hooks::new();
    hooks.capture(HookPoint::ResidPost(1));
    let mut same = run(&mut hooks);
    assert_eq!(same.tokens, plain);
    let caps = same.captures.take(HookPoint::ResidPost(1));
    assert_eq!(caps.len(), 6);
    assert_eq!(caps[0].dims()[1], 5);
    assert!(caps[1..].iter().all(|c| c.dims()[1] == 1));
    // Steering only the generated positions (5..) leaves the first token, changes the rest.
    let v: Vec<f32> = (0..32)
        .map(|i| if i % 3 == 0 { 1.0 } else { -0.5 })
        .collect();
    let mut hooks = Hooks::new();
    hooks.add(HookPoint::ResidPre(1), v, 40.0, Some(5..100));
    let steered = run(&mut hooks).tokens;
    assert_eq!(steered[0][0], plain[0][0], "the prompt pass is not steered");
    assert_ne!(steered[0][1..], plain[0][1..], "later steps are");
}

#[test]
fn a_written_hugging_face_directory_loads_back_to_the_same_model() {
    use lantern_lm::LanguageModel;
    // The parity checkpoints have no tokenizer; borrow the tiny BPE fixture's.
    let tok = tensor_support::fixtures("tiny_bpe");
    for case in CASES {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        std::fs::create_dir(&src).unwrap();
        for f in std::fs::read_dir(dir(case)).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, src.join(f.file_name().unwrap())).unwrap();
        }
        std::fs::copy(tok.join("tokenizer.json"), src.join("tokenizer.json")).unwrap();
        let lm = LanguageModel::load(&src, &Device::flex()).unwrap();
        let out = tmp.path().join("written");
        lantern_lm::save::save_hf(&lm, &out).unwrap();
        let cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap())
                .unwrap();
        assert_eq!(cfg["tie_word_embeddings"], false, "{case}: written untied");
        let back = Model::load(&out, &Device::flex()).unwrap();
        assert_eq!(back.config().n_layers, lm.model.config().n_layers);
        let r = Reference::load(case);
        let (logits, _) = run_full(&back, &r);
        let e = max_err(&logits, r.get("logits"));
        assert!(
            e <= 1e-4,
            "{case}: reloaded logits differ from transformers' by {e}"
        );
        // Writing again into a non-empty directory is refused.
        let e = lantern_lm::save::save_hf(&lm, &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty"), "{e}");
    }
}

#[test]
fn capture_sorts_batches_by_length_but_delivers_sequences_in_order() {
    use lantern_lm::capture::{CaptureOptions, CaptureSink, Sequence, SequenceRows, capture};
    struct Keep(Vec<(usize, Vec<f32>, Vec<f32>)>);
    impl CaptureSink for Keep {
        type Error = lantern_lm::LmError;
        fn sequence(&mut self, r: SequenceRows<'_>) -> Result<(), Self::Error> {
            self.0.push((r.index, r.acts[0].clone(), r.acts[1].clone()));
            Ok(())
        }
    }
    let model = Model::load(&dir("llama_gqa"), &Device::flex()).unwrap();
    let r = Reference::load("llama_gqa");
    let all: Vec<u32> = r.ids.concat();
    let seqs: Vec<Sequence> = [3, 12, 5, 9, 1, 7, 12]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let ids = all[i..i + n].to_vec();
            Sequence {
                roles: vec![0; n],
                ids,
            }
        })
        .collect();
    let points = vec![HookPoint::ResidPost(0), HookPoint::AttnOut(1)];
    let opts = CaptureOptions {
        points: points.clone(),
        batch: 3,
        sort_window: 4,
    };
    let mut full = Keep(Vec::new());
    capture(&model, 0, &seqs, 0, &opts, &mut full).unwrap();
    assert_eq!(
        full.0.iter().map(|x| x.0).collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    for (i, a, b) in &full.0 {
        let s = &seqs[*i].ids;
        let mut hooks = Hooks::new();
        hooks.capture(points[0]).capture(points[1]);
        let mut out = model
            .forward(s, &[vec![true; s.len()]], None, &mut hooks, LogitsAt::Skip)
            .unwrap();
        let want_a = host(out.captures.take_one(points[0]).unwrap());
        let want_b = host(out.captures.take_one(points[1]).unwrap());
        assert!(max_err(a, &want_a) <= 1e-5, "sequence {i} at {}", points[0]);
        assert!(max_err(b, &want_b) <= 1e-5, "sequence {i} at {}", points[1]);
    }
    // Resuming at sequence 5 forms the same batches: the same bits.
    let mut rest = Keep(Vec::new());
    capture(&model, 0, &seqs, 5, &opts, &mut rest).unwrap();
    assert_eq!(rest.0, full.0[5..]);
    // A hook twice is refused.
    let twice = CaptureOptions {
        points: vec![points[0], points[0]],
        ..opts
    };
    let e = capture(&model, 0, &seqs, 0, &twice, &mut Keep(Vec::new()))
        .unwrap_err()
        .to_string();
    assert!(e.contains("listed twice"), "{e}");
}
