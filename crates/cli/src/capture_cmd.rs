//! `lantern capture`: run a model over prompts and write the activations at hook points into
//! activation stores (one per hook), resumable after a kill.
//!
//! Rows are written in record order, so the `n`-th token of the whole run is row `n` of every
//! store. On resume each store's committed rows are skipped (a kill loses at most the shard in
//! progress, never duplicates a row); `capture.json` beside the stores pins the run's settings
//! and a resume with different ones is refused.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lantern_acts::{Dtype, StoreMeta, StoreWriter, WriterOptions};
use lantern_lm::chat::Message;
use lantern_lm::{HookPoint, Hooks, LanguageModel, LogitsAt};
use lantern_sae::DeviceChoice;
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct CaptureArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// JSONL: one {"text": ...} or {"messages": [{"role": ..., "content": ...}, ...]} per line.
    #[arg(long)]
    prompts: PathBuf,
    /// Hook point in TransformerLens spelling, e.g. blocks.15.hook_resid_post (repeatable).
    #[arg(long = "hook", required = true)]
    hooks: Vec<String>,
    /// Tokens kept from the start of each sequence.
    #[arg(long, default_value_t = 512)]
    max_tokens_per_seq: usize,
    /// Sequences per forward pass.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Store element type: f32 | f16 | bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Rows per shard (0: about 256 MiB shards).
    #[arg(long, default_value_t = 0)]
    shard_rows: usize,
    /// The store; with several hooks, one store per hook in <OUT>/<hook>/.
    #[arg(long)]
    out: PathBuf,
}

/// The settings a resumed capture must share with the run it continues.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct CaptureRecord {
    model: String,
    prompts_crc32: u32,
    records: usize,
    tokens: u64,
    max_tokens_per_seq: usize,
    hooks: Vec<String>,
}

/// One tokenized prompt record.
struct Sequence {
    ids: Vec<u32>,
    roles: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    text: Option<String>,
    messages: Option<Vec<RecordMessage>>,
}

#[derive(Deserialize)]
struct RecordMessage {
    role: String,
    content: String,
}

