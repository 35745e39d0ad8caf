//! `diff_latents` (device encode, scatter-add per sequence, weighted-bootstrap matmul)
//! against a naive host implementation: the f64 reference forward of `SaeWeights`, plain
//! loops over sequences, and the same Poisson weights per sequence.

use std::path::Path;

use burn::tensor::Device;
use lantern_acts::{Dtype, Rng, Store, StoreMeta, StoreWriter, WriterOptions};
use lantern_sae::{Arch, Sae, SaeConfig, SaeWeights};
use lantern_search::diff::{poisson_weights, quantile};
use lantern_search::{DiffOptions, TokenSelection, diff_latents};

const D: usize = 6;
const M: usize = 10;

/// Per sequence: its rows `[n, D]` and roles.
type Seqs = Vec<(Vec<f32>, Vec<u8>)>;
/// Per sequence: `Σ_t z(t) [M]`, selected tokens, fires `[M]`.
type Sums = Vec<(Vec<f64>, usize, Vec<f64>)>;

/// Sequences of 1–9 tokens with roles (first two tokens prompt); returns the store and, per
/// sequence, its rows and roles.
fn store(dir: &Path, seed: u64, n_seq: u32, shift: f32) -> (Store, Seqs) {
    let meta = StoreMeta::new(D, Dtype::F32, "blocks.1.hook_resid_post", "toy");
    let mut w = StoreWriter::create(
        dir,
        meta,
        WriterOptions {
            shard_rows: 13,
            ..Default::default()
        },
    )
    .unwrap();
    let mut rng = Rng::new(seed);
    let mut seqs = Vec::new();
    for s in 0..n_seq {
        let n = 1 + rng.below(9) as usize;
        let acts: Vec<f32> = (0..n * D)
            .map(|i| rng.normal_f32() + if i % D == 0 { shift } else { 0.0 })
            .collect();
        let roles: Vec<u8> = (0..n).map(|t| u8::from(t >= 2)).collect();
        let ids: Vec<u32> = (0..n as u32).collect();
        w.push(&acts, &ids, &vec![s; n], &ids, Some(&roles))
            .unwrap();
        seqs.push((acts, roles));
    }
    w.finish().unwrap();
    (Store::open(dir).unwrap(), seqs)
}

fn sae(arch: Arch) -> SaeWeights {
    let mut rng = Rng::new(5);
    SaeWeights {
        cfg: SaeConfig {
            d_in: D,
            d_sae: M,
            arch,
            apply_b_dec_to_input: true,
            hook_name: "blocks.1.hook_resid_post".into(),
            model_name: String::new(),
        },
        w_enc: (0..D * M).map(|_| rng.normal_f32() * 0.5).collect(),
        b_enc: (0..M).map(|_| rng.normal_f32() * 0.1).collect(),
        w_dec: (0..M * D).map(|_| rng.normal_f32()).collect(),
        b_dec: (0..D).map(|_| rng.normal_f32() * 0.1).collect(),
        threshold: None,
    }
}

/// Per selected sequence: (Σ_t z(t) [M], tokens, fires [M]).
fn naive_sums(
    w: &SaeWeights,
    seqs: &[(Vec<f32>, Vec<u8>)],
    answer_only: bool,
) -> Vec<(Vec<f64>, usize, Vec<f64>)> {
    seqs.iter()
        .map(|(acts, roles)| {
            let mut sum = vec![0f64; M];
            let mut fires = vec![0f64; M];
            let mut n = 0;
            for (t, &r) in roles.iter().enumerate() {
                if answer_only && r != 1 {
                    continue;
                }
                n += 1;
                let z = w.encode(&acts[t * D..(t + 1) * D]);
                for i in 0..M {
                    sum[i] += z[i] as f64;
                    fires[i] += f64::from(u8::from(z[i] > 0.0));
                }
            }
            (sum, n, fires)
        })
        .collect()
}

