//! Training examples: fixed-length windows of log-mel frames with a class label, generated
//! deterministically (one seed) from clips.
//!
//! - **Event windows** (DCASE 2017 Task 2 style): an event clip, augmented, mixed at a random
//!   onset into a random stretch of a random background clip at an event-to-background ratio
//!   drawn from [`ExampleConfig::ebr_db`] (RMS of the event over RMS of the background window,
//!   in dB); labelled with the event's class.
//! - **Background windows**: a stretch of a background clip, with a hard negative (a clip of
//!   role [`Role::Negative`]) mixed in with probability [`ExampleConfig::negative_prob`];
//!   labelled [`BACKGROUND`].
//!
//! Augmentation ([`AugmentConfig`]): gain, a one-pole low- or high-pass filter,
//! reverberation (convolution with exponentially decaying noise), time stretch (resampling,
//! which shifts pitch too) and pitch change (resampling, then overlap-add back to the original
//! duration). The onset is the time shift.
//!
//! Features come from the runtime's [`Frontend`]; an [`ExampleSet`] holds them in memory and
//! can be cached on disk, keyed by a hash of everything that went into it.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use hark::frontend::{Frontend, FrontendConfig, FrontendConfigError};
use serde::{Deserialize, Serialize};

use crate::data::{BACKGROUND, Clip, Role, fnv1a};
use crate::kmeans::SplitMix64;

/// The audio rate of clips (the frontend's input rate).
pub const RATE: f32 = 16_000.0;

/// Why examples cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    /// The frontend configuration cannot be computed.
    #[error(transparent)]
    Frontend(#[from] FrontendConfigError),
    /// No clips to make examples from.
    #[error("no {0} clips to make examples from")]
    NoClips(&'static str),
    /// The cache could not be read or written.
    #[error("feature cache {path}: {problem}")]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
    /// A configuration value is out of range.
    #[error("example configuration: {0}")]
    Config(String),
}

/// Augmentation settings; every augmentation is applied to an event (or hard negative) clip
/// before mixing, each with its own probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Maximum gain change of the event, ± dB (uniform). Default 6.
    pub gain_db: f32,
    /// Probability of a one-pole filter (low- or high-pass, even odds). Default 0.3.
    pub filter_prob: f32,
    /// Low-pass cut-off range, Hz. Default [1500, 6000].
    pub lowpass_hz: [f32; 2],
    /// High-pass cut-off range, Hz. Default [100, 1000].
    pub highpass_hz: [f32; 2],
    /// Probability of reverberation. Default 0.3.
    pub reverb_prob: f32,
    /// Reverberation time (60 dB decay) range, seconds. Default [0.1, 0.6].
    pub rt60_s: [f32; 2],
    /// Wet/dry ratio of the reverberation (fraction of the impulse response's energy
    /// relative to the direct path). Default 0.3.
    pub reverb_wet: f32,
    /// Probability of a time stretch. Default 0.3.
    pub stretch_prob: f32,
    /// Maximum stretch, ± fraction of the duration. Default 0.1.
    pub stretch: f32,
    /// Probability of a pitch change. Default 0.3.
    pub pitch_prob: f32,
    /// Maximum pitch change, ± semitones. Default 2.
    pub pitch_semitones: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            gain_db: 6.0,
            filter_prob: 0.3,
            lowpass_hz: [1500.0, 6000.0],
            highpass_hz: [100.0, 1000.0],
            reverb_prob: 0.3,
            rt60_s: [0.1, 0.6],
            reverb_wet: 0.3,
            stretch_prob: 0.3,
            stretch: 0.1,
            pitch_prob: 0.3,
            pitch_semitones: 2.0,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> Self {
        Self {
            gain_db: 0.0,
            filter_prob: 0.0,
            reverb_prob: 0.0,
            stretch_prob: 0.0,
            pitch_prob: 0.0,
            ..Self::default()
        }
    }
}

/// How examples are generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExampleConfig {
    /// Frames per window (10 ms each). Default 100 (1 s).
    pub window_frames: usize,
    /// Event-to-background ratios to draw from, dB. Default [-6, 0, 6].
    pub ebr_db: Vec<f32>,
    /// Event windows made from each event clip (each with its own background, onset, ratio
    /// and augmentation). Default 2.
    pub windows_per_event: usize,
    /// Background windows per event window. Default 0.5.
    pub background_ratio: f32,
    /// Probability that a background window gets a hard negative mixed in (when there are
    /// any). Default 0.5.
    pub negative_prob: f32,
    /// Smallest part of an event that must lie inside its window, as a fraction of the window
    /// or of the event, whichever is shorter. Default 0.5.
    pub min_event_fraction: f32,
    /// When set, events (and hard negatives) are placed so that the window ends this long
    /// after their onset, seconds, drawn uniformly (`min_event_fraction` is then unused). This
    /// is what a streaming detector is asked at each hop: "did an event start in the last
    /// moments?"; [0.1, 0.6] teaches it to fire within a tenth of a second of an onset and to
    /// hold for about half a second. Default none.
    pub onset_to_end_s: Option<[f32; 2]>,
    /// Where events and hard negatives go in a window (see [`Layout`]). Default `onset`.
    pub layout: Layout,
    /// `stream` layout: an event's frames carry its class until its own level (10 ms blocks,
    /// before mixing) falls this many dB below its peak for good; its onset is the first
    /// block above that floor. Default 20.
    pub extent_floor_db: f32,
    /// `stream` layout: when set, an event's class covers only the part of its extent that is
    /// audible *in the mixture*: from the first to the last 10 ms block where the event's
    /// power (as mixed) is at least this many dB relative to the background's power in the
    /// same block (the local event-to-background ratio). The tail of a gunshot buried under
    /// music is then not labelled gunshot, which would teach the detector to fire on music.
    /// An event audible nowhere keeps its loudest block (and `min_event_frames`). Default
    /// none (the event's own extent, whatever the background).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audible_floor_db: Option<f32>,
    /// Frame targets: when set, training supervises several frames of each window, not only
    /// the last (see [`ExampleSet::frame_targets`]). Default none (last frame only).
    pub frame_targets: Option<FrameTargets>,
    /// Gain applied to the whole mixed window, ± dB (uniform): the detector should not rely
    /// on absolute level. Default 0 (off).
    pub window_gain_db: f32,
    /// Level of the background windows: RMS in dBFS drawn uniformly from this range. Default
    /// [-40, -20].
    pub background_dbfs: [f32; 2],
    /// Augmentation.
    pub augment: AugmentConfig,
}

impl Default for ExampleConfig {
    fn default() -> Self {
        Self {
            window_frames: 100,
            ebr_db: vec![-6.0, 0.0, 6.0],
            windows_per_event: 2,
            background_ratio: 0.5,
            negative_prob: 0.5,
            min_event_fraction: 0.5,
            onset_to_end_s: None,
            layout: Layout::Onset,
            extent_floor_db: 20.0,
            audible_floor_db: None,
            window_gain_db: 0.0,
            frame_targets: None,
            background_dbfs: [-40.0, -20.0],
            augment: AugmentConfig::default(),
        }
    }
}

