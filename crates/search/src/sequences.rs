//! Reading a store sequence by sequence, and finding the per-layer stores of a multi-hook
//! capture.
//!
//! `lantern capture` writes the rows of one sequence contiguously and in order, so a
//! sequence is a run of rows with one `seq_id`; [`for_each_sequence`] streams those runs
//! (decoded to f32) through a callback, holding one sequence in memory at a time. A store whose
//! sequences are interleaved (rows of a `seq_id` that reappear after another sequence) is
//! refused rather than silently split.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use lantern_acts::{MANIFEST_FILE, Store};
use lantern_lm::HookPoint;

use crate::Result;
use crate::error::{input, io_err};
use crate::tokens::TokenSelection;

/// One sequence's rows.
pub struct SeqRows<'a> {
    /// The store's `seq_id` of these rows.
    pub seq_id: u32,
    /// The sequence's label byte (`None` when the store has no labels).
    pub label: Option<u8>,
    /// Global row index (over all shards) of the sequence's first row.
    pub first_row: u64,
    pub token_ids: &'a [u32],
    pub positions: &'a [u32],
    /// Role byte per token (`None` when the store has no roles).
    pub roles: Option<&'a [u8]>,
    /// `[n, d_model]` row-major, f32.
    pub acts: &'a [f32],
}

impl SeqRows<'_> {
    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }
}

/// Checks that `store` can give `selection` (roles present when the selection needs them).
pub fn check_selection(store: &Store, selection: TokenSelection) -> Result<()> {
    if selection.needs_roles() && !store.has_roles() {
        return Err(input(
            store.dir(),
            format!(
                "token selection '{selection}' needs prompt/answer roles, and this store has none \
                 (capture chat records to get them, or select all tokens)"
            ),
        ));
    }
    Ok(())
}

