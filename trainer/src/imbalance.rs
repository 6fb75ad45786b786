//! Remedies for class imbalance, each an option of the trainer (`[imbalance]` and `method`),
//! so that they can be compared on the same data (`hark-train experiment`).
//!
//! | technique | how to select it | what it does |
//! |---|---|---|
//! | plain cross-entropy | `method = "ce"` | no remedy (reference) |
//! | class-weighted loss | `method = "weighted_ce"` | cross-entropy weighted by `N / (K n_c)` |
//! | focal loss | `method = "focal"`, `[imbalance.focal] gamma, alpha` | `-α_y (1 - p_y)^γ log p_y` |
//! | random oversampling | `[imbalance] resample = "oversample"` | every class drawn up to the largest |
//! | random undersampling | `resample = "undersample"` | every class cut down to the smallest |
//! | SMOTE | `resample = "smote"`, `smote_k` | new minority windows interpolated between neighbours |
//! | partial augmentation | `partial_augmentation = true` | minority classes topped up with augmented copies |
//! | label smearing | `smear_sigma_frames = σ` | Gaussian soft frame targets around event boundaries |
//! | transfer learning | `init_from = "runs/pretrained"` | start from a trained embedding network |
//! | clustered-centroid embedding | `method = "centroid"` | see [`crate::loss`] |
//!
//! # Resampling (training windows only, after normalisation)
//!
//! The unit is the window (one [`ExampleSet`] example, with its frame targets). Oversampling
//! keeps every window and adds random duplicates (with replacement) of each smaller class until
//! it has as many windows as the largest; undersampling keeps, for every class, a random subset
//! (without replacement) as large as the smallest class. Counts after either are exactly equal.
//!
//! **SMOTE** (Chawla et al. 2002) interpolates **feature sequences**, not embeddings: a new
//! window of class `c` is `x_i + λ (x_j - x_i)`, `λ ~ U(0, 1)`, where `x_i` is a random window of
//! `c` and `x_j` one of its `smote_k` nearest windows of the same class (Euclidean distance over
//! the whole standardised log-mel window, `frames × bands` values). The new window keeps the
//! event onset (so the frame targets) of its seed window `x_i`. Every class is topped up to the
//! size of the largest.
//!
//! **Partial augmentation** tops up the minority classes (every class smaller than the largest)
//! to the size of the largest with augmented copies of their own windows: a random gain of up to
//! ±`partial_gain_db` (a shift of every band of the log-mel window) and SpecAugment masks
//! (frequency and time, the default [`SpecAugment`]). The largest class is neither augmented nor
//! resampled, and the original windows are left as they are. (The audio-level augmentation of
//! [`crate::examples::AugmentConfig`] applies to every class at generation, as before.)
//!
//! # Loss
//!
//! [`soft_loss`] is the one loss of the end-to-end methods and of the centroid method's
//! classifier stage: `-Σ_r Σ_c w_c q_rc (1 - p_rc)^γ log p_rc / Σ_r Σ_c w_c q_rc`, with soft
//! targets `q` (one-hot without smearing), class weights `w` (1 for `ce`, inverse frequency for
//! `weighted_ce`, `alpha` for the event classes and `1 - alpha` for background for `focal`) and
//! the focusing exponent `γ` (0 except for `focal`). With `γ = 0` and one-hot targets it is
//! exactly [`crate::train::weighted_cross_entropy`].
//!
//! # Label smearing
//!
//! With frame targets ([`FrameTargets`]), a frame of an event window carries the event's class
//! from `lead_frames[0]` to `lead_frames[1]` frames after the onset, background before the onset
//! and nothing in between. With `smear_sigma_frames = σ`, every supervised frame (and every
//! unsupervised one within 3σ of the labelled span) gets the soft target `g` on the event class
//! and `1 - g` on background, `g = exp(-d² / 2σ²)` where `d` is its distance in frames to the
//! labelled span (0 inside it). Background windows keep hard background targets.

use std::path::PathBuf;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::data::BACKGROUND;
use crate::examples::{ExampleSet, FrameTargets, Rng, SpecAugment};

