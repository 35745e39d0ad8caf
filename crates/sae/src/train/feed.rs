//! The data feed: the initial sample, row filtering and scaling, and batches read ahead on a
//! background thread.

use std::sync::mpsc;
use std::thread;

use burn::tensor::{Device, Tensor, TensorData};
use lantern_acts::{Batch, BatchReader, Cursor, NonFinite, ReaderOptions, Store};

use super::TrainConfig;
use crate::rows::{Dropped, RowCut};
use crate::{Result, SaeError};

/// The first `init_rows` rows in the training order's seed, for the row cut, `b_dec` and the
/// input scale: the cut fixed on them and the rows it keeps.
pub(super) fn init_sample(store: &Store, cfg: &TrainConfig) -> Result<(RowCut, Vec<f32>)> {
    let mut reader = BatchReader::new(
        store.clone(),
        ReaderOptions {
            batch_rows: cfg.init_rows.clamp(1, 1 << 16),
            shuffle_rows: cfg.shuffle_rows,
            scope: cfg.shuffle_scope,
            seed: cfg.seed ^ 0x5eed_1417,
            role: None,
            label: None,
            epochs: Some(1),
            non_finite: NonFinite::Skip,
        },
    )
    .map_err(SaeError::Acts)?;
    let none_left = || {
        SaeError::Config(format!(
            "{}: no usable rows to initialise from (empty store, or every row excluded)",
            store.dir().display()
        ))
    };
    let b = reader
        .next_batch()
        .map_err(SaeError::Acts)?
        .ok_or_else(none_left)?;
    let cut = RowCut::from_sample(&cfg.row_filter(), &b);
    let rows = cut.keep(&b, &mut Dropped::default(), |v| v);
    if rows.is_empty() {
        return Err(none_left());
    }
    Ok((cut, rows))
}

/// Drops the rows `cut` drops (counted in `dropped`), scales, uploads: the batch tensor (None
/// if nothing is left).
pub(super) fn filter_rows(
    batch: Batch,
    cut: &RowCut,
    scale: f32,
    dropped: &mut Dropped,
    device: &Device,
) -> Option<Tensor<2>> {
    let d = batch.d;
    let kept = cut.keep(&batch, dropped, |v| v * scale);
    let n = kept.len() / d.max(1);
    (n > 0).then(|| Tensor::from_data(TensorData::new(kept, [n, d]), device))
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
