//! One model step (one hop) of the default model size with each engine (native, tract), the
//! LSTM state carried: 1 LSTM layer of 64, a 32-dimensional embedding, 5 classes; and the
//! shipped default model with each engine.
//!
//! `cargo bench -p hark-e2e --bench model_step`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use hark::model::{EngineChoice, Model};
use hark_e2e::{feature_sequence, metadata};
use hark_trainer::export::{Activation, Dense, OutputActivation, StreamingNet};
use hark_trainer::model::LinearWeights;

fn default_size_model() -> (Vec<u8>, usize) {
    let base = hark_e2e::random_net(1, 64, 1, 64, 5);
    let lin = |d_in: usize, d_out: usize| LinearWeights {
        d_in,
        d_out,
        weight: hark_e2e::uniform(
            &mut hark_trainer::kmeans::SplitMix64::new(d_out as u64),
            d_in * d_out,
            0.3,
        ),
        bias: vec![0.0; d_out],
    };
    let net = StreamingNet {
        n_mels: 64,
        lstm: base.lstm,
        dense: vec![
            Dense {
                weights: lin(64, 32),
                activation: Activation::Identity,
            },
            Dense {
                weights: lin(32, 5),
                activation: Activation::Identity,
            },
        ],
        output: OutputActivation::Softmax,
    };
    let macs = net.multiply_adds_per_hop();
    (net.to_onnx(&metadata(5, 64)).unwrap(), macs)
}

fn step(c: &mut Criterion) {
    let (bytes, macs) = default_size_model();
    eprintln!("default-size model: {macs} multiply-adds per hop");
    let shipped = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.onnx"),
    )
    .unwrap();
    let x = feature_sequence(3, 1000, 64);
    for (what, bytes) in [
        ("lstm64_emb32_5classes", &bytes),
        ("default_onnx", &shipped),
    ] {
        for (engine, choice) in [
            ("native", EngineChoice::Native),
            ("tract", EngineChoice::Tract),
        ] {
            let model = Model::from_bytes_with(bytes, what, choice).unwrap();
            let mut stream = model.stream().unwrap();
            let mut i = 0;
            c.bench_function(&format!("model_step_{what}_{engine}"), |b| {
                b.iter(|| {
                    let f = &x[(i % 1000) * 64..(i % 1000 + 1) * 64];
                    i += 1;
                    black_box(stream.step(black_box(f)).unwrap()[0])
                })
            });
        }
    }
}

criterion_group!(benches, step);
criterion_main!(benches);
