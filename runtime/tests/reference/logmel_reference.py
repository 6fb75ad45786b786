#!/usr/bin/env python3
"""Independent numpy reference for hark's log-mel features.

Computes, in float64 and without any of hark's code, the features documented in
runtime/src/frontend.rs:

  frame i = samples [160 i, 160 i + 400)          (no padding; only complete frames)
  window  = periodic Hann, w[n] = 0.5 - 0.5 cos(2 pi n / 400)
  X       = rfft(window * frame, n=512)           (zero-padded at the end)
  P[k]    = |X[k]|^2, k = 0..256, bin k at k * 16000 / 512 Hz
  mel(f)  = 2595 log10(1 + f / 700)               (HTK)
  f[j]    = mel^-1(mel(125) + (mel(7500) - mel(125)) j / 65), j = 0..65
  W[m][k] = max(0, min((fk - f[m]) / (f[m+1] - f[m]), (f[m+2] - fk) / (f[m+2] - f[m+1])))
  feature = ln(W @ P + 1e-6)

Writes the input signals it generates (sweep, noise) and the features of every signal
(sweep, noise, and the committed real recording bark.wav) as raw little-endian float32 into
runtime/tests/fixtures/. With --check it recomputes everything and compares with the
committed fixtures instead of writing (exit 1 on a mismatch).
"""
import argparse
import os
import sys
import wave

import numpy as np

SR, WIN, HOP, NFFT, NMELS, FMIN, FMAX, FLOOR = 16000, 400, 160, 512, 64, 125.0, 7500.0, 1e-6
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures")


def hz_to_mel(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


def mel_matrix():
    edges = mel_to_hz(np.linspace(hz_to_mel(FMIN), hz_to_mel(FMAX), NMELS + 2))
    fk = np.arange(NFFT // 2 + 1) * SR / NFFT
    lo, c, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    return np.maximum(0.0, np.minimum((fk - lo) / (c - lo), (hi - fk) / (hi - c)))


def logmel(x):
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isfinite(x), x, 0.0)
    n = 0 if len(x) < WIN else (len(x) - WIN) // HOP + 1
    idx = np.arange(WIN)[None, :] + HOP * np.arange(n)[:, None]
    win = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WIN) / WIN)
    spec = np.fft.rfft(x[idx] * win, n=NFFT, axis=1)
    power = spec.real**2 + spec.imag**2
    return np.log(power @ mel_matrix().T + FLOOR)


def signals():
    t = np.arange(SR) / SR
    f0, f1 = 100.0, 7900.0
    k = np.log(f1 / f0)
    sweep = (0.5 * np.sin(2 * np.pi * f0 * (np.exp(k * t) - 1.0) / k)).astype(np.float32)
    noise = (0.1 * np.random.default_rng(1234).standard_normal(SR)).astype(np.float32)
    with wave.open(os.path.join(FIXTURES, "bark.wav"), "rb") as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, SR)
        bark = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
    return {"sweep": sweep, "noise": noise, "bark": bark}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed fixtures")
    args = ap.parse_args()
    bad = 0
    for name, x in signals().items():
        feats = logmel(x).astype("<f4")
        files = {f"{name}.logmel.f32": feats.tobytes()}
        if name != "bark":
            files[f"{name}.f32"] = x.astype("<f4").tobytes()
        for fname, data in files.items():
            path = os.path.join(FIXTURES, fname)
            if args.check:
                with open(path, "rb") as f:
                    old = np.frombuffer(f.read(), dtype="<f4")
                new = np.frombuffer(data, dtype="<f4")
                if old.shape != new.shape or np.max(np.abs(old - new)) > 1e-5:
                    print(f"MISMATCH {fname}", file=sys.stderr)
                    bad += 1
                else:
                    print(f"ok {fname}")
            else:
                with open(path, "wb") as f:
                    f.write(data)
                print(f"wrote {fname} ({len(data)} bytes)")
        print(f"{name}: {feats.shape[0]} frames, features {feats.min():.3f} .. {feats.max():.3f}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
