//! PNG plots of a training run, written into its output folder when `plots = true` (the
//! default):
//!
//! - [`LOSS_CURVES`]: training and validation loss per epoch for each stage, and the
//!   validation balanced accuracy of every epoch;
//! - [`CONFUSION_MATRIX`]: the confusion matrix of the final validation evaluation (counts,
//!   coloured by the share of the row, i.e. per-class recall on the diagonal);
//! - [`EMBEDDINGS`]: the validation embeddings projected on their first two principal
//!   components, coloured by class, at several epochs (see [`Snapshots`]), to show the
//!   classes coming apart as training goes on.
//!
//! # The projection
//!
//! Each snapshot gets its own principal component analysis ([`Pca`]): the population
//! covariance of the embeddings (divided by `n`) is diagonalised by the cyclic Jacobi method
//! ([`symmetric_eigen`]), and each component's sign is fixed so that its entry of largest
//! magnitude (the first such on a tie) is positive: the same embeddings always give the same
//! picture. A linear projection keeps distances comparable across epochs and costs nothing;
//! t-SNE and UMAP (non-linear, stochastic, slower) are not used. Each panel also gives the
//! between-class share of the variance in the full embedding space
//! ([`between_class_share`]): 0 when the class means coincide, 1 when every class collapses
//! to a point.
//!
//! # Rendering
//!
//! plotters' bitmap backend draws into memory, the `png` crate encodes the file. Text uses a
//! subset of DejaVu Sans embedded in the binary (`trainer/assets/`, Bitstream Vera licence),
//! so no system font is needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::module::AutodiffModule;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::{Deserialize, Serialize};

use crate::backend::CpuAutodiff;
use crate::data::BACKGROUND;
use crate::eval::WindowMetrics;
use crate::examples::ExampleSet;
use crate::model::EmbeddingNet;
use crate::train::{EpochRecord, TrainConfig, embed_all};

/// File name of the loss curves.
pub const LOSS_CURVES: &str = "loss_curves.png";
/// File name of the validation confusion matrix.
pub const CONFUSION_MATRIX: &str = "confusion_matrix.png";
/// File name of the embedding projections.
pub const EMBEDDINGS: &str = "embeddings_pca.png";
/// File name of the snapshots kept in the checkpoint folder (for a resumed run).
pub const SNAPSHOTS: &str = "snapshots.json";

/// The stage name of stage 2 of the centroid method: only its last epoch is snapshotted.
const CLASSIFIER_STAGE: &str = "classifier";

/// Why a plot could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The embedded font could not be loaded.
    #[error("the embedded font could not be loaded")]
    Font,
    /// plotters failed to draw.
    #[error("drawing: {0}")]
    Draw(String),
    /// The PNG encoder failed.
    #[error("PNG encoding: {0}")]
    Png(String),
    /// A file could not be read or written.
    #[error("{path}: {problem}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PlotError + '_ {
    move |e| PlotError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

// ---------------------------------------------------------------------------------------
// Principal components
// ---------------------------------------------------------------------------------------

/// Eigen-decomposition of a symmetric `n × n` matrix (`a`, row-major) by the cyclic Jacobi
/// method. Returns the eigenvalues in decreasing order (ties keep their index order) and the
/// matching unit eigenvectors, one `Vec` of `n` values each, with the sign rule of the
/// [module documentation](self).
///
/// # Panics
/// If `a.len() != n * n`.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    assert_eq!(a.len(), n * n, "symmetric_eigen: an n × n matrix");
    let mut a = a.to_vec();
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let norm2: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| a[p * n + q] * a[p * n + q])
            .sum();
        if off <= 1e-30 * norm2 || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                // The rotation in the (p, q) plane that zeroes a[p][q].
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + theta.hypot(1.0));
                let c = 1.0 / t.hypot(1.0);
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&j| {
            let mut col: Vec<f64> = (0..n).map(|k| v[k * n + j]).collect();
            fix_sign(&mut col);
            col
        })
        .collect();
    (values, vectors)
}

/// Flips `v` so that its entry of largest magnitude (the first on a tie) is positive.
fn fix_sign(v: &mut [f64]) {
    let mut big = 0;
    for (i, x) in v.iter().enumerate() {
        if x.abs() > v[big].abs() {
            big = i;
        }
    }
    if v.get(big).is_some_and(|&x| x < 0.0) {
        v.iter_mut().for_each(|x| *x = -*x);
    }
}

/// A principal component analysis of `n` points of dimension `dim`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    /// The mean point.
    pub mean: Vec<f64>,
    /// The first `k` principal directions (unit length), by decreasing variance.
    pub components: Vec<Vec<f64>>,
    /// The variance along each component (population variance, divided by `n`).
    pub variances: Vec<f64>,
    /// The total variance (trace of the covariance).
    pub total_variance: f64,
}

