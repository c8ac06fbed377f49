//! `loadgen plot`: the classic HdrHistogram percentile chart — latency
//! against percentile on a log scale of 1/(1−q), one line per run — so the
//! tails of several runs can be compared at a glance.

use crate::format::{format_micros, sig3};
use crate::summary::{Latency, Summary};
use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{register_font, FontStyle, RGBColor};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Arguments of `loadgen plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// summary.json files (or directories holding one)
    #[arg(required = true, num_args = 1..)]
    pub runs: Vec<PathBuf>,
    /// output file: .svg or .png
    #[arg(long, short = 'o', default_value = "latency.svg")]
    pub out: PathBuf,
    /// which distribution: latency (end-to-end), ack or connect
    #[arg(long, value_enum, default_value = "latency")]
    pub metric: PlotMetric,
    /// title above the chart
    #[arg(long)]
    pub title: Option<String>,
    /// TrueType font for PNG output (SVG needs none); default: DejaVu Sans from the usual system paths
    #[arg(long)]
    pub font: Option<PathBuf>,
}

/// The distribution to plot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlotMetric {
    /// End-to-end latency (publish to delivery).
    Latency,
    /// PUBLISH to PUBACK/PUBCOMP.
    Ack,
    /// TCP connect to CONNACK.
    Connect,
}

impl PlotMetric {
    fn of(self, run: &Summary) -> Option<&Latency> {
        let r = &run.results;
        match self {
            PlotMetric::Latency => r.latency.as_ref(),
            PlotMetric::Ack => r.ack_latency.as_ref(),
            PlotMetric::Connect => r.connect_latency.as_ref(),
        }
    }

    fn name(self) -> &'static str {
        match self {
            PlotMetric::Latency => "end-to-end",
            PlotMetric::Ack => "ack",
            PlotMetric::Connect => "connect",
        }
    }

    fn title(self) -> &'static str {
        match self {
            PlotMetric::Latency => "End-to-end latency by percentile",
            PlotMetric::Ack => "Publish acknowledgement latency by percentile",
            PlotMetric::Connect => "Connect latency by percentile",
        }
    }
}

/// Draws the chart into `--out`.
pub fn run(args: &PlotArgs) -> Result<()> {
    let format = Format::of(&args.out)?;
    let runs = Summary::read_all(&args.runs)?;
    let title = args
        .title
        .clone()
        .unwrap_or_else(|| default_title(args.metric, &runs));
    let chart = Chart::new(title, args.metric, &runs)?;
    match format {
        Format::Svg => {
            // Text in an SVG is laid out by the viewer; a font only makes
            // the legend box fit its labels exactly, so go on without one.
            if let Err(e) = load_font(args.font.as_deref()) {
                if args.font.is_some() {
                    return Err(e);
                }
            }
            let root = SVGBackend::new(&args.out, SIZE).into_drawing_area();
            draw(&root, &chart)?;
            root.present()
                .map_err(|e| anyhow!("writing {}: {e}", args.out.display()))?;
        }
        Format::Png => {
            load_font(args.font.as_deref())?;
            let root = BitMapBackend::new(&args.out, SIZE).into_drawing_area();
            draw(&root, &chart)?;
            root.present()
                .map_err(|e| anyhow!("writing {}: {e}", args.out.display()))?;
        }
    }
    Ok(())
}

/// The metric's title, plus the scenarios of the runs when they name one.
fn default_title(metric: PlotMetric, runs: &[Summary]) -> String {
    let mut scenarios: Vec<&str> = Vec::new();
    for run in runs {
        if let Some(s) = run.config.get("scenario").and_then(|s| s.as_str()) {
            if !scenarios.contains(&s) {
                scenarios.push(s);
            }
        }
    }
    if scenarios.is_empty() {
        metric.title().to_string()
    } else {
        format!("{} — {}", metric.title(), scenarios.join(", "))
    }
}

// ---------------------------------------------------------------------------
// Output format and font

const SIZE: (u32, u32) = (1200, 700);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Svg,
    Png,
}

impl Format {
    fn of(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            _ => bail!("{}: the output must end in .svg or .png", path.display()),
        }
    }
}

/// Where distributions usually put DejaVu Sans (Debian/Ubuntu, Fedora,
/// Arch), then other common sans-serif fonts.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// The font file last registered: plotters keeps fonts in a process-wide
/// table and wants them `'static`, so each file is read (and leaked) once.
static REGISTERED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Registers `font`, or the first system font found, as "sans-serif".
fn load_font(font: Option<&Path>) -> Result<()> {
    let path = match font {
        Some(path) => path.to_path_buf(),
        None => FONT_PATHS
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .ok_or_else(|| {
                anyhow!(
                    "no font found for PNG output (looked for {}); install fonts-dejavu-core, \
                     pass --font FILE.ttf, or write an .svg instead",
                    FONT_PATHS.join(", ")
                )
            })?,
    };
    let mut registered = REGISTERED
        .lock()
        .map_err(|_| anyhow!("font registry poisoned"))?;
    if registered.as_deref() == Some(path.as_path()) {
        return Ok(());
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading font {}", path.display()))?;
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{} is not a TrueType/OpenType font", path.display()))?;
    *registered = Some(path);
    Ok(())
}

// ---------------------------------------------------------------------------
// The data

/// Quantiles sampled per decade of 1/(1−q): dense enough to show the steps
/// of a tail.
const POINTS_PER_DECADE: u32 = 40;

/// One run's line.
#[derive(Debug)]
struct Curve {
    legend: String,
    /// (log10 of 1/(1−q), latency in µs), ending at the max.
    points: Vec<(f64, f64)>,
    p50_us: f64,
    max_us: f64,
}

impl Curve {
    fn new(label: &str, latency: &Latency) -> Result<Curve> {
        let h = latency
            .histogram()
            .with_context(|| format!("run {label}: decoding its histogram"))?;
        Ok(Curve {
            legend: format!("{label} (p99 {})", format_micros(latency.p99)),
            points: percentile_points(&h),
            p50_us: latency.p50,
            max_us: latency.max,
        })
    }
}

/// Latency (µs) at q = 1 − 10^(−k/40) while the sample count supports the
/// quantile, then the max at the last resolvable percentile.
fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let us = |ns: u64| ns as f64 / 1000.0;
    // Beyond 1/(1−q) = count every quantile is the max.
    let decades = (h.len().max(1) as f64).log10();
    let steps = (decades * f64::from(POINTS_PER_DECADE)).floor() as u32;
    let mut points: Vec<(f64, f64)> = (0..=steps)
        .map(|k| {
            let x = f64::from(k) / f64::from(POINTS_PER_DECADE);
            (x, us(h.value_at_quantile(1.0 - 10f64.powf(-x))))
        })
        .collect();
    points.push((decades, us(h.max())));
    points
}

