//! SAE file formats against two kinds of fixtures:
//! - `tests/fixtures/make_fixtures.py` (numpy only) writes each library's documented layout,
//!   with references that transcribe its forward pass in float64;
//! - `tests/library_fixtures/make_library_fixtures.py` runs SAELens 6.54.12 and sparsify 1.3.3
//!   themselves: their saves and forward passes, and SAELens reading the files Lantern writes.

use std::path::{Path, PathBuf};

use lantern_sae::formats::load_log10_density;
use lantern_sae::{Arch, SaeConfig, SaeError, SaeFormat, SaeWeights, load_sae, save_saelens};
use safetensors::{Dtype, SafeTensors};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A tensor of a reference file as f32 (stored as f32 or f64).
fn read_tensor(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    let data = match t.dtype() {
        Dtype::F32 => t
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        Dtype::F64 => t
            .data()
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32)
            .collect(),
        other => panic!("{name}: unexpected dtype {other:?}"),
    };
    (t.shape().to_vec(), data)
}

/// `max |got − want| ≤ 1e-5 · max(1, max |want|)`.
fn assert_close(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
    let (i, err) = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .enumerate()
        .fold(
            (0, 0f32),
            |best, (i, e)| if e > best.1 { (i, e) } else { best },
        );
    assert!(
        err <= 1e-5 * scale,
        "{what}: |Δ| = {err} at {i} (got {}, want {})",
        got[i],
        want[i]
    );
}

fn check_fixture(name: &str, format: SaeFormat, arch: Arch, apply_b_dec: bool) -> SaeWeights {
    check_dir(&fixture(name), format, arch, apply_b_dec)
}

/// Loads the SAE in `dir` (d_in 16, d_sae 48) and checks it against `dir/reference.safetensors`.
fn check_dir(dir: &Path, format: SaeFormat, arch: Arch, apply_b_dec: bool) -> SaeWeights {
    let name = dir.file_name().unwrap().to_string_lossy();
    let (sae, got_format) = load_sae(dir).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(got_format, format, "{name}: format");
    assert_eq!(sae.cfg.arch, arch, "{name}: arch");
    assert_eq!((sae.cfg.d_in, sae.cfg.d_sae), (16, 48), "{name}: dims");
    assert_eq!(
        sae.cfg.apply_b_dec_to_input, apply_b_dec,
        "{name}: apply_b_dec_to_input"
    );
    check_forward(&sae, dir);
    sae
}

/// `encode(x)` and `decode(encode(x))` of `sae` equal the reference in `dir`.
fn check_forward(sae: &SaeWeights, dir: &Path) {
    let name = dir.file_name().unwrap().to_string_lossy();
    let reference = dir.join("reference.safetensors");
    let (shape, x) = read_tensor(&reference, "x");
    assert_eq!(shape, [8, sae.cfg.d_in], "{name}: x");
    let (_, acts) = read_tensor(&reference, "feature_acts");
    let (_, recon) = read_tensor(&reference, "recon");
    let f = sae.encode(&x);
    assert_close(&format!("{name} feature_acts"), &f, &acts);
    let zeros_match = f.iter().zip(&acts).all(|(a, b)| (*a == 0.0) == (*b == 0.0));
    assert!(
        zeros_match,
        "{name}: the active set differs from the reference"
    );
    assert_close(&format!("{name} recon"), &sae.decode(&f), &recon);
}

#[test]
fn saelens_v6_standard_matches_reference() {
    let sae = check_fixture("saelens_v6_standard", SaeFormat::SaeLens, Arch::Relu, true);
    assert_eq!(sae.cfg.hook_name, "blocks.3.hook_resid_post");
    assert_eq!(sae.cfg.model_name, "tiny-stories-1M");
}

#[test]
fn saelens_v6_topk_matches_reference() {
    check_fixture(
        "saelens_v6_topk",
        SaeFormat::SaeLens,
        Arch::TopK { k: 8 },
        true,
    );
}

