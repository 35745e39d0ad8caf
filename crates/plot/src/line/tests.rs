use super::*;
use crate::canvas::testing;

fn series(name: &str, points: Vec<(f64, f64)>) -> Series {
    Series {
        name: name.to_string(),
        points,
    }
}

fn chart<'a>(series: &'a [Series], log_y: bool) -> LineChart<'a> {
    LineChart {
        title: "Training curves",
        x_label: "step",
        y_label: "loss",
        log_y,
        series,
    }
}

fn decaying(name: &str, scale: f64) -> Series {
    series(
        name,
        (1..=100).map(|s| (s as f64, scale / s as f64)).collect(),
    )
}

#[test]
fn curves_title_and_axes_are_drawn() {
    let s = [decaying("mse", 1.0)];
    let px = testing::rgb(&chart(&s, false));
    let blue = style::series_color(0);
    assert!(
        px.count_color((100, 40), (880, 530), blue) > 200,
        "curve pixels"
    );
    assert!(px.inked((300, 0), (600, 30)) > 100, "title text");
    assert!(px.inked((0, 200), (40, 400)) > 20, "y axis label text");
    assert!(px.inked((300, 560), (600, 600)) > 20, "x axis label text");
}

#[test]
fn legend_sits_beside_the_plot_not_on_it() {
    // Both curves fill the whole width, so a legend drawn inside the plot would cover them.
    let flat = |name: &str, y: f64| series(name, (0..=10).map(|i| (i as f64, y)).collect());
    let s = [flat("first", 1.0), flat("second", 2.0)];
    let c = chart(&s, false);
    let px = testing::rgb(&c);
    let svg = testing::svg(&c);
    assert!(svg.contains("first") && svg.contains("second"));

    // Find the legend swatch of series 1 (orange): it must be right of every data pixel.
    let orange = style::series_color(1);
    let xs: Vec<usize> = (0..600)
        .flat_map(|y| (0..900).map(move |x| (x, y)))
        .filter(|&(x, y)| px.at(x, y) == (orange.0, orange.1, orange.2))
        .map(|(x, _)| x)
        .collect();
    let legend_left = 900 - 900 / 3;
    assert!(xs.iter().any(|&x| x > legend_left), "legend swatch drawn");
    let data_right = xs.iter().filter(|&&x| x < legend_left).max().unwrap();
    let swatch_left = xs.iter().filter(|&&x| x > *data_right + 5).min().unwrap();
    assert!(swatch_left > data_right, "legend overlaps the data");
}

#[test]
fn one_series_has_no_legend() {
    let s = [decaying("only curve", 1.0)];
    assert!(!testing::svg(&chart(&s, false)).contains("only curve"));
}

#[test]
fn awkward_data_draws_without_panicking() {
    let nan = f64::NAN;
    let cases: Vec<Vec<Series>> = vec![
        vec![],
        vec![series("empty", vec![])],
        vec![series("all nan", vec![(nan, nan), (1.0, nan)])],
        vec![series("one point", vec![(5.0, 0.25)])],
        vec![series("flat", vec![(1.0, 3.0), (2.0, 3.0)])],
        vec![series("same x", vec![(7.0, 1.0), (7.0, 2.0)])],
        vec![series("zeros", vec![(1.0, 0.0), (2.0, 0.0)])],
        vec![series("negative", vec![(1.0, -1.0), (2.0, -3.0)])],
        vec![series(
            "huge",
            vec![(-f64::MAX, f64::MAX), (f64::MAX, -f64::MAX)],
        )],
        vec![series("tiny", vec![(0.0, 1e-300), (1.0, 2e-300)])],
        vec![series("inf", vec![(1.0, f64::INFINITY), (2.0, 1.0)])],
    ];
    for s in &cases {
        for log_y in [false, true] {
            testing::rgb(&chart(s, log_y));
            testing::svg(&chart(s, log_y));
        }
    }
}

#[test]
fn a_single_point_is_still_visible() {
    let s = [series("one point", vec![(5.0, 0.25)])];
    let px = testing::rgb(&chart(&s, false));
    assert!(px.count_color((0, 0), (900, 600), style::series_color(0)) > 10);
}

#[test]
fn points_left_out_are_counted_in_a_note() {
    let s = [series(
        "l0",
        vec![
            (0.0, 0.0),
            (1.0, -2.0),
            (2.0, 5.0),
            (3.0, f64::NAN),
            (4.0, 6.0),
        ],
    )];
    let svg = testing::svg(&chart(&s, true));
    assert!(
        svg.contains("2 points with y ≤ 0 not shown on the log scale"),
        "{svg}"
    );
    assert!(svg.contains("1 point with NaN or ±∞ not shown"));
    // On a linear axis, non-positive values are ordinary data.
    let svg = testing::svg(&chart(&s, false));
    assert!(!svg.contains("log scale"));
}

#[test]
fn non_finite_points_break_the_line() {
    let s = [series(
        "loss",
        vec![
            (0.0, 1.0),
            (1.0, 2.0),
            (2.0, f64::NAN),
            (3.0, 1.0),
            (4.0, 1.5),
        ],
    )];
    let data = Drawable::of(&chart(&s, false));
    assert_eq!(data.runs[0].len(), 2);
    assert_eq!(data.non_finite, 1);
}

#[test]
fn long_legend_names_are_shortened_to_fit() {
    let long = "a very long series name that would push the plot off the page entirely";
    let s = [decaying(long, 1.0), decaying("short", 2.0)];
    let svg = testing::svg(&chart(&s, true));
    assert!(svg.contains('…') && !svg.contains(long));
    assert!(svg.contains("short"));
}
