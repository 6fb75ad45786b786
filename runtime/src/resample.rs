//! Streaming, band-limited sample-rate conversion to the frontend's rate.
//!
//! Rational ratios with a small reduced input period (every common rate: 8, 11.025, 22.05,
//! 32, 44.1, 48, 96 kHz...) use rubato's synchronous FFT resampler; anything else uses its
//! windowed-sinc resampler. Either way the resampler's own delay is removed, so output sample
//! `j` lies at time `j / out_rate` like input sample `i` at `i / in_rate`, and [`finish`]
//! flushes the tail so that `n_in` input samples give `round(n_in * out_rate / in_rate)`
//! output samples.
//!
//! [`finish`]: StreamResampler::finish

use rubato::{
    FftFixedInOut, SincFixedIn, SincInterpolationParameters, SincInterpolationType, VecResampler,
    WindowFunction, calculate_cutoff,
};

/// Lowest input rate accepted, in Hz.
pub const MIN_RATE: u32 = 1_000;
/// Highest input rate accepted, in Hz.
pub const MAX_RATE: u32 = 768_000;

/// Input chunk handed to rubato at a time (input frames).
const CHUNK: usize = 1024;
/// Largest reduced input period (in_rate / gcd) for which the FFT resampler is used.
const MAX_FFT_PERIOD: usize = 2048;

/// Why a resampler could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResampleError {
    /// The rate is outside [`MIN_RATE`]..=[`MAX_RATE`].
    #[error("unsupported sample rate {0} Hz (supported: {MIN_RATE} to {MAX_RATE} Hz)")]
    Rate(u32),
    /// rubato refused the configuration.
    #[error("cannot build a resampler from {from} Hz to {to} Hz: {detail}")]
    Build { from: u32, to: u32, detail: String },
}