#[test]
fn saelens_v6_topk_rescaled_by_decoder_norm_matches_reference() {
    check_fixture(
        "saelens_v6_topk_rescaled",
        SaeFormat::SaeLens,
        Arch::TopK { k: 8 },
        true,
    );
}

#[test]
fn saelens_v6_jumprelu_matches_reference() {
    let sae = check_fixture(
        "saelens_v6_jumprelu",
        SaeFormat::SaeLens,
        Arch::JumpRelu,
        false,
    );
    assert!(sae.threshold.as_ref().is_some_and(|t| t[0] < 0.0));
}

#[test]
fn saelens_legacy_relu_matches_reference() {
    let sae = check_fixture(
        "saelens_legacy_relu",
        SaeFormat::SaeLensLegacy,
        Arch::Relu,
        true,
    );
    assert_eq!(sae.cfg.hook_name, "blocks.0.hook_mlp_out");
    assert_eq!(sae.cfg.model_name, "gelu-1l");
}

#[test]
fn sparsify_topk_matches_reference() {
    let sae = check_fixture(
        "sparsify_topk",
        SaeFormat::Sparsify,
        Arch::TopK { k: 8 },
        true,
    );
    assert_eq!(sae.cfg.hook_name, "sparsify_topk");
}

#[test]
fn gemma_scope_npz_matches_reference() {
    check_fixture(
        "gemma_scope_npz",
        SaeFormat::GemmaScopeNpz,
        Arch::JumpRelu,
        false,
    );
}

#[test]
fn gemma_scope_v2_safetensors_matches_reference() {
    check_fixture(
        "gemma_scope_v2",
        SaeFormat::GemmaScopeSafetensors,
        Arch::JumpRelu,
        false,
    );
}

#[test]
fn files_load_like_their_directories() {
    let (_, f) = load_sae(&fixture("gemma_scope_npz/params.npz")).unwrap();
    assert_eq!(f, SaeFormat::GemmaScopeNpz);
    let (_, f) = load_sae(&fixture("gemma_scope_v2/params.safetensors")).unwrap();
    assert_eq!(f, SaeFormat::GemmaScopeSafetensors);
    let (_, f) = load_sae(&fixture("saelens_v6_topk/cfg.json")).unwrap();
    assert_eq!(f, SaeFormat::SaeLens);
    let (_, f) = load_sae(&fixture("sparsify_topk/sae.safetensors")).unwrap();
    assert_eq!(f, SaeFormat::Sparsify);
}

/// Deterministic weights with values of every magnitude (an LCG; no rand dependency).
fn synthetic(arch: Arch, with_threshold: bool) -> SaeWeights {
    let (d_in, d_sae) = (6, 10);
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move |n: usize| -> Vec<f32> {
        (0..n)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 3.7
            })
            .collect()
    };
    SaeWeights {
        cfg: SaeConfig {
            d_in,
            d_sae,
            arch,
            apply_b_dec_to_input: !matches!(arch, Arch::JumpRelu),
            hook_name: "blocks.2.hook_resid_post".into(),
            model_name: "organism-tiny".into(),
        },
        w_enc: next(d_in * d_sae),
        b_enc: next(d_sae),
        w_dec: next(d_sae * d_in),
        b_dec: next(d_in),
        threshold: with_threshold.then(|| next(d_sae).into_iter().map(f32::abs).collect()),
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn save_saelens_round_trips_bit_exactly_for_every_arch() {
    let cases = [
        (Arch::Relu, false, Arch::Relu),
        (Arch::TopK { k: 3 }, false, Arch::TopK { k: 3 }),
        (Arch::JumpRelu, true, Arch::JumpRelu),
        (Arch::BatchTopK { k: 4 }, true, Arch::JumpRelu),
    ];
    for (arch, with_threshold, loaded_arch) in cases {
        let sae = synthetic(arch, with_threshold);
        let dir = tempfile::tempdir().unwrap();
        save_saelens(&sae, dir.path(), None).unwrap();
        let (back, format) = load_sae(dir.path()).unwrap();
        assert_eq!(format, SaeFormat::SaeLens, "{arch:?}");
        assert_eq!(
            back.cfg,
            SaeConfig {
                arch: loaded_arch,
                ..sae.cfg.clone()
            },
            "{arch:?}"
        );
        assert_eq!(bits(&back.w_enc), bits(&sae.w_enc), "{arch:?} w_enc");
        assert_eq!(bits(&back.b_enc), bits(&sae.b_enc), "{arch:?} b_enc");
        assert_eq!(bits(&back.w_dec), bits(&sae.w_dec), "{arch:?} w_dec");
        assert_eq!(bits(&back.b_dec), bits(&sae.b_dec), "{arch:?} b_dec");
        assert_eq!(
            back.threshold.as_deref().map(bits),
            sae.threshold.as_deref().map(bits),
            "{arch:?} threshold"
        );
        assert_eq!(load_log10_density(dir.path()).unwrap(), None);
    }
}

#[test]
fn batchtopk_without_threshold_cannot_be_saved() {
    let sae = synthetic(Arch::BatchTopK { k: 2 }, false);
    let dir = tempfile::tempdir().unwrap();
    let msg = save_saelens(&sae, dir.path(), None)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("BatchTopK needs a threshold"), "{msg}");
}

