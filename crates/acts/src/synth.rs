//! Synthetic activation stores with known ground-truth features, for testing SAEs.

use std::path::Path;

use rayon::prelude::*;
use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use crate::error::{Result, invalid, usage};
use crate::manifest::{Dtype, StoreMeta};
use crate::rng::{Rng, derive_seed};
use crate::shard::map_file;
use crate::writer::{StoreWriter, WriterOptions};

/// Rows per RNG chunk.
const CHUNK_ROWS: u64 = 4096;
/// Name of the ground-truth file written next to the shards.
pub const GROUND_TRUTH_FILE: &str = "ground_truth.safetensors";
/// Tokens per synthetic "sequence" (for `seq_id` / `position`).
const SEQ_LEN: u64 = 128;
/// Stream tags so feature directions and rows never share an RNG stream.
const FEATURE_STREAM: u64 = 0xfea7;
const ROW_STREAM: u64 = 0x0505;

/// Shape and statistics of a synthetic store.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    pub d: usize,
    pub features: usize,
    pub rows: u64,
    /// Expected number of firing features per row (Σ p_i).
    pub mean_active: f64,
    /// Power-law exponent of the firing probabilities.
    pub alpha: f64,
    /// Expected norm of the noise vector.
    pub noise: f32,
    pub seed: u64,
    pub dtype: Dtype,
    pub shard_rows: Option<usize>,
    /// Extra "planted" features appended after the power-law dictionary (indices
    /// `features..features + planted.len()`), each firing independently with the given
    /// probability — a feature whose rate a test controls exactly (e.g. a persona feature at
    /// 0.5 % in a base store and 10 % in a finetuned one).
    pub planted: Vec<f64>,
    /// Seed of the rows, when it should differ from `seed` (which also fixes the feature
    /// directions): two stores with one `seed` and different `row_seed`s share a dictionary.
    pub row_seed: Option<u64>,
    /// Parent features with children that fire only with their parent, appended after the
    /// planted features: the setting in which an SAE absorbs a parent into its children.
    pub hierarchy: Option<Hierarchy>,
}

/// A two-level feature hierarchy (Chanin et al. 2024, "A is for Absorption"): `parents`
/// parent features, each with `children` child features. A parent fires with probability
/// `parent_rate`; when it fires, with probability `child_rate` exactly one of its children
/// (chosen uniformly) fires with it. A child never fires without its parent, and two children
/// of one parent never fire together. Parent `p` is feature `base + p`, its child `c` is
/// feature `base + parents + p·children + c`, where `base = features + planted`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hierarchy {
    pub parents: usize,
    pub children: usize,
    pub parent_rate: f64,
    pub child_rate: f64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            d: 64,
            features: 512,
            rows: 100_000,
            mean_active: 8.0,
            alpha: 0.6,
            noise: 0.05,
            seed: 0,
            dtype: Dtype::F32,
            shard_rows: None,
            planted: Vec::new(),
            row_seed: None,
            hierarchy: None,
        }
    }
}

/// The features a synthetic store was built from.
#[derive(Clone, Debug, PartialEq)]
pub struct GroundTruth {
    pub d: usize,
    /// `[m, d]`, unit-norm rows.
    pub features: Vec<f32>,
    /// `[m]`, firing probability of each feature.
    pub frequencies: Vec<f32>,
    /// `[m]`: the parent of each child feature of a [`Hierarchy`], `-1` for the rest (all
    /// `-1` in files written before hierarchies existed).
    pub parent: Vec<i32>,
    /// The norm of the noise the rows were made with (`None` in older files).
    pub noise: Option<f32>,
}

/// Rows drawn from a [`GroundTruth`] with the features that fired in each
/// ([`GroundTruth::sample`]).
#[derive(Clone, Debug)]
pub struct LabelledRows {
    /// `[rows, d]`.
    pub acts: Vec<f32>,
    /// The firing features of each row, ascending.
    pub active: Vec<Vec<u32>>,
}

impl GroundTruth {
    /// Number of features `m`.
    pub fn num_features(&self) -> usize {
        self.frequencies.len()
    }

