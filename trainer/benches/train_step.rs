//! Training steps per second on the CPU (burn `Flex` + autodiff) at the default model size:
//! 1 LSTM layer of 64 over 64 mel bands, a 32-dimensional embedding, batch 32, windows of 100
//! frames (1 s), 5 classes. One step is what the training loop does per batch: forward,
//! loss, backward, Adam (gradient clipping by norm 1) and, for the centroid stage, the
//! centroid update.
//!
//! `cargo bench -p hark-trainer --bench train_step`
//! (criterion's throughput line, `elem/s`, is steps per second).

use std::hint::black_box;

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::tensor::{Distribution, Tensor};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use hark_trainer::backend::CpuAutodiff as A;
use hark_trainer::loss::CentroidLossConfig;
use hark_trainer::model::{Classifier, ClassifierConfig, EmbeddingNet, EmbeddingNetConfig};
use hark_trainer::train::{class_weights, weighted_cross_entropy};

const BATCH: usize = 32;
const FRAMES: usize = 100;
const MELS: usize = 64;
const CLASSES: usize = 5;
const EMBEDDING: usize = 32;

fn adam() -> AdamConfig {
    AdamConfig::new().with_grad_clipping(Some(GradientClippingConfig::Norm(1.0)))
}

/// A batch of random features and labels with a 10:4:2:1:1 class ratio.
fn batch() -> (Tensor<A, 3>, Vec<usize>) {
    let x = Tensor::<A, 3>::random(
        [BATCH, FRAMES, MELS],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    );
    let pattern = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 4];
    let labels = (0..BATCH).map(|i| pattern[i % pattern.len()]).collect();
    (x, labels)
}

fn net() -> EmbeddingNet<A> {
    EmbeddingNetConfig::new()
        .with_n_mels(MELS)
        .with_hidden(64)
        .with_layers(1)
        .with_embedding(EMBEDDING)
        .init(&Default::default())
}

fn steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("train_step_h64_e32_b32_t100");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    let (x, y) = batch();

    // Stage 1: the clustered-centroid loss, clusters by the loss's own rule on this batch
    // (20 + 8 + 2 + 1 + 1 examples: 32 clusters); its cost is small next to the LSTM's.
    let mut loss = CentroidLossConfig::new().init(CLASSES, EMBEDDING);
    let emb = net()
        .forward(x.clone())
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let clusters = loss.recluster(&emb, &y).unwrap();
    let mut optim = adam().init::<A, EmbeddingNet<A>>();
    let mut model = Some(net());
    g.bench_function("centroid", |b| {
        b.iter(|| {
            let m = model.take().unwrap();
            let e = m.forward(x.clone());
            let l = loss.forward(e.clone(), &y, &clusters).unwrap();
            let grads = GradientsParams::from_grads(l.backward(), &m);
            model = Some(optim.step(1e-3, m, grads));
            loss.update_centroids(&e.inner(), &clusters).unwrap();
        })
    });

    // The baseline: network and classifier end to end with the weighted cross-entropy.
    let mut counts = vec![0; CLASSES];
    y.iter().for_each(|&l| counts[l] += 1);
    let weights = class_weights(&counts);
    let mut optim_net = adam().init::<A, EmbeddingNet<A>>();
    let mut optim_clf = adam().init::<A, Classifier<A>>();
    let mut models = Some((
        net(),
        ClassifierConfig::new(CLASSES)
            .with_embedding(EMBEDDING)
            .init::<A>(&Default::default()),
    ));
    g.bench_function("weighted_ce", |b| {
        b.iter(|| {
            let (n, c) = models.take().unwrap();
            let l = weighted_cross_entropy(c.forward(n.forward(x.clone())), &y, &weights);
            let mut grads = l.backward();
            let g_clf = GradientsParams::from_module(&mut grads, &c);
            let g_net = GradientsParams::from_module(&mut grads, &n);
            let c = optim_clf.step(1e-3, c, g_clf);
            let n = optim_net.step(1e-3, n, g_net);
            models = Some(black_box((n, c)));
        })
    });
    g.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