/// Where an event (or hard negative) goes in its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Placed by `onset_to_end_s` (or `min_event_fraction`); an event's class covers
    /// `lead_frames` after its onset.
    #[default]
    Onset,
    /// Placed anywhere in the window (onset uniform, the event may run past the end); an
    /// event's class covers its whole audible extent (`extent_floor_db`), the frames before
    /// and after it are background (see [`FrameTargets::tail_frames`]). Hard negatives are
    /// placed the same way, so the detector also learns their middles and ends, and the
    /// return to background after an event, as it will hear them in a stream.
    Stream,
}

/// Which frames of a window are supervised, and with what label: every `stride`-th frame
/// counted back from the last, from frame `warmup` on (the LSTM has heard something by then).
/// A frame of a background window is background. A frame of an event window is background
/// before the onset, the event's class from `lead_frames[0]` to `lead_frames[1]` frames after
/// it (what the detector must fire on), and not supervised otherwise (the first moments of
/// the event, and its tail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FrameTargets {
    /// Distance between supervised frames. Default 10 (0.1 s).
    pub stride: usize,
    /// First frame that may be supervised. Default 50.
    pub warmup: usize,
    /// Frames after the onset labelled with the event. Default [10, 60]. With the `stream`
    /// layout only the first bound is used: the class starts `lead_frames[0]` frames after
    /// the onset and lasts until the event's extent ends (at least `min_event_frames`).
    pub lead_frames: [usize; 2],
    /// `stream` layout: frames after an event's extent left unsupervised (its decay) before
    /// the background label resumes. Default 20.
    pub tail_frames: usize,
    /// `stream` layout: the fewest frames labelled with an event's class. Default 20.
    pub min_event_frames: usize,
}

impl Default for FrameTargets {
    fn default() -> Self {
        Self {
            stride: 10,
            warmup: 50,
            lead_frames: [10, 60],
            tail_frames: 20,
            min_event_frames: 20,
        }
    }
}

/// SpecAugment-style masking of training batches (Park et al. 2019): in every window,
/// `freq_masks` bands of up to `freq_width` adjacent mel bands and `time_masks` spans of up to
/// `time_width` frames are set to the band mean (0 in the normalised features). Applied when a
/// batch is drawn, so every epoch sees other masks; validation is never masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpecAugment {
    /// Frequency masks per window. Default 2.
    pub freq_masks: usize,
    /// Widest frequency mask, mel bands. Default 8.
    pub freq_width: usize,
    /// Time masks per window. Default 2.
    pub time_masks: usize,
    /// Longest time mask, frames (10 ms). Default 20.
    pub time_width: usize,
}

impl Default for SpecAugment {
    fn default() -> Self {
        Self {
            freq_masks: 2,
            freq_width: 8,
            time_masks: 2,
            time_width: 20,
        }
    }
}

impl SpecAugment {
    /// Masks one window `[frames, n_mels]` (row-major) in place.
    pub fn apply(&self, window: &mut [f32], frames: usize, n_mels: usize, rng: &mut Rng) {
        debug_assert_eq!(window.len(), frames * n_mels);
        for _ in 0..self.freq_masks {
            let w = rng.below(self.freq_width.min(n_mels) + 1);
            let f0 = rng.below(n_mels - w + 1);
            for row in window.chunks_exact_mut(n_mels) {
                row[f0..f0 + w].fill(0.0);
            }
        }
        for _ in 0..self.time_masks {
            let w = rng.below(self.time_width.min(frames) + 1);
            let t0 = rng.below(frames - w + 1);
            window[t0 * n_mels..(t0 + w) * n_mels].fill(0.0);
        }
    }
}

/// Random draws for example generation (SplitMix64 underneath).
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(SplitMix64::new(seed))
    }

    /// Uniform in `[0, 1)`.
    pub fn f32(&mut self) -> f32 {
        self.0.next_f64() as f32
    }

    /// Uniform in `[a, b)`.
    pub fn range(&mut self, a: f32, b: f32) -> f32 {
        a + (b - a) * self.f32()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f32) -> bool {
        self.f32() < p
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.0.next_f64().max(1e-12);
        let u2 = self.0.next_f64();
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// Shuffles a slice (Fisher–Yates).
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Root mean square.
pub fn rms(x: &[f32]) -> f32 {
    if x.is_empty() {
        return 0.0;
    }
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

/// dB to amplitude factor.
pub fn db_to_gain(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

/// One-pole low-pass `y[n] = y[n-1] + a (x[n] - y[n-1])`, `a = 1 - exp(-2π fc / rate)`.
pub fn lowpass(x: &[f32], cutoff_hz: f32) -> Vec<f32> {
    let a = 1.0 - (-2.0 * std::f32::consts::PI * cutoff_hz / RATE).exp();
    let mut y = 0.0f32;
    x.iter()
        .map(|&v| {
            y += a * (v - y);
            y
        })
        .collect()
}

/// One-pole high-pass: the input minus its one-pole low-pass.
pub fn highpass(x: &[f32], cutoff_hz: f32) -> Vec<f32> {
    x.iter()
        .zip(lowpass(x, cutoff_hz))
        .map(|(a, b)| a - b)
        .collect()
}

/// Reverberation: `x` convolved with `δ + h`, `h[n] = g · noise[n] · exp(-6.91 n / (rt60 ·
/// rate))` (60 dB down after `rt60`), `g` chosen so that `h` has `wet` times the energy of
/// the direct path. Output length `len(x) + len(h) - 1`, truncated to `len(x)` plus the tail.
pub fn reverb(x: &[f32], rt60_s: f32, wet: f32, rng: &mut Rng) -> Vec<f32> {
    let n = ((rt60_s * RATE) as usize).clamp(1, 16000);
    let mut h: Vec<f32> = (0..n)
        .map(|i| rng.normal() * (-6.91 * i as f32 / (rt60_s * RATE)).exp())
        .collect();
    let e: f32 = h.iter().map(|v| v * v).sum::<f32>().max(1e-12);
    let g = (wet / e).sqrt();
    h.iter_mut().for_each(|v| *v *= g);
    // Direct convolution on a decimated impulse response keeps this cheap: taps every 4th
    // sample (the IR is noise, so sparsity keeps its character), scaled to keep the energy.
    let step = 4;
    let scale = (step as f32).sqrt();
    let mut y = vec![0.0f32; x.len() + n - 1];
    y[..x.len()].copy_from_slice(x);
    for k in (0..n).step_by(step) {
        let hk = h[k] * scale;
        for (i, &v) in x.iter().enumerate() {
            y[i + k] += hk * v;
        }
    }
    y
}

/// Linear-interpolation resampling by `factor` (output length `len / factor`): `factor > 1`
/// shortens and raises the pitch.
pub fn resample_linear(x: &[f32], factor: f32) -> Vec<f32> {
    if x.is_empty() || factor <= 0.0 {
        return x.to_vec();
    }
    let n_out = ((x.len() as f32 / factor).floor() as usize).max(1);
    (0..n_out)
        .map(|i| {
            let t = i as f32 * factor;
            let j = t.floor() as usize;
            let f = t - j as f32;
            let a = x[j.min(x.len() - 1)];
            let b = x[(j + 1).min(x.len() - 1)];
            a + f * (b - a)
        })
        .collect()
}

/// Overlap-add time stretch to `target_len` samples without changing the pitch: Hann grains
/// of 512 samples written every 128 samples, read at the scaled position.
pub fn ola_stretch(x: &[f32], target_len: usize) -> Vec<f32> {
    const GRAIN: usize = 512;
    const HOP: usize = 128;
    if x.len() < GRAIN || target_len < GRAIN {
        return resample_linear(x, x.len() as f32 / target_len.max(1) as f32);
    }
    let win: Vec<f32> = (0..GRAIN)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f32::consts::PI * n as f32 / GRAIN as f32).cos())
        .collect();
    let mut y = vec![0.0f32; target_len];
    let mut norm = vec![0.0f32; target_len];
    let ratio = (x.len() - GRAIN) as f32 / (target_len - GRAIN).max(1) as f32;
    let mut out = 0;
    while out + GRAIN <= target_len {
        let src = ((out as f32 * ratio) as usize).min(x.len() - GRAIN);
        for k in 0..GRAIN {
            y[out + k] += win[k] * x[src + k];
            norm[out + k] += win[k];
        }
        out += HOP;
    }
    for (v, w) in y.iter_mut().zip(norm) {
        if w > 1e-3 {
            *v /= w;
        }
    }
    y
}

/// Applies the configured augmentations to a clip.
pub fn augment(x: &[f32], cfg: &AugmentConfig, rng: &mut Rng) -> Vec<f32> {
    let mut y = x.to_vec();
    if rng.chance(cfg.stretch_prob) {
        let s = 1.0 + rng.range(-cfg.stretch, cfg.stretch);
        y = resample_linear(&y, s);
    }
    if rng.chance(cfg.pitch_prob) {
        let semis = rng.range(-cfg.pitch_semitones, cfg.pitch_semitones);
        let len = y.len();
        y = ola_stretch(&resample_linear(&y, 2f32.powf(semis / 12.0)), len);
    }
    if rng.chance(cfg.filter_prob) {
        y = if rng.chance(0.5) {
            lowpass(&y, rng.range(cfg.lowpass_hz[0], cfg.lowpass_hz[1]))
        } else {
            highpass(&y, rng.range(cfg.highpass_hz[0], cfg.highpass_hz[1]))
        };
    }
    if rng.chance(cfg.reverb_prob) {
        let rt = rng.range(cfg.rt60_s[0], cfg.rt60_s[1]);
        y = reverb(&y, rt, cfg.reverb_wet, rng);
    }
    if cfg.gain_db > 0.0 {
        let g = db_to_gain(rng.range(-cfg.gain_db, cfg.gain_db));
        y.iter_mut().for_each(|v| *v *= g);
    }
    y
}

/// Mixes `event` into `background` (in place) starting at sample `onset` (the part past the
/// end is cut), scaled so that the RMS of the event (over its whole length) is `ebr_db` above
/// the RMS of the background window. Returns the gain applied to the event.
pub fn mix_at_ebr(background: &mut [f32], event: &[f32], onset: usize, ebr_db: f32) -> f32 {
    let bg = rms(background).max(1e-5);
    let ev = rms(event).max(1e-9);
    let g = bg * db_to_gain(ebr_db) / ev;
    for (b, e) in background.iter_mut().skip(onset).zip(event) {
        *b += g * e;
    }
    g
}

/// Clips grouped by [`Clip::kind`] (in order of first appearance), so that each kind can be
/// drawn with equal odds.
pub fn by_kind<'a>(clips: impl Iterator<Item = &'a Clip>) -> Vec<Vec<&'a Clip>> {
    let mut kinds: Vec<Vec<&Clip>> = Vec::new();
    for c in clips {
        match kinds.iter_mut().find(|k| k[0].kind == c.kind) {
            Some(k) => k.push(c),
            None => kinds.push(vec![c]),
        }
    }
    kinds
}

