//! Hook points with TransformerLens names, the [`Hooks`] a forward pass reads (the request)
//! and the [`HookCache`] it returns (the results).
//!
//! A residual stream activation `x` has shape `[batch, seq, d_model]`. At each hook point the
//! forward pass asks [`Hooks::wants`] (a set lookup) and only then builds anything, so a pass
//! with nothing registered costs one lookup per point. Interventions, applied in the order
//! they were registered, at the positions `p ∈ P_b` of each row `b` ([`Positions`]), with a
//! strength per row ([`Scale`]):
//!
//! - capture: keep a copy of `x` (after any earlier intervention at the same point);
//! - add: `x[b, p] += α_b·v`;
//! - project out: `x[b, p] -= β_b (x[b, p]·u) u` with `u = v/‖v‖` (directional ablation,
//!   full at `β = 1`);
//! - edit: any function of the whole `[batch, seq, d]` activation (clamping an SAE latent,
//!   replacing with cached values, ...); the closure may borrow (an SAE, a recorder).
//!
//! Positions are absolute columns of the batch (with a KV cache, step `t` of generation sees
//! only column `t`), after any left padding: column 0 is the first padded slot. Per-row
//! positions let one pass steer only the answer tokens of rows whose prompts differ in length;
//! per-row strengths let one batched pass run a dose–response sweep. The vector of an add or a
//! projection is uploaded to the device once, at its first use, and reused at every later
//! call (every generation step).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::str::FromStr;

use burn::tensor::{Device, Tensor, TensorData};

use crate::{LmError, Result};

/// A place in the forward pass where the residual stream (or a block output) can be read or
/// changed, spelled as in TransformerLens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HookPoint {
    /// `hook_embed`: token embeddings (GPT-2: before adding position embeddings).
    Embed,
    /// `blocks.{L}.hook_resid_pre`: the residual stream entering block `L`.
    ResidPre(usize),
    /// `blocks.{L}.hook_attn_out`: the attention output of block `L` (after `o_proj`).
    AttnOut(usize),
    /// `blocks.{L}.hook_resid_mid`: residual stream after attention, before the MLP.
    ResidMid(usize),
    /// `blocks.{L}.hook_mlp_out`: the MLP output of block `L`.
    MlpOut(usize),
    /// `blocks.{L}.hook_resid_post`: the residual stream leaving block `L`
    /// (= Hugging Face `hidden_states[L + 1]`).
    ResidPost(usize),
    /// `ln_final.hook_normalized`: the final norm's output (the unembedding's input).
    LnFinal,
}

impl HookPoint {
    /// The block this point belongs to (`None` for the embedding and the final norm).
    pub fn layer(self) -> Option<usize> {
        match self {
            Self::Embed | Self::LnFinal => None,
            Self::ResidPre(l)
            | Self::AttnOut(l)
            | Self::ResidMid(l)
            | Self::MlpOut(l)
            | Self::ResidPost(l) => Some(l),
        }
    }

    /// Position in execution order: a forward pass that has passed `order()` of every hook
    /// it needs may stop.
    pub fn order(self, n_layers: usize) -> usize {
        match self {
            Self::Embed => 0,
            Self::ResidPre(l) => 1 + 5 * l,
            Self::AttnOut(l) => 2 + 5 * l,
            Self::ResidMid(l) => 3 + 5 * l,
            Self::MlpOut(l) => 4 + 5 * l,
            Self::ResidPost(l) => 5 + 5 * l,
            Self::LnFinal => 1 + 5 * n_layers,
        }
    }

    /// Fails with one line where the layer does not exist in a model of `n_layers` blocks.
    pub fn check(self, n_layers: usize) -> Result<()> {
        match self.layer() {
            Some(l) if l >= n_layers => Err(LmError::Hook(format!(
                "hook '{self}': layer {l} out of range (the model has {n_layers} blocks, 0..={})",
                n_layers.saturating_sub(1)
            ))),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for HookPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Embed => f.write_str("hook_embed"),
            Self::ResidPre(l) => write!(f, "blocks.{l}.hook_resid_pre"),
            Self::AttnOut(l) => write!(f, "blocks.{l}.hook_attn_out"),
            Self::ResidMid(l) => write!(f, "blocks.{l}.hook_resid_mid"),
            Self::MlpOut(l) => write!(f, "blocks.{l}.hook_mlp_out"),
            Self::ResidPost(l) => write!(f, "blocks.{l}.hook_resid_post"),
            Self::LnFinal => f.write_str("ln_final.hook_normalized"),
        }
    }
}

