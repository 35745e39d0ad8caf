//! Interventions per batch row, installed into lm's [`Hooks`] so that one batched pass runs a
//! whole dose–response sweep or an ablation table (each row its own intervention).
//!
//! With `x` the activation at a hook point of row `b`, position `p` in the row's positions:
//!
//! - **add**: `x ← x + c_b·v`; with norm preservation `x ← ‖x‖ · y/‖y‖`, `y = x + c_b·v`
//!   (repeng's `normalize`);
//! - **ablate**: `x ← x − β_b Σ_k (x·u_k) u_k` over an orthonormal basis `u_1 … u_K` of the
//!   ablated subspace (`K = 1`: Arditi et al.'s directional ablation `x − β(x·r̂)r̂`, full at
//!   `β = 1`; sequential projections on orthonormal vectors equal the subspace projection);
//! - **clamp** an SAE latent `i` keeping the SAE's error term (the delta form):
//!   `x ← x + (f'_i − f_i(x))·W_dec[i]`, which is `x + dec(f') − dec(f)` for `f'` equal to
//!   `f` except at `i`; `f'_i = value` (set, zero) or `s·f_i(x)` (scale).
//!
//! Rows that do not use an operation get strength 0 for it (identity), so operations with the
//! same vector at the same point share one registered hook whatever mix the rows hold.

use std::ops::Range;
use std::sync::Arc;

use burn::tensor::{Device, Tensor, TensorData};
use lantern_lm::{HookPoint, Hooks, Intervention as LmIntervention, Positions, Scale};
use lantern_sae::Sae;
use serde::Serialize;

use crate::Result;
use crate::error::setting;

/// Which tokens of a row an operation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Where {
    /// Every position (Soligo et al., Arditi et al.).
    #[default]
    All,
    /// The prompt's tokens only.
    Prompt,
    /// The tokens the model generates (fed back as inputs) only.
    Generated,
    /// Answer tokens: the assistant tokens already in the prompt, then every generated token.
    Answer,
}

impl std::str::FromStr for Where {
    type Err = crate::SteerError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "all" => Self::All,
            "prompt" => Self::Prompt,
            "generated" => Self::Generated,
            "answer" => Self::Answer,
            _ => return Err(setting("positions", s, "all, prompt, generated or answer")),
        })
    }
}

impl std::fmt::Display for Where {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::All => "all",
            Self::Prompt => "prompt",
            Self::Generated => "generated",
            Self::Answer => "answer",
        })
    }
}

/// Where a row's tokens sit in the batch (absolute columns).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowLayout {
    /// The prompt's columns.
    pub prompt: Range<usize>,
    /// The first answer column (a prompt's first assistant token, else the first generated).
    pub answer_start: usize,
    /// The column of the first generated token (= the batch width for left padding).
    pub generated_start: usize,
}

impl RowLayout {
    /// The columns `at` selects in this row.
    pub fn columns(&self, at: Where) -> Range<usize> {
        match at {
            Where::All => 0..usize::MAX,
            Where::Prompt => self.prompt.clone(),
            Where::Generated => self.generated_start..usize::MAX,
            Where::Answer => self.answer_start..usize::MAX,
        }
    }
}

/// How a clamp sets the latent.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClampMode {
    /// `f'_i = value` (0: the latent switched off).
    Set,
    /// `f'_i = value · f_i(x)`.
    Scale,
}

/// One operation of a row's intervention.
#[derive(Clone, Debug)]
pub enum Op {
    Add {
        point: HookPoint,
        vector: Arc<Vec<f32>>,
        coef: f32,
        preserve_norm: bool,
        at: Where,
    },
    Ablate {
        point: HookPoint,
        /// Orthonormal (see [`crate::vector::orthonormal`]).
        basis: Arc<Vec<Vec<f32>>>,
        beta: f32,
        at: Where,
    },
    Clamp {
        point: HookPoint,
        latent: usize,
        mode: ClampMode,
        value: f32,
        at: Where,
    },
}

/// A row's intervention: operations applied in order at their points (none: unsteered).
#[derive(Clone, Debug, Default)]
pub struct Intervention {
    pub ops: Vec<Op>,
}

