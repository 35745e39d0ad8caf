//! `BatchReader`: streams fixed-size batches from a store, sequentially or shuffled, with
//! bounded memory, deterministic order and exact resume from a [`Cursor`].

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::error::{ActsError, Result, usage};
use crate::manifest::Role;
use crate::rng::{Permutation, Rng, derive_seed};
use crate::shard::Shard;
use crate::store::Store;

/// Window length used to bound the mapped shards when reading sequentially.
const SEQUENTIAL_WINDOW: u64 = 1 << 16;
/// Fewest rows one rayon task gathers (a task per 64 rows of d 768 moves ≥ 100 KiB).
const GATHER_MIN_ROWS: usize = 64;
/// Fewest rows of a store-scope window one rayon task locates.
const LOCATE_MIN_ROWS: usize = 4096;
/// Mixed into the seed of a [`ShuffleScope::Store`] permutation.
const STORE_SCOPE_TAG: u64 = 0x0053_544f_5245; // "STORE"

fn nothing_passes(dir: &Path) -> ActsError {
    usage(dir, "no row passes the role / label / non-finite filters")
}

/// What to do with rows holding NaN or infinities.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// Fail with an error naming the shard file and row.
    #[default]
    Error,
    /// Drop the row and count it ([`BatchReader::skipped_non_finite`]).
    Skip,
}

/// Which rows a shuffled reader mixes (with `shuffle_rows > 0`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ShuffleScope {
    /// The epoch's shard order is permuted and rows are permuted within windows of
    /// `shuffle_rows` consecutive rows of it: a row moves at most one window, so a store
    /// written document by document stays grouped by document over stretches of the epoch
    /// (reads are nearly sequential, which suits stores larger than memory on slow disks).
    #[default]
    Window,
    /// The epoch is one uniform permutation of all the store's rows (a keyed [`Permutation`]
    /// of row numbers, no index held): every stretch of the epoch samples the whole store.
    /// Reads are random, and every window touches nearly every shard, so all shards stay
    /// mapped and their pages (clean page cache, evictable) count in the resident set: 2.4 GB
    /// for a 2.5 GB store against 0.5 GB in windows (BENCHMARKS.md). `shuffle_rows` only sets
    /// how many rows are located at a time.
    Store,
}

impl fmt::Display for ShuffleScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ShuffleScope::Window => "window",
            ShuffleScope::Store => "store",
        })
    }
}

impl FromStr for ShuffleScope {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "window" => Ok(ShuffleScope::Window),
            "store" => Ok(ShuffleScope::Store),
            _ => Err(format!(
                "unknown shuffle scope {s:?}: expected store or window"
            )),
        }
    }
}

/// How a [`BatchReader`] walks the store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Rows per batch (at least 1).
    pub batch_rows: usize,
    /// Shuffle window in rows; 0 reads sequentially in manifest order.
    pub shuffle_rows: usize,
    /// What a shuffle mixes: rows within a window, or the whole store.
    pub scope: ShuffleScope,
    pub seed: u64,
    /// Keep only rows with this role (the store must have roles).
    pub role: Option<Role>,
    /// Keep only rows with this label index (see [`Store::label_index`]; the store must have
    /// labels).
    pub label: Option<u8>,
    /// Number of passes over the store; `None` = forever.
    pub epochs: Option<u64>,
    pub non_finite: NonFinite,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            batch_rows: 4096,
            shuffle_rows: 0,
            scope: ShuffleScope::Window,
            seed: 0,
            role: None,
            label: None,
            epochs: Some(1),
            non_finite: NonFinite::Error,
        }
    }
}

/// Position in the epoch's (shuffled) row stream, before filtering.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Cursor {
    pub epoch: u64,
    pub row: u64,
}

/// A batch of rows: `acts` is row-major `[rows, d]` f32.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub rows: usize,
    pub d: usize,
    pub acts: Vec<f32>,
    pub token_ids: Vec<u32>,
    pub seq_ids: Vec<u32>,
    pub positions: Vec<u32>,
}

/// The current window: which stream rows it covers and where each of its rows lives.
struct Window {
    epoch: u64,
    index: u64,
    start: u64,
    /// `(shard, row in shard)` for each window offset, in read order.
    rows: Vec<(u32, u32)>,
}

