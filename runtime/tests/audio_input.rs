//! Audio input: every WAV sample format, odd rates and channel counts, the compressed formats,
//! raw PCM, a two-hour stream that is never held whole, and every kind of bad input.

mod common;

use std::io::{Cursor, Read, Seek, SeekFrom};

use common::{Enc, fixture, wav};
use hark::audio::{AudioError, AudioReader, PcmFormat, PcmReader, TARGET_RATE, read_file};
use symphonia::core::io::MediaSource;

fn tone(rate: u32, hz: f32, amp: f32, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| amp * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
        .collect()
}

fn rms(x: &[f32]) -> f32 {
    (x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32).sqrt()
}

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn every_wav_sample_format_decodes_to_the_same_tone() {
    let dir = tempfile::tempdir().unwrap();
    let mono = tone(48_000, 440.0, 0.5, 48_000);
    let stereo: Vec<f32> = mono.iter().flat_map(|&s| [s, s]).collect();
    for enc in [Enc::U8, Enc::I16, Enc::I24, Enc::I32, Enc::F32] {
        let p = write_tmp(&dir, &format!("{enc:?}.wav"), &wav(48_000, 2, enc, &stereo));
        let d = read_file(&p).unwrap_or_else(|e| panic!("{enc:?}: {e}"));
        assert_eq!(d.info.sample_rate, 48_000);
        assert_eq!(d.info.channels, 2);
        assert_eq!(d.samples.len(), 16_000, "{enc:?}: length");
        let r = rms(&d.samples[1000..15000]);
        assert!((r - 0.3536).abs() < 0.01, "{enc:?}: rms {r}");
        // The same tone at 16 kHz, in phase (the resampler's delay is removed).
        let ideal = tone(16_000, 440.0, 0.5, 16_000);
        let err = d.samples[1000..15000]
            .iter()
            .zip(&ideal[1000..15000])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let tol = if matches!(enc, Enc::U8) { 0.03 } else { 0.01 };
        assert!(err < tol, "{enc:?}: max deviation {err}");
    }
}

#[test]
fn any_rate_is_resampled_to_16k_with_the_right_length() {
    let dir = tempfile::tempdir().unwrap();
    for rate in [
        8_000, 11_025, 16_000, 22_050, 32_000, 44_100, 48_000, 96_000, 12_345,
    ] {
        let n = rate as usize * 2 + 3;
        let p = write_tmp(
            &dir,
            "r.wav",
            &wav(rate, 1, Enc::I16, &tone(rate, 300.0, 0.5, n)),
        );
        let d = read_file(&p).unwrap();
        let want = ((n as u64 * 16_000 + rate as u64 / 2) / rate as u64) as usize;
        assert_eq!(d.samples.len(), want, "{rate} Hz");
        let r = rms(&d.samples[2000..30000]);
        assert!((r - 0.3536).abs() < 0.01, "{rate} Hz: rms {r}");
    }
}

#[test]
fn channels_are_averaged_to_mono() {
    let dir = tempfile::tempdir().unwrap();
    let t = tone(16_000, 440.0, 0.5, 16_000);
    // Left = tone, right = its negation: the mono mix is silence.
    let opposed: Vec<f32> = t.iter().flat_map(|&s| [s, -s]).collect();
    let d = read_file(write_tmp(
        &dir,
        "o.wav",
        &wav(16_000, 2, Enc::F32, &opposed),
    ))
    .unwrap();
    assert!(d.samples.iter().all(|v| v.abs() < 1e-6));
    // Tone in one channel of three: a third of it.
    let one_of_three: Vec<f32> = t.iter().flat_map(|&s| [0.0, s, 0.0]).collect();
    let d = read_file(write_tmp(
        &dir,
        "t.wav",
        &wav(16_000, 3, Enc::F32, &one_of_three),
    ));
    match d {
        Ok(d) => {
            assert_eq!(d.info.channels, 3);
            assert!((rms(&d.samples) - 0.3536 / 3.0).abs() < 0.005);
        }
        // A three-channel WAV without a channel mask may be refused, but clearly.
        Err(e) => assert!(e.to_string().contains("t.wav"), "{e}"),
    }
}