/// Converts a mono stream from one rate to another, chunk by chunk.
pub struct StreamResampler {
    in_rate: u32,
    out_rate: u32,
    inner: Option<Box<dyn VecResampler<f32>>>,
    in_buf: Vec<Vec<f32>>,
    in_fill: usize,
    out_buf: Vec<Vec<f32>>,
    /// Output samples still to drop (the resampler's delay).
    skip: usize,
    total_in: u64,
    total_out: u64,
    nonfinite: u64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler")
            .field("in_rate", &self.in_rate)
            .field("out_rate", &self.out_rate)
            .field("passthrough", &self.inner.is_none())
            .finish_non_exhaustive()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl StreamResampler {
    /// A resampler from `in_rate` to `out_rate` Hz (a pass-through when they are equal).
    pub fn new(in_rate: u32, out_rate: u32) -> Result<Self, ResampleError> {
        for r in [in_rate, out_rate] {
            if !(MIN_RATE..=MAX_RATE).contains(&r) {
                return Err(ResampleError::Rate(r));
            }
        }
        let build = |e: rubato::ResamplerConstructionError| ResampleError::Build {
            from: in_rate,
            to: out_rate,
            detail: e.to_string(),
        };
        let use_fft = in_rate as usize / gcd(in_rate as usize, out_rate as usize) <= MAX_FFT_PERIOD;
        let inner: Option<Box<dyn VecResampler<f32>>> = if in_rate == out_rate {
            None
        } else if use_fft {
            Some(Box::new(
                FftFixedInOut::<f32>::new(in_rate as usize, out_rate as usize, CHUNK, 1)
                    .map_err(build)?,
            ))
        } else {
            let sinc_len = 128;
            let window = WindowFunction::BlackmanHarris2;
            let params = SincInterpolationParameters {
                sinc_len,
                f_cutoff: calculate_cutoff(sinc_len, window),
                interpolation: SincInterpolationType::Linear,
                oversampling_factor: 256,
                window,
            };
            Some(Box::new(
                SincFixedIn::<f32>::new(out_rate as f64 / in_rate as f64, 1.0, params, CHUNK, 1)
                    .map_err(build)?,
            ))
        };
        // The FFT resampler delays its output by `output_delay()`; rubato 0.16's sinc
        // resampler starts with its history centred on the first sample and does not (it
        // reports a delay all the same). The pulse test below pins both.
        let (in_buf, out_buf, skip) = match &inner {
            Some(r) => (
                vec![vec![0.0; r.input_frames_max()]],
                vec![vec![0.0; r.output_frames_max()]],
                if use_fft { r.output_delay() } else { 0 },
            ),
            None => (vec![Vec::new()], vec![Vec::new()], 0),
        };
        Ok(Self {
            in_rate,
            out_rate,
            inner,
            in_buf,
            in_fill: 0,
            out_buf,
            skip,
            total_in: 0,
            total_out: 0,
            nonfinite: 0,
        })
    }

    /// Input rate in Hz.
    pub fn in_rate(&self) -> u32 {
        self.in_rate
    }

    /// Output rate in Hz.
    pub fn out_rate(&self) -> u32 {
        self.out_rate
    }

    /// Non-finite input samples replaced by 0.0 before resampling. (A pass-through hands them
    /// on unchanged: the frontend replaces and counts them.)
    pub fn nonfinite_samples(&self) -> u64 {
        self.nonfinite
    }

    /// Converts `input`, appending whatever output is ready to `out`.
    pub fn push(&mut self, input: &[f32], out: &mut Vec<f32>) {
        self.total_in += input.len() as u64;
        if self.inner.is_none() {
            out.extend_from_slice(input);
            self.total_out += input.len() as u64;
            return;
        }
        let mut rest = input;
        while !rest.is_empty() {
            let need = self.next_len();
            let take = rest.len().min(need - self.in_fill);
            // NaN or inf would poison the FFT (rubato panics on it): zeros instead, counted.
            for (d, &x) in self.in_buf[0][self.in_fill..self.in_fill + take]
                .iter_mut()
                .zip(&rest[..take])
            {
                *d = if x.is_finite() {
                    x
                } else {
                    self.nonfinite += 1;
                    0.0
                };
            }
            self.in_fill += take;
            rest = &rest[take..];
            if self.in_fill == need {
                self.process_chunk(out, u64::MAX);
            }
        }
    }

    /// Flushes the tail: after this, the output holds `round(n_in * out_rate / in_rate)`
    /// samples in all. The resampler must not be pushed to again.
    pub fn finish(&mut self, out: &mut Vec<f32>) {
        if self.inner.is_none() {
            return;
        }
        let expected = (self.total_in as u128 * self.out_rate as u128 + self.in_rate as u128 / 2)
            / self.in_rate as u128;
        let expected = expected as u64;
        // Each round pads the partial chunk with zeros; a few rounds flush the delay line.
        for _ in 0..64 {
            if self.total_out >= expected {
                break;
            }
            let need = self.next_len();
            self.in_buf[0][self.in_fill..need].fill(0.0);
            self.in_fill = need;
            self.process_chunk(out, expected);
        }
        self.in_fill = 0;
    }

    fn next_len(&self) -> usize {
        self.inner.as_ref().map_or(0, |r| r.input_frames_next())
    }

    fn process_chunk(&mut self, out: &mut Vec<f32>, limit: u64) {
        let r = self.inner.as_mut().expect("only called when resampling");
        let (_, n_out) = r
            .process_into_buffer(&self.in_buf, &mut self.out_buf, None)
            .expect("buffers are sized from the resampler's own maxima");
        self.in_fill = 0;
        let mut produced = &self.out_buf[0][..n_out];
        let drop = self.skip.min(produced.len());
        self.skip -= drop;
        produced = &produced[drop..];
        let room = limit
            .saturating_sub(self.total_out)
            .min(produced.len() as u64) as usize;
        out.extend_from_slice(&produced[..room]);
        self.total_out += room as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(rate: u32, hz: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
            .collect()
    }

    fn resample_all(from: u32, input: &[f32], chunk: usize) -> Vec<f32> {
        let mut r = StreamResampler::new(from, 16_000).unwrap();
        let mut out = Vec::new();
        for c in input.chunks(chunk) {
            r.push(c, &mut out);
        }
        r.finish(&mut out);
        out
    }

    /// A smooth pulse (Gaussian, sigma 0.4 ms) centred at `at_s` seconds.
    fn pulse(rate: u32, at_s: f32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let d = (i as f32 / rate as f32 - at_s) / 0.0004;
                (-0.5 * d * d).exp()
            })
            .collect()
    }