    /// Reads a safetensors file with `features [m, d]` F32 and `frequencies [m]` F32.
    pub fn load(path: &Path) -> Result<Self> {
        let mmap = map_file(path)?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| invalid(path, format!("not a valid safetensors file: {e}")))?;
        let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let t = st
                .tensor(name)
                .map_err(|_| invalid(path, format!("missing tensor `{name}`")))?;
            if t.dtype() != safetensors::Dtype::F32 {
                return Err(invalid(
                    path,
                    format!("tensor `{name}` is {:?}, expected F32", t.dtype()),
                ));
            }
            let v = t
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok((t.shape().to_vec(), v))
        };
        let (fs, features) = get("features")?;
        let (qs, frequencies) = get("frequencies")?;
        let (m, d) = match (fs.as_slice(), qs.as_slice()) {
            (&[m, d], &[m2]) if m == m2 && d > 0 => (m, d),
            _ => {
                return Err(invalid(
                    path,
                    format!("shapes features {fs:?} / frequencies {qs:?}; expected [m, d] / [m]"),
                ));
            }
        };
        let parent = match st.tensor("parent") {
            Err(_) => vec![-1; m],
            Ok(t) if t.dtype() == safetensors::Dtype::I32 && t.shape() == [m] => t
                .data()
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Ok(t) => {
                return Err(invalid(
                    path,
                    format!(
                        "tensor `parent` is {:?} {:?}, expected I32 [{m}]",
                        t.dtype(),
                        t.shape()
                    ),
                ));
            }
        };
        if let Some(p) = parent.iter().find(|p| **p < -1 || **p >= m as i32) {
            return Err(invalid(
                path,
                format!("tensor `parent` holds {p}, expected -1 or a feature index below {m}"),
            ));
        }
        if let Some(p) = parent
            .iter()
            .find(|p| **p >= 0 && parent[**p as usize] >= 0)
        {
            return Err(invalid(
                path,
                format!(
                    "tensor `parent`: feature {p} is a parent and has a parent itself; hierarchies have two levels"
                ),
            ));
        }
        let (_, header) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| invalid(path, format!("not a valid safetensors file: {e}")))?;
        let noise = match header.metadata().as_ref().and_then(|md| md.get("noise")) {
            None => None,
            Some(v) => match v.parse::<f32>() {
                Ok(n) if n.is_finite() && n >= 0.0 => Some(n),
                _ => {
                    return Err(invalid(
                        path,
                        format!("metadata noise = {v:?}, expected a finite number ≥ 0"),
                    ));
                }
            },
        };
        Ok(GroundTruth {
            d,
            features,
            frequencies,
            parent,
            noise,
        })
    }

    /// The children of each parent feature, `(parent, children)`, in feature order.
    pub fn families(&self) -> Vec<(u32, Vec<u32>)> {
        let mut out: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for (c, &p) in self.parent.iter().enumerate() {
            if p >= 0 {
                out.entry(p as u32).or_default().push(c as u32);
            }
        }
        out.into_iter().collect()
    }

    /// Draws `rows` fresh rows of the store's law with the features that fired in each:
    /// every feature that is not a child fires independently with its frequency; when a
    /// parent fires, at most one of its children fires with it, child `c` with probability
    /// `frequency_c / frequency_parent`; amplitudes `Uniform(0.5, 1.5)`, noise of norm
    /// [`Self::noise`] (0 when unknown). An independent sampler of the generator's law (for
    /// held-out evaluation, e.g. absorption), not a replay of the store's rows.
    pub fn sample(&self, rows: usize, seed: u64) -> LabelledRows {
        let (d, m) = (self.d, self.num_features());
        let families = self.families();
        let mut rng = Rng::new(derive_seed(&[seed, 0x1abe1]));
        let sigma = self.noise.unwrap_or(0.0) / (d as f32).sqrt();
        let mut acts = vec![0.0f32; rows * d];
        let mut active = Vec::with_capacity(rows);
        for x in acts.chunks_exact_mut(d) {
            let mut fired: Vec<u32> = Vec::new();
            for j in 0..m {
                if self.parent[j] < 0 && rng.uniform_f64() < self.frequencies[j] as f64 {
                    fired.push(j as u32);
                }
            }
            // Parents are features without a parent (`load` checks it), all in `fired`'s
            // sorted prefix of independent features.
            let independent = fired.len();
            for (p, kids) in &families {
                if fired[..independent].binary_search(p).is_err() {
                    continue;
                }
                let fp = self.frequencies[*p as usize] as f64;
                let mut u = rng.uniform_f64() * fp;
                for &c in kids {
                    u -= self.frequencies[c as usize] as f64;
                    if u < 0.0 {
                        fired.push(c);
                        break;
                    }
                }
            }
            fired.sort_unstable();
            for &j in &fired {
                let a = 0.5 + rng.uniform_f32();
                let f = &self.features[j as usize * d..(j as usize + 1) * d];
                x.iter_mut().zip(f).for_each(|(xv, fv)| *xv += a * fv);
            }
            if sigma > 0.0 {
                x.iter_mut().for_each(|v| *v += sigma * rng.normal_f32());
            }
            active.push(fired);
        }
        LabelledRows { acts, active }
    }

    /// Writes `features` and `frequencies` as F32 tensors (atomically: whole or not at all).
    pub fn save(&self, path: &Path) -> Result<()> {
        let m = self.num_features();
        if self.features.len() != m * self.d {
            return Err(usage(path, "features length is not frequencies length x d"));
        }
        let fb: Vec<u8> = self.features.iter().flat_map(|x| x.to_le_bytes()).collect();
        let qb: Vec<u8> = self
            .frequencies
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let bad =
            |e: safetensors::SafeTensorError| invalid(path, format!("cannot build tensor: {e}"));
        if self.parent.len() != m {
            return Err(usage(path, "parent length is not frequencies length"));
        }
        let pb: Vec<u8> = self.parent.iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut tensors = vec![
            (
                "features",
                TensorView::new(safetensors::Dtype::F32, vec![m, self.d], &fb).map_err(bad)?,
            ),
            (
                "frequencies",
                TensorView::new(safetensors::Dtype::F32, vec![m], &qb).map_err(bad)?,
            ),
        ];
        if self.parent.iter().any(|p| *p >= 0) {
            tensors.push((
                "parent",
                TensorView::new(safetensors::Dtype::I32, vec![m], &pb).map_err(bad)?,
            ));
        }
        let metadata = self
            .noise
            .map(|n| std::collections::HashMap::from([("noise".to_string(), n.to_string())]));
        let bytes = safetensors::serialize(tensors, metadata).map_err(bad)?;
        Ok(lantern_output::write_atomic(path, &bytes)?)
    }
}