/// Everything drawn, in data terms.
#[derive(Debug)]
struct Chart {
    title: String,
    curves: Vec<Curve>,
    /// Decades of 1/(1−q) on the x axis (3 reaches 99.9%).
    decades: u32,
    /// Latencies are divided by this to be shown in `unit`.
    divisor: f64,
    unit: &'static str,
    log_y: bool,
}

impl Chart {
    fn new(title: String, metric: PlotMetric, runs: &[Summary]) -> Result<Chart> {
        let mut curves = Vec::new();
        for run in runs {
            match metric.of(run) {
                Some(latency) => curves.push(Curve::new(&run.label, latency)?),
                None => eprintln!(
                    "note: run {} has no {} latency; left out",
                    run.label,
                    metric.name()
                ),
            }
        }
        if curves.is_empty() {
            bail!("no run has {} latency to plot", metric.name());
        }
        let max = curves.iter().map(|c| c.max_us).fold(0.0, f64::max);
        let p50 = curves
            .iter()
            .map(|c| c.p50_us)
            .fold(f64::INFINITY, f64::min);
        let widest = curves
            .iter()
            .filter_map(|c| c.points.last())
            .map(|p| p.0)
            .fold(0.0, f64::max);
        let (divisor, unit) = if max >= 1000.0 {
            (1000.0, "ms")
        } else {
            (1.0, "µs")
        };
        Ok(Chart {
            title,
            curves,
            // A hair below a whole decade means the data reaches it.
            decades: ((widest - 1e-9).ceil() as u32).max(1),
            divisor,
            unit,
            // A linear axis would flatten everything below a far tail.
            log_y: max > 50.0 * p50,
        })
    }

