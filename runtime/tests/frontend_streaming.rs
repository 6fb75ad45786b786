//! Streaming the frontend in chunks of any size gives exactly the whole-signal frames, and
//! non-finite samples never reach the features.

mod common;

use common::test_signal;
use hark::frontend::{Frontend, FrontendConfig};

fn stream(signal: &[f32], chunk: usize) -> (Vec<f32>, Vec<u64>, u64) {
    let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
    let (mut frames, mut indices) = (Vec::new(), Vec::new());
    for c in signal.chunks(chunk) {
        fe.push(c, |i, f| {
            indices.push(i);
            frames.extend_from_slice(f);
        });
    }
    (frames, indices, fe.nonfinite_samples())
}

/// Bit-identical frames, reported by the first differing value rather than a full dump.
fn assert_same(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a.to_bits() != b.to_bits());
    assert_eq!(
        first, None,
        "{what}: first differing value (frame = index / 64)"
    );
}

#[test]
fn chunked_streaming_equals_the_whole_signal_computation() {
    // 3.3 s: not a whole number of hops, so the tail must wait for more samples.
    let signal = test_signal(52_877, 7);
    let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
    let (whole, _) = fe.compute(&signal);
    assert_eq!(
        whole.len() / 64,
        FrontendConfig::default().n_frames(signal.len())
    );
    for chunk in [1, 7, 160, 4096] {
        let (streamed, indices, _) = stream(&signal, chunk);
        assert_eq!(streamed.len(), whole.len(), "chunk {chunk}: frame count");
        assert!(
            indices.iter().enumerate().all(|(i, &j)| i as u64 == j),
            "chunk {chunk}: frame indices are not 0, 1, 2, ..."
        );
        // Bit-identical, not merely close.
        assert_same(&streamed, &whole, &format!("chunk {chunk}"));
    }
}

#[test]
fn reset_starts_a_new_stream() {
    let signal = test_signal(8_000, 3);
    let (first, _, _) = stream(&signal, 333);
    let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
    fe.push(&test_signal(1234, 9), |_, _| {});
    fe.reset();
    let mut again = Vec::new();
    for c in signal.chunks(333) {
        fe.push(c, |_, f| again.extend_from_slice(f));
    }
    assert_same(&first, &again, "after reset");
}

#[test]
fn nan_and_infinite_samples_are_replaced_and_counted() {
    let clean = test_signal(16_000, 11);
    let mut dirty = clean.clone();
    let bad = [100, 101, 5_000, 9_999, 15_999];
    dirty[100] = f32::NAN;
    dirty[101] = f32::INFINITY;
    dirty[5_000] = f32::NEG_INFINITY;
    dirty[9_999] = f32::NAN;
    dirty[15_999] = f32::NAN;
    let mut zeroed = clean.clone();
    for &i in &bad {
        zeroed[i] = 0.0;
    }
    let (frames, _, count) = stream(&dirty, 500);
    assert_eq!(count, bad.len() as u64);
    assert!(frames.iter().all(|v| v.is_finite()), "a non-finite feature");
    let (expected, _, _) = stream(&zeroed, 500);
    assert_same(&frames, &expected, "streamed, non-finite samples as zeros");
    let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
    let (whole, n) = fe.compute(&dirty);
    assert_eq!(n, bad.len() as u64);
    assert_same(
        &whole,
        &expected,
        "whole signal, non-finite samples as zeros",
    );
}

#[test]
fn all_nan_input_gives_floor_features_not_nan() {
    let (frames, _, count) = stream(&[f32::NAN; 4000], 160);
    assert_eq!(count, 4000);
    assert!(!frames.is_empty());
    assert!(frames.iter().all(|&v| (v - 1e-6f32.ln()).abs() < 1e-6));
}
