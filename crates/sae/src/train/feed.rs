//! The data feed: the initial sample, row filtering and scaling, and batches read ahead (and,
//! for a single run, cut) on a background thread.

use std::sync::mpsc;
use std::thread;

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

/// A batch after the row cut: the kept rows, scaled, row-major `[n, d]`, and the rows it
/// dropped by reason.
pub(super) struct Rows {
    pub acts: Vec<f32>,
    pub d: usize,
    pub dropped: Dropped,
}

impl Rows {
    /// Drops the rows `cut` drops (counted in `dropped`) and scales the others.
    pub fn cut(batch: &Batch, cut: &RowCut, scale: f32) -> Self {
        let mut dropped = Dropped::default();
        let acts = cut.keep(batch, &mut dropped, |v| v * scale);
        Self {
            acts,
            d: batch.d,
            dropped,
        }
    }

    /// Rows kept.
    pub fn len(&self) -> usize {
        self.acts.len() / self.d.max(1)
    }
}

/// Reads batches on a background thread, two ahead, with the cursor after each, and prepares
/// each there with `prepare` (the row cut for a single run, so that a GPU step never waits
/// for it; nothing for a lockstep sweep, whose runs may cut differently).
pub(super) struct Prefetch<T> {
    rx: mpsc::Receiver<lantern_acts::Result<(T, Cursor, u64)>>,
    skipped: std::cell::Cell<u64>,
}

impl<T: Send + 'static> Prefetch<T> {
    pub fn start(
        mut reader: BatchReader,
        cursor: Cursor,
        mut prepare: impl FnMut(Batch) -> T + Send + 'static,
    ) -> Result<Self> {
        reader.seek(cursor).map_err(SaeError::Acts)?;
        let (tx, rx) = mpsc::sync_channel(2);
        thread::spawn(move || {
            loop {
                let item = match reader.next_batch() {
                    Ok(Some(b)) => Ok((prepare(b), reader.cursor(), reader.skipped_non_finite())),
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

    pub fn next(&self) -> Result<(T, Cursor)> {
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