    /// The y range and its labelled and unlabelled ticks, in plot
    /// coordinates (log10 of the value on a log axis).
    fn y_axis(&self) -> Axis {
        let values = self
            .curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.1 / self.divisor));
        if self.log_y {
            let (lo, hi) = values.fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
                (if v > 0.0 { lo.min(v) } else { lo }, hi.max(v))
            });
            log_axis(lo * 0.8, hi * 1.25)
        } else {
            linear_axis(values.fold(0.0, f64::max) * 1.05)
        }
    }

    /// A point of a curve in plot coordinates.
    fn plot_point(&self, (x, us): (f64, f64), y_floor: f64) -> (f64, f64) {
        let v = us / self.divisor;
        if self.log_y {
            (x, v.max(10f64.powf(y_floor)).log10())
        } else {
            (x, v)
        }
    }

    fn y_label(&self, y: f64) -> String {
        sig3(if self.log_y { 10f64.powf(y) } else { y })
    }
}

/// An axis with hand-picked ticks, in plot coordinates. (plotters'
/// `with_key_points` loses the f64 label formatter, so this does the same
/// job as a coordinate of its own.)
#[derive(Debug, Clone)]
struct Axis {
    range: std::ops::Range<f64>,
    bold: Vec<f64>,
    light: Vec<f64>,
}

impl Ranged for Axis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        RangedCoordf64::from(self.range.clone()).map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            self.light.clone()
        } else {
            self.bold.clone()
        }
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.range.clone()
    }
}

/// The x axis: decades of 1/(1−q), light lines at 2× and 5× (50%, 80%…).
fn x_axis(decades: u32) -> Axis {
    Axis {
        range: 0.0..f64::from(decades),
        bold: (0..=decades).map(f64::from).collect(),
        light: (0..decades)
            .flat_map(|d| [2.0_f64, 5.0].map(|m| f64::from(d) + m.log10()))
            .collect(),
    }
}

/// 0 to `top` in steps of 1, 2, 2.5 or 5 × 10^n, about eight of them.
fn linear_axis(top: f64) -> Axis {
    let top = if top > 0.0 { top } else { 1.0 };
    let raw = top / 8.0;
    let scale = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * scale)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * scale);
    let ticks = (top / step).ceil() as u32;
    let end = f64::from(ticks) * step;
    Axis {
        range: 0.0..end,
        bold: (0..=ticks).map(|i| f64::from(i) * step).collect(),
        light: (0..ticks).map(|i| (f64::from(i) + 0.5) * step).collect(),
    }
}

/// log10 of `lo`..`hi`, labelled at 1, 2, 5 × 10^n (at 10^n alone over
/// more than four decades), with light lines at the other integers.
fn log_axis(lo: f64, hi: f64) -> Axis {
    let (lo, hi) = (lo.log10(), hi.log10());
    let dense = hi - lo <= 4.0;
    let mut bold = Vec::new();
    let mut light = Vec::new();
    for decade in (lo.floor() as i32)..=(hi.ceil() as i32) {
        for m in 1..10 {
            let y = (f64::from(m) * 10f64.powi(decade)).log10();
            if y < lo || y > hi {
                continue;
            }
            if m == 1 || (dense && (m == 2 || m == 5)) {
                bold.push(y);
            } else {
                light.push(y);
            }
        }
    }
    Axis {
        range: lo..hi,
        bold,
        light,
    }
}

/// `0%`, `90%`, `99%`, `99.9%`… for x = log10(1/(1−q)).
fn percentile_label(x: f64) -> String {
    let decimals = (x.round() as usize).saturating_sub(2);
    format!("{:.decimals$}%", 100.0 * (1.0 - 10f64.powf(-x)))
}