/// Streams fixed-size batches from a [`Store`], with bounded memory, deterministic order and
/// exact resume from a [`Cursor`].
///
/// Shuffle (`shuffle_rows > 0`) with [`ShuffleScope::Window`]: for epoch `e`, the shard order is
/// permuted by an RNG seeded from `(seed, e)`; the concatenated row stream is cut into windows of
/// `shuffle_rows` rows; window `w`'s rows are permuted by an RNG seeded from `(seed, e, w)`.
/// With [`ShuffleScope::Store`], stream row `p` of epoch `e` is store row `π_e(p)` (manifest
/// order), `π_e` the [`Permutation`] keyed by `(seed, e)`. Rows are gathered from
/// the memory-mapped shards straight into the batch, in parallel (rayon). Only the shards the
/// current window touches stay mapped (under the store scope, nearly all of them: mappings cost
/// address space, and the pages read are the kernel's cache to evict) and only the index vector
/// of one window is held, so memory does not grow with the store. With `shuffle_rows = 0` rows
/// come in manifest order.
///
/// Filters (role, non-finite rows) apply after the order is fixed, so a [`Cursor`] counts
/// stream rows before filtering and resuming is exact with or without them.
pub struct BatchReader {
    store: Store,
    opts: ReaderOptions,
    cursor: Cursor,
    skipped: u64,
    window_len: u64,
    /// Shard order of `order_epoch` and the stream row where each of its entries starts.
    order_epoch: Option<u64>,
    order: Vec<usize>,
    order_starts: Vec<u64>,
    /// The epoch's permutation of store rows: `Some` exactly when shuffling under
    /// [`ShuffleScope::Store`].
    permutation: Option<Permutation>,
    window: Option<Window>,
    /// Mapped shards by shard index; only those the current window touches are `Some`.
    mapped: Vec<Option<Shard>>,
}

impl BatchReader {
    pub fn new(store: Store, opts: ReaderOptions) -> Result<Self> {
        if opts.batch_rows == 0 {
            return Err(usage(store.dir(), "batch_rows must be at least 1"));
        }
        if opts.role.is_some() && !store.has_roles() {
            return Err(usage(
                store.dir(),
                "a role filter was asked for but the store has no `role` tensor",
            ));
        }
        if let Some(l) = opts.label
            && usize::from(l) >= store.labels().len()
        {
            return Err(usage(
                store.dir(),
                format!(
                    "a filter on label {l} was asked for but the store has {} labels",
                    store.labels().len()
                ),
            ));
        }
        let window_len = match opts.shuffle_rows {
            0 => SEQUENTIAL_WINDOW,
            n => (n as u64).min(u64::from(u32::MAX)),
        };
        let mapped = (0..store.num_shards()).map(|_| None).collect();
        Ok(BatchReader {
            store,
            opts,
            cursor: Cursor::default(),
            skipped: 0,
            window_len,
            order_epoch: None,
            order: Vec::new(),
            order_starts: Vec::new(),
            permutation: None,
            window: None,
            mapped,
        })
    }

    /// Where the next batch starts.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// Resume from a cursor: the batches that follow equal those of an uninterrupted reader.
    pub fn seek(&mut self, cursor: Cursor) -> Result<()> {
        if cursor.row > self.store.rows() {
            return Err(usage(
                self.store.dir(),
                format!(
                    "cursor row {} is past the store's {} rows",
                    cursor.row,
                    self.store.rows()
                ),
            ));
        }
        self.cursor = cursor;
        Ok(())
    }

    /// Rows dropped so far because they held NaN or infinities ([`NonFinite::Skip`]).
    pub fn skipped_non_finite(&self) -> u64 {
        self.skipped
    }

    /// Next batch of exactly `batch_rows` rows (batches may cross epoch boundaries); the final
    /// batch of the final epoch may be shorter; `Ok(None)` when `epochs` are exhausted.
    /// On error the cursor stays where the batch started.
    pub fn next_batch(&mut self) -> Result<Option<Batch>> {
        let start = self.cursor;
        let skipped = self.skipped;
        let res = self.fill();
        if res.is_err() {
            self.cursor = start;
            self.skipped = skipped;
        }
        res
    }

