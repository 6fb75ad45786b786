//! The log-mel frontend: the one piece of code that turns 16 kHz mono samples into feature
//! frames, for the runtime and the trainer alike.
//!
//! # The features, exactly
//!
//! With the default [`FrontendConfig`] (the design's contract):
//!
//! - input: mono `f32` samples at 16 000 Hz, nominally in [-1, 1]. Non-finite samples (NaN,
//!   ±inf) are replaced by 0.0 and counted ([`Frontend::nonfinite_samples`]).
//! - framing: frame `i` covers samples `[i * 160, i * 160 + 400)`; no padding at the start, and
//!   a frame is produced only once all of its 400 samples have arrived. Its centre lies at
//!   `(i * 160 + 200) / 16000` seconds ([`FrontendConfig::frame_center_s`]).
//! - window: *periodic* Hann of length N = 400, `w[n] = 0.5 - 0.5 cos(2 pi n / N)`.
//! - FFT: the windowed frame, zero-padded at the end to 512 points, real FFT; power spectrum
//!   `P[k] = |X[k]|^2` for bins k = 0..=256 (no normalisation), bin k at `k * 16000 / 512` Hz.
//! - mel scale (HTK): `mel(f) = 2595 log10(1 + f / 700)`. 66 points equally spaced in mel from
//!   `mel(125)` to `mel(7500)`, converted back to Hz: `f[0] .. f[65]`. Band `m` (0..64) is the
//!   triangle with feet at `f[m]`, `f[m + 2]` and apex 1.0 at `f[m + 1]`, evaluated at each
//!   bin's centre frequency: `W[m][k] = max(0, min((fk - f[m]) / (f[m+1] - f[m]),
//!   (f[m+2] - fk) / (f[m+2] - f[m+1])))`. No area normalisation.
//! - output: `feature[m] = ln(sum_k W[m][k] P[k] + 1e-6)`.
//! - optional (`running_norm_s = tau`, off by default): each band minus its running mean,
//!   `y[t][m] = x[t][m] - mu[t-1][m]` with `mu[-1] = x[0]` (the first frame gives zeros) and
//!   `mu[t] = mu[t-1] + a (x[t][m] - mu[t-1])`, `a = 1 - exp(-hop / tau)` (hop in seconds).
//!   The background's steady level and colour drop out and onsets stand out, whatever the
//!   microphone gain; a stream (and every [`Frontend::compute`] call) starts its own mean.
//!
//! `runtime/tests/reference/logmel_reference.py` computes the same thing independently in
//! numpy (float64); `tests/frontend_reference.rs` holds the two together within 1e-3.
//!
//! # Streaming
//!
//! [`Frontend`] is built once (FFT plan, window, sparse mel matrix, scratch buffers) and then
//! fed samples in chunks of any size with [`Frontend::push`]; it calls back once per completed
//! frame and never allocates after construction. [`Frontend::compute`] frames a whole signal at
//! once with the same per-frame kernel; both give bit-identical frames.

use std::fmt;
use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};
use serde::{Deserialize, Serialize};

/// The parameters of the log-mel features. The defaults are the design's contract; a model
/// file records the parameters it was trained with and the runtime builds its frontend from
/// them (refusing a model whose features it cannot compute, see [`FrontendConfig::validate`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FrontendConfig {
    /// Sample rate of the frontend's input, in Hz. Default 16000.
    pub sample_rate: u32,
    /// Window length in samples (25 ms). Default 400.
    pub window_length: usize,
    /// Hop between successive frames in samples (10 ms). Default 160.
    pub hop_length: usize,
    /// FFT size in points; the window is zero-padded to it. Default 512.
    pub fft_size: usize,
    /// Number of mel bands (the feature dimension). Default 64.
    pub n_mels: usize,
    /// Lower edge of the lowest mel band, in Hz. Default 125.
    pub f_min: f32,
    /// Upper edge of the highest mel band, in Hz. Default 7500.
    pub f_max: f32,
    /// Added to mel power before the natural log. Default 1e-6.
    pub log_floor: f32,
    /// Window function. Only `"hann_periodic"` is implemented.
    pub window: String,
    /// Mel scale. Only `"htk"` is implemented.
    pub mel_scale: String,
    /// When set, every band minus its running mean with this time constant in seconds (see
    /// the module documentation). Default none (plain log-mel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_norm_s: Option<f32>,
}

