//! Training checkpoints: one safetensors file holding the parameters, Adam's moments and the
//! dead-latent counters, with the step, data cursor, RNG, schedules' inputs and the metrics
//! log as JSON metadata. Written to a temporary file, fsynced and renamed over the old one,
//! so a kill at any moment leaves either the previous or the new checkpoint.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use burn::tensor::Device;
use lantern_acts::Cursor;
use lantern_acts::rng::Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};

use crate::optim::Adam;
use crate::params::{Params, download, upload1, upload2};
use crate::rows::{Dropped, RowCut};
use crate::train::{MetricsRow, TrainConfig};
use crate::{Result, SaeError};

/// Everything needed to continue a run exactly: the persisted half of the training state.
#[derive(Clone)]
pub struct Checkpoint {
    pub config: TrainConfig,
    pub params: Params,
    pub adam: Adam,
    pub step: u64,
    pub tokens: u64,
    pub cursor: Cursor,
    pub rng: Rng,
    pub scale: f32,
    /// Which rows the run trains on, fixed on its initial sample.
    pub row_cut: RowCut,
    pub since_fired: Vec<u64>,
    /// Each latent's firing rate, an exponential moving average over statistics windows
    /// (for `revive_below`; zeros in checkpoints written before it existed).
    pub fire_rate: Vec<f32>,
    pub batch_threshold: f32,
    /// The factor `--target-l0` has put on the sparsity coefficient (1 without a target).
    pub sparsity_scale: f32,
    pub history: Vec<MetricsRow>,
    pub skipped_non_finite: u64,
    /// Rows dropped by `row_cut` so far.
    pub dropped: Dropped,
    /// The content fingerprint of the store's manifest (`lantern_output::fingerprint`), which
    /// lists every shard with its checksum; empty in checkpoints written before it existed.
    pub store_id: String,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: u32,
    config: TrainConfig,
    step: u64,
    adam_t: u64,
    tokens: u64,
    cursor: Cursor,
    rng: Rng,
    scale: f32,
    median_norm: f32,
    batch_threshold: f32,
    #[serde(default = "one")]
    sparsity_scale: f32,
    history: Vec<MetricsRow>,
    skipped_non_finite: u64,
    /// All dropped rows (what checkpoints before `dropped` kept: token ids and outliers).
    excluded: u64,
    #[serde(default)]
    store_id: String,
    /// Whether position-0 rows are dropped (false in checkpoints before it existed).
    #[serde(default)]
    drop_first: bool,
    #[serde(default)]
    dropped: Option<Dropped>,
}

const FORMAT: u32 = 1;

fn one() -> f32 {
    1.0
}

fn err(path: &Path, msg: impl Into<String>) -> SaeError {
    SaeError::Format {
        path: path.to_path_buf(),
        msg: msg.into(),
    }
}