    /// Fills one batch in rounds. Each round *plans* on this thread — walks the cursor through
    /// the current window, applies the role / label filters (one byte per row) and lists the
    /// rows to read, up to the rows still missing — then *gathers* the planned rows from the
    /// mapped shards in parallel (rayon, at least [`GATHER_MIN_ROWS`] rows per task), each
    /// straight into its slot of the batch with its finiteness checked, and finally walks the
    /// plan in stream order: the first non-finite row is the error, or under
    /// [`NonFinite::Skip`] skipped rows are closed up and the next round reads as many more. A
    /// round ends at a window boundary (loading the next window unmaps the shards this one
    /// reads), so the rows, their order, the cursor, the skip count and every error are those
    /// of reading one row at a time.
    fn fill(&mut self) -> Result<Option<Batch>> {
        let total = self.store.rows();
        let d = self.store.d_model();
        let want = self.opts.batch_rows;
        let mut acts = vec![0.0f32; want * d];
        let mut token_ids = Vec::with_capacity(want);
        let mut seq_ids = Vec::with_capacity(want);
        let mut positions = Vec::with_capacity(want);
        let role = self.opts.role.map(|r| r as u8);
        // Rows rejected by a filter since the last kept row: past `total`, nothing passes.
        let mut rejected_in_a_row = 0u64;
        // The round's rows (shard, row in shard) and, for each, the filter rejections just
        // before it.
        let mut plan: Vec<(u32, u32)> = Vec::with_capacity(want);
        let mut gaps: Vec<u64> = Vec::with_capacity(want);
        while token_ids.len() < want && total > 0 {
            plan.clear();
            gaps.clear();
            let mut gap = 0u64;
            let mut spinning = false;
            let mut exhausted = false;
            while plan.len() < want - token_ids.len() {
                if self.cursor.row >= total {
                    self.cursor = Cursor {
                        epoch: self.cursor.epoch + 1,
                        row: 0,
                    };
                }
                if self.opts.epochs.is_some_and(|e| self.cursor.epoch >= e) {
                    exhausted = true;
                    break;
                }
                // Exact when nothing is planned yet, a lower bound otherwise (the planned rows
                // may still turn out non-finite); the walk below checks the exact count.
                let bound = gap
                    + if plan.is_empty() {
                        rejected_in_a_row
                    } else {
                        0
                    };
                if bound > total {
                    spinning = true;
                    break;
                }
                if !plan.is_empty() && !self.window_holds(self.cursor) {
                    break;
                }
                let (shard_idx, local) = self.locate(self.cursor)?;
                self.cursor.row += 1;
                let Some(shard) = &self.mapped[shard_idx] else {
                    return Err(usage(
                        self.store.dir(),
                        "internal: shard of the window is not mapped",
                    ));
                };
                if (role.is_some() && shard.role(local) != role)
                    || (self.opts.label.is_some() && shard.label(local) != self.opts.label)
                {
                    gap += 1;
                    continue;
                }
                plan.push((shard_idx as u32, local as u32));
                gaps.push(gap);
                gap = 0;
            }
            let base = token_ids.len();
            let mapped = &self.mapped;
            // `None`: the row's shard is not mapped (cannot happen: planned rows lie in the
            // window, whose shards are mapped).
            let finite: Vec<Option<bool>> = acts[base * d..(base + plan.len()) * d]
                .par_chunks_mut(d)
                .zip(plan.par_iter())
                .with_min_len(GATHER_MIN_ROWS)
                .map(|(out, &(s, r))| match &mapped[s as usize] {
                    Some(shard) => {
                        shard.row_f32(r as usize, out);
                        Some(out.iter().all(|x| x.is_finite()))
                    }
                    None => None,
                })
                .collect();
            for (j, (&(s, r), &ok)) in plan.iter().zip(&finite).enumerate() {
                rejected_in_a_row += gaps[j];
                if rejected_in_a_row > total {
                    return Err(nothing_passes(self.store.dir()));
                }
                let (Some(shard), Some(finite)) = (&mapped[s as usize], ok) else {
                    return Err(usage(
                        self.store.dir(),
                        "internal: shard of the window is not mapped",
                    ));
                };
                let local = r as usize;
                if !finite {
                    match self.opts.non_finite {
                        NonFinite::Error => {
                            return Err(ActsError::NonFinite {
                                path: shard.path().to_path_buf(),
                                row: local as u64,
                            });
                        }
                        NonFinite::Skip => {
                            self.skipped += 1;
                            rejected_in_a_row += 1;
                            continue;
                        }
                    }
                }
                rejected_in_a_row = 0;
                let k = token_ids.len();
                if k != base + j {
                    // Close up the rows skipped before this one.
                    acts.copy_within((base + j) * d..(base + j + 1) * d, k * d);
                }
                token_ids.push(shard.token_id(local));
                seq_ids.push(shard.seq_id(local));
                positions.push(shard.position(local));
            }
            rejected_in_a_row += gap;
            if spinning {
                return Err(nothing_passes(self.store.dir()));
            }
            if exhausted {
                break;
            }
        }
        if total > 0 && self.cursor.row >= total {
            // Canonical form: the end of an epoch is the start of the next.
            self.cursor = Cursor {
                epoch: self.cursor.epoch + 1,
                row: 0,
            };
        }
        let rows = token_ids.len();
        if rows == 0 {
            return Ok(None);
        }
        acts.truncate(rows * d);
        Ok(Some(Batch {
            rows,
            d,
            acts,
            token_ids,
            seq_ids,
            positions,
        }))
    }