#[test]
fn a_saved_sae_with_k_beyond_d_sae_is_refused_at_load_as_the_trainer_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&synthetic(Arch::TopK { k: 3 }, false), dir.path(), None).unwrap();
    // Edit the saved config to k = 11 > d_sae = 10.
    let cfg = dir.path().join("cfg.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let text = v.to_string();
    assert!(text.contains("\"k\":3"), "{text}");
    let edited = text.replace("\"k\":3", "\"k\":11");
    v = serde_json::from_str(&edited).unwrap();
    std::fs::write(&cfg, v.to_string()).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("k = 11") && msg.contains("d_sae = 10"),
        "{msg}"
    );
}

#[test]
fn sparsity_round_trips() {
    let sae = synthetic(Arch::TopK { k: 2 }, false);
    let density: Vec<f32> = (0..10).map(|i| -(i as f32) * 0.37 - 1.0).collect();
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&sae, dir.path(), Some(&density)).unwrap();
    let back = load_log10_density(dir.path()).unwrap().unwrap();
    assert_eq!(bits(&back), bits(&density));
    let short = save_saelens(&sae, dir.path(), Some(&density[..3]))
        .unwrap_err()
        .to_string();
    assert!(
        short.contains("log10_density has 3 values, expected d_sae = 10"),
        "{short}"
    );
    save_saelens(&sae, dir.path(), None).unwrap();
    assert_eq!(
        load_log10_density(dir.path()).unwrap(),
        None,
        "stale density kept"
    );
}

#[test]
fn saved_cfg_has_the_keys_saelens_v6_requires() {
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&synthetic(Arch::TopK { k: 3 }, false), dir.path(), None).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("cfg.json")).unwrap()).unwrap();
    for key in [
        "d_in",
        "d_sae",
        "dtype",
        "device",
        "apply_b_dec_to_input",
        "normalize_activations",
        "reshape_activations",
        "architecture",
        "k",
    ] {
        assert!(cfg.get(key).is_some(), "cfg.json lacks `{key}`");
    }
    assert_eq!(cfg["architecture"], "topk");
    assert_eq!(cfg["metadata"]["sae_lens_version"], "6.0.0");
    assert_eq!(cfg["metadata"]["hook_name"], "blocks.2.hook_resid_post");
}

fn load_err(path: &Path) -> String {
    match load_sae(path) {
        Ok((_, f)) => panic!("{} loaded as {f:?}", path.display()),
        Err(e) => e.to_string(),
    }
}

