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
use lantern_acts::{Dtype, Rows, StoreMeta, StoreWriter, WriterOptions};
use lantern_lm::capture::{CaptureOptions, CaptureSink, Sequence, SequenceRows, capture};
use lantern_lm::{HookPoint, LanguageModel, PromptRecord};
use lantern_sae::DeviceChoice;
use serde::{Deserialize, Serialize};

#[derive(Args)]
pub struct CaptureArgs {
    /// A Hugging Face model directory or a .gguf file.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors),
    /// merged into the model's weights at load.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// JSONL: one {"text": ...} or {"messages": [{"role": ..., "content": ...}, ...]} per line,
    /// with optional "id" and "label" (labels are stored per sequence).
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
    /// Sequences sorted by length together before batching, to cut padding (1: file order).
    /// Rows are stored in file order either way.
    #[arg(long, default_value_t = 64)]
    sort_window: usize,
    /// cpu | wgpu | vulkan
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Store element type: f32 | f16 | bf16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Rows per shard (0: about 256 MiB shards).
    #[arg(long, default_value_t = 0)]
    shard_rows: usize,
    /// Drop rows holding NaN or infinities (or values beyond --dtype's range) and count them,
    /// instead of stopping at the first with an error.
    #[arg(long)]
    skip_non_finite: bool,
    /// The store; with several hooks, one store per hook in <OUT>/<hook>/.
    #[arg(long)]
    out: PathBuf,
}

/// The settings a resumed capture must share with the run it continues.
#[derive(Serialize, Deserialize, PartialEq, Debug)]
struct CaptureRecord {
    model: String,
    /// The model's (and adapter's) content fingerprint (`lantern_output::fingerprint`): a model
    /// of the same file name with other weights is another model. Empty in records written
    /// before it existed, which cannot be checked.
    #[serde(default)]
    model_id: String,
    prompts_crc32: u32,
    records: usize,
    tokens: u64,
    max_tokens_per_seq: usize,
    hooks: Vec<String>,
    /// Batches depend on it; runs before it existed batched in file order.
    #[serde(default = "file_order")]
    sort_window: usize,
}

fn file_order() -> usize {
    1
}

pub fn run(a: CaptureArgs) -> Result<()> {
    if a.batch == 0 || a.max_tokens_per_seq == 0 || a.sort_window == 0 {
        bail!("--batch, --max-tokens-per-seq and --sort-window must be at least 1");
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
    let mut inputs = vec![
        ("--model", a.model.as_path()),
        ("--prompts", a.prompts.as_path()),
    ];
    if let Some(ad) = &a.adapter {
        inputs.push(("--adapter", ad.as_path()));
    }
    let _lock = crate::report::lock_output("--out", &a.out, &inputs)?;
    let lm = LanguageModel::load_with_adapter(&a.model, a.adapter.as_deref(), &device)?;
    let cfg = lm.model.config().clone();
    let opts = CaptureOptions {
        points: points.clone(),
        batch: a.batch,
        sort_window: a.sort_window,
    };
    opts.validate(&lm.model, &[])?; // hooks, before any output exists
    let bytes =
        std::fs::read(&a.prompts).with_context(|| format!("reading {}", a.prompts.display()))?;
    let text = lantern_lm::prompts::utf8_lines(&bytes, &a.prompts)?;
    let records = lantern_lm::prompts::parse_prompts(&text, &a.prompts)?;
    let (label_names, labels) = sequence_labels(&records, &a.prompts)?;
    let seqs: Vec<Sequence> = records
        .iter()
        .map(|r| {
            lm.sequence(&r.content, a.max_tokens_per_seq)
                .with_context(|| format!("{}:{}", a.prompts.display(), r.line))
        })
        .collect::<Result<_>>()?;
    let total: u64 = seqs.iter().map(|s| s.ids.len() as u64).sum();

    let name_of = |p: &Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    // The stores record the adapter with the model: rows of a finetune are not the base's.
    let model_name = match &a.adapter {
        Some(ad) => format!("{} + {}", name_of(&a.model), name_of(ad)),
        None => name_of(&a.model),
    };
    let mut model_id = lantern_output::fingerprint(&a.model)?;
    if let Some(ad) = &a.adapter {
        model_id = format!("{model_id} + {}", lantern_output::fingerprint(ad)?);
    }
    let record = CaptureRecord {
        model: model_name.clone(),
        model_id,
        prompts_crc32: crc32fast::hash(text.as_bytes()),
        records: seqs.len(),
        tokens: total,
        max_tokens_per_seq: a.max_tokens_per_seq,
        hooks: a.hooks.clone(),
        sort_window: a.sort_window,
    };
    let resumed = check_record(&a.out, &record)?;

    let dirs: Vec<PathBuf> = if points.len() == 1 {
        vec![a.out.clone()]
    } else {
        points.iter().map(|p| a.out.join(p.to_string())).collect()
    };
    let mut writers = Vec::new();
    for (p, dir) in points.iter().zip(&dirs) {
        let mut meta = StoreMeta::new(cfg.d_model, dtype, p.to_string(), model_name.clone());
        meta.labels = label_names.clone();
        let opts = WriterOptions {
            shard_rows: a.shard_rows,
            skip_non_finite: a.skip_non_finite,
        };
        writers.push(StoreWriter::open_or_create(dir, meta, opts)?);
    }
    // Written once the stores exist (a store refuses a directory holding other files); until
    // then the stores are empty, so nothing can be resumed under another record.
    if !resumed {
        write_record(&a.out, &record)?;
    }
    let done: Vec<u64> = writers.iter().map(StoreWriter::committed_rows).collect();
    let start = done.iter().copied().min().unwrap_or(0);
    if start >= total {
        println!("{}: all {total} tokens already captured", a.out.display());
        return finish(writers);
    }

    // Global row of each sequence's first token; resume from the sequence holding row `start`.
    let mut offsets = Vec::with_capacity(seqs.len());
    let mut acc = 0u64;
    for s in &seqs {
        offsets.push(acc);
        acc += s.ids.len() as u64;
    }
    let first = offsets.partition_point(|&o| o <= start).saturating_sub(1);

    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} tokens  {per_sec}  eta {eta}")
            .expect("static template"),
    );
    bar.set_position(start);
    let timer = Instant::now();
    let mut sink = StoreSink {
        writers,
        done,
        offsets,
        labels,
        bar,
    };
    capture(&lm.model, lm.pad_id(), &seqs, first, &opts, &mut sink)?;
    sink.bar.finish_and_clear();
    let secs = timer.elapsed().as_secs_f64();
    let captured = total - start;
    println!(
        "captured {captured} tokens from {} sequences at {} in {secs:.1} s ({:.0} tokens/s) → {}",
        seqs.len(),
        a.hooks.join(", "),
        captured as f64 / secs,
        a.out.display()
    );
    finish(sink.writers)
}

