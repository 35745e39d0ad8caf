//! `lantern bench ...`: throughput of the SAE training step and of store streaming.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};
use clap::Subcommand;
use lantern_acts::{BatchReader, NonFinite, ReaderOptions, Store};
use lantern_sae::optim::{self, Adam};
use lantern_sae::params::{Params, scalar};
use lantern_sae::step::{random_topk_setup, step};
use lantern_sae::{DeviceChoice, Dropped, RowCut, RowFilter};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Tokens/s of a full TopK training step (forward, hand-written backward, Adam, decoder
    /// renormalisation) on random data.
    Sae {
        /// cpu | wgpu | vulkan
        #[arg(long, default_value = "cpu")]
        device: String,
        /// d_in,d_sae,k (repeatable); default: 768,24576,32 and 4096,65536,64.
        #[arg(long)]
        shape: Vec<String>,
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Timed steps (after one untimed warm-up step).
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// On the CPU: `native` (the TopK step over plain slices that `sae train` uses) or
        /// `burn` (the same step written in burn ops, as on GPUs).
        #[arg(long, default_value = "native")]
        engine: String,
        /// `topk` or `batchtopk` (batch-wide selection ranked by decoder norm, free decoder
        /// norms: what `sae train --arch batchtopk` trains by default).
        #[arg(long, default_value = "topk")]
        arch: String,
        /// A peer's figures (JSON lines with d, d_sae, k, batch, ms_per_step and a `peer`
        /// name, as `scripts/peer-bench.py` writes them): print the ratio for matching shapes.
        #[arg(long)]
        compare_file: Option<PathBuf>,
        /// With the burn engine (every GPU): also time each piece of the step alone, both
        /// the dense default's and the sparse kernel path's (`--steps` runs each, synced
        /// before and after), and print ms per piece.
        #[arg(long)]
        breakdown: bool,
        /// The native CPU engine's loops compiled for `base` (SSE2), `v3` (AVX2 + FMA) or `v4`
        /// (AVX-512); default: the best this CPU has (the same bits at every level; the GEMM
        /// picks its own kernels).
        #[arg(long)]
        isa: Option<lantern_sae::isa::Level>,
    },
    /// Rows/s and peak memory of streaming a whole store in shuffled batches.
    Acts {
        store: PathBuf,
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        #[arg(long, default_value_t = 1 << 16)]
        shuffle_rows: usize,
        /// What the shuffle mixes: `store` (every batch from the whole store, random reads;
        /// what `sae train` does) or `window` (rows within windows of --shuffle-rows).
        #[arg(long, default_value = "store")]
        shuffle: lantern_acts::ShuffleScope,
        /// Also apply `sae train`'s default row cut (position 0, outliers; fixed on the first
        /// batch) and scale to each batch, as its prefetch thread does: the rate training can
        /// be fed at.
        #[arg(long)]
        cut: bool,
    },
    /// Rows/s and peak memory of feature search over a store: `diff` (the SAE over the store
    /// as base and as finetune, with the sequence bootstrap) and `direction` (per-sequence
    /// statistics of mean-diff).
    Search {
        store: PathBuf,
        /// An SAE at the store's width.
        #[arg(long)]
        sae: PathBuf,
        /// cpu | wgpu | vulkan
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 1024)]
        batch: usize,
        #[arg(long, default_value_t = 1000)]
        bootstrap: usize,
    },
    /// Tokens/s of greedy generation at batch 1 and 8: unsteered, with one added vector (one
    /// layer, all positions), per-row strengths (a dose–response batch), and directional
    /// ablation at every block input, attention output and MLP output.
    Steer {
        /// A Hugging Face model directory or a .gguf file.
        #[arg(long)]
        model: PathBuf,
        /// cpu | wgpu | vulkan
        #[arg(long, default_value = "cpu")]
        device: String,
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// Timed repetitions per setting (after one warm-up).
        #[arg(long, default_value_t = 3)]
        reps: usize,
    },
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Sae {
            device,
            shape,
            batch,
            steps,
            engine,
            arch,
            compare_file,
            breakdown,
            isa,
        } => {
            let choice: DeviceChoice = device.parse()?;
            let per_batch = match arch.as_str() {
                "topk" => false,
                "batchtopk" => true,
                other => bail!("--arch '{other}': expected topk or batchtopk"),
            };
            let native = match engine.as_str() {
                "native" => choice == DeviceChoice::Cpu,
                "burn" => false,
                other => bail!("--engine '{other}': expected native or burn"),
            };
            if breakdown && native {
                bail!(
                    "--breakdown times the burn engine's pieces (--engine burn); the native CPU engine prints its phases without it"
                );
            }
            if isa.is_some() && !native {
                bail!(
                    "--isa picks the native CPU engine's instruction set; this run uses the burn engine"
                );
            }
            let peers = match &compare_file {
                Some(p) => read_peer_figures(p)?,
                None => Vec::new(),
            };
            let shapes = if shape.is_empty() {
                vec![(768, 24576, 32), (4096, 65536, 64)]
            } else {
                shape
                    .iter()
                    .map(|s| parse_shape(s))
                    .collect::<Result<Vec<_>>>()?
            };
            for (d, m, k) in shapes {
                let (tok_s, phases) = if native {
                    bench_native_step(d, m, k, batch, steps.max(1), per_batch, isa)
                } else {
                    (
                        bench_step(choice, d, m, k, batch, steps.max(1), per_batch)?,
                        None,
                    )
                };
                let ms = 1e3 * batch as f64 / tok_s;
                let engine = if native {
                    format!(
                        "native ({})",
                        isa.unwrap_or(lantern_sae::isa::Level::detected())
                            .runnable()
                    )
                } else {
                    "burn".into()
                };
                println!(
                    "sae step  device {choice}  engine {engine}  arch {arch}  d {d}  d_sae {m}  k {k}  batch {batch}  {ms:.3} ms/step  {tok_s:.0} tokens/s  peak RSS {} MiB",
                    peak_rss_mib().map_or("?".into(), |v| v.to_string())
                );
                if breakdown {
                    let pieces = bench_pieces(choice, d, m, k, batch, steps.max(1))?;
                    let parts: Vec<String> = pieces
                        .iter()
                        .map(|(name, ms)| format!("{name} {ms:.3}"))
                        .collect();
                    println!("  ms per piece, each alone: {}", parts.join("  "));
                }
                if let Some(p) = phases {
                    let parts: Vec<String> = p
                        .named()
                        .iter()
                        .map(|(name, secs)| {
                            format!("{name} {:.1}", 1e3 * secs / steps.max(1) as f64)
                        })
                        .collect();
                    println!("  ms per phase: {}", parts.join("  "));
                }
                for peer in peers
                    .iter()
                    .filter(|p| (p.d, p.d_sae, p.k, p.batch) == (d, m, k, batch))
                {
                    println!(
                        "  vs {}: {:.3} ms/step  {:.0} tokens/s  → Lantern {:.2}× the peer's tokens/s",
                        peer.peer,
                        peer.ms_per_step,
                        1e3 * batch as f64 / peer.ms_per_step,
                        peer.ms_per_step / ms
                    );
                }
            }
        }
        BenchCommand::Acts {
            store,
            batch,
            shuffle_rows,
            shuffle,
            cut,
        } => {
            let s = Store::open(&store)?;
            let bytes: u64 = s.manifest().shards.iter().map(|sh| sh.bytes).sum();
            let mut reader = BatchReader::new(
                s,
                ReaderOptions {
                    batch_rows: batch,
                    shuffle_rows,
                    scope: shuffle,
                    seed: 0,
                    role: None,
                    label: None,
                    epochs: Some(1),
                    non_finite: NonFinite::Error,
                },
            )?;
            let t = Instant::now();
            let (mut rows, mut checksum) = (0u64, 0f64);
            let mut row_cut: Option<RowCut> = None;
            let mut dropped = Dropped::default();
            while let Some(b) = reader.next_batch()? {
                rows += b.rows as u64;
                let first = if cut {
                    let rc = row_cut
                        .get_or_insert_with(|| RowCut::from_sample(&RowFilter::default(), &b));
                    rc.keep(&b, &mut dropped, |v| v * 0.5).first().copied()
                } else {
                    b.acts.first().copied()
                };
                checksum += first.unwrap_or(0.0) as f64;
            }
            let secs = t.elapsed().as_secs_f64();
            if let Some(rc) = &row_cut {
                println!(
                    "row cut and scale applied; left out: {}",
                    dropped.describe(rc)
                );
            }
            println!(
                "streamed {rows} rows ({:.2} GB on disk) in {secs:.1} s: {:.0} rows/s, {:.2} GB/s; peak RSS {} MiB (checksum {checksum:.3})",
                bytes as f64 / 1e9,
                rows as f64 / secs,
                bytes as f64 / 1e9 / secs,
                peak_rss_mib().map_or("?".into(), |v| v.to_string())
            );
        }
        BenchCommand::Search {
            store,
            sae,
            device,
            batch,
            bootstrap,
        } => bench_search(&store, &sae, &device, batch, bootstrap)?,
        BenchCommand::Steer {
            model,
            device,
            new_tokens,
            reps,
        } => bench_steer(&model, &device, new_tokens, reps)?,
    }
    Ok(())
}