/// A copy of the fixture `name` in a temporary directory.
fn copy_fixture(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(fixture(name)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

#[test]
fn missing_cfg_json_is_named() {
    let dir = copy_fixture("saelens_v6_topk");
    std::fs::remove_file(dir.path().join("cfg.json")).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("missing cfg.json") && msg.contains("sae_weights.safetensors"),
        "{msg}"
    );
}

#[test]
fn missing_weights_file_is_named() {
    let dir = copy_fixture("saelens_v6_jumprelu");
    std::fs::remove_file(dir.path().join("sae_weights.safetensors")).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("missing sae_weights.safetensors"), "{msg}");
    let dir = copy_fixture("sparsify_topk");
    std::fs::remove_file(dir.path().join("sae.safetensors")).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("missing sae.safetensors"), "{msg}");
}

#[test]
fn wrong_tensor_shape_names_tensor_and_expected_shape() {
    let mut sae = synthetic(Arch::Relu, false);
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&sae, dir.path(), None).unwrap();
    // Rewrite the weights with W_enc one latent short: [6, 9] instead of [6, 10].
    sae.cfg.d_sae = 9;
    sae.w_enc.truncate(54);
    sae.b_enc.truncate(9);
    sae.w_dec.truncate(54);
    let other = tempfile::tempdir().unwrap();
    save_saelens(&sae, other.path(), None).unwrap();
    std::fs::copy(
        other.path().join("sae_weights.safetensors"),
        dir.path().join("sae_weights.safetensors"),
    )
    .unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("sae_weights.safetensors") && msg.contains("`W_enc`"),
        "{msg}"
    );
    assert!(msg.contains("has shape [6, 9], expected [6, 10]"), "{msg}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = tempfile::tempdir().unwrap();
    save_saelens(&synthetic(Arch::JumpRelu, true), dir.path(), None).unwrap();
    // Same shapes, but written for a ReLU SAE: no `threshold` tensor.
    let relu = tempfile::tempdir().unwrap();
    save_saelens(&synthetic(Arch::Relu, false), relu.path(), None).unwrap();
    std::fs::copy(
        relu.path().join("sae_weights.safetensors"),
        dir.path().join("sae_weights.safetensors"),
    )
    .unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("missing tensor `threshold`"), "{msg}");
}

#[test]
fn unknown_and_unsupported_architectures_are_rejected() {
    let dir = copy_fixture("saelens_v6_standard");
    let cfg_path = dir.path().join("cfg.json");
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["architecture"] = "hyperbolic".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("cfg.json") && msg.contains("unknown SAE architecture \"hyperbolic\""),
        "{msg}"
    );
    cfg["architecture"] = "gated".into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("unsupported gated SAE architecture"), "{msg}");
}

#[test]
fn non_sae_directory_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("not a recognised SAE") && msg.contains("params.npz"),
        "{msg}"
    );
    std::fs::write(dir.path().join("cfg.json"), r#"{"vocab_size": 50257}"#).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("not a recognised SAE"), "{msg}");
    let missing = dir.path().join("nope");
    assert!(matches!(load_sae(&missing), Err(SaeError::Io { .. })));
}

