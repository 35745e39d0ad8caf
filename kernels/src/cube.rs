//! The kernels themselves, in CubeCL's Rust dialect (`#[cube]`), compiled at run time to WGSL
//! (wgpu, lavapipe in CI) or SPIR-V (burn's `vulkan` feature, e.g. `--features
//! lantern-cli/vulkan`). Launchers live in `ops.rs`.
//!
//! Conventions: tensors are contiguous and row-major, read with linear indices; `f32` values,
//! `i32` indices. A grid larger than 65 535 cubes along x (wgpu's limit per dimension) is
//! folded into y, so a kernel's cube number is `CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X`
//! (`cube_id`) and cubes past the end return at once.

use cubecl::prelude::*;

/// Units per cube of the row kernels (top-k, reductions). A power of two: the tree
/// reductions halve it.
pub const ROW_UNITS: u32 = 256;
/// Halvings from [`ROW_UNITS`] to one unit.
const ROW_LEVELS: u32 = ROW_UNITS.trailing_zeros();
/// Entries per cube of the value-gradient kernel, and lanes per entry (`8 × 32 = 256`).
pub const VG_ENTRIES: u32 = 8;
/// See [`VG_ENTRIES`].
pub const VG_LANES: u32 = 32;
/// Longest segment (entries of one latent) the backward sorts into entry order before
/// summing; longer ones are summed in the order the scatter left them. Two `u32` arrays of
/// this length (8 KiB) fit WebGPU's default 16 KiB of workgroup memory.
pub const SORT_CAP: usize = 1024;

#[cube]
fn cube_id() -> usize {
    (CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X) as usize
}

/// A `u32` whose unsigned order is the order of the `f32` `x` (IEEE 754: flip every bit of a
/// negative number, only the sign bit of a positive one).
#[cube]
fn order_key(x: f32) -> u32 {
    let bits = u32::reinterpret(x);
    let mut key = bits | 0x8000_0000u32;
    if bits >= 0x8000_0000u32 {
        key = !bits;
    }
    key
}

/// Sum of `value` over the cube's `ROW_UNITS` units (a tree in shared memory); every unit
/// gets the total. Every unit of the cube must call it.
#[cube]
fn cube_sum(value: f32) -> f32 {
    let mut shared = Shared::<[f32]>::new_slice(ROW_UNITS as usize);
    let tid = UNIT_POS as usize;
    shared[tid] = value;
    sync_cube();
    #[unroll]
    for level in 0..ROW_LEVELS {
        let half = comptime!((ROW_UNITS >> (level + 1)) as usize);
        if tid < half {
            shared[tid] += shared[tid + half];
        }
        sync_cube();
    }
    let total = shared[0];
    sync_cube();
    total
}

/// The encoder's epilogue, in place: `acts[i] ← max(acts[i] + b[i mod m], 0)` over the `n`
/// entries of `acts` `[rows, m]` (the GEMM's result), one unit per entry.
#[cube(launch)]
pub fn bias_relu_kernel(acts: &mut Tensor<f32>, b: &Tensor<f32>, n: usize, m: usize) {
    let i = ABSOLUTE_POS;
    if i >= n {
        terminate!();
    }
    acts[i] = f32::max(acts[i] + b[i % m], 0f32);
}

/// `Σ_j a[base + j] · b[base + j]` over one row of `d`, summed by the cube: every unit gets
/// it, and every unit of the cube must call it. The one dot product of the row kernels, so
/// that they all find the same value for the same row.
#[cube]
fn row_dot(a: &Tensor<f32>, b: &Tensor<f32>, base: usize, d: usize) -> f32 {
    let mut dot = 0f32;
    let mut j = UNIT_POS as usize;
    while j < d {
        dot += a[base + j] * b[base + j];
        j += ROW_UNITS as usize;
    }
    cube_sum(dot)
}

