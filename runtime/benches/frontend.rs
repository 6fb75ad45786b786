//! Frontend cost per hop, and decode + resample throughput.
//!
//! `cargo bench -p hark --bench frontend`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use hark::audio::{AudioReader, PcmFormat, PcmReader};
use hark::frontend::{Frontend, FrontendConfig};

fn signal(n: usize) -> Vec<f32> {
    let mut s = 0x2545F4914F6CDD1Du64;
    (0..n)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1 + 0.3 * (i as f32 * 0.07).sin()
        })
        .collect()
}

fn frontend_per_hop(c: &mut Criterion) {
    let mut g = c.benchmark_group("frontend");
    let hop = signal(160);
    let mut fe = Frontend::new(FrontendConfig::default()).unwrap();
    fe.push(&signal(240), |_, _| {});
    g.throughput(Throughput::Elements(1));
    g.bench_function("one_hop_160_samples", |b| {
        b.iter(|| {
            let mut acc = 0.0f32;
            fe.push(black_box(&hop), |_, f| acc += f[0]);
            black_box(acc)
        })
    });
    g.finish();
}

fn wav_bytes(rate: u32, channels: u16, seconds: usize) -> Vec<u8> {
    let x = signal(rate as usize * seconds * channels as usize);
    let data: Vec<u8> = x
        .iter()
        .flat_map(|&s| ((s * 32767.0) as i16).to_le_bytes())
        .collect();
    let mut out = Vec::new();
    let block = channels as u32 * 2;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * block).to_le_bytes());
    out.extend_from_slice(&(block as u16).to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out.extend_from_slice(&data);
    out
}

fn decode_and_resample(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_resample");
    g.sample_size(20);
    let seconds = 10;
    for (rate, channels) in [(16_000u32, 1u16), (44_100, 2), (48_000, 2)] {
        let bytes = wav_bytes(rate, channels, seconds);
        // Throughput in seconds of audio: criterion reports "elements/s" = audio s per s.
        g.throughput(Throughput::Elements(seconds as u64));
        g.bench_with_input(
            BenchmarkId::new("wav_i16", format!("{rate}Hz_{channels}ch")),
            &bytes,
            |b, bytes| {
                b.iter(|| {
                    let src = std::io::Cursor::new(bytes.clone());
                    let mut r =
                        AudioReader::from_source(Box::new(src), "bench.wav".into(), Some("wav"))
                            .unwrap();
                    let mut n = 0;
                    while let Some(c) = r.next_chunk().unwrap() {
                        n += c.len();
                    }
                    black_box(n)
                })
            },
        );
    }
    let pcm: Vec<u8> = signal(48_000 * seconds)
        .iter()
        .flat_map(|s| s.to_le_bytes())
        .collect();
    g.bench_function("raw_f32_48000Hz_1ch", |b| {
        b.iter(|| {
            let mut r = PcmReader::new(&pcm[..], "<bench>", PcmFormat::F32Le, 48_000, 1).unwrap();
            let mut n = 0;
            while let Some(c) = r.next_chunk().unwrap() {
                n += c.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, frontend_per_hop, decode_and_resample);
criterion_main!(benches);