impl Intervention {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn is_none(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether any operation needs an SAE.
    pub fn needs_sae(&self) -> bool {
        self.ops.iter().any(|o| matches!(o, Op::Clamp { .. }))
    }
}

/// The same operation shape over rows: what one registered hook serves.
#[derive(PartialEq)]
enum Key {
    Add(HookPoint, *const Vec<f32>, bool, Where),
    Ablate(HookPoint, *const Vec<Vec<f32>>, Where),
    Clamp(HookPoint, usize, u8, Where),
}

struct Group {
    key: Key,
    op: Op,
    /// Per row: the strength (0 = not used by the row), and for clamps whether the row uses it.
    values: Vec<f32>,
    used: Vec<bool>,
}

/// Registers the interventions of every row (`rows[b]` for batch row `b`, laid out as
/// `layout[b]`) into `hooks`; `sae` serves clamps.
pub fn install<'a>(
    hooks: &mut Hooks<'a>,
    rows: &[Intervention],
    layout: &[RowLayout],
    sae: Option<&'a Sae>,
) -> Result<()> {
    if rows.len() != layout.len() {
        return Err(setting(
            "rows",
            rows.len(),
            "one intervention per row of the batch layout",
        ));
    }
    let n = rows.len();
    let mut groups: Vec<Group> = Vec::new();
    for (b, row) in rows.iter().enumerate() {
        for op in &row.ops {
            let (key, value) = match op {
                Op::Add {
                    point,
                    vector,
                    coef,
                    preserve_norm,
                    at,
                } => (
                    Key::Add(*point, Arc::as_ptr(vector), *preserve_norm, *at),
                    *coef,
                ),
                Op::Ablate {
                    point,
                    basis,
                    beta,
                    at,
                } => (Key::Ablate(*point, Arc::as_ptr(basis), *at), *beta),
                Op::Clamp {
                    point,
                    latent,
                    mode,
                    value,
                    at,
                } => (Key::Clamp(*point, *latent, *mode as u8, *at), *value),
            };
            let g = match groups.iter().position(|g| g.key == key) {
                Some(i) => &mut groups[i],
                None => {
                    groups.push(Group {
                        key,
                        op: op.clone(),
                        values: vec![0.0; n],
                        used: vec![false; n],
                    });
                    groups.last_mut().expect("just pushed")
                }
            };
            if g.used[b] {
                return Err(setting(
                    "intervention",
                    format!("row {b}"),
                    "each operation at most once per row (sum the strengths instead)",
                ));
            }
            g.values[b] = value;
            g.used[b] = true;
        }
    }
    for g in groups {
        let at = match &g.op {
            Op::Add { at, .. } | Op::Ablate { at, .. } | Op::Clamp { at, .. } => *at,
        };
        let cols: Vec<Range<usize>> = layout.iter().map(|l| l.columns(at)).collect();
        let uniform = g.used.iter().all(|&u| u) && g.values.iter().all(|&v| v == g.values[0]);
        let positions = if at == Where::All {
            Positions::All
        } else {
            Positions::PerRow(cols.clone())
        };
        let scale = if uniform {
            Scale::Same(g.values[0])
        } else {
            Scale::PerRow(g.values.clone())
        };
        match g.op {
            Op::Add {
                point,
                vector,
                preserve_norm: false,
                ..
            } => {
                hooks.push(
                    point,
                    LmIntervention::Add {
                        vector: vector.to_vec(),
                        scale,
                        positions,
                    },
                );
            }
            Op::Add {
                point,
                vector,
                preserve_norm: true,
                ..
            } => {
                let values = g.values;
                let mut v: Option<Tensor<3>> = None;
                hooks.edit(point, move |x, pos0| {
                    let dev = x.device();
                    let Some(c) = coefficients(&values, &cols, &x, pos0, &dev) else {
                        return x;
                    };
                    let v = v.get_or_insert_with(|| row_vector(&vector, &dev)).clone();
                    let nx = x.clone().powi_scalar(2).sum_dim(2).sqrt();
                    let y = x + c * v;
                    let ny = y.clone().powi_scalar(2).sum_dim(2).sqrt().clamp_min(1e-12);
                    y * (nx / ny)
                });
            }
            Op::Ablate { point, basis, .. } => {
                for u in basis.iter() {
                    hooks.push(
                        point,
                        LmIntervention::ProjectOut {
                            direction: u.clone(),
                            beta: scale.clone(),
                            positions: positions.clone(),
                        },
                    );
                }
            }
            Op::Clamp {
                point,
                latent,
                mode,
                ..
            } => {
                let sae =
                    sae.ok_or_else(|| setting("sae", "none", "an SAE for the clamp intervention"))?;
                if latent >= sae.cfg.d_sae {
                    return Err(setting(
                        "latent",
                        latent,
                        "a latent index below the SAE's d_sae",
                    ));
                }
                let (values, used) = (g.values, g.used);
                let mut dec: Option<Tensor<3>> = None;
                hooks.edit(point, move |x, pos0| {
                    let dev = x.device();
                    let [b, t, d] = x.dims();
                    let mask: Vec<f32> = used.iter().map(|&u| f32::from(u8::from(u))).collect();
                    let Some(m) = coefficients(&mask, &cols, &x, pos0, &dev) else {
                        return x;
                    };
                    let f = sae
                        .encode(&x.clone().reshape([b * t, d]))
                        .narrow(1, latent, 1)
                        .reshape([b, t, 1]);
                    let delta = match mode {
                        ClampMode::Set => {
                            let v = coefficients(&values, &cols, &x, pos0, &dev)
                                .unwrap_or_else(|| m.zeros_like());
                            (v - f) * m
                        }
                        ClampMode::Scale => {
                            let s: Vec<f32> = values.iter().map(|s| s - 1.0).collect();
                            match coefficients(&s, &cols, &x, pos0, &dev) {
                                Some(s1) => s1 * f * m,
                                None => return x,
                            }
                        }
                    };
                    let row = dec
                        .get_or_insert_with(|| sae.decoder_row(latent).reshape([1, 1, d]))
                        .clone();
                    x + delta * row
                });
            }
        }
    }
    Ok(())
}

/// `[1, 1, d]` on `dev`.
fn row_vector(v: &[f32], dev: &Device) -> Tensor<3> {
    Tensor::<1>::from_data(TensorData::new(v.to_vec(), [v.len()]), dev).reshape([1, 1, v.len()])
}

/// `c[b, t, 0] = values[b]` where column `pos0 + t` is in row `b`'s columns, else 0; `None`
/// when no entry is non-zero.
fn coefficients(
    values: &[f32],
    cols: &[Range<usize>],
    x: &Tensor<3>,
    pos0: usize,
    dev: &Device,
) -> Option<Tensor<3>> {
    let [b, t, _] = x.dims();
    let mut c = vec![0.0f32; b * t];
    let mut any = false;
    for row in 0..b {
        let v = values[row];
        if v == 0.0 {
            continue;
        }
        for col in 0..t {
            if cols[row].contains(&(pos0 + col)) {
                c[row * t + col] = v;
                any = true;
            }
        }
    }
    any.then(|| Tensor::<1>::from_data(TensorData::new(c, [b * t]), dev).reshape([b, t, 1]))
}