/// Column `i` of the row at `base` as the top-k kernels see it: the value itself, or with
/// `biased` the encoder's epilogue of it, `max(value + bias[i], 0)` (the row is then the GEMM's
/// result `x W`, [`bias_relu_kernel`] not yet applied; the same two operations, so the same
/// bits); with `masked` that, or `max(value, 0)`, where `keep[i] > 0.5` and `0` elsewhere
/// (AuxK's dead latents).
#[cube]
#[allow(clippy::too_many_arguments)] // the row, its two per-column vectors, where, and how
fn entry(
    acts: &Tensor<f32>,
    keep: &Tensor<f32>,
    bias: &Tensor<f32>,
    base: usize,
    i: usize,
    #[comptime] masked: bool,
    #[comptime] biased: bool,
) -> f32 {
    let x = acts[base + i];
    let mut v = x;
    if comptime!(biased) {
        v = f32::max(x + bias[i], 0f32);
    }
    if comptime!(masked) {
        let y = v;
        v = 0f32;
        if keep[i] > 0.5f32 {
            v = f32::max(y, 0f32);
        }
    }
    v
}

/// Bins of a radix pass summed per group, in `state[STATE_GROUPS..]`.
const BIN_GROUPS: u32 = 16;
/// Where the group sums of [`radix_pick`] start in `state` (before: key, rank, tie count).
const STATE_GROUPS: usize = 3;
/// Length of the `state` array of the radix kernels.
const STATE_LEN: usize = STATE_GROUPS + BIN_GROUPS as usize;

/// The step of a radix pass after its histogram: finds the bin of byte `shift` that holds the
/// `state[1]`-th largest of the keys counted in `hist` (256 bins), sets that byte in
/// `state[0]` (the key bytes found so far), leaves in `state[1]` how many of the largest are
/// still to be taken from that bin, and in `state[2]` how many the bin holds (on the last
/// pass, `shift` 0: how many keys equal the one found). Sixteen units sum sixteen bins each,
/// then unit 0 walks the sums and the bins of one group down from the top (32 steps, where a
/// walk over the bins takes 256 one after another). Every unit must call it; it ends synced.
#[cube]
fn radix_pick(hist: &Shared<[Atomic<u32>]>, state: &mut Shared<[u32]>, shift: u32) {
    let tid = UNIT_POS as usize;
    let width = (256 / BIN_GROUPS) as usize;
    if tid < BIN_GROUPS as usize {
        let mut sum = 0u32;
        for j in 0..width {
            sum += hist[tid * width + j].load();
        }
        state[STATE_GROUPS + tid] = sum;
    }
    sync_cube();
    if tid == 0 {
        let prefix = state[0];
        let mut rem = state[1];
        let mut group = 0usize;
        let mut found = false;
        for j in 0..BIN_GROUPS as usize {
            let g = BIN_GROUPS as usize - 1 - j;
            if !found {
                let c = state[STATE_GROUPS + g];
                if c >= rem {
                    group = g;
                    found = true;
                } else {
                    rem -= c;
                }
            }
        }
        found = false;
        for j in 0..width {
            let bin = group * width + width - 1 - j;
            if !found {
                let c = hist[bin].load();
                if c >= rem {
                    state[0] = prefix | ((bin as u32) << shift);
                    state[1] = rem;
                    state[2] = c;
                    found = true;
                } else {
                    rem -= c;
                }
            }
        }
    }
    sync_cube();
}

/// The `state[1]`-th largest key of the first `n` candidates of [`top_k_stream_kernel`]'s
/// buffer (four byte passes of a 256-bin histogram in shared memory, [`radix_pick`]), the key
/// of a candidate being its value's `order_key`: `state[0]` ends as that key, `state[1]` as
/// how many equal to it are among the largest, `state[2]` as how many equal it in all. With
/// `by_column` the keys are `!cols[i]` of the candidates whose value's key is `tied` (the
/// others are not counted), so that the largest are the lowest columns. `state[0]` must be 0
/// on entry. Every unit must call it.
#[cube]
fn radix_select_shared(
    cand: &mut Shared<[f32]>,
    cols: &mut Shared<[u32]>,
    hist: &Shared<[Atomic<u32>]>,
    state: &mut Shared<[u32]>,
    n: usize,
    tied: u32,
    by_column: bool,
) {
    let tid = UNIT_POS as usize;
    // A loop, not unrolled: the kernel stays small enough for lavapipe to compile quickly.
    for pass in 0..4u32 {
        let shift = 24u32 - 8u32 * pass;
        // The key bytes found on earlier passes (none on the first).
        let high = !(0xFFFF_FFFFu32 >> (8u32 * pass));
        hist[tid].store(0u32);
        sync_cube();
        let prefix = state[0];
        let mut i = tid;
        while i < n {
            let mut key = order_key(cand[i]);
            let mut counted = true;
            if by_column {
                counted = key == tied;
                key = !cols[i];
            }
            if counted && (key & high) == (prefix & high) {
                hist[((key >> shift) & 255u32) as usize].fetch_add(1u32);
            }
            i += ROW_UNITS as usize;
        }
        sync_cube();
        radix_pick(hist, state, shift);
    }
}

