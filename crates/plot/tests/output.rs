//! The public API end to end: files on disk, their formats, and errors that name the file.

use std::path::Path;

use lantern_plot::{
    DEFAULT_SIZE, Histogram, LineChart, PlotError, Series, heatmap, histogram, line_chart,
};

fn curves() -> Vec<Series> {
    let curve = |name: &str, scale: f64| Series {
        name: name.to_string(),
        points: (1..=50).map(|s| (s as f64, scale / s as f64)).collect(),
    };
    vec![curve("train mse", 1.0), curve("eval mse", 1.3)]
}

fn chart(series: &[Series]) -> LineChart<'_> {
    LineChart {
        title: "SAE training",
        x_label: "step",
        y_label: "loss",
        log_y: true,
        series,
    }
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
    (be(16), be(20))
}

#[test]
fn png_outputs_have_the_png_signature_and_default_size() {
    let dir = tempfile::tempdir().unwrap();
    let series = curves();
    let values = [-3.0, -2.5, -2.0, f64::NEG_INFINITY];
    let h = Histogram {
        title: "density",
        x_label: "log10",
        values: &values,
        bins: 10,
        markers: &[],
    };
    let files = ["line.png", "hist.PNG", "heat.png"].map(|f| dir.path().join(f));
    line_chart(&files[0], &chart(&series)).unwrap();
    histogram(&files[1], &h).unwrap();
    heatmap(&files[2], "cos", &[1.0, 0.2, 0.2, 1.0], 2, 2, &[], &[]).unwrap();
    for f in &files {
        assert_eq!(png_size(f), DEFAULT_SIZE, "{}", f.display());
    }
}

#[test]
fn svg_output_contains_the_title_and_series_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("curves.svg");
    line_chart(&path, &chart(&curves())).unwrap();
    let svg = std::fs::read_to_string(&path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
    for text in ["SAE training", "train mse", "eval mse", "step", "loss"] {
        assert!(svg.contains(text), "SVG lacks {text:?}");
    }
}

#[test]
fn unwritable_path_is_a_write_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no-such-dir").join("loss.png");
    let err = line_chart(&path, &chart(&curves())).unwrap_err();
    assert!(matches!(err, PlotError::Write { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

#[test]
fn unknown_extension_is_rejected_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["loss.jpg", "loss"] {
        let path = dir.path().join(name);
        let err = line_chart(&path, &chart(&curves())).unwrap_err();
        assert!(
            matches!(err, PlotError::UnsupportedFormat { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&path.display().to_string()));
        assert!(!path.exists(), "nothing is written for a rejected format");
    }
}

#[test]
fn bad_input_is_an_error_naming_the_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.png");
    let h = Histogram {
        title: "t",
        x_label: "x",
        values: &[1.0],
        bins: 0,
        markers: &[],
    };
    let errs = [
        histogram(&path, &h).unwrap_err(),
        heatmap(&path, "t", &[1.0, 2.0, 3.0], 2, 2, &[], &[]).unwrap_err(),
        heatmap(&path, "t", &[1.0; 4], 2, 2, &["only one".to_string()], &[]).unwrap_err(),
        heatmap(&path, "t", &[], 0, 3, &[], &[]).unwrap_err(),
    ];
    for err in errs {
        assert!(matches!(err, PlotError::InvalidInput { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&path.display().to_string()),
            "{err}"
        );
    }
    assert!(!path.exists());
}