impl Default for FrontendConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            window_length: 400,
            hop_length: 160,
            fft_size: 512,
            n_mels: 64,
            f_min: 125.0,
            f_max: 7500.0,
            log_floor: 1e-6,
            window: "hann_periodic".to_string(),
            mel_scale: "htk".to_string(),
            running_norm_s: None,
        }
    }
}

/// A frontend configuration that cannot be computed, with the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unsupported frontend configuration: {0}")]
pub struct FrontendConfigError(pub String);

impl FrontendConfig {
    /// Checks that these parameters describe features this frontend can compute.
    pub fn validate(&self) -> Result<(), FrontendConfigError> {
        let err = |m: String| Err(FrontendConfigError(m));
        if self.window != "hann_periodic" {
            return err(format!("window {:?} (only \"hann_periodic\")", self.window));
        }
        if self.mel_scale != "htk" {
            return err(format!("mel scale {:?} (only \"htk\")", self.mel_scale));
        }
        if !(1000..=192_000).contains(&self.sample_rate) {
            return err(format!("sample rate {} Hz", self.sample_rate));
        }
        if self.window_length == 0 || self.hop_length == 0 || self.n_mels == 0 {
            return err("window, hop and mel band count must be positive".into());
        }
        if self.hop_length > self.window_length {
            return err(format!(
                "hop {} longer than window {}",
                self.hop_length, self.window_length
            ));
        }
        if self.fft_size < self.window_length || self.fft_size > 65_536 {
            return err(format!(
                "FFT size {} (must hold the {}-sample window, at most 65536)",
                self.fft_size, self.window_length
            ));
        }
        let nyquist = self.sample_rate as f32 / 2.0;
        if !(self.f_min >= 0.0 && self.f_min < self.f_max && self.f_max <= nyquist) {
            return err(format!(
                "mel range {}..{} Hz (needs 0 <= f_min < f_max <= {nyquist})",
                self.f_min, self.f_max
            ));
        }
        if !(self.log_floor > 0.0 && self.log_floor.is_finite()) {
            return err(format!("log floor {} (must be > 0)", self.log_floor));
        }
        if let Some(tau) = self.running_norm_s
            && !(tau > 0.0 && tau.is_finite())
        {
            return err(format!("running_norm_s {tau} (must be > 0 seconds)"));
        }
        let bands = mel_filterbank(self);
        if let Some(m) = bands.iter().position(|b| b.weights.is_empty()) {
            return err(format!(
                "mel band {m} covers no FFT bin: too many bands for the FFT size"
            ));
        }
        Ok(())
    }

    /// Time in seconds of the centre of frame `index` (from the start of the stream).
    pub fn frame_center_s(&self, index: u64) -> f64 {
        (index as f64 * self.hop_length as f64 + self.window_length as f64 / 2.0)
            / self.sample_rate as f64
    }

    /// Time in seconds of the first sample of frame `index`.
    pub fn frame_start_s(&self, index: u64) -> f64 {
        index as f64 * self.hop_length as f64 / self.sample_rate as f64
    }

    /// Hop length in seconds.
    pub fn hop_s(&self) -> f64 {
        self.hop_length as f64 / self.sample_rate as f64
    }

    /// Number of frames a signal of `n_samples` yields.
    pub fn n_frames(&self, n_samples: usize) -> usize {
        if n_samples < self.window_length {
            0
        } else {
            (n_samples - self.window_length) / self.hop_length + 1
        }
    }
}

