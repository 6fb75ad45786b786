//! Sound level in dBFS: the RMS of each hop of samples, and a smoothed level.
//!
//! `level = 20 log10(rms)` with full scale at 1.0: a full-scale square wave reads 0 dBFS and a
//! full-scale sine -3.01 dBFS (this is not the AES17 convention, which reads the sine as 0).
//! Silence reads [`SILENCE_DBFS`], the floor below which every level is clamped.
//!
//! The smoothed level is an exponential moving average of the *mean square* (power), not of
//! the decibels, with time constant `level_smoothing` seconds
//! ([`crate::postprocess::PostprocessConfig::level_smoothing`]): a block of `n` samples moves
//! it by `a = 1 - exp(-n / (sample_rate * tau))` towards the block's power. The first block
//! of a stream sets it directly. Nothing is allocated.

use crate::config::ConfigError;

/// The lowest level reported, in dBFS (the level of digital silence).
pub const SILENCE_DBFS: f32 = -120.0;

/// Converts a mean square (power, full scale 1.0) to dBFS, clamped at [`SILENCE_DBFS`].
pub fn power_to_dbfs(power: f64) -> f32 {
    if power > 0.0 {
        ((10.0 * power.log10()) as f32).max(SILENCE_DBFS)
    } else {
        SILENCE_DBFS
    }
}

/// Tracks the level of one stream; see the module documentation.
#[derive(Debug, Clone)]
pub struct LevelMeter {
    sample_rate: f64,
    time_constant: f64,
    last_power: f64,
    smoothed_power: f64,
    primed: bool,
}

impl LevelMeter {
    /// A meter for samples at `sample_rate` Hz with a smoothing time constant of
    /// `time_constant_s` seconds (0: the smoothed level is the last block's). Errors name
    /// the field (`postprocess.level_smoothing`, or `sample_rate`).
    pub fn new(sample_rate: u32, time_constant_s: f64) -> Result<Self, ConfigError> {
        let invalid = |field: &str, problem: String| ConfigError::Invalid {
            path: None,
            field: field.into(),
            problem,
        };
        if sample_rate == 0 {
            return Err(invalid("sample_rate", "must be above 0 Hz".into()));
        }
        if !(time_constant_s.is_finite() && time_constant_s >= 0.0) {
            return Err(invalid(
                "postprocess.level_smoothing",
                format!("{time_constant_s} must be 0 s or more"),
            ));
        }
        Ok(Self {
            sample_rate: sample_rate as f64,
            time_constant: time_constant_s,
            last_power: 0.0,
            smoothed_power: 0.0,
            primed: false,
        })
    }

    /// Takes one block of samples (typically one hop); returns its level in dBFS. Non-finite
    /// samples count as 0. An empty block changes nothing and returns the previous level.
    pub fn update(&mut self, samples: &[f32]) -> f32 {
        if samples.is_empty() {
            return self.level_dbfs();
        }
        let sum: f64 = samples
            .iter()
            .map(|&s| {
                if s.is_finite() {
                    s as f64 * s as f64
                } else {
                    0.0
                }
            })
            .sum();
        let power = sum / samples.len() as f64;
        self.last_power = power;
        if self.primed && self.time_constant > 0.0 {
            let a = 1.0 - (-(samples.len() as f64) / (self.sample_rate * self.time_constant)).exp();
            self.smoothed_power += a * (power - self.smoothed_power);
        } else {
            self.smoothed_power = power;
            self.primed = true;
        }
        self.level_dbfs()
    }

    /// Level of the last block, in dBFS.
    pub fn level_dbfs(&self) -> f32 {
        power_to_dbfs(self.last_power)
    }

    /// Smoothed level, in dBFS.
    pub fn smoothed_dbfs(&self) -> f32 {
        power_to_dbfs(self.smoothed_power)
    }

    /// Forgets the stream so far.
    pub fn reset(&mut self) {
        self.last_power = 0.0;
        self.smoothed_power = 0.0;
        self.primed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amp: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin())
            .collect()
    }

    #[test]
    fn known_signals_read_their_level() {
        let mut m = LevelMeter::new(16_000, 0.0).unwrap();
        assert!((m.update(&[1.0, -1.0, 1.0, -1.0]) - 0.0).abs() < 1e-6);
        assert!((m.update(&sine(1.0, 160)) + 3.0103).abs() < 1e-3);
        assert!((m.update(&sine(0.1, 160)) + 23.0103).abs() < 1e-3);
        assert_eq!(m.update(&[0.0; 160]), SILENCE_DBFS);
        assert_eq!(m.update(&[f32::NAN; 160]), SILENCE_DBFS);
        assert_eq!(m.update(&[]), SILENCE_DBFS);
    }

    #[test]
    fn the_smoothed_level_follows_with_its_time_constant() {
        let mut m = LevelMeter::new(16_000, 0.1).unwrap();
        m.update(&[0.0; 160]);
        let loud = [0.5f32; 160];
        // After one time constant (10 hops of 10 ms) the power has risen to 1 - 1/e of the
        // step: 0.25 * 0.632.
        for _ in 0..10 {
            assert!((m.update(&loud) - power_to_dbfs(0.25)).abs() < 1e-4);
        }
        let expect = power_to_dbfs(0.25 * (1.0 - (-1.0f64).exp()));
        assert!(
            (m.smoothed_dbfs() - expect).abs() < 1e-3,
            "{}",
            m.smoothed_dbfs()
        );
        assert!(LevelMeter::new(16_000, -1.0).is_err());
        assert!(LevelMeter::new(0, 0.1).is_err());
    }
}
