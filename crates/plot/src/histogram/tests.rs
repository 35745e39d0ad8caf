use super::*;
use crate::canvas::testing;

fn hist<'a>(values: &'a [f64], markers: &'a [(f64, &'a str)]) -> Histogram<'a> {
    Histogram {
        title: "Feature density",
        x_label: "log10 density",
        values,
        bins: 20,
        markers,
    }
}

#[test]
fn binning_counts_every_finite_value_once_and_closes_the_last_bin() {
    let values = [
        0.0,
        0.5,
        1.0,
        1.0,
        2.0,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::INFINITY,
    ];
    let b = Binned::of(&values, 4);
    assert_eq!((b.lo, b.hi), (0.0, 2.0));
    assert_eq!(b.counts, vec![1, 1, 2, 1]);
    assert_eq!(b.never_fired, 1);
    assert_eq!(b.other_non_finite, 2);
}

#[test]
fn identical_values_fall_in_one_bin() {
    let b = Binned::of(&[-3.0; 5], 10);
    assert!(b.lo < -3.0 && b.hi > -3.0);
    assert_eq!(b.counts.iter().sum::<usize>(), 5);
    assert_eq!(b.counts.iter().filter(|&&c| c > 0).count(), 1);
}

#[test]
fn never_fired_latents_are_counted_in_the_caption() {
    let mut values = vec![-3.0, -2.5, -2.0, -4.0];
    values.extend([f64::NEG_INFINITY; 3]);
    let svg = testing::svg(&hist(
        &values,
        &[(-6.0, "dead < 1e-6"), (-1.0, "dense > 10%")],
    ));
    assert!(svg.contains("3 of 7 never fired"), "{svg}");
    assert!(svg.contains("dead &lt; 1e-6") || svg.contains("dead < 1e-6"));
    assert!(svg.contains("dense &gt; 10%") || svg.contains("dense > 10%"));
    assert!(svg.contains("Feature density") && svg.contains("log10 density"));
}

#[test]
fn bars_and_markers_are_drawn() {
    let values: Vec<f64> = (0..1000).map(|i| -4.0 + (i % 37) as f64 / 12.0).collect();
    let px = testing::rgb(&hist(&values, &[(-6.0, "dead"), (-1.0, "dense")]));
    assert!(
        px.inked((100, 50), (880, 530)) > 20_000,
        "bars fill part of the plot"
    );
    assert!(
        px.count_color((0, 0), (900, 600), style::marker_color(0)) > 100,
        "first marker"
    );
    assert!(
        px.count_color((0, 0), (900, 600), style::marker_color(1)) > 100,
        "second marker"
    );
}

#[test]
fn awkward_values_draw_without_panicking() {
    let cases: [&[f64]; 6] = [
        &[],
        &[f64::NAN, f64::NAN],
        &[f64::NEG_INFINITY; 4],
        &[2.0],
        &[1e300, -1e300],
        &[0.0, 1e-300],
    ];
    for values in cases {
        testing::rgb(&hist(values, &[(f64::NAN, "bad marker"), (-6.0, "dead")]));
        testing::svg(&hist(values, &[]));
    }
    let svg = testing::svg(&hist(&[f64::NAN], &[]));
    assert!(svg.contains("1 value NaN or +∞"));
    assert!(svg.contains("no finite values to plot"));
}
