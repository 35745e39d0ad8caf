//! Synthetic stores: checked against the model's statistics, not against the generator's code.

use std::path::Path;

use lantern_acts::{
    BatchReader, Dtype, GROUND_TRUTH_FILE, GroundTruth, Hierarchy, ReaderOptions, Store,
    SynthConfig, synthesize,
};

fn cfg(d: usize, features: usize, rows: u64, noise: f32) -> SynthConfig {
    SynthConfig {
        d,
        features,
        rows,
        noise,
        seed: 42,
        shard_rows: Some(5000),
        ..Default::default()
    }
}

/// All rows of a store: (acts [n, d], token_ids, seq_ids, positions).
fn read_all(dir: &Path) -> (Vec<f32>, Vec<u32>, Vec<u32>, Vec<u32>) {
    let store = Store::open(dir).unwrap();
    let opts = ReaderOptions {
        batch_rows: 1 << 20,
        ..Default::default()
    };
    let b = BatchReader::new(store, opts)
        .unwrap()
        .next_batch()
        .unwrap()
        .unwrap();
    (b.acts, b.token_ids, b.seq_ids, b.positions)
}

/// Least-squares coefficients of `x` on the rows of `f` ([m, d], m <= d) via the normal
/// equations (Cholesky of the Gram matrix, precomputed in `chol`). Returns (coeffs, residual²).
fn project(f: &[f32], d: usize, chol: &[f64], x: &[f32]) -> (Vec<f64>, f64) {
    let m = f.len() / d;
    let b: Vec<f64> = (0..m).map(|i| dot(&f[i * d..(i + 1) * d], x)).collect();
    // Solve L y = b, then Lᵀ a = y.
    let mut y = vec![0.0; m];
    for i in 0..m {
        y[i] = (b[i] - (0..i).map(|k| chol[i * m + k] * y[k]).sum::<f64>()) / chol[i * m + i];
    }
    let mut a = vec![0.0; m];
    for i in (0..m).rev() {
        a[i] = (y[i] - (i + 1..m).map(|k| chol[k * m + i] * a[k]).sum::<f64>()) / chol[i * m + i];
    }
    let res: f64 = (0..d)
        .map(|j| {
            let fit: f64 = (0..m).map(|i| a[i] * f64::from(f[i * d + j])).sum();
            (f64::from(x[j]) - fit).powi(2)
        })
        .sum();
    (a, res)
}

fn dot(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum()
}

/// Lower Cholesky factor of F Fᵀ.
fn gram_cholesky(f: &[f32], d: usize) -> Vec<f64> {
    let m = f.len() / d;
    let g = |i: usize, j: usize| dot(&f[i * d..(i + 1) * d], &f[j * d..(j + 1) * d]);
    let mut l = vec![0.0; m * m];
    for i in 0..m {
        for j in 0..=i {
            let s: f64 = g(i, j) - (0..j).map(|k| l[i * m + k] * l[j * m + k]).sum::<f64>();
            l[i * m + j] = if i == j { s.sqrt() } else { s / l[j * m + j] };
        }
    }
    l
}

#[test]
fn frequencies_follow_the_power_law_and_sum_to_mean_active() {
    let dir = tempfile::tempdir().unwrap();
    let truth = synthesize(&cfg(16, 200, 10, 0.05), dir.path()).unwrap();
    assert_eq!(
        (truth.d, truth.num_features(), truth.features.len()),
        (16, 200, 3200)
    );
    // Unclamped here (c < 1), so p_i = 8 (i+1)^-0.6 / Σ_k (k+1)^-0.6.
    let z: f64 = (1..=200).map(|k| (k as f64).powf(-0.6)).sum();
    for (i, &p) in truth.frequencies.iter().enumerate() {
        let want = 8.0 * ((i + 1) as f64).powf(-0.6) / z;
        assert!(
            (f64::from(p) - want).abs() < 1e-6,
            "p_{i} = {p}, want {want}"
        );
    }
    let sum: f64 = truth.frequencies.iter().map(|&p| f64::from(p)).sum();
    assert!((sum - 8.0).abs() < 1e-4, "sum {sum}");
    for f in truth.features.chunks(16) {
        let n = dot(f, f).sqrt();
        assert!((n - 1.0).abs() < 1e-5, "norm {n}");
    }

    // Clamped: 10 features, 9 expected active; the top ones saturate at 1.
    let dir = tempfile::tempdir().unwrap();
    let truth = synthesize(&cfg(4, 10, 10, 0.0), dir.path()).unwrap();
    let sum: f32 = truth.frequencies.iter().sum();
    assert!((sum - 8.0).abs() < 1e-4, "{:?}", truth.frequencies);
    let dir = tempfile::tempdir().unwrap();
    let c = SynthConfig {
        mean_active: 9.0,
        ..cfg(4, 10, 10, 0.0)
    };
    let truth = synthesize(&c, dir.path()).unwrap();
    let sum: f32 = truth.frequencies.iter().sum();
    assert!(
        (sum - 9.0).abs() < 1e-4 && truth.frequencies[0] == 1.0,
        "{:?}",
        truth.frequencies
    );
    assert!(truth.frequencies.iter().all(|&p| p <= 1.0));
}