impl fmt::Display for FrontendConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "log-mel {} bands {}-{} Hz, {} Hz, window {} ({}), hop {}, FFT {}, {} mel, ln(x + {:e})",
            self.n_mels,
            self.f_min,
            self.f_max,
            self.sample_rate,
            self.window_length,
            self.window,
            self.hop_length,
            self.fft_size,
            self.mel_scale,
            self.log_floor
        )?;
        if let Some(tau) = self.running_norm_s {
            write!(f, ", minus running mean ({tau} s)")?;
        }
        Ok(())
    }
}

/// HTK mel scale.
pub fn hz_to_mel(hz: f64) -> f64 {
    2595.0 * (1.0 + hz / 700.0).log10()
}

/// Inverse of [`hz_to_mel`].
pub fn mel_to_hz(mel: f64) -> f64 {
    700.0 * (10f64.powf(mel / 2595.0) - 1.0)
}

/// One mel band: its weights over the contiguous FFT bins `first_bin..first_bin + len`.
#[derive(Debug, Clone)]
struct MelBand {
    first_bin: usize,
    weights: Vec<f32>,
}

/// The sparse mel matrix (see the module documentation for the formula).
fn mel_filterbank(cfg: &FrontendConfig) -> Vec<MelBand> {
    let n_bins = cfg.fft_size / 2 + 1;
    let (mel_lo, mel_hi) = (hz_to_mel(cfg.f_min as f64), hz_to_mel(cfg.f_max as f64));
    let edges: Vec<f64> = (0..cfg.n_mels + 2)
        .map(|i| mel_to_hz(mel_lo + (mel_hi - mel_lo) * i as f64 / (cfg.n_mels + 1) as f64))
        .collect();
    let bin_hz = cfg.sample_rate as f64 / cfg.fft_size as f64;
    (0..cfg.n_mels)
        .map(|m| {
            let (lo, centre, hi) = (edges[m], edges[m + 1], edges[m + 2]);
            let w: Vec<(usize, f32)> = (0..n_bins)
                .filter_map(|k| {
                    let f = k as f64 * bin_hz;
                    let v = ((f - lo) / (centre - lo)).min((hi - f) / (hi - centre));
                    (v > 0.0).then_some((k, v as f32))
                })
                .collect();
            MelBand {
                first_bin: w.first().map_or(0, |&(k, _)| k),
                weights: w.into_iter().map(|(_, v)| v).collect(),
            }
        })
        .collect()
}

/// The per-frame kernel and its scratch: window, FFT, power, mel, log.
struct Kernel {
    n_mels: usize,
    log_floor: f32,
    window: Vec<f32>,
    bands: Vec<MelBand>,
    fft: Arc<dyn RealToComplex<f32>>,
    fft_in: Vec<f32>,
    fft_out: Vec<Complex<f32>>,
    fft_scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
}

impl Kernel {
    fn new(cfg: &FrontendConfig) -> Self {
        let n = cfg.window_length;
        let window = (0..n)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos()) as f32)
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(cfg.fft_size);
        Self {
            n_mels: cfg.n_mels,
            log_floor: cfg.log_floor,
            window,
            bands: mel_filterbank(cfg),
            fft_in: fft.make_input_vec(),
            fft_out: fft.make_output_vec(),
            fft_scratch: fft.make_scratch_vec(),
            power: vec![0.0; cfg.fft_size / 2 + 1],
            fft,
        }
    }

    /// Computes one frame of features from exactly `window_length` samples into `out`
    /// (`n_mels` values). Samples must already be finite.
    fn frame(&mut self, samples: &[f32], out: &mut [f32]) {
        debug_assert_eq!(samples.len(), self.window.len());
        debug_assert_eq!(out.len(), self.n_mels);
        let n = self.window.len();
        for ((d, &s), &w) in self.fft_in[..n].iter_mut().zip(samples).zip(&self.window) {
            *d = s * w;
        }
        // The FFT uses its input as scratch space: restore the zero padding every frame.
        self.fft_in[n..].fill(0.0);
        self.fft
            .process_with_scratch(&mut self.fft_in, &mut self.fft_out, &mut self.fft_scratch)
            .expect("FFT buffers are sized by the plan");
        for (p, c) in self.power.iter_mut().zip(&self.fft_out) {
            *p = c.re * c.re + c.im * c.im;
        }
        for (o, band) in out.iter_mut().zip(&self.bands) {
            let p = &self.power[band.first_bin..band.first_bin + band.weights.len()];
            let mut acc = 0.0f32;
            for (&w, &x) in band.weights.iter().zip(p) {
                acc += w * x;
            }
            *o = (acc + self.log_floor).ln();
        }
    }
}