impl Pca {
    /// Fits the first `k` components (at most `dim`) of `points` (`n × dim`, row-major).
    /// No points give a zero mean and variances along the coordinate axes.
    ///
    /// # Panics
    /// If `dim` is 0 or `points.len()` is not a multiple of `dim`.
    pub fn fit(points: &[f32], dim: usize, k: usize) -> Self {
        assert!(
            dim > 0 && points.len().is_multiple_of(dim),
            "Pca::fit: n × dim points"
        );
        let n = points.len() / dim;
        let mut mean = vec![0.0f64; dim];
        for p in points.chunks_exact(dim) {
            for (m, &x) in mean.iter_mut().zip(p) {
                *m += x as f64;
            }
        }
        mean.iter_mut().for_each(|m| *m /= n.max(1) as f64);
        let mut cov = vec![0.0f64; dim * dim];
        let mut centred = vec![0.0f64; dim];
        for p in points.chunks_exact(dim) {
            for ((c, &x), m) in centred.iter_mut().zip(p).zip(&mean) {
                *c = x as f64 - m;
            }
            for i in 0..dim {
                for j in i..dim {
                    cov[i * dim + j] += centred[i] * centred[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                let c = cov[i * dim + j] / n.max(1) as f64;
                cov[i * dim + j] = c;
                cov[j * dim + i] = c;
            }
        }
        let total_variance = (0..dim).map(|i| cov[i * dim + i]).sum();
        let (values, vectors) = symmetric_eigen(&cov, dim);
        let k = k.min(dim);
        Self {
            mean,
            components: vectors.into_iter().take(k).collect(),
            // Rounding can leave tiny negative eigenvalues of a semi-definite matrix.
            variances: values.into_iter().take(k).map(|v| v.max(0.0)).collect(),
            total_variance,
        }
    }

    /// The coordinates of `point` on the components.
    pub fn project(&self, point: &[f32]) -> Vec<f64> {
        self.components
            .iter()
            .map(|c| {
                c.iter()
                    .zip(point)
                    .zip(&self.mean)
                    .map(|((w, &x), m)| w * (x as f64 - m))
                    .sum()
            })
            .collect()
    }

    /// The share of the total variance along each component (0 when there is none).
    pub fn explained(&self) -> Vec<f64> {
        self.variances
            .iter()
            .map(|v| {
                if self.total_variance > 0.0 {
                    v / self.total_variance
                } else {
                    0.0
                }
            })
            .collect()
    }
}

/// The between-class share of the variance of `points` (`n × dim`) with `labels`:
/// `S_b / (S_b + S_w)` with `S_b = (1/n) Σ_c n_c ||μ_c - μ||²` and
/// `S_w = (1/n) Σ_i ||x_i - μ_{y_i}||²`; 0 when the points have no variance.
///
/// # Panics
/// If the sizes disagree.
pub fn between_class_share(points: &[f32], dim: usize, labels: &[usize]) -> f64 {
    assert_eq!(points.len(), labels.len() * dim, "one label per point");
    let n_classes = labels.iter().max().map_or(0, |&m| m + 1);
    let mut sums = vec![0.0f64; n_classes * dim];
    let mut counts = vec![0usize; n_classes];
    let mut all = vec![0.0f64; dim];
    for (p, &l) in points.chunks_exact(dim).zip(labels) {
        counts[l] += 1;
        for (k, &x) in p.iter().enumerate() {
            sums[l * dim + k] += x as f64;
            all[k] += x as f64;
        }
    }
    let n = labels.len().max(1) as f64;
    all.iter_mut().for_each(|x| *x /= n);
    for (c, &cnt) in counts.iter().enumerate() {
        for k in 0..dim {
            sums[c * dim + k] /= cnt.max(1) as f64;
        }
    }
    let (mut within, mut between) = (0.0f64, 0.0f64);
    for (p, &l) in points.chunks_exact(dim).zip(labels) {
        for (k, &x) in p.iter().enumerate() {
            within += (x as f64 - sums[l * dim + k]).powi(2);
            between += (sums[l * dim + k] - all[k]).powi(2);
        }
    }
    if within + between > 0.0 {
        between / (within + between)
    } else {
        0.0
    }
}

// ---------------------------------------------------------------------------------------
// Embedding snapshots
// ---------------------------------------------------------------------------------------

/// The validation embeddings at one epoch, projected on their first two principal
/// components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingSnapshot {
    /// The stage (`"embedding"`, `"classifier"` or `"weighted_ce"`).
    pub stage: String,
    /// The epoch within the stage, from 1.
    pub epoch: usize,
    /// Coordinates of every validation example on PC1 and PC2.
    pub points: Vec<[f32; 2]>,
    /// The label of every validation example.
    pub labels: Vec<usize>,
    /// Share of the variance along PC1 and PC2.
    pub explained: [f64; 2],
    /// [`between_class_share`] of the full embeddings.
    pub between_class_share: f64,
}

impl EmbeddingSnapshot {
    /// Projects `embeddings` (`n × dim`) with `labels`.
    pub fn new(
        stage: &str,
        epoch: usize,
        embeddings: &[f32],
        dim: usize,
        labels: &[usize],
    ) -> Self {
        let pca = Pca::fit(embeddings, dim, 2);
        let points = embeddings
            .chunks_exact(dim)
            .map(|e| {
                let p = pca.project(e);
                [p[0] as f32, p.get(1).copied().unwrap_or(0.0) as f32]
            })
            .collect();
        let ex = pca.explained();
        Self {
            stage: stage.into(),
            epoch,
            points,
            labels: labels.to_vec(),
            explained: [ex[0], ex.get(1).copied().unwrap_or(0.0)],
            between_class_share: between_class_share(embeddings, dim, labels),
        }
    }
}

/// The embedding snapshots of a run, taken by the training loop after the epochs where
/// [`Snapshots::is_due`] holds, and kept in `checkpoint/snapshots.json` so that a resumed
/// run plots the snapshots taken before the interruption too.
#[derive(Debug, Clone, Default)]
pub struct Snapshots {
    enabled: bool,
    path: Option<PathBuf>,
    /// The snapshots taken, in order.
    pub taken: Vec<EmbeddingSnapshot>,
}

impl Snapshots {
    /// Snapshots for a run with checkpoint folder `checkpoint_dir`: taken only when `enabled`
    /// and the run has a folder; with `resume`, those of the checkpoint are read back.
    pub fn new(
        enabled: bool,
        checkpoint_dir: Option<&Path>,
        resume: bool,
    ) -> Result<Self, PlotError> {
        let path = checkpoint_dir.map(|d| d.join(SNAPSHOTS));
        let mut taken = Vec::new();
        if let Some(p) = &path
            && enabled
            && resume
            && p.is_file()
        {
            let bytes = fs::read(p).map_err(io_err(p))?;
            taken = serde_json::from_slice(&bytes).map_err(|e| PlotError::Io {
                path: p.clone(),
                problem: e.to_string(),
            })?;
        }
        Ok(Self {
            enabled: enabled && path.is_some(),
            path,
            taken,
        })
    }