#[test]
fn noiseless_rows_are_sparse_combinations_of_the_true_features() {
    let dir = tempfile::tempdir().unwrap();
    let (d, m, n) = (96, 48, 20_000);
    let truth = synthesize(&cfg(d, m, n, 0.0), dir.path()).unwrap();
    let (acts, tokens, seqs, positions) = read_all(dir.path());
    assert_eq!(acts.len(), n as usize * d);
    let chol = gram_cholesky(&truth.features, d);
    let mut fired = vec![0u64; m];
    let mut l0 = 0u64;
    for (r, x) in acts.chunks(d).enumerate() {
        let (a, res) = project(&truth.features, d, &chol, x);
        assert!(
            res < 1e-8,
            "row {r}: residual² {res} outside the span of the features"
        );
        let active: Vec<usize> = (0..m).filter(|&i| a[i].abs() > 1e-3).collect();
        for &i in &active {
            assert!(
                (0.5 - 1e-3..1.5 + 1e-3).contains(&a[i]),
                "row {r}: a_{i} = {}",
                a[i]
            );
            fired[i] += 1;
        }
        l0 += active.len() as u64;
        let argmax = active
            .iter()
            .copied()
            .max_by(|&i, &j| a[i].total_cmp(&a[j]))
            .unwrap_or(0);
        assert_eq!(
            tokens[r] as usize, argmax,
            "row {r}: token_id = strongest feature"
        );
        assert_eq!(
            (seqs[r], positions[r]),
            ((r / 128) as u32, (r % 128) as u32)
        );
    }
    let mean_l0 = l0 as f64 / n as f64;
    assert!((mean_l0 - 8.0).abs() < 0.1, "mean L0 {mean_l0}");
    for (i, (&p, &count)) in truth.frequencies.iter().zip(&fired).enumerate() {
        let p = f64::from(p);
        let sd = (p * (1.0 - p) / n as f64).sqrt();
        let rate = count as f64 / n as f64;
        assert!(
            (rate - p).abs() < 5.0 * sd + 1e-4,
            "feature {i}: rate {rate}, p {p}"
        );
    }
}

#[test]
fn noise_has_the_configured_norm() {
    let dir = tempfile::tempdir().unwrap();
    let (d, m, n, noise) = (64, 16, 4000, 0.5f32);
    let truth = synthesize(&cfg(d, m, n, noise), dir.path()).unwrap();
    let (acts, ..) = read_all(dir.path());
    let chol = gram_cholesky(&truth.features, d);
    // The part of ε orthogonal to the m features has E‖·‖² = noise² (d − m) / d.
    let mean_res: f64 = acts
        .chunks(d)
        .map(|x| project(&truth.features, d, &chol, x).1)
        .sum::<f64>()
        / n as f64;
    let want = f64::from(noise * noise) * (d - m) as f64 / d as f64;
    assert!(
        (mean_res / want - 1.0).abs() < 0.03,
        "residual² {mean_res}, want {want}"
    );
}

#[test]
fn output_depends_on_the_seed_not_on_the_thread_count() {
    let run = |threads: usize, seed: u64, dtype: Dtype| {
        let dir = tempfile::tempdir().unwrap();
        let c = SynthConfig {
            seed,
            dtype,
            ..cfg(8, 32, 10_000, 0.1)
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| synthesize(&c, dir.path())).unwrap();
        let m = Store::open(dir.path()).unwrap().manifest().clone();
        m.shards.iter().map(|s| s.crc32).collect::<Vec<_>>()
    };
    let one = run(1, 7, Dtype::F16);
    assert_eq!(one.len(), 2);
    assert_eq!(one, run(3, 7, Dtype::F16));
    assert_ne!(one, run(3, 8, Dtype::F16));
}