fn bench_search(
    store: &std::path::Path,
    sae: &std::path::Path,
    device: &str,
    batch: usize,
    bootstrap: usize,
) -> Result<()> {
    use lantern_search::{DiffOptions, Method, ProbeOptions, SeqMeans, TokenSelection};
    let s = Store::open(store)?;
    let t = Instant::now();
    let m = SeqMeans::collect(&s, None, TokenSelection::ALL)?;
    lantern_search::direction(Method::MeanDiff, &m, &m.clone(), &ProbeOptions::default())
        .map(|_| ())
        .or_else(|e| match e {
            // The same set on both sides gives a zero direction; the pass is what is timed.
            lantern_search::SearchError::Input { .. } => Ok(()),
            e => Err(e),
        })?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "direction  {} rows  d {}  {secs:.1} s  {:.0} rows/s  peak RSS {} MiB",
        s.rows(),
        s.d_model(),
        s.rows() as f64 / secs,
        peak_rss_mib().map_or("?".into(), |v| v.to_string())
    );
    let choice: DeviceChoice = device.parse()?;
    let dev = choice.open()?;
    let (w, _) = lantern_sae::load_sae(sae)?;
    let model = lantern_sae::Sae::from_weights(&w, &dev)?;
    let opts = DiffOptions {
        selection: TokenSelection::ALL,
        batch_rows: batch,
        bootstrap,
        seed: 0,
    };
    let t = Instant::now();
    let r = lantern_search::diff_latents(&model, &s, std::slice::from_ref(&s), &opts, |_| {})?;
    let secs = t.elapsed().as_secs_f64();
    let rows = 2 * s.rows();
    println!(
        "diff       {rows} rows (store twice)  d {}  d_sae {}  device {choice}  batch {batch}  bootstrap {bootstrap}  {secs:.1} s  {:.0} rows/s  peak RSS {} MiB  (top Δ {:.2e})",
        s.d_model(),
        w.cfg.d_sae,
        rows as f64 / secs,
        peak_rss_mib().map_or("?".into(), |v| v.to_string()),
        r.latents[0].delta_mean
    );
    Ok(())
}