// ---------------------------------------------------------------------------
// Drawing

/// Tableau 10: distinct, and readable on white.
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

const FONT: &str = "sans-serif";

fn draw_err<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<()> {
    root.fill(&WHITE).map_err(draw_err)?;
    let (top, body) = root.split_vertically(60);
    // Drawn as plain text rather than a plotters caption, which needs a
    // registered font even in an SVG.
    let (width, _) = top.dim_in_pixel();
    let title_style = TextStyle::from((FONT, 28).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    top.draw(&Text::new(
        chart.title.as_str(),
        (width as i32 / 2, 32),
        title_style,
    ))
    .map_err(draw_err)?;

    let y = chart.y_axis();
    let y_floor = y.range.start;
    let mut ctx = ChartBuilder::on(&body)
        .margin_left(20)
        .margin_right(70)
        .margin_bottom(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(x_axis(chart.decades), y)
        .map_err(draw_err)?;
    ctx.configure_mesh()
        .bold_line_style(RGBColor(200, 200, 200))
        .light_line_style(RGBColor(235, 235, 235))
        .axis_style(RGBColor(120, 120, 120))
        .label_style((FONT, 18))
        .axis_desc_style((FONT, 20))
        .x_desc("Percentile")
        .y_desc(format!("Latency ({})", chart.unit))
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| chart.y_label(*y))
        .draw()
        .map_err(draw_err)?;
    for (i, curve) in chart.curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let points = curve.points.iter().map(|p| chart.plot_point(*p, y_floor));
        ctx.draw_series(LineSeries::new(points, color.stroke_width(2)))
            .map_err(draw_err)?;
    }
    draw_legend(&ctx.plotting_area().strip_coord_spec(), chart)
}