/// Firing probabilities `p_i = min(1, c·(i+1)^(−alpha))` with `c` such that `Σ p_i = mean_active`.
pub(crate) fn firing_probabilities(features: usize, mean_active: f64, alpha: f64) -> Vec<f64> {
    let base: Vec<f64> = (0..features)
        .map(|i| ((i + 1) as f64).powf(-alpha))
        .collect();
    let total = |c: f64| base.iter().map(|b| (c * b).min(1.0)).sum::<f64>();
    // At c = m^alpha every p_i >= 1, so the sum is m >= mean_active.
    let (mut lo, mut hi) = (0.0f64, (features as f64).powf(alpha).max(1.0));
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if total(mid) < mean_active {
            lo = mid
        } else {
            hi = mid
        }
    }
    base.iter().map(|b| (hi * b).min(1.0)).collect()
}

/// Writes a synthetic store to `out` (which must not hold a store yet) and
/// `out/ground_truth.safetensors`; returns the ground truth.
///
/// Each row is a sparse sum of unit-norm feature directions plus isotropic noise:
///
/// ```text
/// x = Σ_{i fires} a_i f_i + ε,    a_i ~ Uniform(0.5, 1.5),    ε ~ N(0, noise²/d · I_d)
/// ```
///
/// * `f_i` (`i < m = features`): a standard Gaussian vector in R^d, normalized to unit length.
/// * Feature `i` fires independently with probability `p_i = min(1, c·(i+1)^(−alpha))`, `c`
///   solved by bisection so that `Σ p_i = mean_active` (the expected L0 of a row).
/// * `ε` has per-component variance `noise²/d`, so `‖ε‖ ≈ noise`.
/// * Planted features (`cfg.planted`) follow the dictionary, each firing with its own
///   probability, independently of the rest.
/// * A [`Hierarchy`] (`cfg.hierarchy`) follows them: parents fire independently, children
///   only with their parent (the ground truth records each child's `parent`).
/// * `token_id` = index of the firing feature with the largest `a_i` (0 if none fires),
///   `seq_id = row / 128`, `position = row % 128`.
///
/// Rows are generated in chunks of 4096 rows in parallel (rayon); chunk `k` draws from an
/// RNG seeded by `(seed, k)`, so the store is identical whatever the thread count.
/// Sampling the firing set uses thinning with geometric skips, so a row costs O(active
/// features), not O(m).
pub fn synthesize(cfg: &SynthConfig, out: &Path) -> Result<GroundTruth> {
    let m = cfg.features;
    if cfg.d == 0 || m == 0 {
        return Err(usage(out, "synthesize: d and features must be at least 1"));
    }
    if !(cfg.mean_active > 0.0 && cfg.mean_active <= m as f64) {
        return Err(usage(
            out,
            format!("synthesize: mean_active must be in (0, {m}]"),
        ));
    }
    if let Some(p) = cfg.planted.iter().find(|p| !(0.0..=1.0).contains(*p)) {
        return Err(usage(
            out,
            format!("synthesize: planted firing probability {p} is not in [0, 1]"),
        ));
    }
    if let Some(h) = &cfg.hierarchy {
        if h.parents == 0 || h.children == 0 {
            return Err(usage(
                out,
                "synthesize: a hierarchy needs at least 1 parent and 1 child per parent",
            ));
        }
        if !((0.0..=1.0).contains(&h.parent_rate) && (0.0..=1.0).contains(&h.child_rate)) {
            return Err(usage(
                out,
                format!(
                    "synthesize: hierarchy rates {} (parent) and {} (child) must be in [0, 1]",
                    h.parent_rate, h.child_rate
                ),
            ));
        }
    }
    if !(cfg.alpha.is_finite() && cfg.alpha >= 0.0 && cfg.noise.is_finite() && cfg.noise >= 0.0) {
        return Err(usage(
            out,
            "synthesize: alpha and noise must be finite and >= 0",
        ));
    }
    // Room: the dictionary lives in memory, the rows go to disk (values + three u32 ids a row).
    let family = cfg.hierarchy.map_or(0, |h| {
        h.parents.saturating_mul(h.children.saturating_add(1))
    });
    let total = m.saturating_add(cfg.planted.len()).saturating_add(family);
    let dict_bytes = (total as u128) * (cfg.d as u128) * 4;
    if let Some(avail) = lantern_output::available_memory()
        && dict_bytes > u128::from(avail / 2)
    {
        return Err(usage(
            out,
            format!(
                "synthesize: {total} features × d {} need {:.1} GiB for the dictionary, more than \
                 half the {:.1} GiB of memory available",
                cfg.d,
                dict_bytes as f64 / (1u64 << 30) as f64,
                avail as f64 / (1u64 << 30) as f64
            ),
        ));
    }
    let row_bytes = (cfg.d as u128) * (cfg.dtype.size() as u128) + 12;
    let need = u128::from(cfg.rows) * row_bytes;
    if let Some(free) = lantern_output::free_space(out)
        && need > u128::from(free)
    {
        return Err(usage(
            out,
            format!(
                "synthesize: {} rows of d {} need {:.1} GiB, but only {:.1} GiB are free there",
                cfg.rows,
                cfg.d,
                need as f64 / (1u64 << 30) as f64,
                free as f64 / (1u64 << 30) as f64
            ),
        ));
    }
    let meta = StoreMeta::new(
        cfg.d,
        cfg.dtype,
        "synthetic",
        format!("synthetic(features={m}, seed={})", cfg.seed),
    );
    let opts = WriterOptions {
        shard_rows: cfg.shard_rows.unwrap_or(0),
        ..Default::default()
    };
    let mut writer = StoreWriter::create(out, meta, opts)?;

    let d = cfg.d;
    let mut rng = Rng::new(derive_seed(&[cfg.seed, FEATURE_STREAM]));
    let mut features: Vec<f32> = (0..total * d).map(|_| rng.normal_f32()).collect();
    for f in features.chunks_exact_mut(d) {
        let norm = f
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        f.iter_mut().for_each(|x| *x /= norm);
    }
    let probs = firing_probabilities(m, cfg.mean_active, cfg.alpha);
    let mut frequencies: Vec<f32> = probs
        .iter()
        .chain(&cfg.planted)
        .map(|&p| p as f32)
        .collect();
    let mut parent = vec![-1i32; frequencies.len()];
    if let Some(h) = &cfg.hierarchy {
        let base = frequencies.len();
        frequencies.extend(std::iter::repeat_n(h.parent_rate as f32, h.parents));
        let child = h.parent_rate * h.child_rate / h.children as f64;
        frequencies.extend(std::iter::repeat_n(child as f32, h.parents * h.children));
        parent.extend(std::iter::repeat_n(-1, h.parents));
        parent.extend(
            (0..h.parents).flat_map(|p| std::iter::repeat_n((base + p) as i32, h.children)),
        );
    }
    let truth = GroundTruth {
        d,
        features,
        frequencies,
        parent,
        noise: Some(cfg.noise),
    };
    truth.save(&out.join(GROUND_TRUTH_FILE))?;

    // Generate group g+1 in parallel while group g is written, in order.
    let chunks = cfg.rows.div_ceil(CHUNK_ROWS);
    let group = (rayon::current_num_threads() as u64 * 4).max(1);
    let generate = |first: u64| -> Vec<Chunk> {
        (first..(first + group).min(chunks))
            .into_par_iter()
            .map(|k| make_chunk(cfg, &truth.features, &probs, k))
            .collect()
    };
    let mut ready = generate(0);
    let mut next = group;
    while !ready.is_empty() {
        let write = |w: &mut StoreWriter| -> Result<()> {
            for c in &ready {
                w.push(&c.acts, &c.token_ids, &c.seq_ids, &c.positions, None)?;
            }
            Ok(())
        };
        let (written, made) = rayon::join(
            || write(&mut writer),
            || {
                if next < chunks {
                    generate(next)
                } else {
                    Vec::new()
                }
            },
        );
        written?;
        ready = made;
        next += group;
    }
    writer.finish()?;
    Ok(truth)
}