    /// Whether the stream row at `c` lies in the loaded window.
    fn window_holds(&self, c: Cursor) -> bool {
        self.window
            .as_ref()
            .is_some_and(|win| win.epoch == c.epoch && win.index == c.row / self.window_len)
    }

    /// Shard index and row within it for the stream row at `c`, loading the epoch's shard order
    /// and the window (mapping its shards) when `c` leaves the current ones.
    fn locate(&mut self, c: Cursor) -> Result<(usize, usize)> {
        if !self.window_holds(c) {
            self.load_window(c.epoch, c.row / self.window_len)?;
        }
        let Some(win) = &self.window else {
            return Err(usage(self.store.dir(), "internal: no window loaded"));
        };
        let (s, r) = win.rows[(c.row - win.start) as usize];
        Ok((s as usize, r as usize))
    }

    fn load_window(&mut self, epoch: u64, w: u64) -> Result<()> {
        let whole_store = self.opts.shuffle_rows > 0 && self.opts.scope == ShuffleScope::Store;
        if self.order_epoch != Some(epoch) {
            let mut order: Vec<usize> = (0..self.store.num_shards()).collect();
            if whole_store {
                let seed = derive_seed(&[self.opts.seed, epoch, STORE_SCOPE_TAG]);
                self.permutation = Some(Permutation::new(self.store.rows(), seed));
            } else if self.opts.shuffle_rows > 0 {
                Rng::new(derive_seed(&[self.opts.seed, epoch])).shuffle(&mut order);
            }
            let mut starts = Vec::with_capacity(order.len() + 1);
            let mut acc = 0;
            for &s in &order {
                starts.push(acc);
                acc += self.store.shard_rows(s);
            }
            starts.push(acc);
            self.order = order;
            self.order_starts = starts;
            self.order_epoch = Some(epoch);
        }
        let total = self.store.rows();
        let start = w * self.window_len;
        let end = (start + self.window_len).min(total);
        // Reuse the previous window's allocation.
        let mut rows = self.window.take().map(|w| w.rows).unwrap_or_default();
        rows.clear();
        let mut touched = vec![false; self.mapped.len()];
        match self.permutation.as_ref() {
            Some(perm) => {
                // Store rows in manifest order: order[k] = k. Located in parallel (a keyed
                // permutation and a binary search per row).
                let starts = &self.order_starts;
                (0..(end - start) as usize)
                    .into_par_iter()
                    .with_min_len(LOCATE_MIN_ROWS)
                    .map(|i| {
                        let g = perm.apply(start + i as u64);
                        let k = starts.partition_point(|&s| s <= g) - 1;
                        (k as u32, (g - starts[k]) as u32)
                    })
                    .collect_into_vec(&mut rows);
                for &(k, _) in &rows {
                    touched[k as usize] = true;
                }
            }
            None => {
                // First order entry whose range contains `start`.
                let mut k = self.order_starts.partition_point(|&s| s <= start) - 1;
                let mut p = start;
                while p < end {
                    let shard = self.order[k];
                    let seg_end = self.order_starts[k + 1].min(end);
                    if seg_end > p {
                        touched[shard] = true;
                        let base = self.order_starts[k];
                        rows.extend((p - base..seg_end - base).map(|r| (shard as u32, r as u32)));
                        p = seg_end;
                    }
                    k += 1;
                }
                if self.opts.shuffle_rows > 0 {
                    Rng::new(derive_seed(&[self.opts.seed, epoch, w])).shuffle(&mut rows);
                }
            }
        }
        for (slot, &keep) in self.mapped.iter_mut().zip(&touched) {
            if !keep {
                *slot = None; // unmap shards this window does not read
            }
        }
        // Then map the shards this window adds, in parallel (each is checked against its crc32
        // as it is mapped); the first failure in shard order is the error.
        let new: Vec<usize> = (0..self.mapped.len())
            .filter(|&i| touched[i] && self.mapped[i].is_none())
            .collect();
        let store = &self.store;
        let opened: Vec<Result<Shard>> = new.par_iter().map(|&i| store.shard(i)).collect();
        for (i, shard) in new.into_iter().zip(opened) {
            self.mapped[i] = Some(shard?);
        }
        self.window = Some(Window {
            epoch,
            index: w,
            start,
            rows,
        });
        Ok(())
    }
}
