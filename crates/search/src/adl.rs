//! The activation difference lens (ADL), SAE-free model diffing: on the *same* text run
//! through the base and the finetuned model, the mean difference of the residual stream at
//! each of the first positions,
//!
//! ```text
//! δ_p = (1/|S_p|) Σ_{s ∈ S_p} (h_ft(s, p) − h_base(s, p)),    p = 0 .. N−1
//! ```
//!
//! (Minder et al.'s diffing-toolkit reads positions 0–4 of unrelated text; each `δ_p` is then
//! read with the logit lens or used to steer). Because the mean is linear, `δ_p` is the
//! difference of the two stores' per-position means, each computed in its own streaming pass;
//! it means something only when the stores hold the same token ids (checked).

use lantern_acts::Store;

use crate::Result;
use crate::error::input;
use crate::sequences::{TextHash, for_each_sequence};

/// Per position `p < n`: the number of sequences reaching it and the sum of their rows at
/// `p`; with the store's text fingerprint (for the same-text check).
struct PositionSums {
    counts: Vec<u64>,
    sums: Vec<f64>,
    hash: TextHash,
}

fn position_sums(store: &Store, n: usize) -> Result<PositionSums> {
    let d = store.d_model();
    let mut out = PositionSums {
        counts: vec![0; n],
        sums: vec![0.0; n * d],
        hash: TextHash::default(),
    };
    for_each_sequence(store, None, |seq| {
        out.hash.add(&seq);
        for (t, &pos) in seq.positions.iter().enumerate() {
            let p = pos as usize;
            if p < n {
                out.counts[p] += 1;
                let row = &seq.acts[t * d..(t + 1) * d];
                for (s, &x) in out.sums[p * d..(p + 1) * d].iter_mut().zip(row) {
                    *s += x as f64;
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// `δ_p` for `p < n` (positions no sequence reaches are left out), as `(p, sequences, δ_p)`.
/// Fails unless both stores hold the same token ids at the same positions in the same order.
pub fn activation_difference(
    base: &Store,
    finetuned: &Store,
    n: usize,
) -> Result<Vec<(usize, u64, Vec<f32>)>> {
    if base.d_model() != finetuned.d_model() {
        return Err(input(
            finetuned.dir(),
            format!(
                "d_model {} differs from the base store's {}",
                finetuned.d_model(),
                base.d_model()
            ),
        ));
    }
    let d = base.d_model();
    let (b, f) = (position_sums(base, n)?, position_sums(finetuned, n)?);
    if b.hash != f.hash || base.rows() != finetuned.rows() {
        return Err(input(
            finetuned.dir(),
            format!(
                "the activation difference lens needs the same text in both stores, and these \
                 token ids differ from {}'s",
                base.dir().display()
            ),
        ));
    }
    Ok((0..n)
        .filter(|&p| b.counts[p] > 0)
        .map(|p| {
            let c = b.counts[p] as f64;
            let v = (0..d)
                .map(|k| ((f.sums[p * d + k] - b.sums[p * d + k]) / c) as f32)
                .collect();
            (p, b.counts[p], v)
        })
        .collect())
}
