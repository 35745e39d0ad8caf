//! The data feed: the initial sample, row filtering and scaling, and batches read ahead on a
//! background thread.

use std::sync::mpsc;
use std::thread;

use burn::tensor::{Device, Tensor, TensorData};
use lantern_acts::{Batch, BatchReader, Cursor, NonFinite, ReaderOptions, Store};

use super::TrainConfig;
use crate::{Result, SaeError};

/// The first `init_rows` rows in the training order's seed, for `b_dec`, the input scale and
/// the outlier cut.
pub(super) fn init_sample(store: &Store, cfg: &TrainConfig) -> Result<Vec<f32>> {
    let mut reader = BatchReader::new(
        store.clone(),
        ReaderOptions {
            batch_rows: cfg.init_rows.clamp(1, 1 << 16),
            shuffle_rows: cfg.shuffle_rows,
            seed: cfg.seed ^ 0x5eed_1417,
            role: None,
            label: None,
            epochs: Some(1),
            non_finite: NonFinite::Skip,
        },
    )
    .map_err(SaeError::Acts)?;
    let batch = reader.next_batch().map_err(SaeError::Acts)?;
    let mut rows = Vec::new();
    if let Some(b) = batch {
        for (i, row) in b.acts.chunks(b.d).enumerate() {
            if !cfg.exclude_token_ids.contains(&b.token_ids[i]) {
                rows.extend_from_slice(row);
            }
        }
    }
    if rows.is_empty() {
        return Err(SaeError::Config(format!(
            "{}: no usable rows to initialise from (empty store, or every row excluded)",
            store.dir().display()
        )));
    }
    Ok(rows)
}

/// Drops excluded rows, scales, uploads: the batch tensor (None if nothing is left) and the
/// number of rows dropped.
pub(super) fn filter_rows(
    batch: Batch,
    cfg: &TrainConfig,
    scale: f32,
    norm_cut: Option<f32>,
    device: &Device,
) -> (Option<Tensor<2>>, u64) {
    let d = batch.d;
    let mut kept = Vec::with_capacity(batch.acts.len());
    let mut dropped = 0u64;
    for (i, row) in batch.acts.chunks(d).enumerate() {
        let excluded_id = cfg.exclude_token_ids.contains(&batch.token_ids[i]);
        let outlier =
            norm_cut.is_some_and(|cut| row.iter().map(|v| v * v).sum::<f32>().sqrt() > cut);
        if excluded_id || outlier {
            dropped += 1;
        } else {
            kept.extend(row.iter().map(|v| v * scale));
        }
    }
    let n = kept.len() / d.max(1);
    if n == 0 {
        return (None, dropped);
    }
    (
        Some(Tensor::from_data(TensorData::new(kept, [n, d]), device)),
        dropped,
    )
}

/// Reads batches on a background thread, two ahead, with the cursor after each.
pub(super) struct Prefetch {
    rx: mpsc::Receiver<lantern_acts::Result<(Batch, Cursor, u64)>>,
    skipped: std::cell::Cell<u64>,
}

impl Prefetch {
    pub fn start(mut reader: BatchReader, cursor: Cursor) -> Result<Self> {
        reader.seek(cursor).map_err(SaeError::Acts)?;
        let (tx, rx) = mpsc::sync_channel(2);
        thread::spawn(move || {
            loop {
                let item = match reader.next_batch() {
                    Ok(Some(b)) => Ok((b, reader.cursor(), reader.skipped_non_finite())),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.send(item).is_err() || failed {
                    break;
                }
            }
        });
        Ok(Self {
            rx,
            skipped: std::cell::Cell::new(0),
        })
    }

    pub fn next(&self) -> Result<(Batch, Cursor)> {
        match self.rx.recv() {
            Ok(Ok((b, c, skipped))) => {
                self.skipped.set(skipped);
                Ok((b, c))
            }
            Ok(Err(e)) => Err(SaeError::Acts(e)),
            Err(_) => Err(SaeError::StoreExhausted),
        }
    }

    pub fn skipped(&self) -> u64 {
        self.skipped.get()
    }
}