/// The running-mean subtraction of [`FrontendConfig::running_norm_s`]: one mean per band.
#[derive(Debug, Clone)]
struct RunningNorm {
    a: f32,
    mean: Vec<f32>,
    started: bool,
}

impl RunningNorm {
    fn new(cfg: &FrontendConfig) -> Option<Self> {
        cfg.running_norm_s.map(|tau| Self {
            a: 1.0 - (-(cfg.hop_s() / tau as f64)).exp() as f32,
            mean: vec![0.0; cfg.n_mels],
            started: false,
        })
    }

    /// Normalises one frame in place and updates the means.
    fn apply(&mut self, frame: &mut [f32]) {
        if !self.started {
            self.mean.copy_from_slice(frame);
            self.started = true;
        }
        for (x, m) in frame.iter_mut().zip(self.mean.iter_mut()) {
            let d = *x - *m;
            *m += self.a * d;
            *x = d;
        }
    }
}

/// Streaming log-mel frontend. See the module documentation.
pub struct Frontend {
    cfg: FrontendConfig,
    kernel: Kernel,
    norm: Option<RunningNorm>,
    /// The last `window_length` (at most) samples, oldest first.
    buf: Vec<f32>,
    filled: usize,
    frame: Vec<f32>,
    frames_out: u64,
    samples_in: u64,
    nonfinite: u64,
}

impl fmt::Debug for Frontend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frontend")
            .field("cfg", &self.cfg)
            .field("frames_out", &self.frames_out)
            .field("samples_in", &self.samples_in)
            .finish_non_exhaustive()
    }
}

impl Frontend {
    /// Builds a frontend: plans the FFT and allocates every buffer it will use.
    pub fn new(cfg: FrontendConfig) -> Result<Self, FrontendConfigError> {
        cfg.validate()?;
        Ok(Self {
            kernel: Kernel::new(&cfg),
            norm: RunningNorm::new(&cfg),
            buf: vec![0.0; cfg.window_length],
            filled: 0,
            frame: vec![0.0; cfg.n_mels],
            frames_out: 0,
            samples_in: 0,
            nonfinite: 0,
            cfg,
        })
    }

    /// The parameters this frontend computes.
    pub fn config(&self) -> &FrontendConfig {
        &self.cfg
    }

    /// Pushes samples; calls `on_frame(index, features)` for every frame they complete, in
    /// order. `index` counts frames from the start of the stream (see
    /// [`FrontendConfig::frame_center_s`]). Never allocates.
    pub fn push(&mut self, samples: &[f32], mut on_frame: impl FnMut(u64, &[f32])) {
        let (win, hop) = (self.cfg.window_length, self.cfg.hop_length);
        let mut rest = samples;
        while !rest.is_empty() {
            let take = rest.len().min(win - self.filled);
            let (now, later) = rest.split_at(take);
            for (d, &s) in self.buf[self.filled..self.filled + take]
                .iter_mut()
                .zip(now)
            {
                *d = if s.is_finite() {
                    s
                } else {
                    self.nonfinite += 1;
                    0.0
                };
            }
            self.filled += take;
            self.samples_in += take as u64;
            rest = later;
            if self.filled == win {
                self.kernel.frame(&self.buf, &mut self.frame);
                if let Some(n) = &mut self.norm {
                    n.apply(&mut self.frame);
                }
                on_frame(self.frames_out, &self.frame);
                self.frames_out += 1;
                self.buf.copy_within(hop.., 0);
                self.filled = win - hop;
            }
        }
    }