fn parse_shape(s: &str) -> Result<(usize, usize, usize)> {
    let v: Vec<usize> = s
        .split(',')
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow::anyhow!("--shape '{s}': expected d_in,d_sae,k"))?;
    match v[..] {
        [d, m, k] if d > 0 && m > 0 && k > 0 && k <= m => Ok((d, m, k)),
        _ => bail!("--shape '{s}': expected d_in,d_sae,k with 0 < k ≤ d_sae"),
    }
}

fn bench_step(
    choice: DeviceChoice,
    d: usize,
    m: usize,
    k: usize,
    batch: usize,
    steps: usize,
    per_batch: bool,
) -> Result<f64> {
    let device = choice.open()?;
    let (mut params, x, mut settings) = random_topk_setup(&device, d, m, k, batch);
    if per_batch {
        settings.arch = lantern_sae::Arch::BatchTopK { k };
        settings.rescale_by_decoder_norm = true;
    }
    let normalize = !per_batch;
    let mut adam = Adam::new(&params);
    let mut run = |params: Params| -> Result<Params> {
        let out = step(&params, x.clone(), &settings, None);
        Ok(optim::update(
            params,
            out.grads,
            &mut adam,
            1e-4,
            normalize,
            Some(1.0),
        ))
    };
    params = run(params)?;
    scalar(params.b_dec.clone().sum())?; // wait for the warm-up step
    let t = Instant::now();
    for _ in 0..steps {
        params = run(params)?;
    }
    scalar(params.b_dec.clone().sum())?;
    device
        .sync()
        .map_err(|e| anyhow::anyhow!("device sync: {e}"))?;
    Ok((steps * batch) as f64 / t.elapsed().as_secs_f64())
}

