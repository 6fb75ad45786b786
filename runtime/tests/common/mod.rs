//! Helpers shared by the runtime's integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

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
