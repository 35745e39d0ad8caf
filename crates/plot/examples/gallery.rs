//! Renders one of each chart, with made-up but realistic SAE data, into a directory:
//! `cargo run -p lantern-plot --example gallery -- /tmp/plot-examples`.

use std::path::PathBuf;

use lantern_plot::{Histogram, LineChart, PlotError, Series, heatmap, histogram, line_chart};

fn main() -> Result<(), PlotError> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "plot-examples".into()),
    );
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("cannot create {}: {e}", dir.display());
        std::process::exit(1);
    }

    let steps = |f: &dyn Fn(f64) -> f64| -> Vec<(f64, f64)> {
        (0..=200)
            .map(|i| (i as f64 * 250.0, f(i as f64 * 250.0)))
            .collect()
    };
    let curves = [
        Series {
            name: "train mse".into(),
            points: steps(&|s| 0.02 + 2.0 / (1.0 + s / 300.0)),
        },
        Series {
            name: "eval mse".into(),
            points: steps(&|s| 0.03 + 2.2 / (1.0 + s / 280.0)),
        },
        Series {
            name: "aux-k loss".into(),
            points: steps(&|s| 0.5 * (-s / 8000.0).exp()),
        },
    ];
    for (name, log_y) in [("training-loss", true), ("training-loss-linear", false)] {
        let chart = LineChart {
            title: "SAE training loss (d_sae = 24576, k = 32)",
            x_label: "step",
            y_label: "loss",
            log_y,
            series: &curves,
        };
        line_chart(&dir.join(format!("{name}.png")), &chart)?;
        line_chart(&dir.join(format!("{name}.svg")), &chart)?;
    }

    let fvu = [Series {
        name: "fvu".into(),
        points: steps(&|s| 0.08 + 0.9 * (-s / 4000.0).exp()),
    }];
    let chart = LineChart {
        title: "Fraction of variance unexplained",
        x_label: "step",
        y_label: "FVU",
        log_y: false,
        series: &fvu,
    };
    line_chart(&dir.join("fvu.png"), &chart)?;

    let with_zeros = [Series {
        name: "dead fraction".into(),
        points: steps(&|s| {
            if s < 10_000.0 {
                0.0
            } else {
                (s - 10_000.0) / 1e6
            }
        }),
    }];
    let chart = LineChart {
        title: "Dead latents",
        x_label: "step",
        y_label: "dead fraction",
        log_y: true,
        series: &with_zeros,
    };
    line_chart(&dir.join("dead-log-with-zeros.png"), &chart)?;

    let empty = LineChart {
        title: "Nothing yet",
        x_label: "step",
        y_label: "L0",
        log_y: false,
        series: &[],
    };
    line_chart(&dir.join("empty.png"), &empty)?;

    // log10 feature density: a bulk around 1e-3, a dense tail and 300 latents that never fired.
    let mut density: Vec<f64> = (0..24_576)
        .map(|i| {
            let u = ((i as f64 * 0.618_033_988_7) % 1.0) - 0.5;
            let w = ((i as f64 * 0.414_213_562_3) % 1.0) - 0.5;
            -3.0 + 1.6 * (u + w) + if i % 97 == 0 { 2.0 } else { 0.0 }
        })
        .collect();
    density.extend(std::iter::repeat_n(f64::NEG_INFINITY, 300));
    let h = Histogram {
        title: "Feature density",
        x_label: "log10 firing frequency",
        values: &density,
        bins: 80,
        markers: &[(-6.0, "dead < 1e-6"), (-1.0, "dense > 10%")],
    };
    histogram(&dir.join("feature-density.png"), &h)?;
    histogram(&dir.join("feature-density.svg"), &h)?;

    let n = 12;
    let names: Vec<String> = (0..n).map(|i| format!("L6.f{}", 1000 + 37 * i)).collect();
    let cos: Vec<f64> = (0..n * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            if r == c {
                1.0
            } else {
                ((r * 7 + c * 3) as f64).sin()
                    * 0.6
                    * (1.0 / (1.0 + (r as f64 - c as f64).abs() * 0.2))
            }
        })
        .collect();
    heatmap(
        &dir.join("cosine-similarity.png"),
        "Decoder cosine similarity",
        &cos,
        n,
        n,
        &names,
        &names,
    )?;

    let (rows, cols) = (64, 200);
    let big: Vec<f64> = (0..rows * cols)
        .map(|i| ((i % cols) as f64 / cols as f64) * ((i / cols) as f64).sqrt())
        .collect();
    heatmap(
        &dir.join("heatmap-large.png"),
        "Latent activation by position",
        &big,
        rows,
        cols,
        &[],
        &[],
    )?;
    println!("wrote charts to {}", dir.display());
    Ok(())
}