    /// Whether a snapshot is taken after `epoch` (from 1) of a stage of `epochs` epochs that
    /// `stopped` early or not: after the first, the middle (`⌈epochs / 2⌉`) and the last
    /// epoch of a first stage, and after the last epoch only of stage 2 (`"classifier"`).
    pub fn is_due(stage: &str, epoch: usize, epochs: usize, stopped: bool) -> bool {
        let last = epoch >= epochs || stopped;
        last || (stage != CLASSIFIER_STAGE && (epoch == 1 || epoch == epochs.div_ceil(2)))
    }

    /// The training loop's hook after each epoch: takes the snapshot of the validation set
    /// `val` through `net` when it is due (see [`Self::is_due`]; the stage's length comes
    /// from `cfg`).
    pub fn after_epoch(
        &mut self,
        cfg: &TrainConfig,
        stage: &str,
        epoch: usize,
        stopped: bool,
        net: &EmbeddingNet<CpuAutodiff>,
        val: &ExampleSet,
    ) -> Result<(), PlotError> {
        let epochs = if stage == CLASSIFIER_STAGE {
            cfg.classifier_epochs
        } else {
            cfg.epochs
        };
        if !self.enabled || !Self::is_due(stage, epoch, epochs, stopped) {
            return Ok(());
        }
        let net = net.valid();
        let emb = embed_all(&net, val, cfg.batch_size);
        let snap = EmbeddingSnapshot::new(stage, epoch, &emb, net.embedding(), &val.labels);
        // A stage redone after an interruption replaces its snapshot.
        self.taken
            .retain(|s| (s.stage.as_str(), s.epoch) != (stage, epoch));
        self.taken.push(snap);
        if let Some(p) = &self.path {
            let tmp = p.with_extension("json.tmp");
            fs::write(
                &tmp,
                serde_json::to_vec(&self.taken).expect("snapshots serialise"),
            )
            .map_err(io_err(&tmp))?;
            fs::rename(&tmp, p).map_err(io_err(p))?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

/// DejaVu Sans, Latin-1 subset (see `trainer/assets/DejaVuSans-LICENSE.txt`).
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

fn register_font() -> Result<(), PlotError> {
    static OK: OnceLock<bool> = OnceLock::new();
    let ok =
        *OK.get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Draws a `w × h` picture with `draw` and encodes it as PNG.
fn render(
    w: u32,
    h: u32,
    draw: impl FnOnce(&Area) -> Result<(), PlotError>,
) -> Result<Vec<u8>, PlotError> {
    register_font()?;
    let mut rgb = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        draw(&root)?;
        root.present().map_err(draw_err)?;
    }
    encode_png(&rgb, w, h)
}

/// 8-bit RGB pixels (`w × h × 3`) as a PNG file.
fn encode_png(rgb: &[u8], w: u32, h: u32) -> Result<Vec<u8>, PlotError> {
    let png_err = |e: png::EncodingError| PlotError::Png(e.to_string());
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut writer = enc.write_header().map_err(png_err)?;
    writer.write_image_data(rgb).map_err(png_err)?;
    writer.finish().map_err(png_err)?;
    Ok(out)
}

fn font(size: u32) -> TextStyle<'static> {
    TextStyle::from((FAMILY, size).into_font()).color(&BLACK)
}

fn centred(style: TextStyle<'static>) -> TextStyle<'static> {
    style.pos(Pos::new(HPos::Center, VPos::Center))
}

/// Tableau 10 without its grey, which marks the background class.
const PALETTE: [RGBColor; 9] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const GREY: RGBColor = RGBColor(160, 160, 160);

/// The colour of every class: grey for `"background"`, the palette for the others.
fn class_colours(classes: &[String]) -> Vec<RGBColor> {
    let mut next = 0;
    classes
        .iter()
        .map(|c| {
            if c == BACKGROUND {
                GREY
            } else {
                next += 1;
                PALETTE[(next - 1) % PALETTE.len()]
            }
        })
        .collect()
}

/// A tick label: two decimals at most, trailing zeros dropped, no `-0`.
fn tick(v: &f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// `[lo, hi]` of the finite values with 8 % padding (a unit around a single value).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = if hi > lo { 0.08 * (hi - lo) } else { 0.5 };
    (lo - pad, hi + pad)
}

/// The stages of a history, in order of first appearance.
fn stages(history: &[EpochRecord]) -> Vec<&str> {
    let mut out: Vec<&str> = Vec::new();
    for r in history {
        if !out.contains(&r.stage.as_str()) {
            out.push(&r.stage);
        }
    }
    out
}

const TRAIN_COLOUR: RGBColor = RGBColor(31, 119, 180);
const VAL_COLOUR: RGBColor = RGBColor(255, 127, 14);

/// The loss curves of a history: a panel per stage (training and validation loss per
/// epoch) and a panel of the validation balanced accuracy of every epoch.
pub fn loss_curves_png(history: &[EpochRecord]) -> Result<Vec<u8>, PlotError> {
    let stages = stages(history);
    let panels = stages.len() as u32 + 1;
    let (pw, ph) = (520u32, 420u32);
    render(pw * panels, ph + 40, |root| {
        let body = root.titled("training curves", font(22)).map_err(draw_err)?;
        let areas = body.split_evenly((1, panels as usize));
        for (stage, area) in stages.iter().zip(&areas) {
            let recs: Vec<&EpochRecord> = history.iter().filter(|r| r.stage == *stage).collect();
            let n = recs.iter().map(|r| r.epoch).max().unwrap_or(1) as i32;
            let (lo, hi) = padded_range(recs.iter().flat_map(|r| [r.train_loss, r.val_loss]));
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{stage}: loss"), font(18))
                .margin(14)
                .x_label_area_size(40)
                .y_label_area_size(64)
                .build_cartesian_2d(0..n + 1, lo..hi)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc("loss")
                .x_labels((n as usize + 2).min(12))
                .label_style(font(13))
                .axis_desc_style(font(14))
                .draw()
                .map_err(draw_err)?;
            type Pick = fn(&EpochRecord) -> f64;
            let series: [(&str, RGBColor, Pick); 2] = [
                ("training", TRAIN_COLOUR, |r| r.train_loss),
                ("validation", VAL_COLOUR, |r| r.val_loss),
            ];
            for (name, colour, pick) in series {
                let pts: Vec<(i32, f64)> = recs
                    .iter()
                    .map(|r| (r.epoch as i32, pick(r)))
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(pts, colour.stroke_width(2)).point_size(3))
                    .map_err(draw_err)?
                    .label(name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                    });
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(font(13))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(draw_err)?;
        }
        // Balanced accuracy of every epoch, stages one after the other.
        let area = areas.last().expect("one panel at least");
        let total = history.len() as i32;
        let mut chart = ChartBuilder::on(area)
            .caption("validation balanced accuracy", font(18))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(64)
            .build_cartesian_2d(0..total + 1, 0.0..1.0)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("epoch (all stages)")
            .y_desc("balanced accuracy")
            .x_labels((total as usize + 2).min(12))
            .label_style(font(13))
            .axis_desc_style(font(14))
            .draw()
            .map_err(draw_err)?;
        for (si, stage) in stages.iter().enumerate() {
            let colour = PALETTE[(si + 2) % PALETTE.len()];
            let pts: Vec<(i32, f64)> = history
                .iter()
                .enumerate()
                .filter(|(_, r)| r.stage == *stage && r.val_balanced_accuracy.is_finite())
                .map(|(i, r)| (i as i32 + 1, r.val_balanced_accuracy))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(2)).point_size(3))
                .map_err(draw_err)?
                .label(*stage)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font(font(13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
        Ok(())
    })
}

/// `text` cut (with an ellipsis) to at most `max` pixels wide.
fn fit_text(area: &Area, text: &str, style: &TextStyle, max: u32) -> Result<String, PlotError> {
    let width = |s: &str| {
        area.estimate_text_size(s, style)
            .map(|(w, _)| w)
            .map_err(draw_err)
    };
    if width(text)? <= max {
        return Ok(text.to_string());
    }
    let chars: Vec<char> = text.chars().collect();
    for keep in (1..chars.len()).rev() {
        let s: String = chars[..keep].iter().chain(['…'].iter()).collect();
        if width(&s)? <= max {
            return Ok(s);
        }
    }
    Ok("…".into())
}

/// The confusion matrix of a validation evaluation: rows are the reference classes,
/// columns the predictions; each cell gives its count and its share of the row, and is
/// coloured by that share (white 0 to dark blue 1).
pub fn confusion_png(m: &WindowMetrics) -> Result<Vec<u8>, PlotError> {
    let names: Vec<&str> = m.classes.iter().map(|c| c.class.as_str()).collect();
    let n = names.len().max(1) as u32;
    let cell = 84u32;
    // Measure the row labels with a scratch drawing.
    register_font()?;
    let label_style = font(14);
    let mut scratch = vec![0u8; 3];
    let label_w = {
        let area = BitMapBackend::with_buffer(&mut scratch, (1, 1)).into_drawing_area();
        let mut w = area
            .estimate_text_size("reference", &font(14))
            .map_err(draw_err)?
            .0;
        for s in &names {
            w = w.max(
                area.estimate_text_size(s, &label_style)
                    .map_err(draw_err)?
                    .0,
            );
        }
        w.min(220) + 24
    };
    let (title_h, head_h, foot_h) = (44u32, 64u32, 40u32);
    let width = (label_w + n * cell + 24).max(640);
    let height = title_h + head_h + n * cell + foot_h;
    render(width, height, |root| {
        root.draw(&Text::new(
            "validation confusion matrix",
            (width as i32 / 2, 16),
            centred(font(20)),
        ))
        .map_err(draw_err)?;
        root.draw(&Text::new(
            "rows: reference, columns: predicted; colour: share of the row",
            (width as i32 / 2, 36),
            centred(font(13)),
        ))
        .map_err(draw_err)?;
        // The matrix centred in a picture wider than it.
        let x0 = label_w as i32 + (width - (label_w + n * cell + 24)) as i32 / 2;
        let y0 = (title_h + head_h) as i32;
        let c = cell as i32;
        root.draw(&Text::new(
            "predicted",
            (x0 + n as i32 * c / 2, title_h as i32 + 12),
            centred(font(14)),
        ))
        .map_err(draw_err)?;
        root.draw(&Text::new(
            "reference",
            (x0 - label_w as i32 / 2, y0 - 12),
            centred(font(14)),
        ))
        .map_err(draw_err)?;
        // Column labels, alternating between two lines when wider than a cell.
        let widest = names
            .iter()
            .map(|s| root.estimate_text_size(s, &label_style).map(|(w, _)| w))
            .collect::<Result<Vec<_>, _>>()
            .map_err(draw_err)?
            .into_iter()
            .max()
            .unwrap_or(0);
        let stagger = widest + 6 > cell;
        for (j, s) in names.iter().enumerate() {
            let max = if stagger { 2 * cell - 8 } else { cell - 6 };
            let s = fit_text(root, s, &label_style, max)?;
            let dy = if stagger && j % 2 == 1 { 0 } else { 18 };
            let y = y0 - 34 + dy - if stagger { 0 } else { 9 };
            root.draw(&Text::new(
                s,
                (x0 + j as i32 * c + c / 2, y),
                centred(label_style.clone()),
            ))
            .map_err(draw_err)?;
        }
        for (i, row) in m.confusion.iter().enumerate() {
            let y = y0 + i as i32 * c;
            let s = fit_text(root, names[i], &label_style, label_w - 16)?;
            root.draw(&Text::new(
                s,
                (x0 - 10, y + c / 2),
                label_style.clone().pos(Pos::new(HPos::Right, VPos::Center)),
            ))
            .map_err(draw_err)?;
            let total: usize = row.iter().sum();
            for (j, &count) in row.iter().enumerate() {
                let share = if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                };
                let lerp = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * share) as u8;
                let fill = RGBColor(lerp(255, 8), lerp(255, 48), lerp(255, 107));
                let x = x0 + j as i32 * c;
                root.draw(&Rectangle::new([(x, y), (x + c, y + c)], fill.filled()))
                    .map_err(draw_err)?;
                root.draw(&Rectangle::new(
                    [(x, y), (x + c, y + c)],
                    RGBColor(200, 200, 200),
                ))
                .map_err(draw_err)?;
                let ink: &'static RGBColor = if share > 0.5 { &WHITE } else { &BLACK };
                root.draw(&Text::new(
                    count.to_string(),
                    (x + c / 2, y + c / 2 - 9),
                    centred(font(17).color(ink)),
                ))
                .map_err(draw_err)?;
                root.draw(&Text::new(
                    format!("{:.0}%", 100.0 * share),
                    (x + c / 2, y + c / 2 + 13),
                    centred(font(12).color(ink)),
                ))
                .map_err(draw_err)?;
            }
        }
        root.draw(&Rectangle::new(
            [(x0, y0), (x0 + n as i32 * c, y0 + n as i32 * c)],
            BLACK,
        ))
        .map_err(draw_err)?;
        root.draw(&Text::new(
            format!(
                "balanced accuracy {:.3}   accuracy {:.3}   macro F1 {:.3}",
                m.balanced_accuracy, m.accuracy, m.macro_f1
            ),
            (width as i32 / 2, height as i32 - foot_h as i32 / 2),
            centred(font(14)),
        ))
        .map_err(draw_err)?;
        Ok(())
    })
}

/// The snapshots' projections, a panel each (three to a row), coloured by class, with a
/// legend of the classes below.
pub fn embeddings_png(
    snapshots: &[EmbeddingSnapshot],
    classes: &[String],
) -> Result<Vec<u8>, PlotError> {
    let colours = class_colours(classes);
    let n = snapshots.len().max(1) as u32;
    let cols = if n == 4 { 2 } else { n.min(3) };
    let rows = n.div_ceil(cols);
    let (pw, ph, title_h, legend_h) = (440u32, 430u32, 44u32, 44u32);
    let width = pw * cols;
    let height = title_h + ph * rows + legend_h;
    render(width, height, |root| {
        root.draw(&Text::new(
            "validation embeddings: first two principal components",
            (width as i32 / 2, 16),
            centred(font(20)),
        ))
        .map_err(draw_err)?;
        root.draw(&Text::new(
            "each panel its own PCA; share = between-class share of the variance (full embedding)",
            (width as i32 / 2, 36),
            centred(font(12)),
        ))
        .map_err(draw_err)?;
        let (_, rest) = root.split_vertically(title_h);
        let (grid, legend) = rest.split_vertically(ph * rows);
        let panels = grid.split_evenly((rows as usize, cols as usize));
        for (s, area) in snapshots.iter().zip(&panels) {
            let r = |k: usize| padded_range(s.points.iter().map(|p| p[k] as f64));
            let (xr, yr) = (r(0), r(1));
            let mut chart = ChartBuilder::on(area)
                .caption(
                    format!(
                        "{} epoch {}: share {:.2}",
                        s.stage, s.epoch, s.between_class_share
                    ),
                    font(16),
                )
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(52)
                .build_cartesian_2d(xr.0..xr.1, yr.0..yr.1)
                .map_err(draw_err)?;
            chart
                .configure_mesh()
                .x_desc(format!("PC1 ({:.0}% of variance)", 100.0 * s.explained[0]))
                .y_desc(format!("PC2 ({:.0}%)", 100.0 * s.explained[1]))
                .x_labels(5)
                .y_labels(5)
                .x_label_formatter(&tick)
                .y_label_formatter(&tick)
                .label_style(font(12))
                .axis_desc_style(font(13))
                .draw()
                .map_err(draw_err)?;
            // Class by class, background first, so that the rare classes lie on top.
            for (c, colour) in colours.iter().enumerate() {
                let pts = s
                    .points
                    .iter()
                    .zip(&s.labels)
                    .filter(|(p, l)| **l == c && p[0].is_finite() && p[1].is_finite())
                    .map(|(p, _)| (p[0] as f64, p[1] as f64));
                chart
                    .draw_series(pts.map(|p| Circle::new(p, 3, colour.mix(0.75).filled())))
                    .map_err(draw_err)?;
            }
        }
        // The legend.
        let mut x = 20i32;
        let y = legend_h as i32 / 2;
        for (name, colour) in classes.iter().zip(&colours) {
            legend
                .draw(&Circle::new((x + 6, y), 6, colour.filled()))
                .map_err(draw_err)?;
            legend
                .draw(&Text::new(
                    name.as_str(),
                    (x + 18, y),
                    font(14).pos(Pos::new(HPos::Left, VPos::Center)),
                ))
                .map_err(draw_err)?;
            let w = legend
                .estimate_text_size(name, &font(14))
                .map_err(draw_err)?
                .0 as i32;
            x += w + 44;
        }
        Ok(())
    })
}

/// Writes the plots of a finished run into `dir`: [`LOSS_CURVES`], [`CONFUSION_MATRIX`]
/// and, when there are snapshots, [`EMBEDDINGS`]. Returns the files written.
pub fn write_run_plots(
    dir: &Path,
    history: &[EpochRecord],
    val_metrics: &WindowMetrics,
    classes: &[String],
    snapshots: &[EmbeddingSnapshot],
) -> Result<Vec<PathBuf>, PlotError> {
    let mut files = vec![
        (LOSS_CURVES, loss_curves_png(history)?),
        (CONFUSION_MATRIX, confusion_png(val_metrics)?),
    ];
    if !snapshots.is_empty() {
        files.push((EMBEDDINGS, embeddings_png(snapshots, classes)?));
    }
    let mut written = Vec::new();
    for (name, bytes) in files {
        let p = dir.join(name);
        fs::write(&p, bytes).map_err(io_err(&p))?;
        written.push(p);
    }
    Ok(written)
}

// ---------------------------------------------------------------------------------------
// The experiment's bar chart (SVG)
// ---------------------------------------------------------------------------------------

/// Colours of the experiment's techniques (more than [`PALETTE`] holds).
const TECHNIQUE_COLOURS: [&str; 12] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#17becf", "#393b79", "#ad494a", "#637939",
];

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The bar chart of `hark-train experiment` (SVG text): a panel per (architecture, ratio),
/// in each a group of bars per event class and one for the overall error rate, a bar per
/// technique with results (height: mean error rate over the seeds; whisker: ± one standard
/// deviation).
pub fn experiment_svg(
    cfg: &crate::experiment::ExperimentConfig,
    rows: &[crate::experiment::Row],
) -> String {
    use std::fmt::Write as _;
    let mut keys = cfg.event_classes.clone();
    keys.push("overall".into());
    let techniques: Vec<String> = cfg.techniques.iter().map(|t| t.name()).collect();
    let mut panels: Vec<(String, Vec<&crate::experiment::Row>)> = Vec::new();
    for arch in &cfg.architectures {
        for ratio in &cfg.ratios {
            let rn = crate::experiment::ExperimentConfig::ratio_name(ratio);
            let mine: Vec<&crate::experiment::Row> = rows
                .iter()
                .filter(|r| r.architecture == arch.name() && r.ratio == rn && r.status == "ok")
                .collect();
            if !mine.is_empty() {
                panels.push((
                    format!(
                        "{}, ratio {}",
                        arch.name().to_uppercase(),
                        rn.replace('-', ":")
                    ),
                    mine,
                ));
            }
        }
    }
    let top = rows
        .iter()
        .flat_map(|r| r.error_rate.values().map(|&(m, sd)| m + sd))
        .filter(|v| v.is_finite())
        .fold(0.5f64, f64::max);
    let y_max = (top * 2.0).ceil() / 2.0;
    let (pw, ph) = (900.0f64, 320.0f64);
    let (left, right, top_m, bottom) = (60.0, 190.0, 36.0, 40.0);
    let width = pw + left + right;
    let height = (ph + top_m + bottom) * panels.len().max(1) as f64 + 20.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (pi, (title, mine)) in panels.iter().enumerate() {
        let y0 = pi as f64 * (ph + top_m + bottom) + top_m;
        let y = |v: f64| y0 + ph - (v.clamp(0.0, y_max) / y_max) * ph;
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="15" text-anchor="middle">{} (error rate, mean ± sd over seeds)</text>"#,
            left + pw / 2.0,
            y0 - 12.0,
            xml_escape(title)
        );
        // Axis and grid.
        let mut v = 0.0;
        while v <= y_max + 1e-9 {
            let _ = writeln!(
                s,
                r##"<line x1="{left}" x2="{}" y1="{yy}" y2="{yy}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.2}</text>"##,
                left + pw,
                left - 6.0,
                y(v) + 4.0,
                yy = y(v)
            );
            v += 0.25;
        }
        let _ = writeln!(
            s,
            r#"<line x1="{left}" x2="{left}" y1="{y0}" y2="{}" stroke="black"/>"#,
            y0 + ph
        );
        let group_w = pw / keys.len() as f64;
        let present: Vec<&String> = techniques
            .iter()
            .filter(|t| mine.iter().any(|r| &r.technique == *t))
            .collect();
        let bar_w = (group_w * 0.85) / present.len().max(1) as f64;
        for (ki, k) in keys.iter().enumerate() {
            let gx = left + ki as f64 * group_w + group_w * 0.075;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                left + (ki as f64 + 0.5) * group_w,
                y0 + ph + 18.0,
                xml_escape(k)
            );
            for (ti, t) in present.iter().enumerate() {
                let Some(r) = mine.iter().find(|r| &r.technique == *t) else {
                    continue;
                };
                let Some(&(m, sd)) = r.error_rate.get(k) else {
                    continue;
                };
                if !m.is_finite() {
                    continue;
                }
                let colour =
                    TECHNIQUE_COLOURS[techniques.iter().position(|x| x == *t).unwrap_or(0)
                        % TECHNIQUE_COLOURS.len()];
                let x = gx + ti as f64 * bar_w;
                let _ = writeln!(
                    s,
                    r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"><title>{} {}: {m:.3} ± {sd:.3}</title></rect>"#,
                    y(m),
                    bar_w * 0.9,
                    y0 + ph - y(m),
                    xml_escape(t),
                    xml_escape(k)
                );
                let cx = x + bar_w * 0.45;
                let _ = writeln!(
                    s,
                    r#"<line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="black"/>"#,
                    y(m + sd),
                    y(m - sd)
                );
            }
        }
        // Legend.
        for (ti, t) in present.iter().enumerate() {
            let colour = TECHNIQUE_COLOURS
                [techniques.iter().position(|x| x == *t).unwrap_or(0) % TECHNIQUE_COLOURS.len()];
            let ly = y0 + 10.0 + ti as f64 * 18.0;
            let lx = left + pw + 16.0;
            let _ = writeln!(
                s,
                r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{}</text>"#,
                ly - 10.0,
                lx + 18.0,
                ly,
                xml_escape(t)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::window_metrics;
    use crate::train::{Method, Progress, RunOptions, run, tiny_config};

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// Width and height from the IHDR chunk, after checking the signature; and the whole
    /// file decodes (CRCs, zlib) to `w × h` RGB pixels that are not all one colour.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        let (w, h) = (be(16), be(20));
        let mut reader = png::Decoder::new(std::io::Cursor::new(bytes))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (w, h));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let px = &buf[..info.buffer_size()];
        assert!(px.chunks_exact(3).any(|p| p != &px[..3]), "a blank picture");
        (w, h)
    }