    /// Computes the frames of a whole signal at once (row-major, `n_frames * n_mels`), framing
    /// the slice directly. Does not touch the streaming state. Non-finite samples are replaced
    /// by 0.0 as in [`Frontend::push`]; the second value counts them.
    pub fn compute(&mut self, signal: &[f32]) -> (Vec<f32>, u64) {
        let (win, hop, n_mels) = (self.cfg.window_length, self.cfg.hop_length, self.cfg.n_mels);
        let n_frames = self.cfg.n_frames(signal.len());
        let mut out = vec![0.0; n_frames * n_mels];
        let mut clean = vec![0.0; win];
        let mut norm = RunningNorm::new(&self.cfg);
        for (i, row) in out.chunks_exact_mut(n_mels).enumerate() {
            let frame = &signal[i * hop..i * hop + win];
            let src = if frame.iter().all(|s| s.is_finite()) {
                frame
            } else {
                for (d, &s) in clean.iter_mut().zip(frame) {
                    *d = if s.is_finite() { s } else { 0.0 };
                }
                &clean[..]
            };
            self.kernel.frame(src, row);
            if let Some(n) = &mut norm {
                n.apply(row);
            }
        }
        let nonfinite = signal.iter().filter(|s| !s.is_finite()).count() as u64;
        (out, nonfinite)
    }

    /// Frames produced since construction or the last [`Frontend::reset`].
    pub fn frames_out(&self) -> u64 {
        self.frames_out
    }

    /// Samples pushed since construction or the last [`Frontend::reset`].
    pub fn samples_in(&self) -> u64 {
        self.samples_in
    }

    /// Non-finite samples (NaN, ±inf) replaced by 0.0 since construction or the last reset.
    pub fn nonfinite_samples(&self) -> u64 {
        self.nonfinite
    }

    /// Forgets the stream: the next sample pushed is the first of a new stream.
    pub fn reset(&mut self) {
        if let Some(n) = &mut self.norm {
            n.started = false;
        }
        self.filled = 0;
        self.frames_out = 0;
        self.samples_in = 0;
        self.nonfinite = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mel_scale_round_trips_and_matches_htk_values() {
        assert!((hz_to_mel(1000.0) - 999.985_6).abs() < 1e-3);
        for hz in [0.0, 125.0, 1000.0, 7500.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-9);
        }
    }

    #[test]
    fn filterbank_bands_are_triangles_inside_the_range() {
        let cfg = FrontendConfig::default();
        let bands = mel_filterbank(&cfg);
        assert_eq!(bands.len(), 64);
        let bin_hz = 16000.0 / 512.0;
        for b in &bands {
            assert!(!b.weights.is_empty());
            assert!(b.weights.iter().all(|&w| w > 0.0 && w <= 1.0));
            assert!(b.first_bin as f32 * bin_hz > 125.0);
            assert!(((b.first_bin + b.weights.len() - 1) as f32) * bin_hz < 7500.0);
        }
        // Lowest band centre: mel(125) + (mel(7500) - mel(125)) / 65 = 224.99 mel = 154.67 Hz.
        let c = mel_to_hz(hz_to_mel(125.0) + (hz_to_mel(7500.0) - hz_to_mel(125.0)) / 65.0);
        assert!((c - 154.669).abs() < 0.01, "{c}");
    }