/// Writes `ck` to `path` atomically (temp file, fsync, rename, fsync of the directory).
pub fn save(path: &Path, ck: &Checkpoint) -> Result<()> {
    let mut tensors: Vec<(String, Vec<u8>, Vec<usize>, Dtype)> = Vec::new();
    for (prefix, p) in [
        ("", &ck.params),
        ("adam_m.", &ck.adam.m),
        ("adam_v.", &ck.adam.v),
    ] {
        let mut push = |name: &str, data: Vec<f32>, shape: Vec<usize>| {
            tensors.push((
                format!("{prefix}{name}"),
                data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                shape,
                Dtype::F32,
            ));
        };
        let (d, m) = p.dims();
        push("W_enc", download(p.w_enc.clone())?, vec![d, m]);
        push("b_enc", download(p.b_enc.clone())?, vec![m]);
        push("W_dec", download(p.w_dec.clone())?, vec![m, d]);
        push("b_dec", download(p.b_dec.clone())?, vec![d]);
        if let Some(t) = &p.log_threshold {
            push("log_threshold", download(t.clone())?, vec![m]);
        }
    }
    tensors.push((
        "fire_rate".into(),
        ck.fire_rate.iter().flat_map(|v| v.to_le_bytes()).collect(),
        vec![ck.fire_rate.len()],
        Dtype::F32,
    ));
    tensors.push((
        "since_fired".into(),
        ck.since_fired
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect(),
        vec![ck.since_fired.len()],
        Dtype::U64,
    ));
    let meta = Meta {
        format: FORMAT,
        config: ck.config.clone(),
        step: ck.step,
        adam_t: ck.adam.t,
        tokens: ck.tokens,
        cursor: ck.cursor,
        rng: ck.rng.clone(),
        scale: ck.scale,
        median_norm: ck.row_cut.median_norm,
        batch_threshold: ck.batch_threshold,
        sparsity_scale: ck.sparsity_scale,
        history: ck.history.clone(),
        skipped_non_finite: ck.skipped_non_finite,
        excluded: ck.dropped.total(),
        store_id: ck.store_id.clone(),
        drop_first: ck.row_cut.drop_first,
        dropped: Some(ck.dropped),
    };
    let json = serde_json::to_string(&meta).map_err(|e| err(path, e.to_string()))?;
    let views = tensors
        .iter()
        .map(|(name, bytes, shape, dtype)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| err(path, e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(HashMap::from([("lantern".to_string(), json)])))
        .map_err(|e| err(path, e.to_string()))?;
    Ok(lantern_output::write_atomic(path, &bytes)?)
}

/// Reads a checkpoint written by [`save`].
pub fn load(path: &Path, device: &Device) -> Result<Checkpoint> {
    let bytes = fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err(
            path,
            "no checkpoint to resume from (a run writes one when checkpoint_every > 0)",
        ),
        _ => SaeError::Io {
            path: path.to_path_buf(),
            source: e,
        },
    })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| err(path, format!("not a checkpoint: {e}")))?;
    let json = header
        .metadata()
        .as_ref()
        .and_then(|m| m.get("lantern"))
        .ok_or_else(|| err(path, "not a lantern checkpoint (no 'lantern' metadata)"))?;
    let meta: Meta =
        serde_json::from_str(json).map_err(|e| err(path, format!("bad metadata: {e}")))?;
    if meta.format != FORMAT {
        return Err(err(
            path,
            format!("checkpoint format {} (expected {FORMAT})", meta.format),
        ));
    }
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(path, e.to_string()))?;
    let f32s = |name: &str, len: usize| -> Result<Vec<f32>> {
        let t = st
            .tensor(name)
            .map_err(|_| err(path, format!("missing tensor '{name}'")))?;
        if t.dtype() != Dtype::F32 || t.data().len() != len * 4 {
            return Err(err(
                path,
                format!("tensor '{name}' should be F32 with {len} elements"),
            ));
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    };
    let d_sae = meta.config.d_sae;
    let d = st
        .tensor("b_dec")
        .map_err(|_| err(path, "missing tensor 'b_dec'"))?
        .shape()
        .first()
        .copied()
        .unwrap_or(0);
    let jump = st.tensor("log_threshold").is_ok();
    let params = |prefix: &str| -> Result<Params> {
        Ok(Params {
            w_enc: upload2(
                &f32s(&format!("{prefix}W_enc"), d * d_sae)?,
                [d, d_sae],
                device,
            ),
            b_enc: upload1(&f32s(&format!("{prefix}b_enc"), d_sae)?, device),
            w_dec: upload2(
                &f32s(&format!("{prefix}W_dec"), d_sae * d)?,
                [d_sae, d],
                device,
            ),
            b_dec: upload1(&f32s(&format!("{prefix}b_dec"), d)?, device),
            log_threshold: if jump {
                Some(upload1(
                    &f32s(&format!("{prefix}log_threshold"), d_sae)?,
                    device,
                ))
            } else {
                None
            },
        })
    };
    let since = st
        .tensor("since_fired")
        .map_err(|_| err(path, "missing tensor 'since_fired'"))?;
    if since.dtype() != Dtype::U64 || since.data().len() != d_sae * 8 {
        return Err(err(
            path,
            format!("tensor 'since_fired' should be U64 with {d_sae} elements"),
        ));
    }
    let since_fired = since
        .data()
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect();
    let mut adam = Adam::new(&params("")?);
    adam.m = params("adam_m.")?;
    adam.v = params("adam_v.")?;
    adam.t = meta.adam_t;
    Ok(Checkpoint {
        params: params("")?,
        adam,
        step: meta.step,
        tokens: meta.tokens,
        cursor: meta.cursor,
        rng: meta.rng,
        scale: meta.scale,
        row_cut: RowCut {
            exclude_token_ids: meta.config.exclude_token_ids.clone(),
            drop_first: meta.drop_first,
            outlier_factor: meta.config.outlier_factor,
            median_norm: meta.median_norm,
        },
        since_fired,
        fire_rate: if st.tensor("fire_rate").is_ok() {
            f32s("fire_rate", d_sae)?
        } else {
            vec![0.0; d_sae]
        },
        batch_threshold: meta.batch_threshold,
        sparsity_scale: meta.sparsity_scale,
        history: meta.history,
        skipped_non_finite: meta.skipped_non_finite,
        dropped: meta.dropped.unwrap_or(Dropped {
            token_id: meta.excluded,
            ..Default::default()
        }),
        store_id: meta.store_id,
        config: meta.config,
    })
}

/// Names the first field in which two configurations differ.
pub fn config_difference(a: &TrainConfig, b: &TrainConfig) -> String {
    let (ja, jb) = (serde_json::to_value(a), serde_json::to_value(b));
    if let (Ok(serde_json::Value::Object(ma)), Ok(serde_json::Value::Object(mb))) = (ja, jb) {
        for (k, va) in &ma {
            if mb.get(k) != Some(va) {
                return format!(
                    "{k}: checkpoint has {va}, this run has {}",
                    mb.get(k).cloned().unwrap_or_default()
                );
            }
        }
    }
    "unknown field".into()
}