#[test]
fn streaming_device_diff_matches_a_naive_host_diff_with_the_same_bootstrap_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, bs) = store(&tmp.path().join("base"), 1, 30, 0.0);
    let (ft1, f1) = store(&tmp.path().join("ft1"), 2, 25, 0.8);
    let (ft2, f2) = store(&tmp.path().join("ft2"), 3, 20, 0.4);
    for (arch, answer_only) in [(Arch::Relu, false), (Arch::TopK { k: 3 }, true)] {
        let w = sae(arch);
        let dev = Device::flex();
        let model = Sae::from_weights(&w, &dev).unwrap();
        let selection: TokenSelection = if answer_only { "answer" } else { "all" }.parse().unwrap();
        let b = 64;
        // A batch of 7 rows: sequences straddle every batch boundary of the stores' shards.
        let opts = DiffOptions {
            selection,
            batch_rows: 7,
            bootstrap: b,
            seed: 9,
        };
        let report =
            diff_latents(&model, &base, &[ft1.clone(), ft2.clone()], &opts, |_| {}).unwrap();

        let sets: Vec<Sums> = [&bs, &f1, &f2]
            .iter()
            .map(|s| naive_sums(&w, s, answer_only))
            .collect();
        let mean =
            |set: &[(Vec<f64>, usize, Vec<f64>)], i: usize, weights: Option<&[Vec<f32>]>| -> f64 {
                let (mut num, mut den) = (0.0, 0.0);
                let mut k = 0;
                for (sum, n, _) in set.iter() {
                    if *n == 0 {
                        continue; // sequences without selected tokens get no weight
                    }
                    let wgt = weights.map_or(1.0, |ws| ws[k][0] as f64);
                    num += wgt * sum[i];
                    den += wgt * *n as f64;
                    k += 1;
                }
                num / den
            };
        let rate = |set: &[(Vec<f64>, usize, Vec<f64>)], i: usize| -> f64 {
            set.iter().map(|s| s.2[i]).sum::<f64>() / set.iter().map(|s| s.1 as f64).sum::<f64>()
        };
        for l in &report.latents {
            let i = l.latent;
            let per: Vec<f64> = (1..3)
                .map(|f| mean(&sets[f], i, None) - mean(&sets[0], i, None))
                .collect();
            let delta = (per[0] + per[1]) / 2.0;
            assert!(
                (l.delta_mean - delta).abs() < 1e-4,
                "{arch:?} latent {i}: Δ {} vs naive {delta}",
                l.delta_mean
            );
            let dr = (rate(&sets[1], i) + rate(&sets[2], i)) / 2.0 - rate(&sets[0], i);
            assert!(
                (l.delta_rate - dr).abs() < 1e-9,
                "{arch:?} latent {i}: Δ rate"
            );
            // The bootstrap: replicate r weighs the k-th selected sequence of store s by
            // poisson_weights(seed, s, ordinal, B)[r], ordinal counting every sequence.
            let mut reps = Vec::new();
            for r in 0..b {
                let w_of = |s: usize, set: &[(Vec<f64>, usize, Vec<f64>)]| -> Vec<Vec<f32>> {
                    set.iter()
                        .enumerate()
                        .filter(|(_, x)| x.1 > 0)
                        .map(|(o, _)| vec![poisson_weights(9, s as u64, o as u64, b)[r]])
                        .collect()
                };
                let m: Vec<f64> = (0..3)
                    .map(|s| mean(&sets[s], i, Some(&w_of(s, &sets[s]))))
                    .collect();
                let dlt = (m[1] + m[2]) / 2.0 - m[0];
                if dlt.is_finite() {
                    reps.push(dlt);
                }
            }
            reps.sort_by(f64::total_cmp);
            let (lo, hi) = (quantile(&reps, 0.025), quantile(&reps, 0.975));
            assert!(
                (l.ci95[0] - lo).abs() < 1e-4 && (l.ci95[1] - hi).abs() < 1e-4,
                "{arch:?} latent {i}: {:?} vs naive [{lo}, {hi}]",
                l.ci95
            );
        }
        // Sorted by Δ, largest first.
        assert!(
            report
                .latents
                .windows(2)
                .all(|p| p[0].delta_mean >= p[1].delta_mean)
        );
        assert_eq!(
            report.base.sequences,
            bs.iter()
                .filter(|s| !answer_only || s.1.contains(&1))
                .count() as u64
        );
    }
}

