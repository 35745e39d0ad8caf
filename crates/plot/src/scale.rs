//! Axis ranges that never collapse, and tick labels that stay short.

use std::ops::Range;

/// Largest magnitude kept on an axis, so that `hi - lo` and the padding stay finite.
const LIMIT: f64 = f64::MAX / 8.0;

/// `(min, max)` of the finite values, or `None` when there are none.
pub(crate) fn finite_extent(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64)> {
    values
        .into_iter()
        .filter(|v| v.is_finite())
        .fold(None, |acc, v| match acc {
            None => Some((v, v)),
            Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
        })
}

/// A linear axis range covering `extent` with `pad` (a fraction of the width) on each side.
/// A zero-width extent (one distinct value) is widened around its value; no extent gives 0..1.
pub(crate) fn linear_range(extent: Option<(f64, f64)>, pad: f64) -> Range<f64> {
    let Some((lo, hi)) = extent else {
        return 0.0..1.0;
    };
    let (lo, hi) = (lo.clamp(-LIMIT, LIMIT), hi.clamp(-LIMIT, LIMIT));
    let width = hi - lo;
    if width <= f64::EPSILON * lo.abs().max(hi.abs()).max(f64::MIN_POSITIVE) {
        let half = (lo.abs() * 0.1).max(0.5);
        return lo - half..hi + half;
    }
    lo - width * pad..hi + width * pad
}

/// A log axis range covering the positive `extent`, padded by `pad` decades-fraction on each
/// side; a single value gets a factor of 3 either way, no extent gives 0.1..10.
pub(crate) fn log_range(extent: Option<(f64, f64)>, pad: f64) -> Range<f64> {
    let Some((lo, hi)) = extent.filter(|&(lo, _)| lo > 0.0) else {
        return 0.1..10.0;
    };
    let (lo, hi) = (lo.max(f64::MIN_POSITIVE * 1e3), hi.min(LIMIT));
    let ratio = hi / lo;
    if ratio < 1.0 + 1e-9 {
        return lo / 3.0..hi * 3.0;
    }
    let factor = ratio.powf(pad);
    lo / factor..hi * factor
}

/// Tick values for a log axis over `range`: 1, 2 and 5 times each power of ten inside it, and
/// every integer multiple when the range spans less than a decade — plotters alone labels only
/// powers of ten, so a loss falling from 4 to 0.9 had one labelled tick. A range too narrow to
/// hold two such values (FVUs of 0.2017–0.2058 in a sweep had none) gets round linear steps.
pub(crate) fn log_ticks(range: &Range<f64>) -> Vec<f64> {
    let ticks = multiples_of_powers_of_ten(range);
    if ticks.len() >= 2 || !(range.start > 0.0 && range.end > range.start) {
        return ticks;
    }
    nice_ticks(range.start, range.end, 5)
        .into_iter()
        .filter(|v| *v > 0.0)
        .collect()
}

fn multiples_of_powers_of_ten(range: &Range<f64>) -> Vec<f64> {
    let (lo, hi) = (range.start, range.end);
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return Vec::new();
    }
    let steps: &[f64] = if hi / lo < 10.0 {
        &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut ticks = Vec::new();
    for e in lo.log10().floor() as i32..=hi.log10().ceil() as i32 {
        for m in steps {
            let v = m * 10f64.powi(e);
            if v >= lo && v <= hi {
                ticks.push(v);
            }
        }
    }
    ticks
}

