//! The clustered-centroid loss against the all-pairs contrastive loss, forward and backward
//! (burn `Flex` + autodiff), 32-dimensional embeddings. The centroid loss computes `B × K`
//! example–centroid distances, the pairwise loss `B²` example–example distances: at a fixed
//! `K` = 16 clusters, doubling the batch should double the first and quadruple the second.
//! A second group varies `K` at batch 256.
//!
//! `cargo bench -p hark-trainer --bench losses`

use std::hint::black_box;

use burn::tensor::{Distribution, Tensor};
use criterion::{
    BenchmarkId, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
};
use hark_trainer::backend::CpuAutodiff as A;
use hark_trainer::loss::{CentroidLoss, CentroidLossConfig, pairwise_contrastive_loss};

const DIM: usize = 32;
const CLASSES: usize = 4;

/// Random embeddings with labels cycling over the classes, and a centroid loss with
/// `clusters` clusters spread evenly over the classes (cluster ids cycling within a class).
fn setup(batch: usize, clusters: usize) -> (Tensor<A, 2>, Vec<usize>, Vec<usize>, CentroidLoss) {
    let device = Default::default();
    let emb = Tensor::<A, 2>::random([batch, DIM], Distribution::Normal(0.0, 1.0), &device);
    let labels: Vec<usize> = (0..batch).map(|i| i % CLASSES).collect();
    let per_class = clusters / CLASSES;
    let ids: Vec<usize> = (0..batch)
        .map(|i| labels[i] * per_class + (i / CLASSES) % per_class)
        .collect();
    let mut loss = CentroidLossConfig::new().init(CLASSES, DIM);
    let cluster_class: Vec<usize> = (0..clusters).map(|j| j / per_class).collect();
    let centroids: Vec<f32> = (0..clusters * DIM)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    loss.set_centroids(centroids, cluster_class).unwrap();
    (emb, labels, ids, loss)
}

fn by_batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("loss_fwd_bwd_d32_k16");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    for batch in [64, 128, 256, 512, 1024] {
        g.throughput(Throughput::Elements(batch as u64));
        let (emb, labels, ids, loss) = setup(batch, 16);
        g.bench_with_input(BenchmarkId::new("centroid", batch), &batch, |b, _| {
            b.iter(|| {
                let e = emb.clone().detach().require_grad();
                let l = loss.forward(e.clone(), &labels, &ids).unwrap();
                black_box(e.grad(&l.backward()).unwrap().into_data())
            })
        });
        g.bench_with_input(BenchmarkId::new("pairwise", batch), &batch, |b, _| {
            b.iter(|| {
                let e = emb.clone().detach().require_grad();
                let l = pairwise_contrastive_loss(e.clone(), &labels, 1.0);
                black_box(e.grad(&l.backward()).unwrap().into_data())
            })
        });
    }
    g.finish();
}

fn by_clusters(c: &mut Criterion) {
    let mut g = c.benchmark_group("centroid_loss_fwd_bwd_d32_b256");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(20);
    for k in [4, 16, 64, 256] {
        let (emb, labels, ids, loss) = setup(256, k);
        g.bench_with_input(BenchmarkId::new("clusters", k), &k, |b, _| {
            b.iter(|| {
                let e = emb.clone().detach().require_grad();
                let l = loss.forward(e.clone(), &labels, &ids).unwrap();
                black_box(e.grad(&l.backward()).unwrap().into_data())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, by_batch, by_clusters);
criterion_main!(benches);