    #[test]
    fn pca_of_points_on_a_line_puts_all_variance_in_the_first_component() {
        // x = (1, 2, 3) + t (1, 2, 2) / 3 for t = -2..2: mean (1, 2, 3), population variance
        // (4 + 1 + 0 + 1 + 4) / 5 = 2 along (1, 2, 2) / 3, nothing elsewhere.
        let pts: Vec<f32> = (-2..=2)
            .flat_map(|t| {
                let t = t as f32;
                [1.0 + t / 3.0, 2.0 + 2.0 * t / 3.0, 3.0 + 2.0 * t / 3.0]
            })
            .collect();
        let p = Pca::fit(&pts, 3, 3);
        for (m, e) in p.mean.iter().zip([1.0, 2.0, 3.0]) {
            assert!(close(*m, e, 1e-6), "{:?}", p.mean);
        }
        assert!(close(p.variances[0], 2.0, 1e-6), "{:?}", p.variances);
        assert!(p.variances[1].abs() < 1e-6 && p.variances[2].abs() < 1e-6);
        assert!(close(p.total_variance, 2.0, 1e-6));
        assert!(close(p.explained()[0], 1.0, 1e-6));
        // The sign rule: the largest entry (2/3, first of two) is positive.
        for (c, e) in p.components[0]
            .iter()
            .zip([1.0 / 3.0, 2.0 / 3.0, 2.0 / 3.0])
        {
            assert!(close(*c, e, 1e-6), "{:?}", p.components[0]);
        }
        // The projection on PC1 is t.
        for (i, t) in (-2..=2).enumerate() {
            let x = p.project(&pts[i * 3..i * 3 + 3]);
            assert!(close(x[0], t as f64, 1e-5) && x[1].abs() < 1e-5, "{x:?}");
        }
    }

