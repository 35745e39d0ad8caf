//! Where a chart is drawn: the output format chosen by file extension, the page header
//! (title and notes), and the in-memory canvases the tests look at.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::PlotError;
use crate::style;

/// Width and height in pixels of every chart this crate writes.
pub const DEFAULT_SIZE: (u32, u32) = (900, 600);

/// What plotters returns from a drawing call on backend `DB`.
pub(crate) type DrawResult<T, DB> =
    Result<T, DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// A chart that can draw itself onto any plotters backend (already filled white).
pub(crate) trait Chart {
    /// Checks the input before any file is touched; the reason becomes [`PlotError::InvalidInput`].
    fn validate(&self) -> Result<(), String> {
        Ok(())
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<(), DB>;
}

enum Format {
    Png,
    Svg,
}

fn format_of(path: &Path) -> Option<Format> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    match ext.as_str() {
        "png" => Some(Format::Png),
        "svg" => Some(Format::Svg),
        _ => None,
    }
}

/// Draws `chart` into `path` as PNG or SVG (by extension) at [`DEFAULT_SIZE`].
pub(crate) fn render(path: &Path, chart: &impl Chart) -> Result<(), PlotError> {
    let owned = || path.to_path_buf();
    chart.validate().map_err(|reason| PlotError::InvalidInput {
        path: owned(),
        reason,
    })?;
    let format = format_of(path).ok_or_else(|| PlotError::UnsupportedFormat { path: owned() })?;
    if !style::register_font() {
        return Err(PlotError::Font { path: owned() });
    }
    // Fail early, with the OS's reason, if the file cannot be created; plotters would only
    // notice after drawing and report it less clearly.
    std::fs::File::create(path).map_err(|source| PlotError::Write {
        path: owned(),
        source,
    })?;

    let drawn = match format {
        Format::Png => {
            let root = BitMapBackend::new(path, DEFAULT_SIZE).into_drawing_area();
            draw_page(&root, chart)
                .and_then(|()| root.present())
                .map_err(|e| e.to_string())
        }
        Format::Svg => {
            let root = SVGBackend::new(path, DEFAULT_SIZE).into_drawing_area();
            draw_page(&root, chart)
                .and_then(|()| root.present())
                .map_err(|e| e.to_string())
        }
    };
    drawn.map_err(|message| {
        // Best effort: do not leave a half-written chart behind.
        let _ = std::fs::remove_file(path);
        PlotError::Draw {
            path: owned(),
            message,
        }
    })
}

fn draw_page<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    chart: &impl Chart,
) -> DrawResult<(), DB> {
    root.fill(&WHITE)?;
    chart.draw(root)
}

/// Draws the title and, under it, one line per note; returns the area left below them.
pub(crate) fn header<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    notes: &[String],
) -> DrawResult<DrawingArea<DB, Shift>, DB> {
    let mut area = root.titled(title, style::text_colored(style::TITLE_SIZE, style::INK))?;
    let note_style = style::text_colored(style::NOTE_SIZE, style::NOTE_INK)
        .pos(Pos::new(HPos::Center, VPos::Top));
    for note in notes {
        let line_h = style::NOTE_SIZE as i32 + 6;
        let (w, _) = area.dim_in_pixel();
        area.draw_text(note, &note_style, (w as i32 / 2, 0))?;
        area = area.split_vertically(line_h).1;
    }
    Ok(area)
}

/// Writes `text` in the middle of `area`, e.g. "no data to plot" over empty axes.
pub(crate) fn centre_note<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
) -> DrawResult<(), DB> {
    let (w, h) = area.dim_in_pixel();
    let centred = style::text_colored(style::AXIS_LABEL_SIZE, style::NOTE_INK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    area.draw_text(text, &centred, (w as i32 / 2, h as i32 / 2))
}

/// `"1 point"` / `"3 points"`.
pub(crate) fn count_of(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// `text`, shortened with "…" until it is at most `max_w` pixels wide.
pub(crate) fn fit_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    font: &TextStyle,
    max_w: u32,
) -> DrawResult<String, DB> {
    if area.estimate_text_size(text, font)?.0 <= max_w {
        return Ok(text.to_string());
    }
    let mut chars: Vec<char> = text.chars().collect();
    while !chars.is_empty() {
        chars.pop();
        let candidate: String = chars.iter().chain(['…'].iter()).collect();
        if area.estimate_text_size(&candidate, font)?.0 <= max_w {
            return Ok(candidate);
        }
    }
    Ok("…".to_string())
}

#[cfg(test)]
pub(crate) mod testing {
    //! Renders charts into memory so tests can look at pixels and SVG text.

    use super::*;

    /// An RGB image of [`DEFAULT_SIZE`].
    pub(crate) struct Pixels {
        pub(crate) width: usize,
        pub(crate) rgb: Vec<u8>,
    }

    impl Pixels {
        pub(crate) fn at(&self, x: usize, y: usize) -> (u8, u8, u8) {
            let i = 3 * (y * self.width + x);
            (self.rgb[i], self.rgb[i + 1], self.rgb[i + 2])
        }

        /// Pixels in the box `[x0, x1) × [y0, y1)` that are not white.
        pub(crate) fn inked(&self, (x0, y0): (usize, usize), (x1, y1): (usize, usize)) -> usize {
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| self.at(x, y) != (255, 255, 255))
                .count()
        }

        /// Pixels in the box of exactly this colour.
        pub(crate) fn count_color(
            &self,
            (x0, y0): (usize, usize),
            (x1, y1): (usize, usize),
            c: RGBColor,
        ) -> usize {
            (y0..y1)
                .flat_map(|y| (x0..x1).map(move |x| (x, y)))
                .filter(|&(x, y)| self.at(x, y) == (c.0, c.1, c.2))
                .count()
        }
    }

    pub(crate) fn rgb(chart: &impl Chart) -> Pixels {
        assert!(style::register_font());
        let (w, h) = DEFAULT_SIZE;
        let mut buf = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, DEFAULT_SIZE).into_drawing_area();
            draw_page(&root, chart).expect("chart draws");
            root.present().expect("buffer presents");
        }
        Pixels {
            width: w as usize,
            rgb: buf,
        }
    }

    pub(crate) fn svg(chart: &impl Chart) -> String {
        assert!(style::register_font());
        let mut out = String::new();
        {
            let root = SVGBackend::with_string(&mut out, DEFAULT_SIZE).into_drawing_area();
            draw_page(&root, chart).expect("chart draws");
            root.present().expect("svg presents");
        }
        out
    }
}
