//! Procedural sound synthesisers for classes the real data lacks or holds too few of.
//!
//! * [`baby_cry`]: an infant cry. There is no real recording of one in the development data,
//!   so the `baby_cry` class is trained on these alone (the model card says so). The model
//!   follows the acoustic descriptions of infant crying: a voiced source whose fundamental
//!   lies around 300–600 Hz and follows a rising-then-falling melody within each expiratory
//!   burst, with jitter (cycle-to-cycle pitch noise), shimmer (amplitude noise) and
//!   occasional hyperphonation (a jump of the fundamental to 1–1.5 kHz); harmonics shaped by
//!   three formants of a short vocal tract (around 1.0, 3.0 and 5.0 kHz, with random offsets);
//!   breath noise; bursts of 0.5–1.5 s separated by short inhalation gaps that carry a quiet
//!   noisy inspiratory sound.
//! * [`glass_break`]: breaking glass, an addition to the few real clips (never a replacement):
//!   an impact transient (a click and a short noise burst), then many small fragments, each a
//!   sum of inharmonic, quickly decaying high partials (2–7 kHz), scattered over a few hundred
//!   milliseconds with decaying density.
//!
//! Both are deterministic for a seed; every parameter is in [`BabyCryConfig`] /
//! [`GlassConfig`], which the training configuration holds (`[data.baby_cry]`,
//! `[data.glass]`).

use serde::{Deserialize, Serialize};

use crate::data::{Clip, Role};
use crate::examples::Rng;

const RATE: f32 = 16_000.0;
const TAU: f32 = 2.0 * std::f32::consts::PI;

/// Settings of the infant-cry synthesiser (`[data.baby_cry]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BabyCryConfig {
    /// Class name of the clips. Default `"baby_cry"`.
    pub class: String,
    /// Clips to make. Default 40.
    pub count: usize,
    /// Groups the clips are spread over (`cry<i % groups>`), for the validation split.
    /// Default 5.
    pub groups: usize,
    /// Seed (mixed with the training seed). Default 0.
    pub seed: u64,
    /// Cry bursts per clip, inclusive range. Default [1, 3].
    pub bursts: [usize; 2],
    /// Length of one expiratory burst, seconds. Default [0.5, 1.5].
    pub burst_s: [f32; 2],
    /// Inhalation gap between bursts, seconds. Default [0.15, 0.4].
    pub gap_s: [f32; 2],
    /// Base fundamental, Hz (drawn per clip). Default [300, 600].
    pub f0_hz: [f32; 2],
    /// Rise of the melody above the base at its peak, as a fraction of the base. Default
    /// [0.1, 0.5].
    pub melody_rise: [f32; 2],
    /// Jitter: standard deviation of the relative pitch noise (low-passed). Default 0.02.
    pub jitter: f32,
    /// Shimmer: standard deviation of the relative amplitude noise (low-passed). Default
    /// 0.1.
    pub shimmer: f32,
    /// Probability that a burst has a hyperphonated stretch. Default 0.2.
    pub hyperphonation_prob: f32,
    /// Harmonics of the voiced source. Default 20.
    pub harmonics: usize,
    /// Spectral tilt of the source, dB per octave (negative). Default -9.
    pub tilt_db_per_octave: f32,
    /// Formant centres, Hz (each shifted by up to ±`formant_jitter`). Default [1000, 3000,
    /// 5000].
    pub formants_hz: [f32; 3],
    /// Relative random shift of each formant per clip. Default 0.15.
    pub formant_jitter: f32,
    /// Formant bandwidth, Hz. Default 500.
    pub formant_bw_hz: f32,
    /// Breath noise level relative to the voiced part, dB. Default -20.
    pub breath_db: f32,
}

impl Default for BabyCryConfig {
    fn default() -> Self {
        Self {
            class: "baby_cry".into(),
            count: 40,
            groups: 5,
            seed: 0,
            bursts: [1, 3],
            burst_s: [0.5, 1.5],
            gap_s: [0.15, 0.4],
            f0_hz: [300.0, 600.0],
            melody_rise: [0.1, 0.5],
            jitter: 0.02,
            shimmer: 0.1,
            hyperphonation_prob: 0.2,
            harmonics: 20,
            tilt_db_per_octave: -9.0,
            formants_hz: [1000.0, 3000.0, 5000.0],
            formant_jitter: 0.15,
            formant_bw_hz: 500.0,
            breath_db: -20.0,
        }
    }
}