    #[test]
    fn frame_count_and_times() {
        let cfg = FrontendConfig::default();
        assert_eq!(cfg.n_frames(399), 0);
        assert_eq!(cfg.n_frames(400), 1);
        assert_eq!(cfg.n_frames(16_000), 98);
        assert!((cfg.frame_center_s(0) - 0.0125).abs() < 1e-12);
        assert!((cfg.frame_center_s(100) - 1.0125).abs() < 1e-12);
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let bad = |f: fn(&mut FrontendConfig), needle: &str| {
            let mut c = FrontendConfig::default();
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{e:?} lacks {needle:?}");
        };
        bad(|c| c.window = "hamming".into(), "window");
        bad(|c| c.mel_scale = "slaney".into(), "mel scale");
        bad(|c| c.fft_size = 256, "FFT size");
        bad(|c| c.f_max = 9000.0, "mel range");
        bad(|c| c.hop_length = 500, "hop");
        bad(|c| c.n_mels = 400, "covers no FFT bin");
        bad(|c| c.log_floor = 0.0, "log floor");
        bad(|c| c.running_norm_s = Some(0.0), "running_norm_s");
        bad(|c| c.running_norm_s = Some(f32::NAN), "running_norm_s");
        FrontendConfig::default().validate().unwrap();
    }

    #[test]
    fn a_sine_peaks_in_the_band_around_its_frequency() {
        let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
        let sig: Vec<f32> = (0..4000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin() * 0.5)
            .collect();
        let (feats, _) = fe.compute(&sig);
        let row = &feats[..64];
        let best = (0..64).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap();
        let edges: Vec<f64> = (0..66)
            .map(|i| {
                mel_to_hz(
                    hz_to_mel(125.0) + (hz_to_mel(7500.0) - hz_to_mel(125.0)) * i as f64 / 65.0,
                )
            })
            .collect();
        assert!(
            edges[best] < 1000.0 && 1000.0 < edges[best + 2],
            "band {best}"
        );
    }

    #[test]
    fn silence_gives_the_log_floor() {
        let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
        let (feats, _) = fe.compute(&[0.0; 1600]);
        assert!(feats.iter().all(|&v| (v - 1e-6f32.ln()).abs() < 1e-6));
    }

    #[test]
    fn running_norm_removes_the_steady_level_and_keeps_onsets() {
        let cfg = FrontendConfig {
            running_norm_s: Some(0.5),
            ..Default::default()
        };
        let mut fe = Frontend::new(cfg.clone()).unwrap();
        // 3 s of a quiet 1 kHz tone, then the tone 20 dB louder for 1 s.
        let sig: Vec<f32> = (0..64_000)
            .map(|i| {
                let g = if i < 48_000 { 0.01 } else { 0.1 };
                (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin() * g
            })
            .collect();
        let (feats, _) = fe.compute(&sig);
        let n = cfg.n_frames(sig.len());
        assert_eq!(feats.len(), n * 64);
        // The first frame is all zeros; a steady tone decays to (almost) nothing.
        assert!(feats[..64].iter().all(|&v| v == 0.0));
        let steady = 290 * 64;
        let worst = feats[steady..steady + 64]
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(worst < 0.2, "{worst}");
        // The step up is ln(100) ~ 4.6 in the tone's band, just after it.
        let plain = Frontend::new(FrontendConfig::default())
            .unwrap()
            .compute(&sig)
            .0;
        let band = (0..64)
            .max_by(|&a, &b| plain[a].total_cmp(&plain[b]))
            .unwrap();
        let after = (48_000 / 160) * 64 + 64;
        assert!(feats[after + band] > 4.0, "{}", feats[after + band]);
        // Streaming gives the same frames as compute, and a reset starts a new mean.
        for _ in 0..2 {
            fe.reset();
            let mut streamed = Vec::new();
            for chunk in sig.chunks(777) {
                fe.push(chunk, |_, f| streamed.extend_from_slice(f));
            }
            assert_eq!(streamed, feats);
        }
        // Off by default and left out of the metadata, so older model files read the same.
        let json = serde_json::to_string(&FrontendConfig::default()).unwrap();
        assert!(!json.contains("running_norm"), "{json}");
        let back: FrontendConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        assert!(cfg.to_string().contains("minus running mean (0.5 s)"));
    }
}
