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