impl FromStr for HookPoint {
    type Err = LmError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            LmError::Hook(format!(
                "unknown hook '{s}': expected hook_embed, blocks.L.hook_resid_pre, \
                 blocks.L.hook_attn_out, blocks.L.hook_resid_mid, blocks.L.hook_mlp_out, \
                 blocks.L.hook_resid_post or ln_final.hook_normalized"
            ))
        };
        match s {
            "hook_embed" => return Ok(Self::Embed),
            "ln_final.hook_normalized" => return Ok(Self::LnFinal),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (layer, name) = rest.split_once('.').ok_or_else(bad)?;
        let l: usize = layer.parse().map_err(|_| bad())?;
        Ok(match name {
            "hook_resid_pre" => Self::ResidPre(l),
            "hook_attn_out" => Self::AttnOut(l),
            "hook_resid_mid" => Self::ResidMid(l),
            "hook_mlp_out" => Self::MlpOut(l),
            "hook_resid_post" => Self::ResidPost(l),
            _ => return Err(bad()),
        })
    }
}

/// A function that rewrites a whole activation `[batch, seq, d]`; it receives the absolute
/// column of the first position (non-zero during cached generation).
pub type EditFn<'a> = Box<dyn FnMut(Tensor<3>, usize) -> Tensor<3> + 'a>;

/// The columns an intervention acts on.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Positions {
    /// Every column.
    #[default]
    All,
    /// The same columns in every row.
    Range(Range<usize>),
    /// Columns per row (`[batch]` ranges), e.g. each row's answer tokens.
    PerRow(Vec<Range<usize>>),
}

impl From<Option<Range<usize>>> for Positions {
    fn from(r: Option<Range<usize>>) -> Self {
        r.map_or(Self::All, Self::Range)
    }
}

impl Positions {
    fn rows(&self) -> Option<usize> {
        match self {
            Self::PerRow(r) => Some(r.len()),
            _ => None,
        }
    }

    fn contains(&self, row: usize, col: usize) -> bool {
        match self {
            Self::All => true,
            Self::Range(r) => r.contains(&col),
            Self::PerRow(r) => r[row].contains(&col),
        }
    }
}

/// The strength of an intervention: one for every row, or one per row.
#[derive(Clone, Debug, PartialEq)]
pub enum Scale {
    Same(f32),
    /// `[batch]` strengths.
    PerRow(Vec<f32>),
}

impl From<f32> for Scale {
    fn from(s: f32) -> Self {
        Self::Same(s)
    }
}

impl Scale {
    fn rows(&self) -> Option<usize> {
        match self {
            Self::PerRow(s) => Some(s.len()),
            Self::Same(_) => None,
        }
    }

    fn of(&self, row: usize) -> f32 {
        match self {
            Self::Same(s) => *s,
            Self::PerRow(s) => s[row],
        }
    }
}

/// One intervention at a hook point.
pub enum Intervention<'a> {
    /// Keep a copy of the activation.
    Capture,
    /// `x[b, p] += α_b · vector` for `p` in the row's positions.
    Add {
        vector: Vec<f32>,
        scale: Scale,
        positions: Positions,
    },
    /// `x[b, p] -= β_b (x[b, p]·u) u`, `u = direction / ‖direction‖`, for `p` in the row's
    /// positions (`β = 1`: the component along `u` is removed).
    ProjectOut {
        direction: Vec<f32>,
        beta: Scale,
        positions: Positions,
    },
    /// Replace the activation with `f(x, first_column)`.
    Edit(EditFn<'a>),
}

impl fmt::Debug for Intervention<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Capture => f.write_str("Capture"),
            Self::Add {
                scale, positions, ..
            } => write!(f, "Add {{ scale: {scale:?}, positions: {positions:?} }}"),
            Self::ProjectOut {
                beta, positions, ..
            } => write!(
                f,
                "ProjectOut {{ beta: {beta:?}, positions: {positions:?} }}"
            ),
            Self::Edit(_) => f.write_str("Edit(..)"),
        }
    }
}