/// The examples' features, labels and classes, in memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExampleSet {
    /// Class names, label order ([`BACKGROUND`] first).
    pub classes: Vec<String>,
    /// Frames per window.
    pub frames: usize,
    /// Mel bands per frame.
    pub n_mels: usize,
    /// Label of every example.
    pub labels: Vec<usize>,
    /// Features, `examples × frames × n_mels`, row-major.
    pub features: Vec<f32>,
    /// The frame of each example's event onset (events only; -1 for background windows and
    /// hard negatives); used by the frame targets ([`ExampleSet::frame_targets`]).
    #[serde(default)]
    pub onsets: Vec<i64>,
    /// The frame after the end of each event's extent (`stream` layout; -1 otherwise). Empty,
    /// or as long as `onsets`.
    #[serde(default)]
    pub ends: Vec<i64>,
}

impl ExampleSet {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Values per example.
    pub fn example_size(&self) -> usize {
        self.frames * self.n_mels
    }

    /// The features of example `i`.
    pub fn example(&self, i: usize) -> &[f32] {
        let s = self.example_size();
        &self.features[i * s..(i + 1) * s]
    }

    /// Examples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.classes.len()];
        for &l in &self.labels {
            c[l] += 1;
        }
        c
    }

    /// Per-band mean and standard deviation over every frame of every example.
    pub fn band_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let m = self.n_mels;
        let mut sum = vec![0.0f64; m];
        let mut sq = vec![0.0f64; m];
        let rows = (self.features.len() / m).max(1);
        for row in self.features.chunks_exact(m) {
            for k in 0..m {
                sum[k] += row[k] as f64;
                sq[k] += (row[k] as f64).powi(2);
            }
        }
        let mean: Vec<f32> = sum.iter().map(|s| (s / rows as f64) as f32).collect();
        let std = sq
            .iter()
            .zip(&mean)
            .map(|(q, &mu)| (q / rows as f64 - (mu as f64).powi(2)).max(1e-6).sqrt() as f32)
            .collect();
        (mean, std)
    }

    /// Normalises every band in place: `(x - mean) / std`.
    pub fn normalize(&mut self, mean: &[f32], std: &[f32]) {
        let m = self.n_mels;
        for row in self.features.chunks_exact_mut(m) {
            for k in 0..m {
                row[k] = (row[k] - mean[k]) / std[k];
            }
        }
    }

    /// The batch of examples `idx` as a tensor `[batch, frames, n_mels]` and its labels.
    pub fn batch<B: Backend>(
        &self,
        idx: &[usize],
        device: &B::Device,
    ) -> (Tensor<B, 3>, Vec<usize>) {
        let s = self.example_size();
        let mut data = Vec::with_capacity(idx.len() * s);
        for &i in idx {
            data.extend_from_slice(self.example(i));
        }
        let x = Tensor::from_data(
            TensorData::new(data, [idx.len(), self.frames, self.n_mels]),
            device,
        );
        (x, idx.iter().map(|&i| self.labels[i]).collect())
    }

    /// Like [`Self::batch`], each window masked by `mask` (drawing from `rng`).
    pub fn batch_masked<B: Backend>(
        &self,
        idx: &[usize],
        mask: &SpecAugment,
        rng: &mut Rng,
        device: &B::Device,
    ) -> (Tensor<B, 3>, Vec<usize>) {
        let s = self.example_size();
        let mut data = Vec::with_capacity(idx.len() * s);
        for &i in idx {
            let start = data.len();
            data.extend_from_slice(self.example(i));
            mask.apply(&mut data[start..], self.frames, self.n_mels, rng);
        }
        let x = Tensor::from_data(
            TensorData::new(data, [idx.len(), self.frames, self.n_mels]),
            device,
        );
        (x, idx.iter().map(|&i| self.labels[i]).collect())
    }

    /// The supervised frames of the examples `idx` under `ft` (last frame only when `ft` is
    /// `None` or the set has no onsets): `(row, label)` pairs where `row = b * frames + t`
    /// indexes the batch's frames flattened, `b` the position in `idx`.
    pub fn frame_targets(&self, idx: &[usize], ft: Option<&FrameTargets>) -> Vec<(usize, usize)> {
        let t_last = self.frames - 1;
        let mut out = Vec::new();
        for (b, &i) in idx.iter().enumerate() {
            let (Some(ft), Some(_)) = (ft, self.onsets.get(i)) else {
                out.push((b * self.frames + t_last, self.labels[i]));
                continue;
            };
            let mut t = t_last as i64;
            while t >= ft.warmup.min(t_last) as i64 {
                if let Some(l) = self.frame_label(i, t, ft) {
                    out.push((b * self.frames + t as usize, l));
                }
                t -= ft.stride.max(1) as i64;
            }
        }
        out
    }

    /// The index of the background class.
    pub fn background_label(&self) -> usize {
        self.classes
            .iter()
            .position(|c| c == BACKGROUND)
            .unwrap_or(0)
    }

    /// The span `[first, last]` of frames of example `i` labelled with its event class under
    /// `ft`, or `None` for background windows and hard negatives.
    pub fn event_span(&self, i: usize, ft: &FrameTargets) -> Option<(i64, i64)> {
        let onset = *self.onsets.get(i)?;
        if onset < 0 || self.labels[i] == self.background_label() {
            return None;
        }
        let first = onset + ft.lead_frames[0] as i64;
        match self.ends.get(i) {
            Some(&end) if end >= 0 => {
                Some((first, end.max(first + ft.min_event_frames as i64) - 1))
            }
            _ => Some((first, onset + ft.lead_frames[1] as i64)),
        }
    }

    /// The target of frame `t` of example `i` under `ft`: background before an event's onset
    /// (and, with extents, from `tail_frames` after its end), its class over its span
    /// ([`Self::event_span`]), and `None` (unsupervised) in between.
    pub fn frame_label(&self, i: usize, t: i64, ft: &FrameTargets) -> Option<usize> {
        let bg = self.background_label();
        let Some((first, last)) = self.event_span(i, ft) else {
            return Some(bg);
        };
        let onset = self.onsets[i];
        let has_end = self.ends.get(i).is_some_and(|&e| e >= 0);
        if t < onset || (has_end && t > last + ft.tail_frames as i64) {
            Some(bg)
        } else if t >= first && t <= last {
            Some(self.labels[i])
        } else {
            None
        }
    }

    /// Supervised frames per class under `ft` (with `None`, one per example: the class
    /// counts).
    pub fn target_counts(&self, ft: Option<&FrameTargets>) -> Vec<usize> {
        let all: Vec<usize> = (0..self.len()).collect();
        let mut c = vec![0; self.classes.len()];
        for (_, l) in self.frame_targets(&all, ft) {
            c[l] += 1;
        }
        c
    }

    /// Labels as an int tensor `[batch]`.
    pub fn labels_tensor<B: Backend>(labels: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
        let v: Vec<i64> = labels.iter().map(|&l| l as i64).collect();
        Tensor::from_data(TensorData::new(v, [labels.len()]), device)
    }

    /// Writes the set to a binary file (a JSON header line, then little-endian f32 features).
    pub fn save(&self, path: &Path) -> Result<(), ExampleError> {
        let err = |e: std::io::Error| ExampleError::Cache {
            path: path.to_path_buf(),
            problem: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(err)?;
        }
        let header = serde_json::json!({
            "classes": self.classes, "frames": self.frames, "n_mels": self.n_mels,
            "labels": self.labels, "onsets": self.onsets, "ends": self.ends,
        });
        let tmp = path.with_extension("tmp");
        let mut f = std::io::BufWriter::new(fs::File::create(&tmp).map_err(err)?);
        writeln!(f, "{header}").map_err(err)?;
        for v in &self.features {
            f.write_all(&v.to_le_bytes()).map_err(err)?;
        }
        f.flush().map_err(err)?;
        drop(f);
        fs::rename(&tmp, path).map_err(err)
    }

    /// Reads a set written by [`Self::save`].
    pub fn load(path: &Path) -> Result<Self, ExampleError> {
        let err = |p: String| ExampleError::Cache {
            path: path.to_path_buf(),
            problem: p,
        };
        let mut bytes = Vec::new();
        fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| err(e.to_string()))?;
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| err("no header".into()))?;
        #[derive(Deserialize)]
        struct Header {
            classes: Vec<String>,
            frames: usize,
            n_mels: usize,
            labels: Vec<usize>,
            #[serde(default)]
            onsets: Vec<i64>,
            #[serde(default)]
            ends: Vec<i64>,
        }
        let h: Header =
            serde_json::from_slice(&bytes[..nl]).map_err(|e| err(format!("header: {e}")))?;
        let body = &bytes[nl + 1..];
        let expect = h.labels.len() * h.frames * h.n_mels * 4;
        if body.len() != expect {
            return Err(err(format!(
                "{} feature bytes, expected {expect}",
                body.len()
            )));
        }
        let features = body
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        Ok(ExampleSet {
            classes: h.classes,
            frames: h.frames,
            n_mels: h.n_mels,
            labels: h.labels,
            features,
            onsets: h.onsets,
            ends: h.ends,
        })
    }
}