/// Writes each captured sequence into one store per hook point, skipping the rows a store
/// already holds (resume).
struct StoreSink {
    writers: Vec<StoreWriter>,
    /// Rows each store held when the run started.
    done: Vec<u64>,
    /// Global row of each sequence's first token.
    offsets: Vec<u64>,
    /// Label index of each sequence, when the prompts have labels.
    labels: Option<Vec<u8>>,
    bar: ProgressBar,
}

impl CaptureSink for StoreSink {
    type Error = anyhow::Error;

    fn sequence(&mut self, rows: SequenceRows<'_>) -> Result<()> {
        let n = rows.ids.len();
        let row0 = self.offsets[rows.index];
        let d = rows.acts[0].len() / n;
        let seq_id = rows.index as u32;
        for (h, w) in self.writers.iter_mut().enumerate() {
            let skip = self.done[h].saturating_sub(row0).min(n as u64) as usize;
            if skip == n {
                continue;
            }
            let positions: Vec<u32> = (skip as u32..n as u32).collect();
            let labels = self.labels.as_ref().map(|l| vec![l[rows.index]; n - skip]);
            w.push_rows(Rows {
                acts: &rows.acts[h][skip * d..],
                token_ids: &rows.ids[skip..],
                seq_ids: &vec![seq_id; n - skip],
                positions: &positions,
                roles: Some(&rows.roles[skip..]),
                labels: labels.as_deref(),
            })?;
        }
        self.bar.set_position(row0 + n as u64);
        Ok(())
    }
}

fn finish(writers: Vec<StoreWriter>) -> Result<()> {
    for w in writers {
        let skipped = w.skipped_non_finite();
        let m = w.finish()?;
        if skipped > 0 {
            eprintln!(
                "warning: {}: {skipped} rows with NaN, infinities or values beyond the dtype were dropped ({} kept)",
                m.hook, m.rows
            );
        }
    }
    Ok(())
}

/// The label names in order of first appearance and each record's label index; `None` when no
/// record has a label. Labels are all or nothing: a file that labels some records and not
/// others is refused (the unlabelled ones would fall in no contrasting set).
fn sequence_labels(
    records: &[PromptRecord],
    path: &Path,
) -> Result<(Vec<String>, Option<Vec<u8>>)> {
    if records.iter().all(|r| r.label.is_none()) {
        return Ok((Vec::new(), None));
    }
    let mut names: Vec<String> = Vec::new();
    let mut index = Vec::with_capacity(records.len());
    for r in records {
        let Some(label) = &r.label else {
            bail!(
                "{}:{}: this record has no \"label\" while others have one (label every record or none)",
                path.display(),
                r.line
            );
        };
        let i = match names.iter().position(|n| n == label) {
            Some(i) => i,
            None => {
                if names.len() == lantern_acts::MAX_LABELS {
                    bail!(
                        "{}:{}: more than {} distinct labels",
                        path.display(),
                        r.line,
                        lantern_acts::MAX_LABELS
                    );
                }
                names.push(label.clone());
                names.len() - 1
            }
        };
        index.push(i as u8);
    }
    Ok((names, Some(index)))
}

/// Checks that a resumed run matches `capture.json`; `false` when there is none (a new run).
fn check_record(out: &Path, record: &CaptureRecord) -> Result<bool> {
    let path = out.join("capture.json");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let old: CaptureRecord = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not a capture record ({e})", path.display()))?;
        let diffs = [
            ("model", old.model != record.model),
            (
                "model (contents: the weights differ)",
                !old.model_id.is_empty() && old.model_id != record.model_id,
            ),
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
            ("sort_window", old.sort_window != record.sort_window),
            ("tokens", old.tokens != record.tokens),
        ];
        if let Some((field, _)) = diffs.iter().find(|d| d.1) {
            bail!(
                "{}: this store was captured with a different {field}; use a new --out or the same settings to resume",
                path.display()
            );
        }
        return Ok(true);
    }
    Ok(false)
}

/// Writes `capture.json` (atomically).
fn write_record(out: &Path, record: &CaptureRecord) -> Result<()> {
    let path = out.join("capture.json");
    lantern_output::write_atomic(&path, serde_json::to_string_pretty(record)?.as_bytes())?;
    Ok(())
}
