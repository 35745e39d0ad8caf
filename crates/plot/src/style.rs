//! Fonts, colours and colour maps shared by every chart.

use plotters::style::{FontStyle, IntoFont, RGBColor, TextStyle};

/// DejaVu Sans (see `assets/LICENSE`), registered as plotters' "sans-serif" family so that
/// text renders the same on every machine without system fonts.
const DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Font family every chart uses; it is the one [`register_font`] fills.
const FAMILY: &str = "sans-serif";

/// Registers the embedded font once per process; `false` if plotters rejected it.
pub(crate) fn register_font() -> bool {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok()
    })
}

/// Text sizes in pixels.
pub(crate) const TITLE_SIZE: u32 = 24;
pub(crate) const NOTE_SIZE: u32 = 15;
pub(crate) const AXIS_LABEL_SIZE: u32 = 17;
pub(crate) const TICK_SIZE: u32 = 14;

pub(crate) fn text(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().into()
}

pub(crate) fn text_colored(size: u32, color: RGBColor) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&color)
}

pub(crate) const INK: RGBColor = RGBColor(30, 30, 30);
pub(crate) const NOTE_INK: RGBColor = RGBColor(110, 60, 0);
pub(crate) const GRID: RGBColor = RGBColor(225, 225, 225);
pub(crate) const NAN_CELL: RGBColor = RGBColor(160, 160, 160);

/// Tableau 10: distinguishable series colours, cycled when there are more series.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

pub(crate) fn series_color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

/// Colours for vertical marker lines (histogram cut-offs).
const MARKERS: [RGBColor; 4] = [
    RGBColor(200, 30, 30),
    RGBColor(20, 110, 40),
    RGBColor(120, 40, 160),
    RGBColor(200, 120, 0),
];

pub(crate) fn marker_color(i: usize) -> RGBColor {
    MARKERS[i % MARKERS.len()]
}

/// A colour map from `t ∈ [0, 1]` to a colour, by linear interpolation between anchors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum ColorMap {
    /// Blue – white – red, for signed data centred on 0 (cosine similarity).
    Diverging,
    /// Viridis-like dark blue – green – yellow, for one-signed data.
    Sequential,
}

const DIVERGING: [(u8, u8, u8); 5] = [
    (5, 48, 97),
    (67, 147, 195),
    (247, 247, 247),
    (214, 96, 77),
    (103, 0, 31),
];

const SEQUENTIAL: [(u8, u8, u8); 5] = [
    (68, 1, 84),
    (59, 82, 139),
    (33, 145, 140),
    (94, 201, 98),
    (253, 231, 37),
];

impl ColorMap {
    pub(crate) fn at(self, t: f64) -> RGBColor {
        let anchors = match self {
            ColorMap::Diverging => &DIVERGING,
            ColorMap::Sequential => &SEQUENTIAL,
        };
        let t = if t.is_nan() { 0.5 } else { t.clamp(0.0, 1.0) };
        let pos = t * (anchors.len() - 1) as f64;
        let i = (pos.floor() as usize).min(anchors.len() - 2);
        let f = pos - i as f64;
        let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * f).round() as u8;
        let (a, b) = (anchors[i], anchors[i + 1]);
        RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_font_registers() {
        assert!(register_font());
    }

    #[test]
    fn color_maps_hit_their_end_anchors_and_clamp() {
        assert_eq!(ColorMap::Diverging.at(0.0), RGBColor(5, 48, 97));
        assert_eq!(ColorMap::Diverging.at(0.5), RGBColor(247, 247, 247));
        assert_eq!(ColorMap::Sequential.at(1.0), RGBColor(253, 231, 37));
        assert_eq!(ColorMap::Sequential.at(7.0), ColorMap::Sequential.at(1.0));
        assert_eq!(
            ColorMap::Sequential.at(f64::NAN),
            ColorMap::Sequential.at(0.5)
        );
    }
}
