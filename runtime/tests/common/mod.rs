//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

pub mod alsa_file_pcm;

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Reads a raw little-endian float32 fixture.
pub fn read_f32(name: &str) -> Vec<f32> {
    let bytes = std::fs::read(fixture(name)).expect("fixture exists");
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A deterministic test signal: a chirp plus noise plus clicks, `n` samples at 16 kHz.
pub fn test_signal(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|i| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let noise = ((state >> 33) as f32 / (1u64 << 31) as f32 - 0.5) * 0.05;
            let t = i as f32 / 16000.0;
            let chirp = 0.3 * (2.0 * std::f32::consts::PI * (200.0 + 900.0 * t) * t).sin();
            let click = if i % 4001 < 20 { 0.8 } else { 0.0 };
            chirp + noise + click
        })
        .collect()
}

/// Sample encodings of a WAV file.
#[derive(Clone, Copy, Debug)]
pub enum Enc {
    U8,
    I16,
    I24,
    I32,
    F32,
}

/// A WAV file holding `frames` (interleaved, `channels` wide) in `enc`.
pub fn wav(rate: u32, channels: u16, enc: Enc, samples: &[f32]) -> Vec<u8> {
    let (fmt_tag, bits): (u16, u16) = match enc {
        Enc::U8 => (1, 8),
        Enc::I16 => (1, 16),
        Enc::I24 => (1, 24),
        Enc::I32 => (1, 32),
        Enc::F32 => (3, 32),
    };
    let mut data = Vec::new();
    for &s in samples {
        let c = s.clamp(-1.0, 1.0) as f64;
        match enc {
            Enc::U8 => data.push((c * 127.0 + 128.0).round() as u8),
            Enc::I16 => data.extend_from_slice(&((c * 32767.0).round() as i16).to_le_bytes()),
            Enc::I24 => {
                data.extend_from_slice(&((c * 8_388_607.0).round() as i32).to_le_bytes()[..3])
            }
            Enc::I32 => {
                data.extend_from_slice(&((c * 2_147_483_647.0).round() as i32).to_le_bytes())
            }
            Enc::F32 => data.extend_from_slice(&s.to_le_bytes()),
        }
    }
    let block = channels * bits / 8;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&fmt_tag.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * block as u32).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

/// Faint noise with 1 kHz tone bursts at the given (onset, length), at `rate` Hz, mono.
pub fn mixture_at(rate: u32, bursts: &[(f32, f32)], seconds: f32) -> Vec<f32> {
    let sr = rate as f32;
    let n = (seconds * sr) as usize;
    let mut state = 12345u64;
    let mut x: Vec<f32> = (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.06
        })
        .collect();
    for &(on, len) in bursts {
        let (a, b) = ((on * sr) as usize, (((on + len) * sr) as usize).min(n));
        for (i, v) in x[a..b].iter_mut().enumerate() {
            *v += 0.5 * (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / sr).sin();
        }
    }
    x
}

/// The same at 16 kHz mono.
pub fn mixture(bursts: &[(f32, f32)], seconds: f32) -> Vec<f32> {
    mixture_at(16_000, bursts, seconds)
}

/// At 44.1 kHz, stereo interleaved.
pub fn mixture_stereo(bursts: &[(f32, f32)], seconds: f32) -> Vec<f32> {
    mixture_at(44_100, bursts, seconds)
        .into_iter()
        .flat_map(|s| [s, s])
        .collect()
}