struct Chunk {
    acts: Vec<f32>,
    token_ids: Vec<u32>,
    seq_ids: Vec<u32>,
    positions: Vec<u32>,
}

/// Rows `[k·CHUNK_ROWS, min((k+1)·CHUNK_ROWS, rows))`, from the RNG of chunk `k`.
fn make_chunk(cfg: &SynthConfig, features: &[f32], probs: &[f64], k: u64) -> Chunk {
    let d = cfg.d;
    let m = probs.len();
    let start = k * CHUNK_ROWS;
    let n = (cfg.rows - start).min(CHUNK_ROWS) as usize;
    let mut rng = Rng::new(derive_seed(&[
        cfg.row_seed.unwrap_or(cfg.seed),
        ROW_STREAM,
        k,
    ]));
    let sigma = cfg.noise / (d as f32).sqrt();
    let mut acts = vec![0.0f32; n * d];
    let mut token_ids = Vec::with_capacity(n);
    // ln(1 − p_i): the geometric skip from index i is ⌊ln u / ln(1 − p_i)⌋.
    let log_miss: Vec<f64> = probs.iter().map(|&p| (-p).ln_1p()).collect();
    for x in acts.chunks_exact_mut(d) {
        let mut best = (0u32, f32::NEG_INFINITY);
        // Feature j fires in this row: a·f_j with a ~ Uniform(0.5, 1.5), the strongest kept.
        let mut fire = |j: usize, rng: &mut Rng| {
            let a = 0.5 + rng.uniform_f32();
            let f = &features[j * d..(j + 1) * d];
            x.iter_mut().zip(f).for_each(|(xv, fv)| *xv += a * fv);
            if a > best.1 {
                best = (j as u32, a);
            }
        };
        // Thinning: from index i every later feature is a candidate with probability q = p_i
        // (the largest remaining p, as p is non-increasing); the first candidate j is a
        // geometric skip away and fires with probability p_j / q. Then restart after j.
        let mut i = 0usize;
        while i < m {
            let q = probs[i];
            let j = if q >= 1.0 {
                i
            } else {
                let u = 1.0 - rng.uniform_f64(); // (0, 1]
                let skip = (u.ln() / log_miss[i]).floor();
                if skip >= (m - i) as f64 {
                    break;
                }
                i + skip as usize
            };
            if q >= 1.0 || rng.uniform_f64() * q < probs[j] {
                fire(j, &mut rng);
            }
            i = j + 1;
        }
        for (p, &q) in cfg.planted.iter().enumerate() {
            if rng.uniform_f64() < q {
                fire(m + p, &mut rng);
            }
        }
        if let Some(h) = &cfg.hierarchy {
            let base = m + cfg.planted.len();
            for p in 0..h.parents {
                if rng.uniform_f64() < h.parent_rate {
                    fire(base + p, &mut rng);
                    if rng.uniform_f64() < h.child_rate {
                        let c = rng.below(h.children as u64) as usize;
                        fire(base + h.parents + p * h.children + c, &mut rng);
                    }
                }
            }
        }
        if sigma > 0.0 {
            x.iter_mut().for_each(|v| *v += sigma * rng.normal_f32());
        }
        token_ids.push(best.0);
    }
    let rows = start..start + n as u64;
    Chunk {
        acts,
        token_ids,
        seq_ids: rows.clone().map(|r| (r / SEQ_LEN) as u32).collect(),
        positions: rows.map(|r| (r % SEQ_LEN) as u32).collect(),
    }
}