/// The legend, top left inside the plot where percentile curves leave
/// room. Laid out by hand because plotters' own legend needs a registered
/// font to size its box; without one, widths are estimated.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, chart: &Chart) -> Result<()> {
    const SIZE: i32 = 18;
    const LINE: i32 = 28;
    let style = TextStyle::from((FONT, SIZE).into_font())
        .color(&BLACK)
        .pos(Pos::new(HPos::Left, VPos::Center));
    let text_width = chart
        .curves
        .iter()
        .map(|c| {
            area.estimate_text_size(&c.legend, &style)
                .map_or(c.legend.chars().count() as i32 * SIZE / 2, |(w, _)| {
                    w as i32
                })
        })
        .max()
        .unwrap_or(0);
    let (x0, y0) = (16, 16);
    let height = LINE * chart.curves.len() as i32 + 12;
    let width = 40 + 12 + text_width + 16;
    let frame = [(x0, y0), (x0 + width, y0 + height)];
    area.draw(&Rectangle::new(frame, WHITE.mix(0.9).filled()))
        .map_err(draw_err)?;
    area.draw(&Rectangle::new(frame, RGBColor(180, 180, 180)))
        .map_err(draw_err)?;
    for (i, curve) in chart.curves.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let y = y0 + 6 + LINE * i as i32 + LINE / 2;
        let line = [(x0 + 12, y), (x0 + 52, y)];
        area.draw(&PathElement::new(line, color.stroke_width(3)))
            .map_err(draw_err)?;
        area.draw(&Text::new(
            curve.legend.as_str(),
            (x0 + 64, y),
            style.clone(),
        ))
        .map_err(draw_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{encode_histogram, BrokerInfo, Machine, Results};

    fn histogram(base_ns: u64, tail_ns: u64) -> Histogram<u64> {
        let mut h =
            Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).expect("valid bounds");
        for i in 0..10_000u64 {
            h.record(base_ns + i * 7).expect("in range");
        }
        for i in 0..20u64 {
            h.record(tail_ns + i * 1000).expect("in range");
        }
        h
    }

    fn summary(label: &str, h: &Histogram<u64>) -> Summary {
        assert!(!encode_histogram(h).expect("encodes").is_empty());
        Summary {
            loadgen_version: "0.1.0".into(),
            label: label.into(),
            started_unix_secs: 0,
            config: serde_json::json!({ "scenario": "fanout" }),
            broker: BrokerInfo {
                address: "127.0.0.1:1883".into(),
                version: None,
                pid: None,
            },
            machine: Machine {
                cores: 2,
                cpu: "Test CPU".into(),
                kernel: "6.8.0".into(),
                hostname: "host".into(),
            },
            commit: None,
            results: Results {
                latency: Latency::from_histogram(h).expect("summarizes"),
                ..Results::default()
            },
        }
    }

    /// Two runs written as summary.json files in a fresh directory.
    fn fixture(name: &str) -> (PathBuf, Vec<PathBuf>) {
        let dir = std::env::temp_dir().join(format!("loadgen-plot-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let runs = [
            summary("ringmq", &histogram(40_000, 900_000)),
            summary("mosquitto", &histogram(90_000, 4_000_000)),
        ];
        let paths = runs
            .iter()
            .map(|run| {
                let path = dir.join(format!("{}.json", run.label));
                run.write(&path).expect("writes");
                path
            })
            .collect();
        (dir, paths)
    }

    fn plot(runs: Vec<PathBuf>, out: PathBuf) -> Result<()> {
        run(&PlotArgs {
            runs,
            out,
            metric: PlotMetric::Latency,
            title: None,
            font: None,
        })
    }

    #[test]
    fn plots_an_svg_with_every_run() {
        let (dir, runs) = fixture("svg");
        let out = dir.join("latency.svg");
        plot(runs, out.clone()).expect("plots");
        let svg = std::fs::read_to_string(&out).expect("svg written");
        assert!(svg.contains("ringmq (p99"), "legend for ringmq");
        assert!(svg.contains("mosquitto (p99"), "legend for mosquitto");
        assert!(svg.contains("End-to-end latency by percentile — fanout"));
        assert!(svg.contains("99.9%"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn plots_a_png_with_the_system_font() {
        assert!(
            FONT_PATHS.iter().any(|p| Path::new(p).is_file()),
            "no DejaVu Sans: install fonts-dejavu-core (scripts/test does)"
        );
        let (dir, runs) = fixture("png");
        let out = dir.join("latency.png");
        plot(runs, out.clone()).expect("plots");
        let png = std::fs::read(&out).expect("png written");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn rejects_other_formats_and_missing_metrics() {
        let (dir, runs) = fixture("bad");
        let err = plot(runs.clone(), dir.join("latency.jpg")).expect_err("jpg");
        assert!(err.to_string().contains(".svg or .png"), "{err}");
        let err = run(&PlotArgs {
            runs,
            out: dir.join("ack.svg"),
            metric: PlotMetric::Ack,
            title: None,
            font: None,
        })
        .expect_err("no ack latency");
        assert!(err.to_string().contains("no run has ack latency"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn samples_up_to_the_max() {
        let h = histogram(40_000, 900_000);
        let points = percentile_points(&h);
        let last = points.last().expect("points");
        assert!((last.0 - (10_020f64).log10()).abs() < 1e-9);
        assert!((last.1 - h.max() as f64 / 1000.0).abs() < 1e-9);
        assert!(points
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1));
        assert!(points.len() > 150);
    }

    #[test]
    fn axes_read_well() {
        assert_eq!(percentile_label(0.0), "0%");
        assert_eq!(percentile_label(1.0), "90%");
        assert_eq!(percentile_label(2.0), "99%");
        assert_eq!(percentile_label(3.0), "99.9%");
        assert_eq!(percentile_label(5.0), "99.999%");
        let lin = linear_axis(1234.0);
        assert_eq!(lin.range, 0.0..1400.0);
        assert_eq!(lin.bold.len(), 8);
        let log = log_axis(20.0, 5000.0);
        let labels: Vec<String> = log.bold.iter().map(|y| sig3(10f64.powf(*y))).collect();
        assert_eq!(
            labels,
            ["20", "50", "100", "200", "500", "1000", "2000", "5000"]
        );
    }
}