/// Milliseconds per run of each piece of a TopK step, each run `steps` times alone after an
/// untimed run (autotuning) with the device synced before and after, on the random SAE and
/// batch of [`bench_step`]. The dense path (the GPU default) is `encode`, `select-mask`
/// (`select-mask-kth` with `LANTERN_TOPK_KTH=topk`), `decode-dense`, `backward-dense`,
/// `fires-dense`, `update`; the sparse kernel path (`LANTERN_SPARSE_TOPK=1`) on GPUs
/// `encode-gemm` (the GEMM without its bias + ReLU pass) and `select-topk-relu` (the selection
/// doing them as it reads), elsewhere `encode` and `select-topk`, then `decode-gather`,
/// `backward-sparse`, `fires-sparse`, `update`; `select-topk-radix` is the radix kernel's time
/// for `select-topk`'s selection (GPUs); `encode-f16`
/// is `encode` with f16 operands (`LANTERN_ENCODER_F16=1`, devices with f16); `auxk-select`
/// is AuxK's selection on both (when latents are dead; its decode and backward are like
/// `decode-gather` and `backward-sparse`). The rest of a step's time is its loss and the
/// small ops between the pieces.
fn bench_pieces(
    choice: DeviceChoice,
    d: usize,
    m: usize,
    k: usize,
    batch: usize,
    steps: usize,
) -> Result<Vec<(&'static str, f64)>> {
    use burn::tensor::FloatDType;
    use lantern_sae::sparse;
    use lantern_sae::step::row_threshold;
    let device = choice.open()?;
    let (params, x, _) = random_topk_setup(&device, d, m, k, batch);
    let k = k.min(m);
    let sync = || {
        device
            .sync()
            .map_err(|e| anyhow::anyhow!("device sync: {e}"))
    };
    let time = |f: &mut dyn FnMut()| -> Result<f64> {
        f();
        sync()?;
        let t = Instant::now();
        for _ in 0..steps {
            f();
        }
        sync()?;
        Ok(1e3 * t.elapsed().as_secs_f64() / steps as f64)
    };
    let p = &params;
    let xc = x.clone() - p.b_dec.clone().unsqueeze_dim(0);
    let encode = |half| lantern_kernels::encode(xc.clone(), p.w_enc.clone(), p.b_enc.clone(), half);
    let encode_gemm =
        |half| lantern_kernels::encode_gemm(xc.clone(), p.w_enc.clone(), p.b_enc.clone(), half);
    let acts = encode(false);
    // The dense path's selection: each row's k-th value by halving, or (`LANTERN_TOPK_KTH=
    // topk`) from the row top-k, then the mask.
    let mask = |acts: &burn::tensor::Tensor<2>, radix: bool| {
        let kth = if radix {
            lantern_sae::topk::top_k_rows(acts.clone(), k).0.min_dim(1)
        } else {
            row_threshold(acts, k)
        };
        acts.clone() * acts.clone().greater_equal(kth.expand([batch, m])).float()
    };
    let f = mask(&acts, false);
    let coo = sparse::top_k_per_row(acts.clone(), k);
    let g = sparse::decode_per_row(&coo, &p.w_dec, batch, k) - x.clone();
    let mut out = vec![("encode", time(&mut || drop(encode(false)))?)];
    if lantern_kernels::on_cube(&device) && device.supports_dtype(FloatDType::F16) {
        out.push(("encode-f16", time(&mut || drop(encode(true)))?));
    }
    out.push(("select-mask", time(&mut || drop(mask(&acts, false)))?));
    out.push(("select-mask-kth", time(&mut || drop(mask(&acts, true)))?));
    out.push((
        "select-topk",
        time(&mut || drop(sparse::top_k_per_row(acts.clone(), k)))?,
    ));
    if lantern_kernels::on_cube(&device) {
        // The same selection by the radix kernel (six reads of each row, where `select-topk`'s
        // one-pass kernel reads it once for k ≤ 512).
        out.push((
            "select-topk-radix",
            time(&mut || drop(lantern_kernels::top_k_rows_radix(acts.clone(), k)))?,
        ));
        // What the sparse path runs instead of `encode` + `select-topk`: the GEMM alone, and
        // the selection adding the bias and clamping as it reads its result.
        out.push(("encode-gemm", time(&mut || drop(encode_gemm(false)))?));
        let pre = encode_gemm(false);
        out.push((
            "select-topk-relu",
            time(&mut || drop(sparse::top_k_per_row(pre.clone(), k)))?,
        ));
    }
    out.push((
        "decode-dense",
        time(&mut || drop(f.clone().matmul(p.w_dec.clone())))?,
    ));
    out.push((
        "decode-gather",
        time(&mut || drop(sparse::decode_per_row(&coo, &p.w_dec, batch, k)))?,
    ));
    out.push((
        "backward-dense",
        time(&mut || {
            let grad_pre =
                g.clone().matmul(p.w_dec.clone().transpose()) * f.clone().greater_elem(0.0).float();
            drop(f.clone().transpose().matmul(g.clone()));
            drop(grad_pre.clone().transpose().matmul(xc.clone()));
            drop(grad_pre.sum_dim(0));
        })?,
    ));
    out.push((
        "backward-sparse",
        time(&mut || drop(sparse::backward(&coo, &g, &xc, &p.w_dec, None)))?,
    ));
    // AuxK's selection (both paths): the k_aux = d/2 largest among dead latents, here every
    // other latent.
    let dead = burn::tensor::Tensor::<1>::from_data(
        burn::tensor::TensorData::new((0..m).map(|j| (j % 2) as f32).collect::<Vec<_>>(), [m]),
        &device,
    );
    let k_aux = (d / 2).clamp(1, m);
    out.push((
        "auxk-select",
        time(&mut || {
            drop(sparse::top_k_per_row_among(
                acts.clone(),
                dead.clone(),
                k_aux,
            ))
        })?,
    ));
    out.push((
        "fires-dense",
        time(&mut || drop(f.clone().greater_elem(0.0).float().sum_dim(0)))?,
    ));
    out.push((
        "fires-sparse",
        time(&mut || drop(sparse::fire_counts(&coo, m)))?,
    ));
    let grads = {
        let s = sparse::backward(&coo, &g, &xc, &p.w_dec, None);
        Params {
            w_enc: s.w_enc_t.transpose(),
            b_enc: s.b_enc,
            w_dec: s.w_dec,
            b_dec: g.clone().sum_dim(0).reshape([d]),
            log_threshold: None,
        }
    };
    let mut adam = Adam::new(p);
    out.push((
        "update",
        time(&mut || {
            drop(optim::update(
                p.clone(),
                grads.clone(),
                &mut adam,
                1e-4,
                true,
                Some(1.0),
            ))
        })?,
    ));
    Ok(out)
}