/// The first 16 kHz sample whose magnitude exceeds 0.5 (the burst's onset), in seconds.
fn burst_onset(x: &[f32]) -> f64 {
    x.iter().position(|v| v.abs() > 0.5).expect("a burst") as f64 / 16_000.0
}

#[test]
fn flac_ogg_and_mp3_decode_with_the_burst_in_place() {
    // lame resamples to 32 kHz at 96 kbit/s: a third source rate.
    for (ext, codec, rate, len_tol, onset_tol) in [
        ("flac", "flac", 44_100, 0.0005, 0.002),
        ("ogg", "vorbis", 44_100, 0.03, 0.01),
        ("mp3", "mp3", 32_000, 0.06, 0.03),
    ] {
        let d = read_file(fixture(&format!("formats/tone_burst.{ext}")))
            .unwrap_or_else(|e| panic!("{ext}: {e}"));
        assert_eq!(d.info.sample_rate, rate, "{ext}");
        assert_eq!(d.info.codec, codec);
        let secs = d.samples.len() as f64 / TARGET_RATE as f64;
        assert!((secs - 1.2).abs() <= len_tol, "{ext}: {secs} s");
        let onset = burst_onset(&d.samples);
        assert!(
            (onset - 0.60).abs() <= onset_tol,
            "{ext}: burst at {onset} s"
        );
        let r = rms(&d.samples[1600..8000]);
        assert!((r - 0.1414).abs() < 0.01, "{ext}: tone rms {r}");
    }
}

#[test]
fn raw_pcm_s16_and_f32_stereo() {
    let t = tone(48_000, 440.0, 0.5, 48_000);
    let s16: Vec<u8> = t
        .iter()
        .flat_map(|&s| {
            let v = ((s * 32767.0).round() as i16).to_le_bytes();
            [v, v].concat()
        })
        .collect();
    let f32b: Vec<u8> = t
        .iter()
        .flat_map(|&s| [s.to_le_bytes(), s.to_le_bytes()].concat())
        .collect();
    for (fmt, bytes) in [(PcmFormat::S16Le, s16), (PcmFormat::F32Le, f32b)] {
        // Read in awkward pieces, as a pipe delivers them.
        let mut r =
            PcmReader::new(Trickle(Cursor::new(bytes), 777), "<stdin>", fmt, 48_000, 2).unwrap();
        let mut out = Vec::new();
        while let Some(c) = r.next_chunk().unwrap() {
            out.extend_from_slice(c);
        }
        assert_eq!(r.frames(), 48_000);
        assert_eq!(out.len(), 16_000, "{fmt:?}");
        assert!((rms(&out[1000..15000]) - 0.3536).abs() < 0.01);
    }
    assert!(
        "s24le"
            .parse::<PcmFormat>()
            .unwrap_err()
            .contains("s16le or f32le")
    );
}

#[test]
fn raw_pcm_ending_mid_sample_is_reported() {
    let mut r = PcmReader::new(
        Cursor::new(vec![0u8; 3]),
        "<stdin>",
        PcmFormat::S16Le,
        16_000,
        1,
    )
    .unwrap();
    let mut err = None;
    loop {
        match r.next_chunk() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                err = Some(e);
                break;
            }
        }
    }
    let e = err.expect("an error").to_string();
    assert!(e.contains("<stdin>") && e.contains("stray bytes"), "{e}");
}

/// A reader that hands out at most `.1` bytes a call.
struct Trickle<R>(R, usize);
impl<R: Read> Read for Trickle<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.1);
        self.0.read(&mut buf[..n])
    }
}