/// About `n` round values (steps of 1, 2 or 5 times a power of ten) inside `[lo, hi]`.
pub(crate) fn nice_ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    let span = hi - lo;
    if !(span.is_finite() && span > 0.0) || n == 0 {
        return vec![lo];
    }
    let raw = span / n as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * magnitude);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    // `take` bounds the loop even where rounding makes `last - first` absurd.
    (first..=last)
        .take(4 * n + 2)
        .map(|k| {
            let v = k as f64 * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect()
}

/// A short tick label: plain decimals with about four significant digits for ordinary
/// magnitudes, k/M/G suffixes for large ones (training steps), and `1.5e-6` for tiny ones.
pub(crate) fn tick_label(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        return format!("{v}");
    }
    if a < 1e-12 {
        return "0".to_string();
    }
    if a >= 1e4 {
        let (scaled, suffix) = match a {
            a if a >= 1e12 => return trim_exp(format!("{v:.2e}")),
            a if a >= 1e9 => (v / 1e9, "G"),
            a if a >= 1e6 => (v / 1e6, "M"),
            _ => (v / 1e3, "k"),
        };
        return format!("{}{suffix}", trim_zeros(format!("{scaled:.2}")));
    }
    if a < 1e-3 {
        return trim_exp(format!("{v:.2e}"));
    }
    let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

/// [`tick_label`] for an axis `span` wide: with enough decimals to tell apart ticks about
/// `span/8` apart (L0s of 7.9996–8.0000 were all labelled "8").
pub(crate) fn tick_label_within(v: f64, span: f64) -> String {
    let short = tick_label(v);
    let step = span / 8.0;
    let a = v.abs();
    let ordinary = v.is_finite() && step.is_finite() && step > 0.0 && (1e-3..1e4).contains(&a);
    if !ordinary {
        return short;
    }
    let have = (3 - a.log10().floor() as i32).clamp(0, 6);
    let need = ((-step.log10()).ceil() as i32 + 1).clamp(0, 9);
    if need <= have {
        short
    } else {
        trim_zeros(format!("{v:.*}", need as usize))
    }
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `1.50e-6` → `1.5e-6`, `1.00e-6` → `1e-6`.
fn trim_exp(s: String) -> String {
    match s.split_once('e') {
        Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa.to_string())),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_ticks_label_every_multiple_within_a_decade_and_1_2_5_across_decades() {
        assert_eq!(log_ticks(&(0.8..4.5)), vec![0.8, 0.9, 1.0, 2.0, 3.0, 4.0]);
        assert_eq!(
            log_ticks(&(0.05..30.0)),
            vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0]
        );
        assert!(log_ticks(&(0.0..1.0)).is_empty());
    }

    #[test]
    fn zero_width_and_empty_extents_still_give_a_range() {
        let r = linear_range(Some((3.0, 3.0)), 0.05);
        assert!(r.start < 3.0 && r.end > 3.0);
        let r = linear_range(Some((0.0, 0.0)), 0.05);
        assert!(r.start < 0.0 && r.end > 0.0);
        assert_eq!(linear_range(None, 0.05), 0.0..1.0);
        let r = log_range(Some((2.0, 2.0)), 0.05);
        assert!(r.start < 2.0 && r.end > 2.0 && r.start > 0.0);
        assert_eq!(log_range(None, 0.05), 0.1..10.0);
    }

    #[test]
    fn huge_extents_keep_a_finite_width() {
        let r = linear_range(Some((-f64::MAX, f64::MAX)), 0.05);
        assert!((r.end - r.start).is_finite());
    }

    #[test]
    fn finite_extent_skips_nan_and_infinities() {
        let e = finite_extent([f64::NAN, 2.0, f64::NEG_INFINITY, -1.0, f64::INFINITY]);
        assert_eq!(e, Some((-1.0, 2.0)));
        assert_eq!(finite_extent([f64::NAN]), None);
    }

    #[test]
    fn nice_ticks_are_round_and_inside_the_range() {
        assert_eq!(nice_ticks(-1.0, 1.0, 6), vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
        assert_eq!(nice_ticks(0.0, 7.75, 6), vec![0.0, 2.0, 4.0, 6.0]);
        assert_eq!(nice_ticks(3.0, 3.0, 6), vec![3.0]);
    }

    #[test]
    fn narrow_ranges_get_ticks_and_labels_that_differ() {
        // A log axis within 2 % of 0.2: no multiple of a power of ten but 0.2 is near.
        let ticks = log_ticks(&(0.2017..0.2058));
        assert!(ticks.len() >= 2, "{ticks:?}");
        assert!(
            ticks.iter().all(|t| (0.2017..=0.2058).contains(t)),
            "{ticks:?}"
        );
        // Neighbouring ticks of a narrow axis keep distinct labels; wide axes keep short ones.
        let labels: Vec<String> = [7.9996, 7.9997, 7.9998]
            .iter()
            .map(|v| tick_label_within(*v, 0.0004))
            .collect();
        assert_eq!(labels, ["7.9996", "7.9997", "7.9998"]);
        assert_eq!(tick_label_within(0.30000000000000004, 1.0), "0.3");
        assert_eq!(tick_label_within(20_000.0, 1e5), "20k");
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(0.30000000000000004), "0.3");
        assert_eq!(tick_label(0.00123), "0.00123");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(-2.5), "-2.5");
        assert_eq!(tick_label(20_000.0), "20k");
        assert_eq!(tick_label(1_500_000.0), "1.5M");
        assert_eq!(tick_label(1.5e-6), "1.5e-6");
        assert_eq!(tick_label(1e-4), "1e-4");
        assert_eq!(tick_label(1234.0), "1234");
    }
}