/// The class list of a set of clips: [`BACKGROUND`] first, then the event classes sorted.
pub fn class_list(clips: &[Clip]) -> Vec<String> {
    let mut ev: Vec<String> = clips
        .iter()
        .filter(|c| c.role == Role::Event)
        .map(|c| c.class.clone())
        .collect();
    ev.sort();
    ev.dedup();
    std::iter::once(BACKGROUND.to_string()).chain(ev).collect()
}

/// Generates the examples of `clips` (deterministic for `seed`), labelled by their index in
/// `classes` (events of a class not in `classes` are skipped). Backgrounds come from the clips
/// of role [`Role::Background`] (low-level white noise when there are none).
pub fn generate(
    clips: &[Clip],
    classes: &[String],
    cfg: &ExampleConfig,
    frontend: &FrontendConfig,
    seed: u64,
) -> Result<ExampleSet, ExampleError> {
    if cfg.window_frames == 0 || cfg.ebr_db.is_empty() {
        return Err(ExampleError::Config(
            "window_frames must be positive and ebr_db non-empty".into(),
        ));
    }
    if let Some([a, b]) = cfg.onset_to_end_s
        && !(a >= 0.0 && b >= a && b.is_finite())
    {
        return Err(ExampleError::Config(format!(
            "onset_to_end_s [{a}, {b}] must be a range of non-negative seconds"
        )));
    }
    let mut fe = Frontend::new(frontend.clone())?;
    let win = (cfg.window_frames - 1) * frontend.hop_length + frontend.window_length;
    let label_of: BTreeMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let bg_label = *label_of.get(BACKGROUND).ok_or(ExampleError::Config(
        "the class list must hold \"background\"".into(),
    ))?;
    let events: Vec<&Clip> = clips
        .iter()
        .filter(|c| c.role == Role::Event && label_of.contains_key(c.class.as_str()))
        .collect();
    let backgrounds = by_kind(clips.iter().filter(|c| c.role == Role::Background));
    let negatives: Vec<&Clip> = clips.iter().filter(|c| c.role == Role::Negative).collect();
    if events.is_empty() && backgrounds.is_empty() {
        return Err(ExampleError::NoClips("event or background"));
    }
    let mut rng = Rng::new(seed);
    let mut set = ExampleSet {
        classes: classes.to_vec(),
        frames: cfg.window_frames,
        n_mels: frontend.n_mels,
        labels: Vec::new(),
        features: Vec::new(),
        onsets: Vec::new(),
        ends: Vec::new(),
    };

    let background_window = |rng: &mut Rng| -> Vec<f32> {
        let mut w = if backgrounds.is_empty() {
            (0..win).map(|_| rng.normal()).collect()
        } else {
            // Pieces of real backgrounds joined with cross-fades (never a looped clip, whose
            // jump would sound like an onset).
            crate::mixtures::background(&backgrounds, win, cfg.background_dbfs, rng)
        };
        let target = db_to_gain(rng.range(cfg.background_dbfs[0], cfg.background_dbfs[1]));
        let g = target / rms(&w).max(1e-6);
        w.iter_mut().for_each(|v| *v *= g);
        w
    };
    // Places an event in a window: onset such that at least the configured fraction lies
    // inside.
    let place = |ev_len: usize, rng: &mut Rng| -> usize {
        if cfg.layout == Layout::Stream {
            // Anywhere from the first tenth of the window to ten frames before its end.
            let lo = win / 10;
            let hi = win.saturating_sub(10 * frontend.hop_length).max(lo + 1);
            return lo + rng.below(hi - lo);
        }
        if let Some([a, b]) = cfg.onset_to_end_s {
            let d = (rng.range(a, b) * frontend.sample_rate as f32) as usize;
            return win.saturating_sub(d.max(1));
        }
        let must = ((ev_len.min(win) as f32) * cfg.min_event_fraction) as usize;
        rng.below(win - must.min(win) + 1)
    };
    let gain_db = cfg.window_gain_db;
    let hop = frontend.hop_length;
    let stream = cfg.layout == Layout::Stream;
    let mut push = |samples: &mut [f32],
                    label: usize,
                    span: Option<(usize, usize)>,
                    set: &mut ExampleSet,
                    rng: &mut Rng| {
        // The first frame whose window starts at or after the onset.
        set.onsets
            .push(span.map(|(o, _)| o.div_ceil(hop) as i64).unwrap_or(-1));
        if stream {
            // The first frame whose window starts at or after the end.
            set.ends
                .push(span.map(|(_, e)| e.div_ceil(hop) as i64).unwrap_or(-1));
        }
        if gain_db > 0.0 {
            let g = db_to_gain(rng.range(-gain_db, gain_db));
            samples.iter_mut().for_each(|v| *v *= g);
        }
        let (f, _) = fe.compute(samples);
        debug_assert_eq!(f.len(), cfg.window_frames * frontend.n_mels);
        set.features.extend_from_slice(&f);
        set.labels.push(label);
    };

    let mut n_event_windows = 0usize;
    for ev in &events {
        let label = label_of[ev.class.as_str()];
        for _ in 0..cfg.windows_per_event {
            let mut w = background_window(&mut rng);
            let e = augment(&ev.samples, &cfg.augment, &mut rng);
            let onset = place(e.len(), &mut rng);
            let ebr = cfg.ebr_db[rng.below(cfg.ebr_db.len())];
            // The local floor and the background's block powers from the onset, before mixing.
            let heard_over = cfg
                .audible_floor_db
                .map(|local| (block_powers(&w[onset.min(w.len())..], hop), local));
            let gain = mix_at_ebr(&mut w, &e, onset, ebr);
            let span = if stream {
                let over = heard_over
                    .as_ref()
                    .map(|(bg, local)| (bg.as_slice(), *local));
                let (a, z) = audible_extent_in_mix(&e, gain, over, hop, cfg.extent_floor_db);
                (onset + a, onset + z)
            } else {
                (onset, onset)
            };
            push(&mut w, label, Some(span), &mut set, &mut rng);
            n_event_windows += 1;
        }
    }
    let n_bg = if events.is_empty() {
        backgrounds.len().max(1) * cfg.windows_per_event
    } else {
        (n_event_windows as f32 * cfg.background_ratio).round() as usize
    };
    for _ in 0..n_bg {
        let mut w = background_window(&mut rng);
        if !negatives.is_empty() && rng.chance(cfg.negative_prob) {
            let neg = negatives[rng.below(negatives.len())];
            let e = augment(&neg.samples, &cfg.augment, &mut rng);
            let onset = place(e.len(), &mut rng);
            let ebr = cfg.ebr_db[rng.below(cfg.ebr_db.len())];
            mix_at_ebr(&mut w, &e, onset, ebr);
        }
        push(&mut w, bg_label, None, &mut set, &mut rng);
    }
    Ok(set)
}