/// A two-hour, 8 kHz, 16-bit mono WAV made up on the fly: 115 MB that never exist at once.
struct LongWav {
    pos: u64,
    len: u64,
    header: Vec<u8>,
}

impl LongWav {
    const RATE: u32 = 8_000;
    const FRAMES: u64 = 2 * 3600 * 8_000;
    fn new() -> Self {
        let mut header = wav(Self::RATE, 1, Enc::I16, &[]);
        let data_len = (Self::FRAMES * 2) as u32;
        header[4..8].copy_from_slice(&(36 + data_len).to_le_bytes());
        header[40..44].copy_from_slice(&data_len.to_le_bytes());
        let len = header.len() as u64 + Self::FRAMES * 2;
        Self {
            pos: 0,
            len,
            header,
        }
    }
    fn byte(&self, at: u64) -> u8 {
        if at < self.header.len() as u64 {
            return self.header[at as usize];
        }
        let i = (at - self.header.len() as u64) / 2;
        // A 250 Hz square wave at amplitude 0.25: 16 samples high, 16 low.
        let v: i16 = if (i / 16).is_multiple_of(2) {
            8192
        } else {
            -8192
        };
        v.to_le_bytes()[((at - self.header.len() as u64) % 2) as usize]
    }
}

impl Read for LongWav {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.len - self.pos).min(buf.len() as u64) as usize;
        for (k, b) in buf[..n].iter_mut().enumerate() {
            *b = self.byte(self.pos + k as u64);
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for LongWav {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(p) => p,
            SeekFrom::End(d) => (self.len as i64 + d) as u64,
            SeekFrom::Current(d) => (self.pos as i64 + d) as u64,
        };
        Ok(self.pos)
    }
}

impl MediaSource for LongWav {
    fn is_seekable(&self) -> bool {
        true
    }
    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

#[test]
fn a_two_hour_file_streams_in_bounded_chunks() {
    let mut r = AudioReader::from_source(
        Box::new(LongWav::new()),
        "two-hours.wav".into(),
        Some("wav"),
    )
    .unwrap();
    let (mut total, mut largest, mut chunks) = (0u64, 0usize, 0u64);
    let mut sum_sq = 0.0f64;
    while let Some(c) = r.next_chunk().unwrap() {
        total += c.len() as u64;
        largest = largest.max(c.len());
        chunks += 1;
        if chunks.is_multiple_of(997) {
            sum_sq += c.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / c.len() as f64;
        }
    }
    assert_eq!(
        total,
        2 * 3600 * 16_000,
        "every sample, resampled to 16 kHz"
    );
    assert!(
        largest <= 16_384,
        "a chunk of {largest} samples: the file is not streamed"
    );
    assert!(chunks > 10_000);
    // The square wave's power survives (about 0.0625, less its harmonics above 8 kHz).
    let mean_power = sum_sq / (chunks / 997) as f64;
    assert!((mean_power - 0.0625).abs() < 0.01, "{mean_power}");
}

fn expect_err(path: &std::path::Path) -> AudioError {
    let mut r = match AudioReader::open(path) {
        Err(e) => return e,
        Ok(r) => r,
    };
    loop {
        match r.next_chunk() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("{}: read without an error", path.display()),
            Err(e) => return e,
        }
    }
}