/// Settings of the breaking-glass synthesiser (`[data.glass]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GlassConfig {
    /// Class name of the clips. Default `"glass_break"`.
    pub class: String,
    /// Clips to make. Default 20.
    pub count: usize,
    /// Groups the clips are spread over (`glass<i % groups>`). Default 5.
    pub groups: usize,
    /// Seed (mixed with the training seed). Default 0.
    pub seed: u64,
    /// Length of the clip, seconds. Default [0.4, 1.2].
    pub length_s: [f32; 2],
    /// Fragments (tinkles) per clip. Default [8, 40].
    pub fragments: [usize; 2],
    /// Range of the fragments' partials, Hz. Default [2000, 7000].
    pub partial_hz: [f32; 2],
    /// Partials per fragment. Default 4.
    pub partials: usize,
    /// Decay time constant of a fragment, seconds. Default [0.01, 0.06].
    pub fragment_decay_s: [f32; 2],
    /// Decay time constant of the impact's noise burst, seconds. Default [0.01, 0.04].
    pub impact_decay_s: [f32; 2],
}

impl Default for GlassConfig {
    fn default() -> Self {
        Self {
            class: "glass_break".into(),
            count: 20,
            groups: 5,
            seed: 0,
            length_s: [0.4, 1.2],
            fragments: [8, 40],
            partial_hz: [2000.0, 7000.0],
            partials: 4,
            fragment_decay_s: [0.01, 0.06],
            impact_decay_s: [0.01, 0.04],
        }
    }
}

/// A two-pole resonator (band-pass) with centre `f` and bandwidth `bw`, unit peak gain.
struct Resonator {
    a1: f32,
    a2: f32,
    g: f32,
    y1: f32,
    y2: f32,
}

impl Resonator {
    fn new(f: f32, bw: f32) -> Self {
        let r = (-std::f32::consts::PI * bw / RATE).exp();
        let w = TAU * f / RATE;
        Self {
            a1: 2.0 * r * w.cos(),
            a2: -r * r,
            g: 1.0 - r,
            y1: 0.0,
            y2: 0.0,
        }
    }
    fn step(&mut self, x: f32) -> f32 {
        let y = self.g * x + self.a1 * self.y1 + self.a2 * self.y2;
        self.y2 = self.y1;
        self.y1 = y;
        y
    }
}

/// Low-passed Gaussian noise (one pole at `fc` Hz), unit-ish variance.
struct SlowNoise {
    a: f32,
    y: f32,
    scale: f32,
}

impl SlowNoise {
    fn new(fc: f32) -> Self {
        let a = (-TAU * fc / RATE).exp();
        Self {
            a,
            y: 0.0,
            scale: ((1.0 - a * a) / (1.0 - a).powi(2)).sqrt(),
        }
    }
    fn step(&mut self, rng: &mut Rng) -> f32 {
        self.y = self.a * self.y + (1.0 - self.a) * rng.normal();
        self.y * self.scale
    }
}

fn peak_normalise(x: &mut [f32], peak: f32) {
    let m = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if m > 0.0 {
        x.iter_mut().for_each(|v| *v *= peak / m);
    }
}