#[test]
fn top_contexts_and_alignment_match_a_naive_scan() {
    use lantern_search::{ContextOptions, aligned_latents, top_contexts};
    let tmp = tempfile::tempdir().unwrap();
    let (store, seqs) = store(&tmp.path().join("s"), 4, 40, 0.3);
    let w = sae(Arch::Relu);
    let model = Sae::from_weights(&w, &Device::flex()).unwrap();
    let opts = ContextOptions {
        top: 5,
        window: 2,
        batch_rows: 9,
        ..Default::default()
    };
    let found = top_contexts(&model, &store, &[3, 7], &opts).unwrap();
    for l in &found {
        // Every (sequence, position, activation) of the latent, by the host reference forward.
        let mut all: Vec<(f32, usize, usize)> = Vec::new();
        for (s, (acts, _)) in seqs.iter().enumerate() {
            for t in 0..acts.len() / D {
                let z = w.encode(&acts[t * D..(t + 1) * D])[l.latent];
                if z > 0.0 {
                    all.push((z, s, t));
                }
            }
        }
        all.sort_by(|a, b| b.0.total_cmp(&a.0));
        let tokens: usize = seqs.iter().map(|s| s.0.len() / D).sum();
        assert_eq!(l.fires as usize, all.len());
        assert!((l.density - all.len() as f64 / tokens as f64).abs() < 1e-12);
        for (c, want) in l.contexts.iter().zip(&all) {
            assert!(
                (c.activation - want.0).abs() < 1e-4,
                "{} vs {}",
                c.activation,
                want.0
            );
            assert_eq!((c.seq_id as usize, c.position as usize), (want.1, want.2));
            assert_eq!(c.acts[c.focus], c.activation);
            assert!(c.tokens.len() <= 2 * opts.window + 1);
        }
    }
    // Alignment: a direction equal to decoder row 6 puts latent 6 first with cosine 1.
    let v = w.w_dec[6 * D..7 * D].to_vec();
    let a = aligned_latents(&w, &v, 3);
    assert_eq!(a[0].latent, 6);
    assert!((a[0].cos_dec - 1.0).abs() < 1e-6 && a[1].cos_dec < a[0].cos_dec);
}

#[test]
fn activation_difference_lens_is_the_per_position_mean_difference_on_the_same_text() {
    let tmp = tempfile::tempdir().unwrap();
    // Same seed: same lengths, token ids and noise; the finetune adds 0.8 to axis 0.
    let (base, bs) = store(&tmp.path().join("base"), 6, 30, 0.0);
    let (ft, fs) = store(&tmp.path().join("ft"), 6, 30, 0.8);
    let got = lantern_search::adl::activation_difference(&base, &ft, 4).unwrap();
    assert_eq!(got.len(), 4);
    for (p, n, v) in &got {
        let rows: Vec<usize> = (0..bs.len()).filter(|&s| bs[s].0.len() / D > *p).collect();
        assert_eq!(*n as usize, rows.len());
        for (k, &got_k) in v.iter().enumerate() {
            let want: f64 = rows
                .iter()
                .map(|&s| (fs[s].0[p * D + k] - bs[s].0[p * D + k]) as f64)
                .sum::<f64>()
                / rows.len() as f64;
            assert!(
                (got_k as f64 - want).abs() < 1e-5,
                "position {p} dim {k}: {got_k} vs {want}"
            );
        }
        assert!((v[0] - 0.8).abs() < 1e-5);
    }
    // Other text (another seed: other lengths) is refused with a one-line error.
    let (other, _) = store(&tmp.path().join("other"), 7, 30, 0.8);
    let e = lantern_search::adl::activation_difference(&base, &other, 4)
        .unwrap_err()
        .to_string();
    assert!(e.contains("same text") && e.contains("other"), "{e}");
}