/// How the training windows are resampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    /// As generated.
    #[default]
    None,
    /// Random oversampling of every class to the largest.
    Oversample,
    /// Random undersampling of every class to the smallest.
    Undersample,
    /// SMOTE: interpolated new windows for every class up to the largest.
    Smote,
}

/// Focal loss settings (`[imbalance.focal]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FocalSection {
    /// Focusing exponent γ: 0 is cross-entropy; larger values down-weight well-classified
    /// frames. Default 2.0.
    pub gamma: f32,
    /// Weight of the event classes (background gets `1 - alpha`); 0.5 weighs all classes
    /// alike. Default 0.5.
    pub alpha: f32,
}

impl Default for FocalSection {
    fn default() -> Self {
        Self {
            gamma: 2.0,
            alpha: 0.5,
        }
    }
}

/// The `[imbalance]` section of the training configuration (see the
/// [module documentation](self)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImbalanceSection {
    /// Resampling of the training windows: `"none"`, `"oversample"`, `"undersample"` or
    /// `"smote"`. Default `"none"`.
    pub resample: Resample,
    /// Neighbours SMOTE interpolates towards. Default 5.
    pub smote_k: usize,
    /// Top the minority classes up to the largest with augmented copies of their windows.
    /// Default false.
    pub partial_augmentation: bool,
    /// Largest gain change of partial augmentation, ± dB. Default 6.
    pub partial_gain_db: f32,
    /// Standard deviation of the Gaussian label smearing, frames (10 ms); 0 turns it off.
    /// Needs `[examples.frame_targets]`. Default 0.
    pub smear_sigma_frames: f32,
    /// A training output folder whose embedding network (`checkpoint/best_net`) the training
    /// starts from (transfer learning); relative to the configuration file. Its sizes must be
    /// this configuration's. Default none.
    pub init_from: Option<PathBuf>,
    /// Focal loss (`method = "focal"`).
    pub focal: FocalSection,
}

impl Default for ImbalanceSection {
    fn default() -> Self {
        Self {
            resample: Resample::None,
            smote_k: 5,
            partial_augmentation: false,
            partial_gain_db: 6.0,
            smear_sigma_frames: 0.0,
            init_from: None,
            focal: FocalSection::default(),
        }
    }
}

impl ImbalanceSection {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), String> {
        if self.smote_k == 0 {
            return Err("imbalance.smote_k must be positive".into());
        }
        if !(self.smear_sigma_frames >= 0.0 && self.smear_sigma_frames.is_finite()) {
            return Err("imbalance.smear_sigma_frames must be 0 or positive".into());
        }
        if !(self.partial_gain_db >= 0.0 && self.partial_gain_db.is_finite()) {
            return Err("imbalance.partial_gain_db must be 0 or positive".into());
        }
        if !(self.focal.gamma >= 0.0 && self.focal.gamma.is_finite()) {
            return Err("imbalance.focal.gamma must be 0 or positive".into());
        }
        if !(self.focal.alpha > 0.0 && self.focal.alpha < 1.0) {
            return Err("imbalance.focal.alpha must lie in (0, 1)".into());
        }
        Ok(())
    }

    /// Whether the training windows are changed at all.
    pub fn changes_windows(&self) -> bool {
        self.resample != Resample::None || self.partial_augmentation
    }
}

/// The windows `idx` of `set` (duplicates allowed), in that order, as a new set.
pub fn subset(set: &ExampleSet, idx: &[usize]) -> ExampleSet {
    let mut out = ExampleSet {
        classes: set.classes.clone(),
        frames: set.frames,
        n_mels: set.n_mels,
        labels: Vec::with_capacity(idx.len()),
        features: Vec::with_capacity(idx.len() * set.example_size()),
        onsets: Vec::new(),
        ends: Vec::new(),
    };
    for &i in idx {
        out.labels.push(set.labels[i]);
        out.features.extend_from_slice(set.example(i));
        if let Some(&o) = set.onsets.get(i) {
            out.onsets.push(o);
        }
        if let Some(&e) = set.ends.get(i) {
            out.ends.push(e);
        }
    }
    if out.onsets.len() != out.labels.len() {
        out.onsets.clear();
    }
    if out.ends.len() != out.labels.len() {
        out.ends.clear();
    }
    out
}