/// One infant cry (mono, 16 kHz), deterministic for `rng`'s state.
pub fn baby_cry(cfg: &BabyCryConfig, rng: &mut Rng) -> Vec<f32> {
    let base = rng.range(cfg.f0_hz[0], cfg.f0_hz[1]);
    let formants: Vec<(f32, f32)> = cfg
        .formants_hz
        .iter()
        .map(|&f| {
            let f = f * (1.0 + rng.range(-cfg.formant_jitter, cfg.formant_jitter));
            (f.min(RATE * 0.45), cfg.formant_bw_hz * rng.range(0.7, 1.4))
        })
        .collect();
    let n_bursts = cfg.bursts[0] + rng.below(cfg.bursts[1].saturating_sub(cfg.bursts[0]) + 1);
    let breath_gain = 10f32.powf(cfg.breath_db / 20.0);
    let mut out = Vec::new();
    for b in 0..n_bursts {
        let n = (rng.range(cfg.burst_s[0], cfg.burst_s[1]) * RATE) as usize;
        let rise = rng.range(cfg.melody_rise[0], cfg.melody_rise[1]);
        let peak_at = rng.range(0.25, 0.6);
        let hyper = rng.chance(cfg.hyperphonation_prob);
        let (h0, h1) = {
            let a = rng.range(0.2, 0.6);
            (a, a + rng.range(0.1, 0.3))
        };
        let hyper_f = rng.range(1000.0, 1500.0);
        let mut jit = SlowNoise::new(30.0);
        let mut shim = SlowNoise::new(20.0);
        let mut res: Vec<Resonator> = formants
            .iter()
            .map(|&(f, w)| Resonator::new(f, w))
            .collect();
        let mut phase = 0.0f32;
        let mut burst = Vec::with_capacity(n);
        let attack = (0.05 * RATE) as usize;
        let release = (0.12 * RATE) as usize;
        for i in 0..n {
            let u = i as f32 / n as f32;
            // Rising-falling melody: a raised-cosine bump peaking at `peak_at`.
            let shape = if u < peak_at {
                0.5 - 0.5 * (std::f32::consts::PI * u / peak_at).cos()
            } else {
                0.5 + 0.5 * (std::f32::consts::PI * (u - peak_at) / (1.0 - peak_at)).cos()
            };
            let mut f0 = base * (1.0 + rise * shape) * (1.0 + cfg.jitter * jit.step(rng));
            if hyper && u > h0 && u < h1 {
                f0 = hyper_f * (1.0 + cfg.jitter * jit.step(rng));
            }
            phase = (phase + TAU * f0 / RATE) % TAU;
            let mut v = 0.0;
            for h in 1..=cfg.harmonics {
                let fh = f0 * h as f32;
                if fh > RATE * 0.48 {
                    break;
                }
                let g = 10f32.powf(cfg.tilt_db_per_octave * (h as f32).log2() / 20.0);
                v += g * (phase * h as f32).sin();
            }
            let env = (i as f32 / attack as f32)
                .min(1.0)
                .min((n - i) as f32 / release as f32)
                * (1.0 + cfg.shimmer * shim.step(rng)).max(0.0);
            let src = env * (v + breath_gain * 3.0 * rng.normal());
            let shaped: f32 = res.iter_mut().map(|r| r.step(src)).sum::<f32>() * 0.7 + 0.3 * src;
            burst.push(shaped);
        }
        peak_normalise(&mut burst, rng.range(0.5, 0.9));
        out.extend_from_slice(&burst);
        if b + 1 < n_bursts {
            // Inhalation: a quiet, noisy, high-passed in-breath.
            let g = (rng.range(cfg.gap_s[0], cfg.gap_s[1]) * RATE) as usize;
            let mut r = Resonator::new(rng.range(1500.0, 3000.0), 1500.0);
            let level = rng.range(0.01, 0.05);
            for i in 0..g {
                let env = (std::f32::consts::PI * i as f32 / g as f32).sin();
                out.push(level * env * r.step(rng.normal()) * 4.0);
            }
        }
    }
    out
}

/// One breaking glass (mono, 16 kHz), deterministic for `rng`'s state.
pub fn glass_break(cfg: &GlassConfig, rng: &mut Rng) -> Vec<f32> {
    let n = (rng.range(cfg.length_s[0], cfg.length_s[1]) * RATE) as usize;
    let mut out = vec![0.0f32; n];
    // Impact: a click and a bright noise burst.
    let decay = rng.range(cfg.impact_decay_s[0], cfg.impact_decay_s[1]);
    let mut hp_prev = 0.0f32;
    for (i, o) in out
        .iter_mut()
        .enumerate()
        .take((decay * 6.0 * RATE) as usize)
    {
        let x = rng.normal();
        let hp = x - hp_prev;
        hp_prev = x;
        *o += 0.8 * hp * (-(i as f32) / (decay * RATE)).exp();
    }
    out[0] += 1.0;
    // Fragments: onsets denser at the start (exponential spacing), each inharmonic partials.
    let k = cfg.fragments[0] + rng.below(cfg.fragments[1].saturating_sub(cfg.fragments[0]) + 1);
    for _ in 0..k {
        let t = ((-rng.f32().max(1e-6).ln()) * 0.12 * RATE) as usize;
        if t >= n {
            continue;
        }
        let amp = rng.range(0.05, 0.5) * (-(t as f32) / (0.3 * RATE)).exp();
        let d = rng.range(cfg.fragment_decay_s[0], cfg.fragment_decay_s[1]);
        let len = ((d * 6.0 * RATE) as usize).min(n - t);
        for _ in 0..cfg.partials.max(1) {
            let f = rng.range(cfg.partial_hz[0], cfg.partial_hz[1]);
            let ph = rng.range(0.0, TAU);
            let a = amp * rng.range(0.3, 1.0);
            for j in 0..len {
                let tt = j as f32 / RATE;
                out[t + j] += a * (TAU * f * tt + ph).sin() * (-tt / d).exp();
            }
        }
    }
    peak_normalise(&mut out, rng.range(0.5, 0.9));
    out
}

fn clips_of(
    count: usize,
    groups: usize,
    prefix: &str,
    class: &str,
    seed: u64,
    make: impl Fn(&mut Rng) -> Vec<f32>,
) -> Vec<Clip> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| Clip {
            name: format!("synthetic/{prefix}/{i}"),
            class: class.to_string(),
            role: Role::Event,
            group: format!("{prefix}{}", i % groups.max(1)),
            kind: format!("synthetic_{class}"),
            samples: make(&mut rng),
        })
        .collect()
}