/// One row of a peer's figures (`scripts/peer-bench.py`).
#[derive(serde::Deserialize)]
struct PeerFigure {
    peer: String,
    d: usize,
    d_sae: usize,
    k: usize,
    batch: usize,
    ms_per_step: f64,
}

fn read_peer_figures(path: &std::path::Path) -> Result<Vec<PeerFigure>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("--compare-file {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, l)| {
            let p: PeerFigure = serde_json::from_str(l).map_err(|e| {
                anyhow::anyhow!(
                    "--compare-file {}:{}: expected a JSON object with peer, d, d_sae, k, batch, ms_per_step: {e}",
                    path.display(),
                    n + 1
                )
            })?;
            if !(p.ms_per_step.is_finite() && p.ms_per_step > 0.0) {
                bail!(
                    "--compare-file {}:{}: ms_per_step must be a positive number",
                    path.display(),
                    n + 1
                );
            }
            Ok(p)
        })
        .collect()
}

/// The CPU engine ([`lantern_sae::cpu`]) on a random SAE and batch: tokens/s and the summed
/// phase times of the timed steps. Same settings as [`bench_step`] (AuxK off as no latent is
/// dead, clip 1, lr 1e-4).
fn bench_native_step(
    d: usize,
    m: usize,
    k: usize,
    batch: usize,
    steps: usize,
    per_batch: bool,
    isa: Option<lantern_sae::isa::Level>,
) -> (f64, Option<lantern_sae::cpu::Phases>) {
    use lantern_sae::cpu::{CpuStepOptions, CpuTopK, Phases, Select};
    let mut sae = CpuTopK::random(d, m, k);
    if let Some(level) = isa {
        sae.set_level(level);
    }
    let mut s = 0x2545_F491_4F6C_DD1Du64;
    // Roughly standard normal inputs (sum of four uniforms, rescaled).
    let x: Vec<f32> = (0..batch * d)
        .map(|_| {
            let mut u = 0f32;
            for _ in 0..4 {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                u += (s >> 40) as f32 / (1u64 << 24) as f32;
            }
            (u - 2.0) * 3f32.sqrt()
        })
        .collect();
    let opts = CpuStepOptions {
        apply_b_dec_to_input: true,
        aux_coeff: 1.0 / 32.0,
        k_aux: d / 2,
        lr: 1e-4,
        normalize_decoder: !per_batch,
        clip: Some(1.0),
        select: if per_batch {
            Select::PerBatch {
                by_decoder_norm: true,
            }
        } else {
            Select::PerRow
        },
    };
    sae.step(&x, &opts, None);
    let mut phases = Phases::default();
    let t = Instant::now();
    for _ in 0..steps {
        phases.add(&sae.step(&x, &opts, None).phases);
    }
    let secs = t.elapsed().as_secs_f64();
    ((steps * batch) as f64 / secs, Some(phases))
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024)
}