    /// Peak position in samples, refined by a parabola through the top three samples.
    fn peak(y: &[f32]) -> f32 {
        let i = (1..y.len() - 1)
            .max_by(|&a, &b| y[a].total_cmp(&y[b]))
            .unwrap();
        let (a, b, c) = (y[i - 1], y[i], y[i + 1]);
        i as f32 + 0.5 * (a - c) / (a - 2.0 * b + c)
    }

    #[test]
    fn lengths_are_exact_and_the_delay_is_removed() {
        for from in [8_000, 11_025, 22_050, 44_100, 48_000, 96_000, 44_101, 7_350] {
            let n = from as usize * 3 / 2 + 17;
            let y = resample_all(from, &pulse(from, 0.7, n), 999);
            let want = ((n as u64 * 16_000 + from as u64 / 2) / from as u64) as usize;
            assert_eq!(y.len(), want, "length from {from} Hz");
            // The pulse stays where it was: 0.7 s = sample 11200 at 16 kHz (within 0.1 ms:
            // rubato's FFT resampler keeps a sub-sample offset for odd FFT sizes).
            let at = peak(&y);
            assert!((at - 11_200.0).abs() < 1.5, "from {from} Hz: pulse at {at}");
            let top = y.iter().cloned().fold(0.0f32, f32::max);
            assert!(
                (top - 1.0).abs() < 0.05,
                "from {from} Hz: pulse height {top}"
            );
        }
    }

    #[test]
    fn a_tone_keeps_its_amplitude() {
        for from in [11_025, 44_100, 48_000, 44_101] {
            let y = resample_all(from, &sine(from, 440.0, from as usize * 2), 4096);
            let rms = (y[4000..28000].iter().map(|v| v * v).sum::<f32>() / 24000.0).sqrt();
            assert!(
                (rms - std::f32::consts::FRAC_1_SQRT_2).abs() < 0.01,
                "from {from} Hz: rms {rms}"
            );
        }
    }

    #[test]
    fn chunking_does_not_change_the_output() {
        let x = sine(44_100, 1000.0, 50_000);
        let a = resample_all(44_100, &x, 1);
        let b = resample_all(44_100, &x, 4096);
        assert_eq!(a, b);
    }

    #[test]
    fn content_above_the_new_nyquist_is_removed() {
        // 10 kHz cannot exist at 16 kHz: it must be filtered, not aliased to 6 kHz.
        let y = resample_all(48_000, &sine(48_000, 10_000.0, 48_000), 4096);
        let rms = (y[2000..14000].iter().map(|v| v * v).sum::<f32>() / 12000.0).sqrt();
        assert!(rms < 0.01, "aliased energy {rms}");
    }

    #[test]
    fn non_finite_input_is_zeroed_and_counted_not_a_panic() {
        for from in [44_100, 44_101] {
            let mut x = sine(from, 440.0, 20_000);
            x[5] = f32::NAN;
            x[7000] = f32::INFINITY;
            let mut r = StreamResampler::new(from, 16_000).unwrap();
            let mut y = Vec::new();
            r.push(&x, &mut y);
            r.finish(&mut y);
            assert_eq!(r.nonfinite_samples(), 2);
            assert!(y.iter().all(|v| v.is_finite()), "from {from} Hz");
        }
    }

    #[test]
    fn absurd_rates_are_refused() {
        assert_eq!(
            StreamResampler::new(0, 16_000).unwrap_err(),
            ResampleError::Rate(0)
        );
        assert!(StreamResampler::new(10_000_000, 16_000).is_err());
    }
}