/// The configured number of cries, in groups `cry<i % groups>`.
pub fn baby_cry_clips(cfg: &BabyCryConfig, seed: u64) -> Vec<Clip> {
    clips_of(
        cfg.count,
        cfg.groups,
        "cry",
        &cfg.class,
        seed ^ cfg.seed ^ 0x6372_7900,
        |r| baby_cry(cfg, r),
    )
}

/// The configured number of glass breaks, in groups `glass<i % groups>`.
pub fn glass_clips(cfg: &GlassConfig, seed: u64) -> Vec<Clip> {
    clips_of(
        cfg.count,
        cfg.groups,
        "glass",
        &cfg.class,
        seed ^ cfg.seed ^ 0x676c_6173,
        |r| glass_break(cfg, r),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use hark::frontend::{Frontend, FrontendConfig};

    /// Fundamental by autocorrelation: the lag of the highest normalised autocorrelation
    /// between 100 Hz and 2 kHz (the shortest lag within 10 % of the best).
    fn pitch_hz(x: &[f32]) -> f32 {
        let ac = |lag: usize| -> f32 {
            let n = x.len() - lag;
            let num: f32 = (0..n).map(|i| x[i] * x[i + lag]).sum();
            let den: f32 = (0..n).map(|i| x[i] * x[i]).sum::<f32>().max(1e-12);
            num / den
        };
        let (lo, hi) = ((RATE / 2000.0) as usize, (RATE / 100.0) as usize);
        let acs: Vec<f32> = (lo..=hi).map(ac).collect();
        let max = acs.iter().cloned().fold(f32::MIN, f32::max);
        // The first lag near the maximum, so that twice the period does not win a tie.
        let first = acs.iter().position(|&a| a >= 0.9 * max).unwrap();
        RATE / (lo + first) as f32
    }

    #[test]
    fn cry_is_deterministic_bounded_and_voiced_in_range() {
        let cfg = BabyCryConfig::default();
        let a = baby_cry_clips(&cfg, 3);
        let b = baby_cry_clips(&cfg, 3);
        assert_eq!(a, b);
        assert_ne!(a[0].samples, a[1].samples);
        assert_eq!(a.len(), 40);
        for c in &a {
            let secs = c.samples.len() as f32 / RATE;
            assert!(
                (0.5..=1.5 * 3.0 + 0.4 * 2.0 + 0.01).contains(&secs),
                "{secs}"
            );
            assert!(c.samples.iter().all(|v| v.is_finite() && v.abs() <= 1.0));
        }
        // The fundamental lies in the configured range (harmonics are weaker by the tilt),
        // when no hyperphonation is drawn.
        let cfg = BabyCryConfig {
            hyperphonation_prob: 0.0,
            melody_rise: [0.0, 0.0],
            bursts: [1, 1],
            jitter: 0.0,
            ..cfg
        };
        let mut rng = Rng::new(9);
        for _ in 0..4 {
            let x = baby_cry(&cfg, &mut rng);
            let mid = &x[x.len() / 4..x.len() / 4 + 1024];
            let f = pitch_hz(mid);
            assert!((280.0..=620.0).contains(&f), "pitch {f} Hz");
        }
    }

    #[test]
    fn cry_bursts_are_separated_by_quiet_gaps() {
        let cfg = BabyCryConfig {
            bursts: [3, 3],
            ..Default::default()
        };
        let mut rng = Rng::new(1);
        let x = baby_cry(&cfg, &mut rng);
        // RMS in 50 ms blocks: some blocks are far quieter than the loudest (the gaps).
        let blocks: Vec<f32> = x
            .chunks(800)
            .map(|c| (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32).sqrt())
            .collect();
        let max = blocks.iter().cloned().fold(0.0, f32::max);
        let quiet = blocks.iter().filter(|&&b| b < max * 0.1).count();
        assert!(quiet >= 2, "{quiet} quiet blocks of {}", blocks.len());
    }

    #[test]
    fn glass_is_deterministic_and_bright() {
        let cfg = GlassConfig::default();
        let a = glass_clips(&cfg, 5);
        assert_eq!(a, glass_clips(&cfg, 5));
        assert_eq!(a.len(), 20);
        // Most of the energy is above 2 kHz: compare the log-mel bands.
        let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
        let fc = FrontendConfig::default();
        let (feats, _) = fe.compute(&a[0].samples);
        let frames = feats.len() / fc.n_mels;
        let (mut lo, mut hi) = (0.0f64, 0.0f64);
        for t in 0..frames {
            for m in 0..fc.n_mels {
                let e = (feats[t * fc.n_mels + m] as f64).exp();
                if m < fc.n_mels / 2 {
                    lo += e;
                } else {
                    hi += e;
                }
            }
        }
        assert!(hi > 3.0 * lo, "high {hi} low {lo}");
    }
}