fn bench_steer(
    model: &std::path::Path,
    device: &str,
    new_tokens: usize,
    reps: usize,
) -> Result<()> {
    use lantern_lm::{GenerateOptions, Hooks, LanguageModel, Sampling, generate};
    use lantern_steer::experiment::{PromptTokens, generation_layout};
    use lantern_steer::intervene::{Intervention, Op, Where, install};
    use lantern_steer::refusal::ablate_everywhere;
    use std::sync::Arc;
    let dev = device.parse::<DeviceChoice>()?.open()?;
    let lm = LanguageModel::load(model, &dev)?;
    let cfg = lm.model.config().clone();
    let prompt = lm.encode("The history of the printing press begins in")?;
    let v: Vec<f32> = (0..cfg.d_model)
        .map(|i| ((i * 37) as f32 * 0.61).sin())
        .collect();
    let mid = cfg.n_layers / 2;
    let add = |coef: f32| Intervention {
        ops: vec![Op::Add {
            point: lantern_lm::HookPoint::ResidPost(mid),
            vector: Arc::new(v.clone()),
            coef,
            preserve_norm: false,
            at: Where::All,
        }],
    };
    println!(
        "model {} ({} layers, d {}), device {device}, {new_tokens} new tokens, prompt {} tokens",
        model.display(),
        cfg.n_layers,
        cfg.d_model,
        prompt.len()
    );
    for batch in [1usize, 8] {
        let rows = vec![
            PromptTokens {
                ids: prompt.clone(),
                roles: vec![]
            };
            batch
        ];
        let refs: Vec<&PromptTokens> = rows.iter().collect();
        let (layout, _) = generation_layout(&refs)?;
        let settings: [(&str, Vec<Intervention>); 4] = [
            ("unsteered", vec![Intervention::none(); batch]),
            ("add, one layer", vec![add(4.0); batch]),
            (
                "add, per-row strengths",
                (0..batch).map(|b| add(b as f32)).collect(),
            ),
            (
                "ablate, every layer (3 points)",
                vec![ablate_everywhere(&v, cfg.n_layers); batch],
            ),
        ];
        // Round-robin over the settings, so drift (thermal, other load) hits them alike; the
        // best of `reps` timed runs per setting after one warm-up round.
        let mut best = [f64::INFINITY; 4];
        for rep in 0..=reps {
            for (k, (_, ivs)) in settings.iter().enumerate() {
                let mut hooks = Hooks::new();
                install(&mut hooks, ivs, &layout, None)?;
                let opts = GenerateOptions {
                    max_new_tokens: new_tokens,
                    sampling: Sampling::default(),
                    stop_ids: vec![],
                    pad_id: lm.pad_id(),
                    row_seeds: vec![],
                };
                let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.ids.clone()).collect();
                let t = Instant::now();
                generate(&lm.model, &ids, &opts, &mut hooks, |_, _| {})?;
                if rep > 0 {
                    best[k] = best[k].min(t.elapsed().as_secs_f64());
                }
            }
        }
        for (k, (name, _)) in settings.iter().enumerate() {
            let tps = (batch * new_tokens) as f64 / best[k];
            println!(
                "batch {batch}  {name:<32} {tps:>8.1} tok/s  ({:+.1} % time vs unsteered)",
                (best[k] / best[0] - 1.0) * 100.0
            );
        }
    }
    Ok(())
}
