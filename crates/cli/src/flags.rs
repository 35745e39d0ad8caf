//! Value parsers shared by the commands' flags.

/// A finite `f32`: NaN and infinities are refused when the flag is parsed (they used to reach
/// the trainer as a "diverged, lower the learning rate" error, or pass silently).
pub fn finite_f32(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s} is not a finite number"))
    }
}

/// A finite `f64` (see [`finite_f32`]).
pub fn finite_f64(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if v.is_finite() {
        Ok(v)
    } else {
        Err(format!("{s} is not a finite number"))
    }
}

/// A `--lr` value: a rate, `sparsify` for sparsify's rule `2e-4/√(M/2¹⁴)`, `rule` for the
/// architecture's default rate without a probe, `probe` for a probe at any run length.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lr {
    /// This learning rate (checked positive when the run is configured).
    Rate(f32),
    /// [`lantern_sae::train::sparsify_lr`] of the dictionary size.
    Sparsify,
    /// The architecture's default rate ([`lantern_sae::train::topk_lr`], ReLU's 5e-5), never
    /// probed.
    Rule,
    /// [`lantern_sae::train::train_lr_probe`] around the default rate, whatever the length.
    Probe,
}

/// `--threshold-lr`: a rate, or `same` for the weights' rate (what JumpReLU runs used before
/// 2026-12-05, so that their checkpoints resume).
pub fn threshold_lr(s: &str) -> Result<lantern_sae::train::ThresholdLr, String> {
    use lantern_sae::train::ThresholdLr;
    match s {
        "same" => Ok(ThresholdLr::SameAsLr),
        v => finite_f32(v)
            .map(ThresholdLr::Rate)
            .map_err(|e| format!("{e} (expected a learning rate or same)")),
    }
}

/// `--lr`: a finite number, `sparsify`, `rule` or `probe`.
pub fn lr(s: &str) -> Result<Lr, String> {
    match s {
        "sparsify" => Ok(Lr::Sparsify),
        "rule" => Ok(Lr::Rule),
        "probe" => Ok(Lr::Probe),
        v => finite_f32(v)
            .map(Lr::Rate)
            .map_err(|e| format!("{e} (expected a learning rate, sparsify, rule or probe)")),
    }
}