#[test]
fn ground_truth_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let truth = synthesize(&cfg(8, 20, 100, 0.05), dir.path()).unwrap();
    let loaded = GroundTruth::load(&dir.path().join(GROUND_TRUTH_FILE)).unwrap();
    assert_eq!(loaded, truth);
    let st_bytes = std::fs::read(dir.path().join(GROUND_TRUTH_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
    assert_eq!(st.tensor("features").unwrap().shape(), [20, 8]);
    assert_eq!(st.tensor("frequencies").unwrap().shape(), [20]);
    let other = dir.path().join("copy.safetensors");
    truth.save(&other).unwrap();
    assert_eq!(GroundTruth::load(&other).unwrap(), truth);
    // The store itself ignores the extra file.
    Store::open(dir.path()).unwrap().verify().unwrap();
}

#[test]
fn bad_configs_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    for c in [
        SynthConfig {
            mean_active: 11.0,
            ..cfg(4, 10, 10, 0.0)
        },
        SynthConfig {
            features: 0,
            ..cfg(4, 10, 10, 0.0)
        },
        SynthConfig {
            d: 0,
            ..cfg(4, 10, 10, 0.0)
        },
        SynthConfig {
            noise: -1.0,
            ..cfg(4, 10, 10, 0.0)
        },
    ] {
        let err = synthesize(&c, &dir.path().join("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("synthesize"), "{err}");
    }
}

/// Timing check, run by hand: `cargo test --release --test synth -- --ignored --nocapture`.
#[test]
#[ignore = "writes 2.5 GB; run by hand to time synthesis"]
fn five_million_rows_at_d128_time() {
    let dir = tempfile::tempdir().unwrap();
    let c = SynthConfig {
        d: 128,
        features: 4096,
        rows: 5_000_000,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    synthesize(&c, dir.path()).unwrap();
    eprintln!("5M rows x 128: {:.1} s", t.elapsed().as_secs_f64());
}

#[test]
fn planted_features_fire_at_their_rate_and_row_seed_keeps_the_dictionary() {
    // A dictionary that (almost) never fires and no noise: a row is non-zero exactly when the
    // planted feature fired.
    let c = SynthConfig {
        mean_active: 1e-12,
        planted: vec![0.3],
        ..cfg(4, 1, 20_000, 0.0)
    };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let ta = synthesize(&c, a.path()).unwrap();
    let tb = synthesize(
        &SynthConfig {
            row_seed: Some(7),
            ..c.clone()
        },
        b.path(),
    )
    .unwrap();
    assert_eq!(ta.num_features(), 2);
    assert_eq!(ta.frequencies[1], 0.3);
    assert_eq!(ta.features, tb.features, "one seed, one dictionary");
    let (xa, ..) = read_all(a.path());
    let (xb, ..) = read_all(b.path());
    assert_ne!(xa, xb, "another row seed gives other rows");
    for x in [&xa, &xb] {
        let fired = x.chunks(4).filter(|r| r.iter().any(|v| *v != 0.0)).count() as f64;
        // Binomial(20000, 0.3): sd ≈ 65 rows; allow 5 sd.
        assert!((fired - 6000.0).abs() < 325.0, "{fired} rows fired");
    }
    let bad = SynthConfig {
        planted: vec![1.5],
        ..c
    };
    assert!(
        synthesize(&bad, tempfile::tempdir().unwrap().path())
            .unwrap_err()
            .to_string()
            .contains("planted firing probability 1.5")
    );
}

/// A hierarchy of 3 parents × 2 children beside a dictionary that (almost) never fires, no
/// noise: each row's amplitudes are recovered exactly by least squares, so the rule can be
/// read off the rows — a child only with its parent, never two children of one parent, the
/// rates as asked — and the ground truth records each child's parent. The labelled sampler
/// (`GroundTruth::sample`) follows the same law.
#[test]
fn hierarchy_children_fire_only_with_their_parent_at_the_asked_rates() {
    let (d, rows) = (32, 30_000u64);
    let c = SynthConfig {
        mean_active: 1e-12,
        hierarchy: Some(Hierarchy {
            parents: 3,
            children: 2,
            parent_rate: 0.2,
            child_rate: 0.6,
        }),
        ..cfg(d, 1, rows, 0.0)
    };
    let tmp = tempfile::tempdir().unwrap();
    let truth = synthesize(&c, tmp.path()).unwrap();
    assert_eq!(truth.num_features(), 1 + 3 + 6);
    assert_eq!(truth.parent, [-1, -1, -1, -1, 1, 1, 2, 2, 3, 3]);
    assert_eq!(truth.frequencies[1], 0.2);
    assert!((truth.frequencies[4] - 0.06).abs() < 1e-7);
    assert_eq!(
        GroundTruth::load(&tmp.path().join(GROUND_TRUTH_FILE)).unwrap(),
        truth
    );
    let chol = gram_cholesky(&truth.features, d);
    let (x, ..) = read_all(tmp.path());
    let mut counts = [0u64; 10];
    let check = |fired: &[bool], counts: &mut [u64; 10]| {
        for p in 0..3 {
            let kids = [4 + 2 * p, 5 + 2 * p];
            assert!(
                !(fired[kids[0]] && fired[kids[1]]),
                "two children of parent {p}"
            );
            if fired[kids[0]] || fired[kids[1]] {
                assert!(fired[1 + p], "a child of parent {p} fired without it");
            }
        }
        for (c, f) in counts.iter_mut().zip(fired) {
            *c += u64::from(*f);
        }
    };
    for row in x.chunks(d) {
        let (a, res) = project(&truth.features, d, &chol, row);
        assert!(res < 1e-6, "residual {res}");
        let fired: Vec<bool> = a.iter().map(|v| *v > 0.25).collect();
        // Amplitudes are 0 or in [0.5, 1.5].
        assert!(
            a.iter()
                .all(|v| v.abs() < 1e-3 || (0.499..1.501).contains(v)),
            "{a:?}"
        );
        check(&fired, &mut counts);
    }
    // Binomial(30000, 0.2): sd ≈ 69 rows; children (0.06): sd ≈ 41; allow 5 sd.
    let rates = |counts: &[u64; 10]| {
        for p in 0..3 {
            assert!((counts[1 + p] as f64 - 6000.0).abs() < 350.0, "{counts:?}");
            for c in 0..2 {
                let n = counts[4 + 2 * p + c] as f64;
                assert!((n - 1800.0).abs() < 210.0, "{counts:?}");
            }
        }
    };
    rates(&counts);
    let sample = truth.sample(30_000, 5);
    let mut counts = [0u64; 10];
    for (row, active) in sample.acts.chunks(d).zip(&sample.active) {
        let fired: Vec<bool> = (0..10).map(|j| active.contains(&(j as u32))).collect();
        check(&fired, &mut counts);
        let (a, _) = project(&truth.features, d, &chol, row);
        for (j, f) in fired.iter().enumerate() {
            assert_eq!(a[j] > 0.25, *f, "sampled labels and rows disagree");
        }
    }
    rates(&counts);
    let bad = SynthConfig {
        hierarchy: Some(Hierarchy {
            parents: 2,
            children: 0,
            parent_rate: 0.1,
            child_rate: 0.5,
        }),
        ..c
    };
    let err = synthesize(&bad, tempfile::tempdir().unwrap().path()).unwrap_err();
    assert!(
        err.to_string().contains("at least 1 parent and 1 child"),
        "{err}"
    );
}

#[test]
fn a_store_that_cannot_fit_is_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("huge");
    // 10¹⁵ rows of d 64 is exabytes: more than any disk here.
    let err = lantern_acts::synthesize(&cfg(64, 128, 1_000_000_000_000_000, 0.0), &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("huge") && err.contains("GiB are free"),
        "{err}"
    );
    assert!(!out.join("manifest.json").exists());
    // A dictionary of 10⁹ features × d 10⁴ is 37 TiB of memory.
    let mut c = cfg(10_000, 1_000_000_000, 10, 0.0);
    c.mean_active = 1.0;
    let err = lantern_acts::synthesize(&c, &out).unwrap_err().to_string();
    assert!(err.contains("memory available"), "{err}");
}