impl Intervention<'_> {
    /// The row count this intervention was built for, when it has per-row settings.
    fn rows(&self) -> Option<usize> {
        match self {
            Self::Add {
                scale, positions, ..
            } => scale.rows().or(positions.rows()),
            Self::ProjectOut {
                beta, positions, ..
            } => beta.rows().or(positions.rows()),
            _ => None,
        }
    }
}

/// An intervention with its device-side vector, uploaded at first use.
#[derive(Debug)]
struct Registered<'a> {
    iv: Intervention<'a>,
    /// `[1, 1, d]`: the add vector, or the unit direction of a projection.
    vector: Option<Tensor<3>>,
}

/// Interventions registered for forward passes (the request; captures come back in
/// [`HookCache`]).
///
/// ```
/// use lantern_lm::{HookPoint, Hooks, Scale};
/// let mut hooks = Hooks::new();
/// hooks.capture("blocks.3.hook_resid_post".parse().unwrap());
/// hooks.add(HookPoint::ResidPre(2), vec![0.0; 64], 4.0, None);
/// // Eight strengths in one batched pass, one per row:
/// hooks.add(HookPoint::ResidPre(4), vec![0.0; 64], Scale::PerRow(vec![0.5; 8]), None);
/// assert!(hooks.wants(HookPoint::ResidPre(2)));
/// assert!(!hooks.wants(HookPoint::ResidPre(1)));
/// ```
#[derive(Debug, Default)]
pub struct Hooks<'a> {
    at: BTreeMap<HookPoint, Vec<Registered<'a>>>,
    stop_early: bool,
}

impl<'a> Hooks<'a> {
    /// No interventions: a forward pass with these runs as if hooks did not exist.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers an intervention at `point`.
    pub fn push(&mut self, point: HookPoint, intervention: Intervention<'a>) -> &mut Self {
        self.at.entry(point).or_default().push(Registered {
            iv: intervention,
            vector: None,
        });
        self
    }

    /// Captures the activation at `point` (see [`HookCache::take`]).
    pub fn capture(&mut self, point: HookPoint) -> &mut Self {
        self.push(point, Intervention::Capture)
    }

    /// Adds `scale · vector` at `point` over `positions` (all when `None`).
    pub fn add(
        &mut self,
        point: HookPoint,
        vector: Vec<f32>,
        scale: impl Into<Scale>,
        positions: impl Into<Positions>,
    ) -> &mut Self {
        self.push(
            point,
            Intervention::Add {
                vector,
                scale: scale.into(),
                positions: positions.into(),
            },
        )
    }

    /// Projects `direction` out of the activation at `point` over `positions` (fully: `β = 1`).
    pub fn project_out(
        &mut self,
        point: HookPoint,
        direction: Vec<f32>,
        positions: impl Into<Positions>,
    ) -> &mut Self {
        self.push(
            point,
            Intervention::ProjectOut {
                direction,
                beta: Scale::Same(1.0),
                positions: positions.into(),
            },
        )
    }

    /// Replaces the activation at `point` with `f(x, first_column)`.
    pub fn edit(
        &mut self,
        point: HookPoint,
        f: impl FnMut(Tensor<3>, usize) -> Tensor<3> + 'a,
    ) -> &mut Self {
        self.push(point, Intervention::Edit(Box::new(f)))
    }

    /// Lets the forward pass stop after the last hook point registered here (no logits then):
    /// the capture use case.
    pub fn stop_after_last(&mut self, yes: bool) -> &mut Self {
        self.stop_early = yes;
        self
    }

    /// Whether anything is registered at `point`.
    #[inline]
    pub fn wants(&self, point: HookPoint) -> bool {
        !self.at.is_empty() && self.at.contains_key(&point)
    }

    /// Whether nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }

    /// The registered points.
    pub fn points(&self) -> BTreeSet<HookPoint> {
        self.at.keys().copied().collect()
    }

    /// The execution-order index after which the forward pass may stop, when
    /// [`Hooks::stop_after_last`] is set and something is registered.
    pub fn stop_order(&self, n_layers: usize) -> Option<usize> {
        if !self.stop_early {
            return None;
        }
        self.at.keys().map(|p| p.order(n_layers)).max()
    }