/// Appends a copy of window `i` of `from` (its label, onset and end) with other features.
fn push(set: &mut ExampleSet, features: &[f32], from: &ExampleSet, i: usize) {
    set.features.extend_from_slice(features);
    set.labels.push(from.labels[i]);
    if let Some(&o) = from.onsets.get(i) {
        set.onsets.push(o);
    }
    if let Some(&e) = from.ends.get(i) {
        set.ends.push(e);
    }
}

/// The windows of every class (indices), in order.
fn by_class(set: &ExampleSet) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new(); set.classes.len()];
    for (i, &l) in set.labels.iter().enumerate() {
        out[l].push(i);
    }
    out
}

/// Random oversampling: every window kept, every non-empty class topped up with random
/// duplicates (drawn with replacement) to the size of the largest.
pub fn oversample(set: &ExampleSet, rng: &mut Rng) -> ExampleSet {
    let classes = by_class(set);
    let max = classes.iter().map(Vec::len).max().unwrap_or(0);
    let mut idx: Vec<usize> = (0..set.len()).collect();
    for members in classes.iter().filter(|m| !m.is_empty()) {
        for _ in members.len()..max {
            idx.push(members[rng.below(members.len())]);
        }
    }
    subset(set, &idx)
}

/// Random undersampling: every non-empty class cut to a random subset (without replacement)
/// as large as the smallest non-empty class; the kept windows stay in their original order.
pub fn undersample(set: &ExampleSet, rng: &mut Rng) -> ExampleSet {
    let classes = by_class(set);
    let min = classes
        .iter()
        .map(Vec::len)
        .filter(|&n| n > 0)
        .min()
        .unwrap_or(0);
    let mut idx = Vec::new();
    for members in &classes {
        let mut m = members.clone();
        rng.shuffle(&mut m);
        m.truncate(min);
        idx.extend(m);
    }
    idx.sort_unstable();
    subset(set, &idx)
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// SMOTE on the feature windows (see the [module documentation](self)): every non-empty class
/// topped up to the size of the largest with windows interpolated between a random window of
/// the class and one of its `k` nearest same-class neighbours. A class of one window is topped
/// up with copies of it.
pub fn smote(set: &ExampleSet, k: usize, rng: &mut Rng) -> ExampleSet {
    let classes = by_class(set);
    let max = classes.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = subset(set, &(0..set.len()).collect::<Vec<_>>());
    for members in &classes {
        if members.is_empty() || members.len() >= max {
            continue;
        }
        // Each member's k nearest same-class neighbours.
        let neighbours: Vec<Vec<usize>> = members
            .iter()
            .map(|&i| {
                let mut d: Vec<(f32, usize)> = members
                    .iter()
                    .filter(|&&j| j != i)
                    .map(|&j| (sq_dist(set.example(i), set.example(j)), j))
                    .collect();
                d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                d.into_iter().take(k).map(|(_, j)| j).collect()
            })
            .collect();
        for _ in members.len()..max {
            let s = rng.below(members.len());
            let i = members[s];
            let xi = set.example(i);
            if neighbours[s].is_empty() {
                push(&mut out, xi, set, i);
                continue;
            }
            let j = neighbours[s][rng.below(neighbours[s].len())];
            let lambda = rng.f32();
            let x: Vec<f32> = xi
                .iter()
                .zip(set.example(j))
                .map(|(a, b)| a + lambda * (b - a))
                .collect();
            push(&mut out, &x, set, i);
        }
    }
    out
}

/// Partial augmentation (see the [module documentation](self)): every class smaller than the
/// largest is topped up to its size with augmented copies of its own windows (gain shift of
/// up to ±`gain_db` and SpecAugment masks); `std` is the per-band standard deviation the set
/// was normalised with (a gain shift of the log-mel power is `2 ln g / std_k` in band `k`).
pub fn partial_augment(
    set: &ExampleSet,
    std: &[f32],
    gain_db: f32,
    masks: &SpecAugment,
    rng: &mut Rng,
) -> ExampleSet {
    let classes = by_class(set);
    let max = classes.iter().map(Vec::len).max().unwrap_or(0);
    let mut out = subset(set, &(0..set.len()).collect::<Vec<_>>());
    let m = set.n_mels;
    for members in &classes {
        if members.is_empty() || members.len() >= max {
            continue;
        }
        for _ in members.len()..max {
            let i = members[rng.below(members.len())];
            let mut x = set.example(i).to_vec();
            let db = rng.range(-gain_db, gain_db);
            // Power gain in natural-log units: ln(g²) = dB / 10 · ln 10.
            let shift = db / 10.0 * std::f32::consts::LN_10;
            for row in x.chunks_exact_mut(m) {
                for (k, v) in row.iter_mut().enumerate() {
                    *v += shift / std.get(k).copied().unwrap_or(1.0).max(1e-6);
                }
            }
            masks.apply(&mut x, set.frames, m, rng);
            push(&mut out, &x, set, i);
        }
    }
    out
}

/// Applies the window-level remedies of `cfg` (resampling, then partial augmentation) to a
/// normalised training set; `std` is the normalisation's per-band deviation.
pub fn rebalance(set: &ExampleSet, cfg: &ImbalanceSection, std: &[f32], seed: u64) -> ExampleSet {
    let mut rng = Rng::new(seed ^ 0x1b41_a9ce);
    let mut out = match cfg.resample {
        Resample::None => set.clone(),
        Resample::Oversample => oversample(set, &mut rng),
        Resample::Undersample => undersample(set, &mut rng),
        Resample::Smote => smote(set, cfg.smote_k, &mut rng),
    };
    if cfg.partial_augmentation {
        out = partial_augment(
            &out,
            std,
            cfg.partial_gain_db,
            &SpecAugment::default(),
            &mut rng,
        );
    }
    out
}

/// The Gaussian weight of a frame `d` frames from the labelled span.
pub fn smear_weight(d: f32, sigma: f32) -> f32 {
    if d <= 0.0 {
        1.0
    } else if sigma <= 0.0 {
        0.0
    } else {
        (-d * d / (2.0 * sigma * sigma)).exp()
    }
}

/// The supervised frames of the windows `idx` with their target distributions: `(row, hard
/// label)` pairs as [`ExampleSet::frame_targets`] gives them (`row = b * frames + t`) and the
/// targets, `rows × classes` row-major. With `sigma > 0` and frame targets, event windows get
/// the Gaussian soft targets of the [module documentation](self) (their hard label is the more
/// probable of the two classes); otherwise the targets are one-hot.
pub fn frame_soft_targets(
    set: &ExampleSet,
    idx: &[usize],
    ft: Option<&FrameTargets>,
    sigma: f32,
) -> (Vec<(usize, usize)>, Vec<f32>) {
    let n = set.classes.len();
    let (Some(ft), true) = (ft, sigma > 0.0 && !set.onsets.is_empty()) else {
        let rows = set.frame_targets(idx, ft);
        let mut q = vec![0.0f32; rows.len() * n];
        for (r, &(_, l)) in rows.iter().enumerate() {
            q[r * n + l] = 1.0;
        }
        return (rows, q);
    };
    let bg = set.background_label();
    let t_last = set.frames - 1;
    let reach = 3.0 * sigma;
    let (mut rows, mut q) = (Vec::new(), Vec::new());
    for (b, &i) in idx.iter().enumerate() {
        let (label, onset) = (set.labels[i], set.onsets[i]);
        let mut t = t_last as i64;
        while t >= ft.warmup.min(t_last) as i64 {
            let mut target = vec![0.0f32; n];
            if let Some((a, z)) = set.event_span(i, ft) {
                let d = if t < a {
                    (a - t) as f32
                } else if t > z {
                    (t - z) as f32
                } else {
                    0.0
                };
                if t >= onset && d > reach {
                    // Far after the onset, outside the span: background where the hard
                    // targets say so (after an extent's tail), unsupervised otherwise.
                    if set.frame_label(i, t, ft) != Some(bg) {
                        t -= ft.stride.max(1) as i64;
                        continue;
                    }
                    target[bg] = 1.0;
                } else {
                    let g = smear_weight(d, sigma);
                    target[label] = g;
                    target[bg] += 1.0 - g;
                }
            } else {
                target[bg] = 1.0;
            }
            let hard = if target[bg] > 0.5 { bg } else { label };
            rows.push((b * set.frames + t as usize, hard));
            q.extend(target);
            t -= ft.stride.max(1) as i64;
        }
    }
    (rows, q)
}

/// Per-class weights of `method`'s loss: `weighted` gives `N / (K n_c)` (see
/// [`crate::train::class_weights`]); `focal_alpha` gives `alpha` to the event classes and
/// `1 - alpha` to background; otherwise 1 for every class present.
pub fn loss_weights(
    counts: &[usize],
    classes: &[String],
    weighted: bool,
    focal_alpha: Option<f32>,
) -> Vec<f32> {
    if weighted {
        return crate::train::class_weights(counts);
    }
    counts
        .iter()
        .zip(classes)
        .map(|(&c, name)| match (c, focal_alpha) {
            (0, _) => 0.0,
            (_, Some(a)) if name == BACKGROUND => 1.0 - a,
            (_, Some(a)) => a,
            (_, None) => 1.0,
        })
        .collect()
}

/// The loss of the [module documentation](self): soft targets `q` (`rows × classes`), class
/// weights `w`, focusing exponent `gamma` (0: weighted cross-entropy).
pub fn soft_loss<B: Backend>(
    logits: Tensor<B, 2>,
    q: &[f32],
    weights: &[f32],
    gamma: f32,
) -> Tensor<B, 1> {
    let [rows, n] = logits.dims();
    let mut wq = vec![0.0f32; rows * n];
    let mut total = 0.0f32;
    for r in 0..rows {
        for c in 0..n {
            let v = q[r * n + c] * weights[c];
            wq[r * n + c] = v;
            total += v;
        }
    }
    let device = logits.device();
    let wq = Tensor::<B, 2>::from_data(TensorData::new(wq, [rows, n]), &device);
    let logp = log_softmax(logits, 1);
    let terms = if gamma > 0.0 {
        let focus = logp
            .clone()
            .exp()
            .neg()
            .add_scalar(1.0)
            .clamp_min(0.0)
            .powf_scalar(gamma);
        logp * focus * wq
    } else {
        logp * wq
    };
    terms.sum().neg().div_scalar(total.max(1e-12))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    /// A set of `counts[c]` windows per class (2 frames × 3 bands), every value of window `i`
    /// equal to `i` plus the class times 100, event windows with onsets.
    fn toy(counts: &[usize]) -> ExampleSet {
        let mut set = ExampleSet {
            classes: (0..counts.len())
                .map(|c| {
                    if c == 0 {
                        BACKGROUND.to_string()
                    } else {
                        format!("e{c}")
                    }
                })
                .collect(),
            frames: 2,
            n_mels: 3,
            labels: Vec::new(),
            features: Vec::new(),
            onsets: Vec::new(),
            ends: Vec::new(),
        };
        let mut i = 0;
        for (c, &n) in counts.iter().enumerate() {
            for _ in 0..n {
                let v = (c * 100 + i) as f32;
                set.features.extend_from_slice(&[v; 6]);
                set.labels.push(c);
                set.onsets.push(if c == 0 { -1 } else { 1 });
                i += 1;
            }
        }
        set
    }

    fn find(set: &ExampleSet, x: &[f32]) -> Option<usize> {
        (0..set.len()).find(|&i| set.example(i) == x)
    }

    #[test]
    fn oversampling_equalises_counts_with_copies() {
        let set = toy(&[16, 6, 1, 2]);
        let out = oversample(&set, &mut Rng::new(1));
        assert_eq!(out.class_counts(), vec![16, 16, 16, 16]);
        assert_eq!(out.onsets.len(), out.len());
        // The originals come first, unchanged; every added window is a copy of one of its class.
        assert_eq!(&out.features[..set.features.len()], &set.features[..]);
        for i in set.len()..out.len() {
            let j = find(&set, out.example(i)).expect("a copy");
            assert_eq!(set.labels[j], out.labels[i]);
            assert_eq!(set.onsets[j], out.onsets[i]);
        }
    }

    #[test]
    fn undersampling_equalises_counts_without_repeats() {
        let set = toy(&[26, 2, 2, 1]);
        let out = undersample(&set, &mut Rng::new(2));
        assert_eq!(out.class_counts(), vec![1, 1, 1, 1]);
        let set = toy(&[16, 6, 3, 2]);
        let out = undersample(&set, &mut Rng::new(3));
        assert_eq!(out.class_counts(), vec![2, 2, 2, 2]);
        let mut seen: Vec<usize> = (0..out.len())
            .map(|i| find(&set, out.example(i)).unwrap())
            .collect();
        seen.dedup();
        assert_eq!(seen.len(), out.len(), "no window twice");
    }

    #[test]
    fn smote_samples_lie_between_same_class_neighbours() {
        let set = toy(&[12, 5, 3, 1]);
        let out = smote(&set, 2, &mut Rng::new(4));
        assert_eq!(out.class_counts(), vec![12, 12, 12, 12]);
        assert_eq!(&out.features[..set.features.len()], &set.features[..]);
        for i in set.len()..out.len() {
            let x = out.example(i);
            let l = out.labels[i];
            // Constant windows: the new value lies between two same-class values that are
            // within 2 neighbours of each other.
            let vals: Vec<f32> = (0..set.len())
                .filter(|&j| set.labels[j] == l)
                .map(|j| set.example(j)[0])
                .collect();
            assert!(x.iter().all(|&v| v == x[0]), "one λ for the whole window");
            let (lo, hi) = (
                vals.iter().copied().fold(f32::MAX, f32::min),
                vals.iter().copied().fold(f32::MIN, f32::max),
            );
            assert!(x[0] >= lo && x[0] <= hi, "{} outside [{lo}, {hi}]", x[0]);
            if vals.len() > 1 {
                // Within the segment from some member to one of its 2 nearest.
                let ok = vals.iter().any(|&a| {
                    let mut d: Vec<f32> = vals.iter().filter(|&&b| b != a).copied().collect();
                    d.sort_by(|p, q| (p - a).abs().total_cmp(&(q - a).abs()));
                    d.iter()
                        .take(2)
                        .any(|&b| x[0] >= a.min(b) - 1e-4 && x[0] <= a.max(b) + 1e-4)
                });
                assert!(ok);
            } else {
                assert_eq!(x[0], vals[0], "a single window is copied");
            }
            assert_eq!(out.onsets[i], 1, "onset of the seed window");
        }
    }

    #[test]
    fn partial_augmentation_leaves_the_majority_untouched() {
        let set = toy(&[10, 4, 2, 1]);
        let std = vec![1.0f32; 3];
        let masks = SpecAugment {
            freq_masks: 0,
            time_masks: 0,
            ..Default::default()
        };
        let out = partial_augment(&set, &std, 6.0, &masks, &mut Rng::new(5));
        assert_eq!(out.class_counts(), vec![10, 10, 10, 10]);
        assert_eq!(&out.features[..set.features.len()], &set.features[..]);
        let majority_out: Vec<usize> = (0..out.len()).filter(|&i| out.labels[i] == 0).collect();
        assert_eq!(
            majority_out,
            (0..10).collect::<Vec<_>>(),
            "no new majority window"
        );
        let max_shift = 6.0 / 10.0 * std::f32::consts::LN_10;
        for i in set.len()..out.len() {
            let x = out.example(i);
            let l = out.labels[i];
            // A gain-shifted copy of a window of its class.
            let near = (0..set.len()).filter(|&j| set.labels[j] == l).any(|j| {
                let d = x[0] - set.example(j)[0];
                d.abs() <= max_shift + 1e-4
                    && x.iter()
                        .zip(set.example(j))
                        .all(|(a, b)| (a - b - d).abs() < 1e-4)
            });
            assert!(near, "window {i} is not an augmented copy");
        }
    }

    #[test]
    fn focal_loss_is_cross_entropy_at_gamma_zero_and_spares_easy_examples() {
        let device = Default::default();
        let logits = [2.0f32, 0.0, -1.0, 0.5, 0.3, 0.1];
        let t = || Tensor::<Cpu, 2>::from_data(TensorData::new(logits.to_vec(), [2, 3]), &device);
        let labels = [0usize, 2];
        let mut q = vec![0.0f32; 6];
        q[0] = 1.0;
        q[5] = 1.0;
        let w = [1.0f32, 0.5, 2.0];
        let ce = crate::train::weighted_cross_entropy(t(), &labels, &w).into_scalar();
        let fl0 = soft_loss(t(), &q, &w, 0.0).into_scalar();
        assert!((ce - fl0).abs() < 1e-6, "{ce} vs {fl0}");
        // Per example: the easy one (p ≈ 0.84) is scaled by (1 - p)^γ much more than the
        // hard one (p ≈ 0.30).
        let one = |r: usize, g: f32| {
            let mut qr = vec![0.0f32; 6];
            qr[r * 3 + labels[r]] = 1.0;
            soft_loss(t(), &qr, &[1.0; 3], g).into_scalar()
        };
        let (easy_ce, hard_ce) = (one(0, 0.0), one(1, 0.0));
        let (easy_fl, hard_fl) = (one(0, 2.0), one(1, 2.0));
        let p_easy = (-easy_ce).exp();
        assert!((easy_fl - easy_ce * (1.0 - p_easy).powi(2)).abs() < 1e-5);
        assert!(easy_fl / easy_ce < 0.05 && hard_fl / hard_ce > 0.4);
        // alpha weights: events alpha, background 1 - alpha.
        let classes = vec![BACKGROUND.to_string(), "a".into(), "b".into()];
        assert_eq!(
            loss_weights(&[5, 1, 0], &classes, false, Some(0.75)),
            vec![0.25, 0.75, 0.0]
        );
    }

    #[test]
    fn smeared_targets_are_gaussian_and_sum_to_one() {
        let mut set = toy(&[1, 1]);
        set.frames = 100;
        set.features = vec![0.0; 2 * 100 * 3];
        set.onsets = vec![-1, 40];
        let ft = FrameTargets {
            stride: 1,
            warmup: 0,
            lead_frames: [10, 30],
            ..Default::default()
        };
        let sigma = 4.0;
        let (rows, q) = frame_soft_targets(&set, &[0, 1], Some(&ft), sigma);
        assert_eq!(q.len(), rows.len() * 2);
        for r in q.chunks_exact(2) {
            assert!((r[0] + r[1] - 1.0).abs() < 1e-6);
        }
        let target = |row: usize| {
            let k = rows.iter().position(|&(r, _)| r == row)?;
            Some(q[k * 2 + 1])
        };
        // The background window: all background.
        assert!((0..100).all(|t| target(t) == Some(0.0)));
        // The event window: 1 on the span [50, 70], Gaussian outside.
        for t in 50..=70 {
            assert_eq!(target(100 + t), Some(1.0));
        }
        for d in 1..=12usize {
            let g = (-((d * d) as f32) / (2.0 * sigma * sigma)).exp();
            assert!((target(100 + 70 + d).unwrap() - g).abs() < 1e-6);
            if 50 - d >= 40 {
                assert!((target(100 + 50 - d).unwrap() - g).abs() < 1e-6);
            }
        }
        // Before the onset: supervised even far from the span (background, weight ≈ 0);
        // after the span beyond 3σ: unsupervised, as with hard targets.
        assert!(target(100 + 5).unwrap() < 1e-6);
        assert_eq!(target(100 + 70 + 13), None);
        // Without smearing: the hard targets, one-hot.
        let (hard_rows, hq) = frame_soft_targets(&set, &[0, 1], Some(&ft), 0.0);
        assert_eq!(hard_rows, set.frame_targets(&[0, 1], Some(&ft)));
        assert!(hq.chunks_exact(2).all(|r| r[0] + r[1] == 1.0));
    }
}