#[test]
fn bad_files_get_errors_that_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let good = wav(16_000, 1, Enc::I16, &tone(16_000, 440.0, 0.5, 16_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty.wav", vec![], "empty file"),
        (
            "notes.wav",
            b"just some text, not a sound at all\n".repeat(20),
            "not audio",
        ),
        ("header-only.wav", good[..44].to_vec(), "no audio samples"),
        ("cut.wav", good[..20_000].to_vec(), "truncated"),
        (
            "slow.wav",
            wav(500, 1, Enc::I16, &[0.0; 500]),
            "unsupported sample rate 500 Hz",
        ),
        ("half-header.wav", good[..30].to_vec(), "not audio"),
    ];
    for (name, bytes, needle) in cases {
        let p = write_tmp(&dir, name, &bytes);
        let e = expect_err(&p).to_string();
        assert!(
            e.contains(name),
            "{name}: message does not name the file: {e}"
        );
        assert!(e.contains(needle), "{name}: {e:?} lacks {needle:?}");
    }
    let missing = dir.path().join("missing.wav");
    let e = expect_err(&missing).to_string();
    assert!(
        e.contains("missing.wav") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn a_truncated_file_hands_out_what_it_holds_before_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = wav(16_000, 1, Enc::I16, &tone(16_000, 440.0, 0.5, 16_000));
    let p = write_tmp(&dir, "cut.wav", &good[..44 + 2 * 8000]);
    let mut r = AudioReader::open(&p).unwrap();
    let mut got = 0;
    let err = loop {
        match r.next_chunk() {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => panic!("no truncation error"),
            Err(e) => break e,
        }
    };
    assert_eq!(got, 8000, "the readable half");
    match err {
        AudioError::Truncated { expected, got, .. } => assert_eq!((expected, got), (16_000, 8000)),
        other => panic!("{other}"),
    }
    // A truncated FLAC is reported too (as truncated or corrupt), never a panic.
    let flac = std::fs::read(fixture("formats/tone_burst.flac")).unwrap();
    let p = write_tmp(&dir, "cut.flac", &flac[..flac.len() / 2]);
    let e = expect_err(&p).to_string();
    assert!(
        e.contains("cut.flac") && (e.contains("truncated") || e.contains("corrupt")),
        "{e}"
    );
}

#[test]
fn damaged_compressed_files_never_panic() {
    // Flip bytes all over each compressed fixture; whatever happens must be Ok or an Err.
    let dir = tempfile::tempdir().unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for ext in ["flac", "ogg", "mp3"] {
        let orig = std::fs::read(fixture(&format!("formats/tone_burst.{ext}"))).unwrap();
        for round in 0..25 {
            let mut b = orig.clone();
            for _ in 0..(1 + round % 20) {
                let i = (next() % b.len() as u64) as usize;
                b[i] = next() as u8;
            }
            if round % 5 == 4 {
                b.truncate((next() % b.len() as u64) as usize);
            }
            let p = write_tmp(&dir, &format!("damaged.{ext}"), &b);
            let outcome = std::panic::catch_unwind(|| match AudioReader::open(&p) {
                Err(e) => Err(e.to_string()),
                Ok(mut r) => {
                    let mut n = 0usize;
                    loop {
                        match r.next_chunk() {
                            Ok(Some(c)) => {
                                assert!(c.len() <= 1 << 20);
                                n += c.len()
                            }
                            Ok(None) => return Ok(n),
                            Err(e) => return Err(e.to_string()),
                        }
                    }
                }
            });
            match outcome {
                Ok(Ok(_)) => {}
                Ok(Err(msg)) => assert!(msg.contains("damaged"), "{msg}"),
                Err(_) => panic!("{ext} round {round}: the decoder panicked"),
            }
        }
    }
}

#[test]
fn nan_samples_in_a_float_wav_are_counted_by_the_frontend() {
    let dir = tempfile::tempdir().unwrap();
    let mut x = tone(16_000, 440.0, 0.5, 16_000);
    for i in (0..16_000).step_by(1000) {
        x[i] = f32::NAN;
    }
    let d = read_file(write_tmp(&dir, "nan.wav", &wav(16_000, 1, Enc::F32, &x))).unwrap();
    let mut fe = hark::frontend::Frontend::new(Default::default()).unwrap();
    let mut finite = true;
    fe.push(&d.samples, |_, f| finite &= f.iter().all(|v| v.is_finite()));
    assert_eq!(fe.nonfinite_samples(), 16);
    assert!(finite);
}