/// The audible extent of a clip, `[start, end)` in samples: from the first to the end of the
/// last block of `block` samples whose power is within `floor_db` of the loudest block's.
pub fn audible_extent(x: &[f32], block: usize, floor_db: f32) -> (usize, usize) {
    audible_extent_in_mix(x, 1.0, None, block, floor_db)
}

/// The audible extent of `event` mixed with gain `gain`: `[start, end)` in samples, from the
/// first to the end of the last block of `block` samples that is within `floor_db` of the
/// event's loudest block and, when `heard_over = Some((background, local_db))`, whose local
/// event-to-background ratio (the event's power over the background's power in that block) is
/// at least `local_db`. `background` holds the background's [`block_powers`] from the event's
/// onset on, before mixing; it may be shorter than the event, which then runs past the window,
/// and blocks past its end are judged by the first rule alone. When no block passes both, the
/// block of the highest local ratio among those within `floor_db` (the event's best chance of
/// being heard). Without `heard_over` this is [`audible_extent`].
pub fn audible_extent_in_mix(
    event: &[f32],
    gain: f32,
    heard_over: Option<(&[f32], f32)>,
    block: usize,
    floor_db: f32,
) -> (usize, usize) {
    let block = block.max(1);
    let ev: Vec<f32> = block_powers(event, block)
        .into_iter()
        .map(|p| p * gain * gain)
        .collect();
    let peak = ev.iter().copied().fold(0.0f32, f32::max);
    if peak <= 0.0 || !peak.is_finite() {
        return (0, event.len());
    }
    let own_floor = peak * 10f32.powf(-floor_db / 10.0);
    let (background, local) = match heard_over {
        Some((bg, local_db)) => (bg, 10f32.powf(local_db / 10.0)),
        None => (&[][..], 0.0),
    };
    // Local ratio of block i (infinite without a background or past its end).
    let ratio = |i: usize| -> f32 {
        background
            .get(i)
            .map_or(f32::INFINITY, |&bg| ev[i] / bg.max(1e-12))
    };
    let passes = |i: usize| ev[i] >= own_floor && ratio(i) >= local;
    let n = ev.len();
    let (first, last) = match (
        (0..n).find(|&i| passes(i)),
        (0..n).rev().find(|&i| passes(i)),
    ) {
        (Some(a), Some(z)) => (a, z),
        _ => {
            let best = (0..n)
                .filter(|&i| ev[i] >= own_floor)
                .max_by(|&a, &b| ratio(a).total_cmp(&ratio(b)))
                .unwrap_or(0);
            (best, best)
        }
    };
    (first * block, ((last + 1) * block).min(event.len()))
}

