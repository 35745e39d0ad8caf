use super::*;
use crate::canvas::testing;

fn map<'a>(values: &'a [f64], rows: usize, cols: usize, labels: &'a [String]) -> Heatmap<'a> {
    Heatmap {
        title: "Cosine similarity",
        values,
        rows,
        cols,
        row_labels: labels,
        col_labels: labels,
    }
}

#[test]
fn signed_data_gets_a_symmetric_diverging_scale() {
    let s = ColorScale::of(&[-0.2, 0.9, f64::NAN]);
    assert_eq!((s.lo, s.hi, s.map), (-0.9, 0.9, ColorMap::Diverging));
    assert_eq!(s.color(0.0), ColorMap::Diverging.at(0.5));
    assert_eq!(s.color(f64::NAN), style::NAN_CELL);
    let s = ColorScale::of(&[0.0, 2.0]);
    assert_eq!((s.lo, s.hi, s.map), (0.0, 2.0, ColorMap::Sequential));
    let s = ColorScale::of(&[5.0, 5.0]);
    assert!(s.lo < 5.0 && s.hi > 5.0);
    let s = ColorScale::of(&[f64::NAN]);
    assert!(s.lo < s.hi);
}

#[test]
fn row_zero_is_drawn_at_the_top_left() {
    // Only cell (0, 0) is positive, so the only red cell must be top-left of the matrix.
    let values = [1.0, -1.0, -1.0, -1.0];
    let px = testing::rgb(&map(&values, 2, 2, &[]));
    let red = ColorScale::of(&values).color(1.0);
    let blue = ColorScale::of(&values).color(-1.0);
    let cells = |c: RGBColor| -> Vec<(usize, usize)> {
        (0..600)
            .flat_map(|y| (0..750).map(move |x| (x, y)))
            .filter(|&(x, y)| px.at(x, y) == (c.0, c.1, c.2))
            .collect()
    };
    let (reds, blues) = (cells(red), cells(blue));
    assert!(reds.len() > 10_000 && blues.len() > 3 * 10_000);
    let max_red = reds
        .iter()
        .fold((0, 0), |m, p| (m.0.max(p.0), m.1.max(p.1)));
    let max_blue = blues
        .iter()
        .fold((0, 0), |m, p| (m.0.max(p.0), m.1.max(p.1)));
    assert!(
        max_red.0 < max_blue.0 && max_red.1 < max_blue.1,
        "{max_red:?} {max_blue:?}"
    );
}

#[test]
fn labels_title_and_nan_note_are_written() {
    let labels: Vec<String> = ["f12", "f345", "f6789"].map(String::from).to_vec();
    let mut values = vec![0.5; 9];
    values[4] = f64::NAN;
    let svg = testing::svg(&map(&values, 3, 3, &labels));
    for text in [
        "Cosine similarity",
        "f12",
        "f345",
        "f6789",
        "1 cell NaN, drawn grey",
    ] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
}

#[test]
fn many_cells_and_awkward_values_draw_without_panicking() {
    let big: Vec<f64> = (0..300 * 7).map(|i| (i as f64).sin()).collect();
    testing::rgb(&map(&big, 300, 7, &[]));
    for values in [
        vec![f64::NAN; 4],
        vec![0.0; 4],
        vec![f64::INFINITY, -1.0, 1.0, f64::NEG_INFINITY],
    ] {
        testing::rgb(&map(&values, 2, 2, &[]));
        testing::svg(&map(&values, 1, 4, &[]));
    }
}

#[test]
fn shape_mismatches_are_rejected_before_drawing() {
    assert!(map(&[1.0; 3], 2, 2, &[]).validate().is_err());
    assert!(map(&[1.0; 4], 2, 2, &["a".to_string()]).validate().is_err());
    assert!(map(&[], 0, 0, &[]).validate().is_err());
    assert!(map(&[1.0; 4], usize::MAX, 2, &[]).validate().is_err());
    assert!(map(&[1.0; 4], 2, 2, &[]).validate().is_ok());
}