pub fn run(a: CaptureArgs) -> Result<()> {
    if a.batch == 0 || a.max_tokens_per_seq == 0 {
        bail!("--batch and --max-tokens-per-seq must be at least 1");
    }
    let points: Vec<HookPoint> = a
        .hooks
        .iter()
        .map(|h| h.parse::<HookPoint>())
        .collect::<Result<_, _>>()?;
    let dtype: Dtype = a
        .dtype
        .parse()
        .map_err(|e| anyhow::anyhow!("--dtype: {e}"))?;
    let device = a.device.parse::<DeviceChoice>()?.open()?;
    let lm = LanguageModel::load(&a.model, &device)?;
    let cfg = lm.model.config().clone();
    for p in &points {
        p.check(cfg.n_layers)?;
    }
    let text = std::fs::read_to_string(&a.prompts)
        .with_context(|| format!("reading {}", a.prompts.display()))?;
    let seqs = tokenize_records(&lm, &text, &a.prompts, a.max_tokens_per_seq)?;
    let total: u64 = seqs.iter().map(|s| s.ids.len() as u64).sum();

    let model_name = a.model.file_name().map_or_else(
        || a.model.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let record = CaptureRecord {
        model: model_name.clone(),
        prompts_crc32: crc32fast::hash(text.as_bytes()),
        records: seqs.len(),
        tokens: total,
        max_tokens_per_seq: a.max_tokens_per_seq,
        hooks: a.hooks.clone(),
    };
    check_or_write_record(&a.out, &record)?;

    let dirs: Vec<PathBuf> = if points.len() == 1 {
        vec![a.out.clone()]
    } else {
        points.iter().map(|p| a.out.join(p.to_string())).collect()
    };
    let mut writers = Vec::new();
    for (p, dir) in points.iter().zip(&dirs) {
        let meta = StoreMeta {
            d_model: cfg.d_model,
            dtype,
            hook: p.to_string(),
            model: model_name.clone(),
        };
        let opts = WriterOptions {
            shard_rows: a.shard_rows,
        };
        writers.push(StoreWriter::open_or_create(dir, meta, opts)?);
    }
    let done: Vec<u64> = writers.iter().map(StoreWriter::committed_rows).collect();
    let start = done.iter().copied().min().unwrap_or(0);
    if start >= total {
        println!("{}: all {total} tokens already captured", a.out.display());
        return finish(writers);
    }

    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tokens  {per_sec}  eta {eta}")
            .expect("static template"),
    );
    bar.set_position(start);
    let timer = Instant::now();
    let mut offset = 0u64; // global row index of the first token of record `i`
    let mut first = 0;
    while first < seqs.len() && offset + seqs[first].ids.len() as u64 <= start {
        offset += seqs[first].ids.len() as u64;
        first += 1;
    }
    let d = cfg.d_model;
    let pad = lm.pad_id();
    let mut i = first;
    while i < seqs.len() {
        let group = &seqs[i..(i + a.batch).min(seqs.len())];
        let width = group.iter().map(|s| s.ids.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(group.len() * width);
        let mut real = Vec::with_capacity(group.len());
        for s in group {
            ids.extend(&s.ids);
            ids.extend(std::iter::repeat_n(pad, width - s.ids.len()));
            real.push((0..width).map(|t| t < s.ids.len()).collect::<Vec<bool>>());
        }
        let mut hooks = Hooks::new();
        for p in &points {
            hooks.capture(*p);
        }
        hooks.stop_after_last(true);
        lm.model
            .forward(&ids, &real, None, &mut hooks, LogitsAt::Skip)?;
        for (h, p) in points.iter().enumerate() {
            let acts = hooks
                .take(*p)
                .pop()
                .expect("a capture per forward")
                .try_into_vec_as::<f32>()
                .map_err(|e| anyhow::anyhow!("reading activations back from the device: {e}"))?;
            let mut row0 = offset;
            for (b, s) in group.iter().enumerate() {
                let n = s.ids.len();
                // Skip what this store already holds (resume).
                let skip = done[h].saturating_sub(row0).min(n as u64) as usize;
                if skip < n {
                    let seq_id = (i + b) as u32;
                    let lo = (b * width + skip) * d;
                    let hi = (b * width + n) * d;
                    let positions: Vec<u32> = (skip as u32..n as u32).collect();
                    writers[h].push(
                        &acts[lo..hi],
                        &s.ids[skip..],
                        &vec![seq_id; n - skip],
                        &positions,
                        Some(&s.roles[skip..]),
                    )?;
                }
                row0 += n as u64;
            }
        }
        let tokens: u64 = group.iter().map(|s| s.ids.len() as u64).sum();
        offset += tokens;
        bar.set_position(offset);
        i += group.len();
    }
    bar.finish_and_clear();
    let secs = timer.elapsed().as_secs_f64();
    let captured = total - start;
    println!(
        "captured {captured} tokens from {} sequences at {} in {secs:.1} s ({:.0} tokens/s) → {}",
        seqs.len(),
        a.hooks.join(", "),
        captured as f64 / secs,
        a.out.display()
    );
    finish(writers)
}

fn finish(writers: Vec<StoreWriter>) -> Result<()> {
    for w in writers {
        w.finish()?;
    }
    Ok(())
}

/// Parses and tokenizes every JSONL record, truncating to `max_tokens`.
fn tokenize_records(
    lm: &LanguageModel,
    text: &str,
    path: &Path,
    max_tokens: usize,
) -> Result<Vec<Sequence>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), n + 1);
        let rec: Record = serde_json::from_str(line).map_err(|e| {
            anyhow::anyhow!(
                "{}: expected {{\"text\": ...}} or {{\"messages\": [...]}} ({e})",
                at()
            )
        })?;
        let (mut ids, mut roles) = match (rec.text, rec.messages) {
            (Some(t), None) => {
                let ids = lm.encode(&t).with_context(at)?;
                let roles = vec![0u8; ids.len()];
                (ids, roles)
            }
            (None, Some(m)) => {
                let m: Vec<Message> = m
                    .into_iter()
                    .map(|x| Message::new(x.role, x.content))
                    .collect();
                let c = lm.encode_chat(&m, false).with_context(at)?;
                (c.ids, c.roles)
            }
            _ => bail!(
                "{}: expected exactly one of \"text\" and \"messages\"",
                at()
            ),
        };
        if ids.is_empty() {
            bail!("{}: the record has no tokens", at());
        }
        ids.truncate(max_tokens);
        roles.truncate(max_tokens);
        out.push(Sequence { ids, roles });
    }
    if out.is_empty() {
        bail!("{}: no records", path.display());
    }
    Ok(out)
}

/// Writes `capture.json` for a new run, or checks that a resumed run matches it.
fn check_or_write_record(out: &Path, record: &CaptureRecord) -> Result<()> {
    let path = out.join("capture.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let old: CaptureRecord = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a capture record ({e})", path.display()))?;
        let diffs = [
            ("model", old.model != record.model),
            (
                "prompts (contents)",
                old.prompts_crc32 != record.prompts_crc32,
            ),
            ("records", old.records != record.records),
            (
                "max_tokens_per_seq",
                old.max_tokens_per_seq != record.max_tokens_per_seq,
            ),
            ("hooks", old.hooks != record.hooks),
            ("tokens", old.tokens != record.tokens),
        ];
        if let Some((field, _)) = diffs.iter().find(|d| d.1) {
            bail!(
                "{}: this store was captured with a different {field}; use a new --out or the same settings to resume",
                path.display()
            );
        }
        return Ok(());
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let tmp = out.join("capture.json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(record)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