/// The mean power of every block of `block` samples of `x` (the last block may be shorter).
pub fn block_powers(x: &[f32], block: usize) -> Vec<f32> {
    x.chunks(block.max(1))
        .map(|c| c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32)
        .collect()
}

/// The cache key of a generation: a hash of the configuration, frontend, seed, classes and
/// every clip (name, class, role and samples).
pub fn cache_key(
    clips: &[Clip],
    classes: &[String],
    cfg: &ExampleConfig,
    frontend: &FrontendConfig,
    seed: u64,
) -> String {
    let meta = serde_json::json!({"cfg": cfg, "frontend": frontend, "seed": seed,
        "classes": classes, "version": 2});
    let mut h = fnv1a(meta.to_string().as_bytes());
    for c in clips {
        h ^= fnv1a(format!("{}|{}|{:?}|{}", c.name, c.class, c.role, c.samples.len()).as_bytes());
        h = h.rotate_left(7).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let bytes: Vec<u8> = c.samples.iter().flat_map(|v| v.to_le_bytes()).collect();
        h ^= fnv1a(&bytes);
    }
    format!("{h:016x}")
}

/// [`generate`], through an on-disk cache in `cache_dir` when given (file
/// `examples-<key>.bin`); a cache file that cannot be read is regenerated.
pub fn generate_cached(
    clips: &[Clip],
    classes: &[String],
    cfg: &ExampleConfig,
    frontend: &FrontendConfig,
    seed: u64,
    cache_dir: Option<&Path>,
) -> Result<ExampleSet, ExampleError> {
    let Some(dir) = cache_dir else {
        return generate(clips, classes, cfg, frontend, seed);
    };
    let path = dir.join(format!(
        "examples-{}.bin",
        cache_key(clips, classes, cfg, frontend, seed)
    ));
    if let Ok(set) = ExampleSet::load(&path) {
        return Ok(set);
    }
    let set = generate(clips, classes, cfg, frontend, seed)?;
    set.save(&path)?;
    Ok(set)
}

/// Settings of the synthetic data set: tones, chirps and noise bursts at a 10:2:1 ratio (so
/// imbalanced on purpose), low-level coloured-noise backgrounds, hum bursts as hard negatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyntheticConfig {
    /// Clips of the rarest class (`noise_burst`); `chirp` gets twice, `tone` ten times as
    /// many. Default 4.
    pub unit: usize,
    /// Background clips. Default 6.
    pub backgrounds: usize,
    /// Hard-negative clips (low hum bursts). Default 2.
    pub negatives: usize,
    /// Length of each background clip, seconds. Default 2.
    pub background_seconds: f32,
    /// Groups the clips are spread over (for splits): clip `i` of each kind goes to group
    /// `synth<i % groups>`. Default 4.
    pub groups: usize,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            unit: 4,
            backgrounds: 6,
            negatives: 2,
            background_seconds: 2.0,
            groups: 4,
        }
    }
}

/// The synthetic classes, with their share: `tone` 10, `chirp` 2, `noise_burst` 1.
pub const SYNTHETIC_CLASSES: [(&str, usize); 3] = [("tone", 10), ("chirp", 2), ("noise_burst", 1)];

fn envelope(n: usize, attack: usize, i: usize) -> f32 {
    let a = (i as f32 / attack.max(1) as f32).min(1.0);
    let r = ((n - i) as f32 / attack.max(1) as f32).min(1.0);
    a.min(r)
}

