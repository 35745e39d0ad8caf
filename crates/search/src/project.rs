//! Projection scores: how strongly each sequence expresses a direction — the persona-vector
//! monitor (Chen et al. 2025 score a response by the mean over its tokens of `h·v̂`), also used
//! to flag training data whose projection is high.
//!
//! ```text
//! score(s) = (1/|T_s|) Σ_{t∈T_s} h_t · v/‖v‖       T_s = the selected tokens of sequence s
//! ```

use lantern_acts::Store;

use crate::Result;
use crate::error::input;
use crate::linalg::dot;
use crate::sequences::{check_selection, for_each_sequence};
use crate::tokens::TokenSelection;

/// One sequence's score.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Projection {
    pub seq_id: u32,
    /// The label name, when the store has labels.
    pub label: Option<String>,
    pub tokens: usize,
    pub score: f64,
}

/// Mean projection `h·v̂` per sequence (over the selected tokens): the persona-vector monitor
/// score (module docs), in store order.
pub fn project_sequences(
    store: &Store,
    v: &[f32],
    selection: TokenSelection,
) -> Result<Vec<Projection>> {
    check_selection(store, selection)?;
    if v.len() != store.d_model() {
        return Err(input(
            store.dir(),
            format!(
                "activations have d_model = {}, the direction has {} values",
                store.d_model(),
                v.len()
            ),
        ));
    }
    let vh = crate::linalg::unit(v);
    let d = v.len();
    let mut out = Vec::new();
    let mut picked = Vec::new();
    for_each_sequence(store, None, |seq| {
        selection.select(seq.roles, seq.positions, &mut picked);
        if picked.is_empty() {
            return Ok(());
        }
        let s: f64 = picked
            .iter()
            .map(|&t| dot(&seq.acts[t * d..(t + 1) * d], &vh))
            .sum();
        out.push(Projection {
            seq_id: seq.seq_id,
            label: seq.label.map(|l| store.labels()[l as usize].clone()),
            tokens: picked.len(),
            score: s / picked.len() as f64,
        });
        Ok(())
    })?;
    if out.is_empty() {
        return Err(input(
            store.dir(),
            format!("token selection '{selection}' selects no token of this store"),
        ));
    }
    Ok(out)
}