/// Calls `f` with every sequence of `store` (in store order) whose label is `label` (every
/// sequence when `None`).
pub fn for_each_sequence(
    store: &Store,
    label: Option<u8>,
    mut f: impl FnMut(SeqRows<'_>) -> Result<()>,
) -> Result<()> {
    let d = store.d_model();
    let has_roles = store.has_roles();
    let mut buf = SeqBuf::default();
    let mut finished: HashSet<u32> = HashSet::new();
    let mut row = vec![0f32; d];
    let mut global = 0u64;
    for s in 0..store.num_shards() {
        let shard = store.shard(s)?;
        for i in 0..shard.rows() {
            let seq = shard.seq_id(i);
            if buf.seq != Some(seq) {
                buf.flush(label, has_roles, &mut f)?;
                if !finished.insert(seq) {
                    return Err(input(
                        shard.path(),
                        format!(
                            "row {global}: rows of sequence {seq} are not contiguous (this \
                             store interleaves sequences; feature search reads one sequence \
                             at a time)"
                        ),
                    ));
                }
                buf.start(seq, shard.label(i), global);
            } else if shard.label(i) != buf.label {
                return Err(input(
                    shard.path(),
                    format!("row {global}: sequence {seq} has rows with different labels"),
                ));
            }
            if label.is_none() || buf.label == label {
                shard.row_f32(i, &mut row);
                buf.acts.extend_from_slice(&row);
                buf.ids.push(shard.token_id(i));
                buf.positions.push(shard.position(i));
                buf.roles.push(shard.role(i).unwrap_or(0));
            }
            global += 1;
        }
    }
    buf.flush(label, has_roles, &mut f)
}

#[derive(Default)]
struct SeqBuf {
    seq: Option<u32>,
    label: Option<u8>,
    first_row: u64,
    ids: Vec<u32>,
    positions: Vec<u32>,
    roles: Vec<u8>,
    acts: Vec<f32>,
}

impl SeqBuf {
    fn start(&mut self, seq: u32, label: Option<u8>, first_row: u64) {
        self.seq = Some(seq);
        self.label = label;
        self.first_row = first_row;
    }

    fn flush(
        &mut self,
        want: Option<u8>,
        has_roles: bool,
        f: &mut impl FnMut(SeqRows<'_>) -> Result<()>,
    ) -> Result<()> {
        if let Some(seq) = self.seq.take()
            && !self.ids.is_empty()
            && (want.is_none() || want == self.label)
        {
            f(SeqRows {
                seq_id: seq,
                label: self.label,
                first_row: self.first_row,
                token_ids: &self.ids,
                positions: &self.positions,
                roles: has_roles.then_some(&self.roles[..]),
                acts: &self.acts,
            })?;
        }
        self.ids.clear();
        self.positions.clear();
        self.roles.clear();
        self.acts.clear();
        Ok(())
    }
}

/// A fingerprint of a store's text: FNV-1a over every row's token id and position, in store
/// order. Two stores with equal fingerprints (and row counts) hold the same text, which is
/// what the activation difference lens needs and what `diff` reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextHash(u64);

impl Default for TextHash {
    fn default() -> Self {
        TextHash(0xcbf2_9ce4_8422_2325)
    }
}

impl TextHash {
    /// Adds one sequence's rows.
    pub fn add(&mut self, seq: &SeqRows<'_>) {
        for (&id, &pos) in seq.token_ids.iter().zip(seq.positions) {
            for b in id.to_le_bytes().into_iter().chain(pos.to_le_bytes()) {
                self.0 = (self.0 ^ b as u64).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
}

/// One layer's store of a capture.
pub struct LayerStore {
    pub hook: HookPoint,
    pub store: Store,
}

/// The stores at `path`: the store itself when it has a manifest, else every sub-directory
/// that is a store (a multi-hook capture writes `OUT/<hook>/`), sorted by layer. With `site`
/// (e.g. `resid_post`) only hooks at that site are kept; the stores found must share one site.
pub fn layer_stores(path: &Path, site: Option<&str>) -> Result<Vec<LayerStore>> {
    let open = |dir: &Path| -> Result<LayerStore> {
        let store = Store::open(dir)?;
        let hook: HookPoint = store.manifest().hook.parse().map_err(|_| {
            input(
                &dir.join(MANIFEST_FILE),
                format!(
                    "hook '{}' is not a TransformerLens hook name",
                    store.manifest().hook
                ),
            )
        })?;
        Ok(LayerStore { hook, store })
    };
    let mut found = if path.join(MANIFEST_FILE).exists() {
        vec![open(path)?]
    } else {
        let entries = std::fs::read_dir(path).map_err(io_err(path))?;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for e in entries {
            let p = e.map_err(io_err(path))?.path();
            if p.join(MANIFEST_FILE).exists() {
                dirs.push(p);
            }
        }
        dirs.iter().map(|d| open(d)).collect::<Result<Vec<_>>>()?
    };
    if let Some(site) = site {
        found.retain(|s| site_of(s.hook) == site);
    }
    if found.is_empty() {
        return Err(input(
            path,
            match site {
                Some(site) => format!("no activation store at site {site} here"),
                None => "not an activation store (no manifest.json) and no sub-directory is one"
                    .to_string(),
            },
        ));
    }
    found.sort_by_key(|s| (s.hook.layer().map_or(usize::MAX, |l| l), s.hook.to_string()));
    let first = site_of(found[0].hook);
    if let Some(other) = found.iter().find(|s| site_of(s.hook) != first) {
        return Err(input(
            path,
            format!(
                "stores at more than one site ({} and {}); choose one site",
                found[0].hook, other.hook
            ),
        ));
    }
    for w in found.windows(2) {
        if w[0].hook == w[1].hook {
            return Err(input(path, format!("two stores at {}", w[0].hook)));
        }
    }
    Ok(found)
}

/// The site part of a hook name as direction files record it: `resid_post` for
/// `blocks.3.hook_resid_post`, `embed` for `hook_embed`, `ln_final` for the final norm.
pub fn site_of(hook: HookPoint) -> &'static str {
    match hook {
        HookPoint::Embed => "embed",
        HookPoint::ResidPre(_) => "resid_pre",
        HookPoint::AttnOut(_) => "attn_out",
        HookPoint::ResidMid(_) => "resid_mid",
        HookPoint::MlpOut(_) => "mlp_out",
        HookPoint::ResidPost(_) => "resid_post",
        HookPoint::LnFinal => "ln_final",
    }
}

/// The layer a direction file stores a hook's vector under (`layer.{L}`); the embedding is
/// layer 0 of `embed` and the final norm layer 0 of `ln_final`.
pub fn layer_of(hook: HookPoint) -> usize {
    hook.layer().unwrap_or(0)
}