    #[test]
    fn pca_of_a_cross_follows_the_axes() {
        // (±3, 0) and (0, ±1): covariance diag(18/4, 2/4) = diag(4.5, 0.5).
        let pts = [3.0, 0.0, -3.0, 0.0, 0.0, 1.0, 0.0, -1.0];
        let p = Pca::fit(&pts, 2, 2);
        assert!(close(p.variances[0], 4.5, 1e-9) && close(p.variances[1], 0.5, 1e-9));
        assert_eq!(p.components, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
        assert!(close(p.explained()[0], 0.9, 1e-9));
        // Mirrored points give the same components (the sign is fixed), so a plot never flips.
        let mirrored: Vec<f32> = pts.iter().map(|x| -x).collect();
        assert_eq!(Pca::fit(&mirrored, 2, 2).components, p.components);
    }

    #[test]
    fn jacobi_eigenvectors_satisfy_the_definition() {
        let n = 6;
        let mut rng = crate::kmeans::SplitMix64::new(7);
        let mut a = vec![0.0f64; n * n];
        for i in 0..n {
            for j in i..n {
                let v = (rng.next_u64() % 2001) as f64 / 1000.0 - 1.0;
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        let (values, vectors) = symmetric_eigen(&a, n);
        assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
        let trace: f64 = (0..n).map(|i| a[i * n + i]).sum();
        assert!(close(values.iter().sum(), trace, 1e-9));
        for (l, v) in values.iter().zip(&vectors) {
            let norm: f64 = v.iter().map(|x| x * x).sum();
            assert!(close(norm, 1.0, 1e-9));
            for i in 0..n {
                let av: f64 = (0..n).map(|j| a[i * n + j] * v[j]).sum();
                assert!(close(av, l * v[i], 1e-9), "row {i}: {av} vs {}", l * v[i]);
            }
        }
    }

    #[test]
    fn between_class_share_hand_computed() {
        // Class 0 at (±1, 0), class 1 at (±1, 4): within 4 / 4 = 1, between
        // (2 × 4 + 2 × 4) / 4 = 4, share 4 / 5.
        let pts = [-1.0, 0.0, 1.0, 0.0, -1.0, 4.0, 1.0, 4.0];
        assert!(close(
            between_class_share(&pts, 2, &[0, 0, 1, 1]),
            0.8,
            1e-12
        ));
        // Classes on top of each other: nothing between them.
        assert!(close(
            between_class_share(&pts, 2, &[0, 1, 1, 0]),
            0.0,
            1e-12
        ));
        assert_eq!(between_class_share(&[1.0, 1.0], 1, &[0, 1]), 0.0);
    }

    #[test]
    fn snapshot_epochs() {
        let due = |stage: &str, epochs: usize| -> Vec<usize> {
            (1..=epochs)
                .filter(|&e| Snapshots::is_due(stage, e, epochs, false))
                .collect()
        };
        assert_eq!(due("embedding", 30), vec![1, 15, 30]);
        assert_eq!(due("embedding", 5), vec![1, 3, 5]);
        assert_eq!(due("weighted_ce", 1), vec![1]);
        assert_eq!(due("classifier", 10), vec![10]);
        assert!(Snapshots::is_due("classifier", 4, 10, true));
    }

    #[test]
    fn plots_render_to_png_of_the_expected_size() {
        let classes: Vec<String> = ["background", "glass_break", "a_rather_long_class_name"]
            .map(String::from)
            .to_vec();
        let history: Vec<EpochRecord> = (1..=4)
            .map(|e| EpochRecord {
                stage: if e <= 3 { "embedding" } else { "classifier" }.into(),
                epoch: if e <= 3 { e } else { 1 },
                train_loss: 1.0 / e as f64,
                val_loss: 1.2 / e as f64,
                val_balanced_accuracy: 0.2 * e as f64,
                val_accuracy: 0.2 * e as f64,
                val_macro_f1: 0.2 * e as f64,
                val_mean_ap: 0.1 * e as f64,
                seconds: 1.0,
            })
            .collect();
        assert_eq!(
            png_size(&loss_curves_png(&history).unwrap()),
            (3 * 520, 460)
        );
        let m = window_metrics(&[0, 0, 1, 2, 2], &[0, 1, 1, 2, 0], &classes);
        let (w, h) = png_size(&confusion_png(&m).unwrap());
        assert!(w >= 640 && h == 44 + 64 + 3 * 84 + 40, "{w} × {h}");
        let emb: Vec<f32> = (0..30).map(|i| ((i * 7) % 11) as f32).collect();
        let labels: Vec<usize> = (0..10).map(|i| i % 3).collect();
        let snaps: Vec<EmbeddingSnapshot> = (1..=4)
            .map(|e| EmbeddingSnapshot::new("embedding", e, &emb, 3, &labels))
            .collect();
        assert_eq!(
            png_size(&embeddings_png(&snaps, &classes).unwrap()),
            (2 * 440, 44 + 2 * 430 + 44)
        );
        assert_eq!(
            png_size(&embeddings_png(&snaps[..3], &classes).unwrap()),
            (3 * 440, 44 + 430 + 44)
        );
        // One-dimensional embeddings and a single epoch still plot.
        let one = EmbeddingSnapshot::new("weighted_ce", 1, &emb[..10], 1, &labels);
        assert_eq!(one.points[3][1], 0.0);
        png_size(&embeddings_png(&[one], &classes).unwrap());
        png_size(&loss_curves_png(&history[..1]).unwrap());
    }

    /// A tiny training run writes the three plots, snapshots the epochs it should, and the
    /// classes are further apart after training than after the first epoch.
    #[test]
    fn a_training_run_writes_its_plots() {
        let mut cfg = tiny_config(Method::Centroid);
        cfg.epochs = 4;
        cfg.classifier_epochs = 2;
        let dir = tempfile::tempdir().unwrap();
        let opts = RunOptions {
            out_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let mut batches = 0;
        run(&cfg, &opts, &mut |p| {
            if let Progress::Batch {
                batch,
                batches: n,
                loss,
                ..
            } = p
            {
                assert!(batch >= 1 && batch <= n && loss.is_finite());
                batches += 1;
            }
        })
        .unwrap();
        assert!(batches >= 6, "{batches}");
        for f in [LOSS_CURVES, CONFUSION_MATRIX, EMBEDDINGS] {
            let bytes = fs::read(dir.path().join(f)).unwrap();
            let (w, h) = png_size(&bytes);
            assert!(w >= 600 && h >= 400, "{f}: {w} × {h}");
        }
        let bytes = fs::read(dir.path().join("checkpoint").join(SNAPSHOTS)).unwrap();
        let snaps: Vec<EmbeddingSnapshot> = serde_json::from_slice(&bytes).unwrap();
        let at: Vec<(&str, usize)> = snaps.iter().map(|s| (s.stage.as_str(), s.epoch)).collect();
        assert_eq!(
            at,
            vec![
                ("embedding", 1),
                ("embedding", 2),
                ("embedding", 4),
                ("classifier", 2)
            ]
        );
        let (first, last) = (&snaps[0], &snaps[snaps.len() - 1]);
        assert!(
            last.between_class_share > first.between_class_share,
            "{} -> {}",
            first.between_class_share,
            last.between_class_share
        );

        // Interrupted after epoch 3 and resumed, a run plots the same snapshots, those taken
        // before the interruption included.
        let part = tempfile::tempdir().unwrap();
        for (stop, resume) in [(Some(3), false), (None, true)] {
            let opts = RunOptions {
                out_dir: Some(part.path().to_path_buf()),
                stop_after_epochs: stop,
                resume,
                ..Default::default()
            };
            run(&cfg, &opts, &mut |_| {}).unwrap();
        }
        let bytes = fs::read(part.path().join("checkpoint").join(SNAPSHOTS)).unwrap();
        let resumed: Vec<EmbeddingSnapshot> = serde_json::from_slice(&bytes).unwrap();
        // (JSON may round the last bit of a float.)
        assert_eq!(resumed.len(), snaps.len());
        for (a, b) in resumed.iter().zip(&snaps) {
            assert_eq!(
                (&a.stage, a.epoch, &a.labels),
                (&b.stage, b.epoch, &b.labels)
            );
            assert!(close(a.between_class_share, b.between_class_share, 1e-9));
            for (p, q) in a.points.iter().zip(&b.points) {
                assert!((p[0] - q[0]).abs() < 1e-5 && (p[1] - q[1]).abs() < 1e-5);
            }
        }
        assert!(part.path().join(EMBEDDINGS).is_file());

        // `plots = false`: no pictures, no snapshots.
        let mut cfg = cfg.clone();
        cfg.plots = false;
        cfg.epochs = 1;
        cfg.classifier_epochs = 1;
        let dir = tempfile::tempdir().unwrap();
        let opts = RunOptions {
            out_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        run(&cfg, &opts, &mut |_| {}).unwrap();
        assert!(dir.path().join("model.onnx").is_file());
        for f in [LOSS_CURVES, CONFUSION_MATRIX, EMBEDDINGS] {
            assert!(!dir.path().join(f).exists(), "{f}");
        }
        assert!(!dir.path().join("checkpoint").join(SNAPSHOTS).exists());
    }
}