#[test]
fn error_messages_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cfg.json"), "{ not json").unwrap();
    std::fs::write(dir.path().join("sae_weights.safetensors"), "junk").unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("cfg.json: invalid JSON"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn topk_ties_keep_the_lower_index() {
    let mut sae = synthetic(Arch::TopK { k: 2 }, false);
    sae.cfg.apply_b_dec_to_input = false;
    sae.w_enc.iter_mut().for_each(|w| *w = 0.0);
    sae.b_enc = vec![0.5, 1.0, 0.5, 1.0, 0.2, -1.0, 0.0, 0.0, 0.0, 0.0];
    let f = sae.encode(&[0.0; 6]);
    assert_eq!(f, [0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    sae.cfg.arch = Arch::TopK { k: 3 };
    let f = sae.encode(&[0.0; 6]);
    assert_eq!(f, [0.5, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn hook_names_are_recovered_from_release_paths() {
    let root = tempfile::tempdir().unwrap();
    let npz_dir = root
        .path()
        .join("gemma-scope-2b-pt-res/layer_20/width_16k/average_l0_71");
    std::fs::create_dir_all(&npz_dir).unwrap();
    std::fs::copy(
        fixture("gemma_scope_npz/params.npz"),
        npz_dir.join("params.npz"),
    )
    .unwrap();
    let (sae, _) = load_sae(&npz_dir).unwrap();
    assert_eq!(sae.cfg.hook_name, "blocks.20.hook_resid_post");

    let v2_dir = root.path().join("resid_post/layer_12_width_16k_l0_small");
    std::fs::create_dir_all(&v2_dir).unwrap();
    let v2 = v2_dir.join("params.safetensors");
    std::fs::copy(fixture("gemma_scope_v2/params.safetensors"), &v2).unwrap();
    let (sae, _) = load_sae(&v2).unwrap();
    assert_eq!(sae.cfg.hook_name, "blocks.12.hook_resid_post");

    let sparsify_dir = root.path().join("run/layers.6");
    std::fs::create_dir_all(&sparsify_dir).unwrap();
    for f in ["cfg.json", "sae.safetensors"] {
        std::fs::copy(fixture("sparsify_topk").join(f), sparsify_dir.join(f)).unwrap();
    }
    std::fs::write(
        root.path().join("run/config.json"),
        r#"{"model": "EleutherAI/pythia-70m"}"#,
    )
    .unwrap();
    let (sae, _) = load_sae(&sparsify_dir).unwrap();
    assert_eq!(sae.cfg.hook_name, "blocks.6.hook_resid_post");
    assert_eq!(sae.cfg.model_name, "EleutherAI/pythia-70m");
}

#[test]
fn f16_and_bf16_weights_are_converted_to_f32() {
    let (sae, _) = load_sae(&fixture("saelens_v6_standard")).unwrap();
    let (d_in, d_sae) = (sae.cfg.d_in, sae.cfg.d_sae);
    let tensors = [
        ("W_enc", vec![d_in, d_sae], &sae.w_enc),
        ("b_enc", vec![d_sae], &sae.b_enc),
        ("W_dec", vec![d_sae, d_in], &sae.w_dec),
        ("b_dec", vec![d_in], &sae.b_dec),
    ];
    for dtype in [Dtype::F16, Dtype::BF16] {
        let round = |v: f32| match dtype {
            Dtype::F16 => half::f16::from_f32(v).to_f32(),
            _ => half::bf16::from_f32(v).to_f32(),
        };
        let bytes: Vec<Vec<u8>> = tensors
            .iter()
            .map(|(_, _, data)| match dtype {
                Dtype::F16 => data
                    .iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
                _ => data
                    .iter()
                    .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
                    .collect(),
            })
            .collect();
        let views: Vec<_> = tensors
            .iter()
            .zip(&bytes)
            .map(|((name, shape, _), b)| {
                (
                    *name,
                    safetensors::tensor::TensorView::new(dtype, shape.clone(), b).unwrap(),
                )
            })
            .collect();
        let dir = copy_fixture("saelens_v6_standard");
        let file = dir.path().join("sae_weights.safetensors");
        std::fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();
        let (back, _) = load_sae(dir.path()).unwrap();
        let want: Vec<f32> = sae.w_enc.iter().map(|&v| round(v)).collect();
        assert_eq!(bits(&back.w_enc), bits(&want), "{dtype:?}");
        let want: Vec<f32> = sae.b_dec.iter().map(|&v| round(v)).collect();
        assert_eq!(bits(&back.b_dec), bits(&want), "{dtype:?}");
    }
}

#[test]
fn saelens_legacy_topk_from_activation_fn_kwargs() {
    let dir = copy_fixture("saelens_v6_topk");
    let cfg = serde_json::json!({
        "architecture": "standard",
        "d_in": 16,
        "d_sae": 48,
        "dtype": "torch.float32",
        "device": "cpu",
        "model_name": "pythia-70m-deduped",
        "hook_point": "blocks.4.hook_resid_post",
        "hook_point_layer": 4,
        "activation_fn_str": "topk",
        "activation_fn_kwargs": {"k": 8},
        "apply_b_dec_to_input": true,
        "normalize_activations": false,
    });
    std::fs::write(dir.path().join("cfg.json"), cfg.to_string()).unwrap();
    let (sae, format) = load_sae(dir.path()).unwrap();
    assert_eq!(format, SaeFormat::SaeLensLegacy);
    assert_eq!(sae.cfg.arch, Arch::TopK { k: 8 });
    assert_eq!(sae.cfg.hook_name, "blocks.4.hook_resid_post");
    let reference = fixture("saelens_v6_topk/reference.safetensors");
    let (_, x) = read_tensor(&reference, "x");
    let (_, acts) = read_tensor(&reference, "feature_acts");
    assert_close("legacy topk feature_acts", &sae.encode(&x), &acts);

    let gated = serde_json::json!({"architecture": "gated", "d_in": 16, "d_sae": 48, "activation_fn_str": "relu"});
    std::fs::write(dir.path().join("cfg.json"), gated.to_string()).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains("unsupported gated SAE architecture"), "{msg}");
}

// Fixtures written by the libraries themselves (tests/library_fixtures, made by
// make_library_fixtures.py with torch, sae-lens 6.54.12 and eai-sparsify 1.3.3).

fn library_fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/library_fixtures")
        .join(name)
}

#[test]
fn saves_of_saelens_itself_load_and_encode_like_saelens() {
    let cases = [
        ("saelens_standard", Arch::Relu),
        ("saelens_topk", Arch::TopK { k: 8 }),
        ("saelens_topk_rescaled", Arch::TopK { k: 8 }),
        ("saelens_jumprelu", Arch::JumpRelu),
    ];
    for (name, arch) in cases {
        check_dir(&library_fixture(name), SaeFormat::SaeLens, arch, true);
    }
}

#[test]
fn saves_of_sparsify_itself_load_and_encode_like_sparsify() {
    let dir = library_fixture("sparsify_topk");
    check_dir(&dir, SaeFormat::Sparsify, Arch::TopK { k: 8 }, true);
}

/// Lantern's SAELens files, on fixed weights, are the ones SAELens was shown to read:
/// byte for byte what is committed in `library_fixtures/lantern_*`, where
/// `reference.safetensors` holds SAELens's own forward pass of the loaded files. With
/// `LANTERN_BLESS=1` the files are rewritten instead (then rerun the Python script).
#[test]
fn saelens_reads_what_lantern_writes() {
    let cases = [
        ("lantern_relu", Arch::Relu, false),
        ("lantern_topk", Arch::TopK { k: 3 }, false),
        ("lantern_jumprelu", Arch::JumpRelu, true),
        ("lantern_batchtopk", Arch::BatchTopK { k: 4 }, true),
    ];
    let bless = std::env::var("LANTERN_BLESS").is_ok_and(|v| v == "1");
    for (name, arch, with_threshold) in cases {
        let sae = synthetic(arch, with_threshold);
        let dir = library_fixture(name);
        if bless {
            save_saelens(&sae, &dir, None).unwrap();
            continue;
        }
        let fresh = tempfile::tempdir().unwrap();
        save_saelens(&sae, fresh.path(), None).unwrap();
        let stale = "rerun with LANTERN_BLESS=1, then make_library_fixtures.py";
        let weights = "sae_weights.safetensors";
        assert!(
            std::fs::read(fresh.path().join(weights)).unwrap()
                == std::fs::read(dir.join(weights)).unwrap(),
            "{name}/{weights}: Lantern now writes other bytes than SAELens was checked on; {stale}"
        );
        let cfg = |d: &Path| {
            let mut v: serde_json::Value =
                serde_json::from_slice(&std::fs::read(d.join("cfg.json")).unwrap()).unwrap();
            v["metadata"]["lantern_version"] = serde_json::Value::Null;
            v
        };
        assert_eq!(
            cfg(fresh.path()),
            cfg(&dir),
            "{name}/cfg.json: Lantern now writes another config than SAELens was checked on; {stale}"
        );
        // The files SAELens read give Lantern SAELens's forward pass (BatchTopK as the
        // JumpReLU it is exported as).
        let (loaded, _) = load_sae(&dir).unwrap();
        check_forward(&loaded, &dir);
    }
}