/// Generates the synthetic clips (deterministic for `seed`).
pub fn synthetic_clips(cfg: &SyntheticConfig, seed: u64) -> Vec<Clip> {
    let mut rng = Rng::new(seed);
    let tau = 2.0 * std::f32::consts::PI;
    let mut clips = Vec::new();
    let groups = cfg.groups.max(1);
    // Clip `i` of a kind goes to group `i % groups`, so every group holds every kind in the
    // same proportions.
    let add = |clips: &mut Vec<Clip>, i: usize, class: &str, role: Role, samples: Vec<f32>| {
        let kind = if role == Role::Negative {
            "negative"
        } else {
            class
        };
        clips.push(Clip {
            name: format!("synthetic/{kind}/{i}"),
            class: class.into(),
            role,
            group: format!("synth{}", i % groups),
            kind: format!("synthetic_{kind}"),
            samples,
        });
    };
    for (class, share) in SYNTHETIC_CLASSES {
        for i in 0..cfg.unit * share {
            let s: Vec<f32> = match class {
                "tone" => {
                    let n = (rng.range(0.25, 0.6) * RATE) as usize;
                    let f = rng.range(400.0, 2500.0);
                    (0..n)
                        .map(|i| 0.5 * envelope(n, 160, i) * (tau * f * i as f32 / RATE).sin())
                        .collect()
                }
                "chirp" => {
                    let n = (rng.range(0.25, 0.5) * RATE) as usize;
                    let (f0, f1) = (rng.range(300.0, 1000.0), rng.range(3000.0, 6000.0));
                    let (f0, f1) = if rng.chance(0.5) { (f0, f1) } else { (f1, f0) };
                    let dur = n as f32 / RATE;
                    (0..n)
                        .map(|i| {
                            let t = i as f32 / RATE;
                            let phase = tau * (f0 * t + 0.5 * (f1 - f0) / dur * t * t);
                            0.5 * envelope(n, 160, i) * phase.sin()
                        })
                        .collect()
                }
                _ => {
                    let n = (rng.range(0.1, 0.3) * RATE) as usize;
                    let decay = rng.range(10.0, 30.0);
                    (0..n)
                        .map(|i| 0.4 * rng.normal() * (-decay * i as f32 / RATE).exp())
                        .collect()
                }
            };
            add(&mut clips, i, class, Role::Event, s);
        }
    }
    for i in 0..cfg.backgrounds {
        let n = (cfg.background_seconds * RATE) as usize;
        let cut = rng.range(200.0, 2000.0);
        let white: Vec<f32> = (0..n).map(|_| rng.normal() * 0.1).collect();
        let hum = rng.range(50.0, 120.0);
        let s: Vec<f32> = lowpass(&white, cut)
            .iter()
            .enumerate()
            .map(|(i, v)| v + 0.01 * (tau * hum * i as f32 / RATE).sin())
            .collect();
        add(&mut clips, i, BACKGROUND, Role::Background, s);
    }
    for i in 0..cfg.negatives {
        let n = (rng.range(0.2, 0.5) * RATE) as usize;
        let f = rng.range(150.0, 300.0);
        let s: Vec<f32> = (0..n)
            .map(|i| {
                let p = (tau * f * i as f32 / RATE).sin();
                0.4 * envelope(n, 400, i) * p.signum() * p.abs().sqrt()
            })
            .collect();
        add(&mut clips, i, BACKGROUND, Role::Negative, s);
    }
    clips
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_augment_masks_whole_bands_and_spans_within_their_widths() {
        let (frames, n_mels) = (50, 16);
        let m = SpecAugment {
            freq_masks: 1,
            freq_width: 5,
            time_masks: 1,
            time_width: 7,
        };
        let mut masked_any = false;
        for seed in 0..50 {
            let mut w = vec![1.0f32; frames * n_mels];
            m.apply(&mut w, frames, n_mels, &mut Rng::new(seed));
            let zero_bands: Vec<usize> = (0..n_mels)
                .filter(|&f| (0..frames).all(|t| w[t * n_mels + f] == 0.0))
                .collect();
            let zero_frames: Vec<usize> = (0..frames)
                .filter(|&t| w[t * n_mels..(t + 1) * n_mels].iter().all(|&v| v == 0.0))
                .collect();
            // Every zero lies in a masked band or a masked frame.
            for t in 0..frames {
                for f in 0..n_mels {
                    if w[t * n_mels + f] == 0.0 {
                        assert!(zero_bands.contains(&f) || zero_frames.contains(&t));
                    }
                }
            }
            // One contiguous mask each, within its width.
            assert!(zero_bands.len() <= 5 && zero_frames.len() <= 7);
            for z in [&zero_bands, &zero_frames] {
                assert!(z.windows(2).all(|p| p[1] == p[0] + 1), "{z:?}");
            }
            masked_any |= !zero_bands.is_empty() && !zero_frames.is_empty();
            // Deterministic.
            let mut again = vec![1.0f32; frames * n_mels];
            m.apply(&mut again, frames, n_mels, &mut Rng::new(seed));
            assert_eq!(w, again);
        }
        assert!(masked_any);
        let none = SpecAugment {
            freq_masks: 0,
            time_masks: 0,
            ..m
        };
        let mut w = vec![1.0f32; frames * n_mels];
        none.apply(&mut w, frames, n_mels, &mut Rng::new(1));
        assert!(w.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn frame_targets_label_frames_around_the_onset() {
        let set = ExampleSet {
            classes: vec![BACKGROUND.into(), "a".into(), "b".into()],
            frames: 100,
            n_mels: 1,
            labels: vec![2, 0],
            features: vec![0.0; 200],
            onsets: vec![70, -1],
            ends: Vec::new(),
        };
        let ft = FrameTargets {
            stride: 10,
            warmup: 50,
            lead_frames: [10, 20],
            ..Default::default()
        };
        let t = set.frame_targets(&[0, 1], Some(&ft));
        // Window 0: frames 99, 89 (after the lead: unsupervised), 79 (class 2: 9 frames
        // after the onset is before the lead: unsupervised)... frames 69, 59 before the
        // onset are background.
        let w0: Vec<(usize, usize)> = t.iter().filter(|(r, _)| *r < 100).cloned().collect();
        assert_eq!(w0, vec![(89, 2), (69, 0), (59, 0)]);
        // Frame 99 is 29 after the onset: past the lead, unsupervised; 79 is 9 after: before
        // the lead. Window 1 (background): every 10th frame from 99 down to 59, background.
        let w1: Vec<(usize, usize)> = t.iter().filter(|(r, _)| *r >= 100).cloned().collect();
        assert_eq!(w1, vec![(199, 0), (189, 0), (179, 0), (169, 0), (159, 0)]);
        // Without frame targets (or onsets), the last frame with the window's label.
        assert_eq!(set.frame_targets(&[0, 1], None), vec![(99, 2), (199, 0)]);
    }

    #[test]
    fn stream_frame_targets_cover_the_event_extent() {
        let set = ExampleSet {
            classes: vec![BACKGROUND.into(), "a".into()],
            frames: 150,
            n_mels: 1,
            labels: vec![1, 1, 0],
            features: vec![0.0; 450],
            onsets: vec![70, 140, -1],
            ends: vec![85, 200, -1],
        };
        let ft = FrameTargets {
            stride: 1,
            warmup: 0,
            lead_frames: [5, 60],
            tail_frames: 20,
            min_event_frames: 5,
        };
        let t = set.frame_targets(&[0, 1, 2], Some(&ft));
        let of = |w: usize| -> Vec<Option<usize>> {
            (0..150)
                .map(|f| t.iter().find(|&&(r, _)| r == w * 150 + f).map(|&(_, l)| l))
                .collect()
        };
        let w0 = of(0);
        // Background before the onset, nothing for the lead, the class over the extent,
        // nothing over the tail, background again after it.
        assert!(w0[..70].iter().all(|&l| l == Some(0)));
        assert!(w0[70..75].iter().all(Option::is_none));
        assert!(w0[75..85].iter().all(|&l| l == Some(1)));
        assert!(w0[85..105].iter().all(Option::is_none));
        assert!(w0[105..].iter().all(|&l| l == Some(0)));
        // An event that runs past the window's end keeps its class to the last frame.
        let w1 = of(1);
        assert!(w1[145..].iter().all(|&l| l == Some(1)));
        assert_eq!(set.event_span(1, &ft), Some((145, 199)));
        assert!(of(2).iter().all(|&l| l == Some(0)));
        // A short extent is stretched to the fewest event frames.
        let short = FrameTargets {
            min_event_frames: 30,
            ..ft.clone()
        };
        assert_eq!(set.event_span(0, &short), Some((75, 104)));
    }

    #[test]
    fn audible_extent_skips_silence_and_the_inaudible_tail() {
        let mut x = vec![0.0f32; 1000];
        x.extend(sine(3000, 440.0));
        x.extend(sine(2000, 440.0).iter().map(|v| v * 1e-3));
        x.extend(vec![0.0; 500]);
        assert_eq!(audible_extent(&x, 100, 20.0), (1000, 4000));
        // With a floor below the quiet part, the extent takes it in.
        assert_eq!(audible_extent(&x, 100, 80.0), (1000, 6000));
        assert_eq!(audible_extent(&[0.0; 300], 100, 20.0), (0, 300));
    }

    #[test]
    fn audible_extent_in_mix_drops_what_the_background_buries() {
        // Constant-power blocks: ±a alternating has power a² in any block of even length.
        let level = |n: usize, a: f32| -> Vec<f32> {
            (0..n).map(|i| if i % 2 == 0 { a } else { -a }).collect()
        };
        // An event: 1000 samples at 1.0, then a tail at 0.1 (-20 dB), then silence.
        let mut ev = level(1000, 1.0);
        ev.extend(level(2000, 0.1));
        ev.extend(vec![0.0; 400]);
        // Background at 0.3 (-10.5 dB): the loud part is 10.5 dB above it, the tail 9.5 below.
        let bg = level(4000, 0.3);
        // Its own extent (30 dB floor) holds the tail; the mixture's does not.
        assert_eq!(audible_extent(&ev, 100, 30.0), (0, 3000));
        assert_eq!(
            audible_extent_in_mix(&ev, 1.0, Some((&block_powers(&bg, 100), -6.0)), 100, 30.0),
            (0, 1000)
        );
        // A lower local floor takes the tail back in; the gain counts.
        assert_eq!(
            audible_extent_in_mix(&ev, 1.0, Some((&block_powers(&bg, 100), -12.0)), 100, 30.0),
            (0, 3000)
        );
        assert_eq!(
            audible_extent_in_mix(&ev, 10.0, Some((&block_powers(&bg, 100), -6.0)), 100, 30.0),
            (0, 3000)
        );
        // Past the end of the window's background only the event's own floor rules.
        assert_eq!(
            audible_extent_in_mix(
                &ev,
                1.0,
                Some((&block_powers(&bg[..2000], 100), -6.0)),
                100,
                30.0
            ),
            (0, 3000)
        );
        // Buried everywhere: the block of the best local ratio is kept.
        let mut loud = level(4000, 30.0);
        loud[500..600].iter_mut().for_each(|v| *v *= 0.5);
        assert_eq!(
            audible_extent_in_mix(&ev, 1.0, Some((&block_powers(&loud, 100), -6.0)), 100, 30.0),
            (500, 600)
        );
    }

    #[test]
    fn stream_layout_places_events_anywhere_with_their_extents() {
        let cfg = SyntheticConfig {
            unit: 1,
            backgrounds: 2,
            ..Default::default()
        };
        let clips = synthetic_clips(&cfg, 1);
        let classes = class_list(&clips);
        let ex = ExampleConfig {
            window_frames: 300,
            windows_per_event: 4,
            layout: Layout::Stream,
            ..Default::default()
        };
        let fe = FrontendConfig::default();
        let a = generate(&clips, &classes, &ex, &fe, 3).unwrap();
        assert_eq!(a.ends.len(), a.len());
        let events: Vec<usize> = (0..a.len()).filter(|&i| a.labels[i] != 0).collect();
        assert!(!events.is_empty());
        for &i in &events {
            assert!(
                a.onsets[i] >= 0 && a.onsets[i] < 300,
                "onset {}",
                a.onsets[i]
            );
            assert!(
                a.ends[i] > a.onsets[i],
                "end {} onset {}",
                a.ends[i],
                a.onsets[i]
            );
        }
        // Onsets spread over the window (not all at one distance from its end).
        let (lo, hi) = events.iter().fold((i64::MAX, i64::MIN), |(lo, hi), &i| {
            (lo.min(a.onsets[i]), hi.max(a.onsets[i]))
        });
        assert!(hi - lo > 100, "onsets from {lo} to {hi}");
        assert!(
            (0..a.len())
                .filter(|&i| a.labels[i] == 0)
                .all(|i| a.ends[i] == -1)
        );
        // The extents survive the disk cache.
        let dir = tempfile::tempdir().unwrap();
        generate_cached(&clips, &classes, &ex, &fe, 3, Some(dir.path())).unwrap();
        let b = generate_cached(&clips, &classes, &ex, &fe, 3, Some(dir.path())).unwrap();
        assert_eq!(b, a);
    }

    fn sine(n: usize, f: f32) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * f * i as f32 / RATE).sin())
            .collect()
    }

    #[test]
    fn mixing_hits_the_requested_ratio() {
        for ebr in [-6.0f32, 0.0, 6.0] {
            let mut bg: Vec<f32> = sine(16000, 100.0).iter().map(|v| v * 0.1).collect();
            let bg0 = bg.clone();
            let ev = sine(4000, 1000.0);
            mix_at_ebr(&mut bg, &ev, 2000, ebr);
            let added: Vec<f32> = bg.iter().zip(&bg0).map(|(a, b)| a - b).collect();
            assert!(added[..2000].iter().all(|&v| v == 0.0));
            let got = 20.0 * (rms(&added[2000..6000]) / rms(&bg0)).log10();
            assert!((got - ebr).abs() < 0.05, "{got} vs {ebr}");
        }
        // An event running past the end is cut.
        let mut bg = vec![0.1f32; 100];
        mix_at_ebr(&mut bg, &[1.0; 50], 80, 0.0);
        assert_eq!(bg.len(), 100);
    }

    #[test]
    fn filters_pass_and_stop_where_they_should() {
        let low = sine(16000, 100.0);
        let high = sine(16000, 6000.0);
        let r = |x: &[f32]| rms(&x[4000..]);
        assert!(r(&lowpass(&low, 1000.0)) > 0.6);
        assert!(r(&lowpass(&high, 300.0)) < 0.05);
        assert!(r(&highpass(&high, 300.0)) > 0.6);
        assert!(r(&highpass(&low, 3000.0)) < 0.05);
    }

    #[test]
    fn resampling_and_stretch_lengths() {
        let x = sine(16000, 440.0);
        assert_eq!(resample_linear(&x, 2.0).len(), 8000);
        assert_eq!(resample_linear(&x, 0.5).len(), 32000);
        let y = ola_stretch(&x, 12000);
        assert_eq!(y.len(), 12000);
        // Pitch kept: the zero-crossing rate in the middle is still about 880/s.
        let mid = &y[2000..10000];
        let zc = mid.windows(2).filter(|w| w[0] < 0.0 && w[1] >= 0.0).count() as f32;
        let rate = zc / (mid.len() as f32 / RATE);
        assert!((rate - 440.0).abs() < 30.0, "{rate}");
        // Reverberation adds a tail and keeps the direct sound.
        let mut rng = Rng::new(1);
        let r = reverb(&x[..1000], 0.2, 0.3, &mut rng);
        assert_eq!(r.len(), 1000 + 3200 - 1);
        assert!(rms(&r[1000..]) > 0.0);
    }

    #[test]
    fn synthetic_ratio_and_determinism() {
        let cfg = SyntheticConfig::default();
        let clips = synthetic_clips(&cfg, 7);
        let count = |c: &str| {
            clips
                .iter()
                .filter(|x| x.class == c && x.role == Role::Event)
                .count()
        };
        assert_eq!(
            (count("tone"), count("chirp"), count("noise_burst")),
            (40, 8, 4)
        );
        assert_eq!(synthetic_clips(&cfg, 7), clips);
        assert_ne!(synthetic_clips(&cfg, 8), clips);
        assert_eq!(
            class_list(&clips),
            vec!["background", "chirp", "noise_burst", "tone"]
        );
    }

    #[test]
    fn generation_is_deterministic_and_labelled() {
        let cfg = SyntheticConfig {
            unit: 1,
            backgrounds: 2,
            ..Default::default()
        };
        let clips = synthetic_clips(&cfg, 1);
        let classes = class_list(&clips);
        let ex = ExampleConfig {
            window_frames: 20,
            ..Default::default()
        };
        let fe = FrontendConfig::default();
        let a = generate(&clips, &classes, &ex, &fe, 3).unwrap();
        // 13 events x 2 windows, then round(26 * 0.5) background windows.
        assert_eq!(a.len(), 26 + 13);
        assert_eq!(a.class_counts(), vec![13, 4, 2, 20]);
        assert_eq!(a.features.len(), a.len() * 20 * 64);
        assert!(a.features.iter().all(|v| v.is_finite()));
        assert_eq!(generate(&clips, &classes, &ex, &fe, 3).unwrap(), a);
        assert_ne!(generate(&clips, &classes, &ex, &fe, 4).unwrap(), a);

        // Disk cache: written once, read back identical.
        let dir = tempfile::tempdir().unwrap();
        let b = generate_cached(&clips, &classes, &ex, &fe, 3, Some(dir.path())).unwrap();
        assert_eq!(b, a);
        let files: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let c = generate_cached(&clips, &classes, &ex, &fe, 3, Some(dir.path())).unwrap();
        assert_eq!(c, a);
        // Normalisation gives zero-mean, unit-variance bands.
        let mut n = a.clone();
        let (mu, sd) = n.band_stats();
        n.normalize(&mu, &sd);
        let (mu2, sd2) = n.band_stats();
        assert!(mu2.iter().all(|m| m.abs() < 1e-3));
        assert!(sd2.iter().all(|s| (s - 1.0).abs() < 1e-2));
    }
}