    /// Checks every registered point against a model of `n_layers` blocks and `d_model`
    /// width (vector lengths) and a batch of `batch` rows (per-row settings), with one-line
    /// errors.
    pub fn check(&self, n_layers: usize, d_model: usize, batch: usize) -> Result<()> {
        for (point, list) in &self.at {
            point.check(n_layers)?;
            for r in list {
                let len = match &r.iv {
                    Intervention::Add { vector, .. } => vector.len(),
                    Intervention::ProjectOut { direction, .. } => direction.len(),
                    _ => d_model,
                };
                if len != d_model {
                    return Err(LmError::Hook(format!(
                        "hook '{point}': vector has {len} entries, the model's d_model is {d_model}"
                    )));
                }
                if let Some(rows) = r.iv.rows()
                    && rows != batch
                {
                    return Err(LmError::Hook(format!(
                        "hook '{point}': per-row settings for {rows} rows, the batch has {batch}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies the interventions registered at `point` to `x` (`[batch, seq, d]`, whose first
    /// column is absolute column `pos0`), keeping captures in `out`.
    pub fn apply(
        &mut self,
        point: HookPoint,
        mut x: Tensor<3>,
        pos0: usize,
        out: &mut HookCache,
    ) -> Tensor<3> {
        let Some(list) = self.at.get_mut(&point) else {
            return x;
        };
        for r in list.iter_mut() {
            let dev = x.device();
            x = match &mut r.iv {
                Intervention::Capture => {
                    out.push(point, x.clone());
                    x
                }
                Intervention::Add {
                    vector,
                    scale,
                    positions,
                } => {
                    let v = r
                        .vector
                        .get_or_insert_with(|| row_vector(vector, 1.0, &dev))
                        .clone();
                    match (&*scale, &*positions) {
                        (Scale::Same(s), Positions::All) => x + v * *s,
                        _ => match coefficients(scale, positions, &x, pos0, &dev) {
                            Some(c) => x + c * v,
                            None => x,
                        },
                    }
                }
                Intervention::ProjectOut {
                    direction,
                    beta,
                    positions,
                } => {
                    // ‖v‖ in f64: a unit vector off by δ in norm leaves δ·(x·u) along u,
                    // which the attention sink's large activations make visible in logits.
                    let norm = direction
                        .iter()
                        .map(|&a| f64::from(a).powi(2))
                        .sum::<f64>()
                        .sqrt();
                    if norm == 0.0 {
                        x
                    } else {
                        let u = r
                            .vector
                            .get_or_insert_with(|| {
                                let unit: Vec<f32> = direction
                                    .iter()
                                    .map(|&a| (f64::from(a) / norm) as f32)
                                    .collect();
                                row_vector(&unit, 1.0, &dev)
                            })
                            .clone();
                        let along = (x.clone() * u.clone()).sum_dim(2);
                        match (&*beta, &*positions) {
                            (Scale::Same(b), Positions::All) if *b == 1.0 => x - along * u,
                            (Scale::Same(b), Positions::All) => x - along * u * *b,
                            // A per-row β or per-row positions: a [b, t, 1] coefficient.
                            _ => match coefficients(beta, positions, &x, pos0, &dev) {
                                Some(c) => x - (along * c) * u,
                                None => x,
                            },
                        }
                    }
                }
                Intervention::Edit(f) => f(x, pos0),
            };
        }
        x
    }
}

/// What the hooks of one forward pass (or of every step of a generation) captured.
#[derive(Debug, Default)]
pub struct HookCache {
    captured: BTreeMap<HookPoint, Vec<Tensor<3>>>,
}

impl HookCache {
    /// Keeps `x` as the next capture at `point`.
    pub fn push(&mut self, point: HookPoint, x: Tensor<3>) {
        self.captured.entry(point).or_default().push(x);
    }

    /// Appends the captures of a later pass (a generation step) to these.
    pub fn extend(&mut self, later: HookCache) {
        for (p, v) in later.captured {
            self.captured.entry(p).or_default().extend(v);
        }
    }

    /// Takes the captures of `point`, one tensor per capture in call order (a cached
    /// generation calls the model once per step).
    pub fn take(&mut self, point: HookPoint) -> Vec<Tensor<3>> {
        self.captured.remove(&point).unwrap_or_default()
    }

    /// Takes the one capture of `point` from a single pass; an error when there is none.
    pub fn take_one(&mut self, point: HookPoint) -> Result<Tensor<3>> {
        let mut v = self.take(point);
        match v.len() {
            1 => Ok(v.remove(0)),
            n => Err(LmError::Hook(format!(
                "hook '{point}': expected one capture, the pass made {n}"
            ))),
        }
    }

    /// The points that hold captures.
    pub fn points(&self) -> BTreeSet<HookPoint> {
        self.captured.keys().copied().collect()
    }
}

/// `scale · v` as a `[1, 1, d]` tensor on `dev`.
fn row_vector(v: &[f32], scale: f32, dev: &Device) -> Tensor<3> {
    let scaled: Vec<f32> = v.iter().map(|a| a * scale).collect();
    Tensor::<1>::from_data(TensorData::new(scaled, [v.len()]), dev).reshape([1, 1, v.len()])
}

/// `c[b, t, 0]` = the row's strength where column `pos0 + t` is among its positions, else 0;
/// `None` when no column of this call is touched.
fn coefficients(
    scale: &Scale,
    positions: &Positions,
    x: &Tensor<3>,
    pos0: usize,
    dev: &Device,
) -> Option<Tensor<3>> {
    let [b, t, _] = x.dims();
    let mut c = vec![0.0f32; b * t];
    let mut any = false;
    for row in 0..b {
        let s = scale.of(row);
        for col in 0..t {
            if positions.contains(row, pos0 + col) {
                c[row * t + col] = s;
                any = true;
            }
        }
    }
    any.then(|| Tensor::<1>::from_data(TensorData::new(c, [b * t]), dev).reshape([b, t, 1]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;

    #[test]
    fn names_round_trip_in_transformer_lens_spelling() {
        for name in [
            "hook_embed",
            "blocks.0.hook_resid_pre",
            "blocks.12.hook_resid_post",
            "blocks.3.hook_attn_out",
            "blocks.3.hook_resid_mid",
            "blocks.7.hook_mlp_out",
            "ln_final.hook_normalized",
        ] {
            let p: HookPoint = name.parse().unwrap();
            assert_eq!(p.to_string(), name);
        }
        for bad in [
            "blocks.x.hook_resid_post",
            "blocks.1.hook_z",
            "resid_post",
            "blocks.1",
        ] {
            let e = bad.parse::<HookPoint>().unwrap_err().to_string();
            assert!(e.contains(bad) && !e.contains('\n'), "{e}");
        }
        let e = HookPoint::ResidPost(30).check(30).unwrap_err().to_string();
        assert!(e.contains("out of range"), "{e}");
    }

    fn host(x: Tensor<3>) -> Vec<f32> {
        x.try_into_vec_as::<f32>().unwrap()
    }

    #[test]
    fn add_and_project_out_touch_only_their_positions() {
        let dev = Device::flex();
        let (b, t, d) = (2, 5, 3);
        let vals: Vec<f32> = (0..b * t * d).map(|i| (i as f32 * 0.37).sin()).collect();
        let x = Tensor::<1>::from_data(TensorData::new(vals.clone(), [b * t * d]), &dev)
            .reshape([b, t, d]);
        let p = HookPoint::ResidPost(0);
        let mut hooks = Hooks::new();
        hooks
            .add(p, vec![1.0, 2.0, 3.0], 0.5, Some(11..13))
            .project_out(p, vec![0.0, 3.0, 4.0], Some(12..100))
            .capture(p);
        // pos0 = 10: columns are positions 10..15.
        let mut out = HookCache::default();
        let y = host(hooks.apply(p, x, 10, &mut out));
        let u = [0.0, 0.6, 0.8];
        for bi in 0..b {
            for ti in 0..t {
                let pos = 10 + ti;
                let mut want: Vec<f32> = (0..d).map(|k| vals[(bi * t + ti) * d + k]).collect();
                if (11..13).contains(&pos) {
                    for (k, w) in want.iter_mut().enumerate() {
                        *w += 0.5 * (k as f32 + 1.0);
                    }
                }
                if pos >= 12 {
                    let dot: f32 = (0..d).map(|k| want[k] * u[k]).sum();
                    for k in 0..d {
                        want[k] -= dot * u[k];
                    }
                }
                for k in 0..d {
                    let got = y[(bi * t + ti) * d + k];
                    assert!(
                        (got - want[k]).abs() < 1e-6,
                        "b{bi} t{ti} k{k}: {got} vs {}",
                        want[k]
                    );
                }
            }
        }
        let cap = out.take(p);
        assert_eq!(cap.len(), 1);
        assert_eq!(host(cap[0].clone()), y);
    }
}