/// Row top-k by radix selection: one cube per row of `acts` `[rows, m]`. Four passes find
/// the k-th largest value's key byte by byte (a 256-bin histogram of the keys that share the
/// bytes found so far); a last pass writes every value above it and the first `rem` values
/// equal to it (ties go to the lower column), in column order within each class. It selects
/// from the row as `entry` reads it: with `biased` after the encoder's epilogue by `bias`
/// `[m]`, with `masked` masked by `keep` `[m]`. Needs `k ≤ m` and a cube of `ROW_UNITS` units.
#[cube(launch)]
pub fn top_k_rows_kernel(
    acts: &Tensor<f32>,
    keep: &Tensor<f32>,
    bias: &Tensor<f32>,
    vals: &mut Tensor<f32>,
    idx: &mut Tensor<i32>,
    rows: usize,
    m: usize,
    k: usize,
    #[comptime] masked: bool,
    #[comptime] biased: bool,
) {
    let row = cube_id();
    if row >= rows {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let units = ROW_UNITS as usize;
    let base = row * m;
    let hist = Shared::<[Atomic<u32>]>::new_slice(ROW_UNITS as usize);
    let mut state = Shared::<[u32]>::new_slice(STATE_LEN);
    let mut gt = Shared::<[u32]>::new_slice(ROW_UNITS as usize);
    let mut eq = Shared::<[u32]>::new_slice(ROW_UNITS as usize);
    if tid == 0 {
        state[0] = 0u32; // key bytes found so far
        state[1] = k as u32; // how many of the largest are still to be placed below them
    }
    #[unroll]
    for pass in 0..4u32 {
        let shift = comptime!(24 - 8 * pass);
        hist[tid].store(0u32);
        sync_cube();
        let prefix = state[0];
        let mut i = tid;
        while i < m {
            let key = order_key(entry(acts, keep, bias, base, i, masked, biased));
            let mut same = true;
            if comptime!(pass > 0) {
                let high = comptime!(0xFFFF_FFFFu32 << (shift + 8));
                same = (key & high) == (prefix & high);
            }
            if same {
                hist[((key >> shift) & 255u32) as usize].fetch_add(1u32);
            }
            i += units;
        }
        sync_cube();
        radix_pick(&hist, &mut state, shift);
    }
    let threshold = state[0];
    let need_eq = state[1];
    // Each unit owns a contiguous stretch of the row, so that an exclusive scan of the
    // per-unit counts gives every written value its place.
    let chunk = m.div_ceil(units);
    let start = min(tid * chunk, m);
    let end = min(start + chunk, m);
    let mut n_gt = 0u32;
    let mut n_eq = 0u32;
    for i in start..end {
        let key = order_key(entry(acts, keep, bias, base, i, masked, biased));
        if key > threshold {
            n_gt += 1u32;
        } else if key == threshold {
            n_eq += 1u32;
        }
    }
    gt[tid] = n_gt;
    eq[tid] = n_eq;
    sync_cube();
    if tid == 0 {
        let mut run_gt = 0u32;
        let mut run_eq = 0u32;
        for u in 0..units {
            let a = gt[u];
            let b = eq[u];
            gt[u] = run_gt;
            eq[u] = run_eq;
            run_gt += a;
            run_eq += b;
        }
    }
    sync_cube();
    let total_gt = k as u32 - need_eq;
    let mut at_gt = gt[tid];
    let mut at_eq = eq[tid];
    let out = row * k;
    for i in start..end {
        let x = entry(acts, keep, bias, base, i, masked, biased);
        let key = order_key(x);
        if key > threshold {
            vals[out + at_gt as usize] = x;
            idx[out + at_gt as usize] = i as i32;
            at_gt += 1u32;
        } else if key == threshold {
            if at_eq < need_eq {
                let at = (total_gt + at_eq) as usize;
                vals[out + at] = x;
                idx[out + at] = i as i32;
            }
            at_eq += 1u32;
        }
    }
}

/// Candidate slots per unit of [`top_k_stream_kernel`] (13 KiB of shared memory in all,
/// within WebGPU's default 16 KiB).
const STREAM_SLOTS: u32 = 6;
/// The largest `k` of [`top_k_stream_kernel`] (512); larger `k` go to [`top_k_rows_kernel`].
pub const STREAM_K_MAX: usize = (2 * ROW_UNITS) as usize;
/// Values each unit reads per tile of [`top_k_stream_kernel`] for `k`: 4 up to 256, 2 above,
/// so that a cut (which leaves `k`) always leaves at least 256 slots of room before the next.
pub fn stream_reads(k: usize) -> u32 {
    if k <= ROW_UNITS as usize { 4 } else { 2 }
}

/// Row top-k in one pass over the row: one cube per row of `acts` `[rows, m]`, the same
/// result as [`top_k_rows_kernel`] (values above the k-th in column order, then the first
/// values equal to it in column order) for `k ≤ STREAM_K_MAX`, reading the row as `entry`
/// does (`biased`, `masked`).
///
/// The row is read once, in tiles of `reads · ROW_UNITS` values ([`stream_reads`]). The first
/// tile goes whole into a candidate buffer in shared memory (`STREAM_SLOTS · ROW_UNITS`
/// slots), and so does every later value until the first cut; after it a value joins only if
/// its key is above the threshold. Whenever more than `(STREAM_SLOTS − reads) · ROW_UNITS`
/// are held, a cut
/// ([`stream_cut`]) keeps the `k` largest by (value descending, column ascending) and raises
/// the threshold to the k-th's key. A later value equal to the threshold can never be kept:
/// it comes after `k` values that rank above it (larger, or equal with a lower column). A
/// last cut leaves exactly the `k`, which each unit places by counting the kept ones that go
/// before its own. Where the radix kernel reads the row six times (four byte histograms, a
/// count, a write) and runs its histogram atomics over every value, this one reads it once
/// and works on the few candidates in shared memory.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel takes every buffer it touches as an argument
pub fn top_k_stream_kernel(
    acts: &Tensor<f32>,
    keep: &Tensor<f32>,
    bias: &Tensor<f32>,
    vals: &mut Tensor<f32>,
    idx: &mut Tensor<i32>,
    rows: usize,
    m: usize,
    k: usize,
    #[comptime] masked: bool,
    #[comptime] biased: bool,
    #[comptime] reads: u32,
) {
    let row = cube_id();
    if row >= rows {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let units = ROW_UNITS as usize;
    let base = row * m;
    let mut cand = Shared::<[f32]>::new_slice((STREAM_SLOTS * ROW_UNITS) as usize);
    let mut cols = Shared::<[u32]>::new_slice((STREAM_SLOTS * ROW_UNITS) as usize);
    let count = Shared::<[Atomic<u32>]>::new_slice(1usize);
    let hist = Shared::<[Atomic<u32>]>::new_slice(ROW_UNITS as usize);
    let mut state = Shared::<[u32]>::new_slice(STATE_LEN);
    let tile = comptime!((reads * ROW_UNITS) as usize);
    let limit = comptime!((STREAM_SLOTS - reads) * ROW_UNITS);
    let tiles = m.div_ceil(tile);
    let mut threshold = 0u32;
    // Until the first cut every value is a candidate (with k > 256 a tile of 512 does not fill
    // the buffer past `limit` = 1 024, so that cut may come a tile or two later).
    let mut open = true;
    // Tiles 0 .. tiles − 1, then one more turn for the last cut (one call site of the cut, so
    // that the kernel stays small).
    for t in 0..tiles + 1 {
        if t == 0 {
            // Every value of the first tile is a candidate, each in its own slot (no atomics).
            #[unroll]
            for r in 0..reads as usize {
                let i = r * units + tid;
                if i < m {
                    cand[i] = entry(acts, keep, bias, base, i, masked, biased);
                    cols[i] = i as u32;
                }
            }
            if tid == 0 {
                count[0].store(min(m, tile) as u32);
            }
        } else if t < tiles {
            #[unroll]
            for r in 0..reads as usize {
                let i = t * tile + r * units + tid;
                if i < m {
                    let x = entry(acts, keep, bias, base, i, masked, biased);
                    if open || order_key(x) > threshold {
                        let at = count[0].fetch_add(1u32) as usize;
                        cand[at] = x;
                        cols[at] = i as u32;
                    }
                }
            }
        }
        sync_cube();
        let n = count[0].load();
        // Every unit has read `n` before a cut starts rewriting the buffer and the count.
        sync_cube();
        if n > limit || t == tiles {
            stream_cut(
                &mut cand, &mut cols, &count, &hist, &mut state, n as usize, k as u32,
            );
            threshold = state[0];
            open = false;
        }
    }
    let out = row * k;
    #[unroll]
    for s in 0..comptime!(STREAM_K_MAX / ROW_UNITS as usize) {
        let slot = s * units + tid;
        if slot < k {
            let x = cand[slot];
            let c = cols[slot];
            let above = order_key(x) > threshold;
            // Kept values above the threshold go first, each class in column order.
            let mut before = 0u32;
            let mut n_above = 0u32;
            for j in 0..k {
                let other_above = order_key(cand[j]) > threshold;
                if other_above {
                    n_above += 1u32;
                }
                if other_above == above && cols[j] < c {
                    before += 1u32;
                }
            }
            if !above {
                before += n_above;
            }
            vals[out + before as usize] = x;
            idx[out + before as usize] = c as i32;
        }
    }
}

/// A cut of [`top_k_stream_kernel`]'s `n` candidates (`cand`/`cols`, in any order) to the
/// `k` largest by (value descending, column ascending), left in the first `k` slots in any
/// order, with `count` set to `k` and `state[0]` the k-th's key. A radix select over the
/// buffer finds the k-th key; when only some of the values equal to it are kept, a second
/// one over their columns finds the highest column kept. Every unit must call it.
#[cube]
fn stream_cut(
    cand: &mut Shared<[f32]>,
    cols: &mut Shared<[u32]>,
    count: &Shared<[Atomic<u32>]>,
    hist: &Shared<[Atomic<u32>]>,
    state: &mut Shared<[u32]>,
    n: usize,
    k: u32,
) {
    let tid = UNIT_POS as usize;
    let units = ROW_UNITS as usize;
    if tid == 0 {
        state[0] = 0u32;
        state[1] = k;
    }
    radix_select_shared(cand, cols, hist, state, n, 0u32, false);
    let threshold = state[0];
    let need_eq = state[1];
    let n_eq = state[2];
    // Equal values kept: every one, or those up to the need_eq-th lowest column.
    let mut last_col = 0xFFFF_FFFFu32;
    if need_eq < n_eq {
        sync_cube();
        if tid == 0 {
            state[0] = 0u32;
            state[1] = need_eq;
        }
        radix_select_shared(cand, cols, hist, state, n, threshold, true);
        last_col = !state[0];
    }
    // Each unit's survivors, held while the buffer is rewritten.
    let mut kept_v = Array::<f32>::new(STREAM_SLOTS as usize);
    let mut kept_c = Array::<u32>::new(STREAM_SLOTS as usize);
    let mut kept = 0u32;
    #[unroll]
    for s in 0..STREAM_SLOTS as usize {
        let i = s * units + tid;
        if i < n {
            let x = cand[i];
            let c = cols[i];
            let key = order_key(x);
            if key > threshold || (key == threshold && c <= last_col) {
                kept_v[kept as usize] = x;
                kept_c[kept as usize] = c;
                kept += 1u32;
            }
        }
    }
    if tid == 0 {
        count[0].store(0u32);
    }
    sync_cube();
    let at = count[0].fetch_add(kept) as usize;
    for j in 0..kept as usize {
        cand[at + j] = kept_v[j];
        cols[at + j] = kept_c[j];
    }
    if tid == 0 {
        state[0] = threshold;
    }
    sync_cube();
}

/// Sparse decode, `k` entries per row: `out[b, j] = Σ_t val[b, t] · w[lat[b, t], j]`. Cube
/// `c` covers row `c / blocks` and columns `(c % blocks)·U …` of it (`U` its units).
#[cube(launch)]
pub fn decode_kernel(
    val: &Tensor<f32>,
    lat: &Tensor<i32>,
    w: &Tensor<f32>,
    out: &mut Tensor<f32>,
    rows: usize,
    k: usize,
    d: usize,
    blocks: usize,
) {
    let c = cube_id();
    let b = c / blocks;
    let j = (c % blocks) * CUBE_DIM as usize + UNIT_POS as usize;
    if b >= rows || j >= d {
        terminate!();
    }
    let mut acc = 0f32;
    for t in 0..k {
        let e = b * k + t;
        let l = usize::cast_from(lat[e]);
        acc += val[e] * w[l * d + j];
    }
    out[b * d + j] = acc;
}

/// `∂L/∂pre` of each entry: `gp[n] = 1[val_n > 0] · (w[lat_n] · g[row_n])`. A cube holds
/// `VG_ENTRIES` entries (y) of `VG_LANES` lanes (x) that split the dot product.
#[cube(launch)]
pub fn value_grad_kernel(
    val: &Tensor<f32>,
    row: &Tensor<i32>,
    lat: &Tensor<i32>,
    g: &Tensor<f32>,
    w: &Tensor<f32>,
    gp: &mut Tensor<f32>,
    n: usize,
    d: usize,
) {
    let mut partial = Shared::<[f32]>::new_slice((VG_ENTRIES * VG_LANES) as usize);
    let e = cube_id() * VG_ENTRIES as usize + UNIT_POS_Y as usize;
    let lane = UNIT_POS_X as usize;
    let slot = UNIT_POS_Y as usize * VG_LANES as usize + lane;
    let mut acc = 0f32;
    if e < n {
        let r = usize::cast_from(row[e]) * d;
        let l = usize::cast_from(lat[e]) * d;
        let mut j = lane;
        while j < d {
            acc += w[l + j] * g[r + j];
            j += VG_LANES as usize;
        }
    }
    partial[slot] = acc;
    sync_cube();
    if lane == 0 && e < n {
        let mut total = 0f32;
        for t in 0..VG_LANES as usize {
            total += partial[slot + t];
        }
        let mut out = 0f32;
        if val[e] > 0f32 {
            out = total;
        }
        gp[e] = out;
    }
}

/// Entries per latent: `counts[lat_n] += 1` (one unit per entry).
#[cube(launch)]
pub fn count_kernel(lat: &Tensor<i32>, counts: &mut Tensor<Atomic<u32>>, n: usize) {
    let e = ABSOLUTE_POS;
    if e >= n {
        terminate!();
    }
    counts[usize::cast_from(lat[e])].fetch_add(1u32);
}

/// Exclusive scan of `counts` `[m]` into `offsets` `[m + 1]`, by one cube: each unit sums a
/// contiguous stretch, unit 0 scans the `ROW_UNITS` partial sums, each unit writes its
/// stretch.
/// Fire counts: `counts[lat[e]] += 1` for every entry `e < n` with `val[e] > 0`, one unit per
/// entry (integer atomics, so the result does not depend on their order).
#[cube(launch)]
pub fn fire_count_kernel(
    val: &Tensor<f32>,
    lat: &Tensor<i32>,
    counts: &mut Tensor<Atomic<u32>>,
    n: usize,
) {
    let e = ABSOLUTE_POS;
    if e >= n {
        terminate!();
    }
    if val[e] > 0f32 {
        counts[usize::cast_from(lat[e])].fetch_add(1u32);
    }
}

#[cube(launch)]
pub fn scan_kernel(counts: &Tensor<u32>, offsets: &mut Tensor<u32>, m: usize) {
    let mut part = Shared::<[u32]>::new_slice(ROW_UNITS as usize);
    let tid = UNIT_POS as usize;
    let chunk = m.div_ceil(ROW_UNITS as usize);
    let start = min(tid * chunk, m);
    let end = min(start + chunk, m);
    let mut s = 0u32;
    for i in start..end {
        s += counts[i];
    }
    part[tid] = s;
    sync_cube();
    if tid == 0 {
        let mut run = 0u32;
        for u in 0..ROW_UNITS as usize {
            let a = part[u];
            part[u] = run;
            run += a;
        }
        offsets[m] = run;
    }
    sync_cube();
    let mut run = part[tid];
    for i in start..end {
        offsets[i] = run;
        run += counts[i];
    }
}

/// Places each entry in its latent's segment: `perm[offsets[lat_n] + cursor++] = n`. The
/// order inside a segment is the atomics' (the segment kernel sorts it back).
#[cube(launch)]
pub fn scatter_kernel(
    lat: &Tensor<i32>,
    offsets: &Tensor<u32>,
    cursor: &mut Tensor<Atomic<u32>>,
    perm: &mut Tensor<u32>,
    n: usize,
) {
    let e = ABSOLUTE_POS;
    if e >= n {
        terminate!();
    }
    let l = usize::cast_from(lat[e]);
    let at = offsets[l] + cursor[l].fetch_add(1u32);
    perm[at as usize] = e as u32;
}

/// The weight gradients as segment sums by latent, one cube per latent `l`, no atomics:
///
/// - `dec_out[l] = dec_in[l] + Σ_{n: lat_n = l} val_n · g[row_n]`
/// - `enc_out[l] = enc_in[l] + Σ_{n: lat_n = l} gp_n · xc[row_n]`
/// - `b_out[l] = b_in[l] + Σ_{n: lat_n = l} gp_n`
///
/// (without `accumulate`, the sums alone: the `_in` tensors are not read).
///
/// A segment of at most [`SORT_CAP`] entries is first put in entry order (a rank sort in
/// shared memory), so the sums do not depend on the scatter's scheduling.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel takes every buffer it touches as an argument
pub fn segment_kernel(
    perm: &Tensor<u32>,
    offsets: &Tensor<u32>,
    val: &Tensor<f32>,
    gp: &Tensor<f32>,
    row: &Tensor<i32>,
    g: &Tensor<f32>,
    xc: &Tensor<f32>,
    dec_in: &Tensor<f32>,
    enc_in: &Tensor<f32>,
    b_in: &Tensor<f32>,
    dec_out: &mut Tensor<f32>,
    enc_out: &mut Tensor<f32>,
    b_out: &mut Tensor<f32>,
    m: usize,
    d: usize,
    #[comptime] accumulate: bool,
) {
    let l = cube_id();
    if l >= m {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let units = CUBE_DIM as usize;
    let start = offsets[l] as usize;
    let len = offsets[l + 1] as usize - start;
    let mut ids = Shared::<[u32]>::new_slice(SORT_CAP);
    let mut sorted = Shared::<[u32]>::new_slice(SORT_CAP);
    let small = len <= SORT_CAP;
    if small {
        let mut i = tid;
        while i < len {
            ids[i] = perm[start + i];
            i += units;
        }
        sync_cube();
        let mut i = tid;
        while i < len {
            let me = ids[i];
            let mut rank = 0usize;
            for j in 0..len {
                if ids[j] < me {
                    rank += 1;
                }
            }
            sorted[rank] = me;
            i += units;
        }
        sync_cube();
    }
    let mut j = tid;
    while j < d {
        let mut dec = 0f32;
        let mut enc = 0f32;
        for t in 0..len {
            let e = if small {
                sorted[t] as usize
            } else {
                perm[start + t] as usize
            };
            let r = usize::cast_from(row[e]) * d;
            dec += val[e] * g[r + j];
            enc += gp[e] * xc[r + j];
        }
        if comptime!(accumulate) {
            dec_out[l * d + j] = dec_in[l * d + j] + dec;
            enc_out[l * d + j] = enc_in[l * d + j] + enc;
        } else {
            dec_out[l * d + j] = dec;
            enc_out[l * d + j] = enc;
        }
        j += units;
    }
    if tid == 0 {
        let mut b = 0f32;
        for t in 0..len {
            let e = if small {
                sorted[t] as usize
            } else {
                perm[start + t] as usize
            };
            b += gp[e];
        }
        if comptime!(accumulate) {
            b_out[l] = b_in[l] + b;
        } else {
            b_out[l] = b;
        }
    }
}

/// One Adam step (bias-corrected) of element `i`, the gradient first scaled by `f` (the clip
/// factor); `lr_c1 = lr / (1 − β₁ᵗ)`, `c2 = 1 − β₂ᵗ`:
/// `m' = β₁m + (1−β₁)g`, `v' = β₂v + (1−β₂)g²`, `p' = p − lr_c1 · m' / (√(v'/c2) + ε)`.
/// Writes `m'`, `v'` and `p'` at `i` and returns `p'`.
#[cube]
#[allow(clippy::too_many_arguments)] // a kernel takes every buffer it touches as an argument
fn adam_at(
    i: usize,
    p: &Tensor<f32>,
    g: f32,
    m: &Tensor<f32>,
    v: &Tensor<f32>,
    f: f32,
    p_out: &mut Tensor<f32>,
    m_out: &mut Tensor<f32>,
    v_out: &mut Tensor<f32>,
    lr_c1: f32,
    c2: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
) -> f32 {
    let gi = g * f;
    let mi = beta1 * m[i] + (1f32 - beta1) * gi;
    let vi = beta2 * v[i] + (1f32 - beta2) * gi * gi;
    let pi = p[i] - lr_c1 * mi / (f32::sqrt(vi / c2) + eps);
    p_out[i] = pi;
    m_out[i] = mi;
    v_out[i] = vi;
    pi
}

/// `adam_at` on every element, one unit each.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel takes every buffer it touches as an argument
pub fn adam_kernel(
    p: &Tensor<f32>,
    g: &Tensor<f32>,
    m: &Tensor<f32>,
    v: &Tensor<f32>,
    factor: &Tensor<f32>,
    p_out: &mut Tensor<f32>,
    m_out: &mut Tensor<f32>,
    v_out: &mut Tensor<f32>,
    n: usize,
    lr_c1: f32,
    c2: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
) {
    let i = ABSOLUTE_POS;
    if i >= n {
        terminate!();
    }
    adam_at(
        i, p, g[i], m, v, factor[0], p_out, m_out, v_out, lr_c1, c2, beta1, beta2, eps,
    );
}

/// `out[r] = ‖g_r − (g_r·w_r) w_r‖²` for every row `r` of `w`, `g` `[rows, d]`: the squared
/// norm of each row of `g` without its component along the row, without writing it (for the
/// clip factor of a unit-norm decoder's update); without `remove`, `‖g_r‖²` (`w` unread).
/// One cube per row.
#[cube(launch)]
pub fn row_sq_norm_kernel(
    w: &Tensor<f32>,
    g: &Tensor<f32>,
    out: &mut Tensor<f32>,
    rows: usize,
    d: usize,
    #[comptime] remove: bool,
) {
    let r = cube_id();
    if r >= rows {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let base = r * d;
    let mut sq = 0f32;
    if comptime!(remove) {
        let dot = row_dot(w, g, base, d);
        let mut j = tid;
        while j < d {
            let h = g[base + j] - dot * w[base + j];
            sq += h * h;
            j += ROW_UNITS as usize;
        }
    } else {
        let mut j = tid;
        while j < d {
            sq += g[base + j] * g[base + j];
            j += ROW_UNITS as usize;
        }
    }
    let total = cube_sum(sq);
    if tid == 0 {
        out[r] = total;
    }
}

/// The update of a unit-norm decoder, one cube per row: the gradient's component along the
/// row removed (`g_i − (g_i·p_i) p_i`), the Adam
/// step of `adam_at` on the result, then `p'_i ← p'_i / max(‖p'_i‖, 1e-12)`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)] // a kernel takes every buffer it touches as an argument
pub fn adam_unit_rows_kernel(
    p: &Tensor<f32>,
    g: &Tensor<f32>,
    m: &Tensor<f32>,
    v: &Tensor<f32>,
    factor: &Tensor<f32>,
    p_out: &mut Tensor<f32>,
    m_out: &mut Tensor<f32>,
    v_out: &mut Tensor<f32>,
    rows: usize,
    d: usize,
    lr_c1: f32,
    c2: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
) {
    let r = cube_id();
    if r >= rows {
        terminate!();
    }
    let tid = UNIT_POS as usize;
    let base = r * d;
    let f = factor[0];
    // The gradient's component along the row, as `row_sq_norm_kernel` computes it.
    let dot = row_dot(p, g, base, d);
    let mut sq = 0f32;
    let mut j = tid;
    while j < d {
        let pi = adam_at(
            base + j,
            p,
            g[base + j] - dot * p[base + j],
            m,
            v,
            f,
            p_out,
            m_out,
            v_out,
            lr_c1,
            c2,
            beta1,
            beta2,
            eps,
        );
        sq += pi * pi;
        j += ROW_UNITS as usize;
    }
    let norm = f32::max(f32::sqrt(cube_sum(sq)), 1e-12f32);
    let mut j = tid;
    while j < d {
        // Each unit rescales only what it wrote itself.
        p_out[base + j] /= norm;
        j += ROW_UNITS as usize;
    }
}
