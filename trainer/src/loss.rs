//! The clustered-centroid loss, and an all-pairs contrastive loss to compare its speed with.
//!
//! # Clusters
//!
//! Let `n_c` be the number of examples of class `c` in the set being clustered and `n_min` the
//! smallest `n_c` over the classes present (`n_c > 0`). A class with `n_c > n_min` is split by
//! k-means (k-means++ seeding, [`crate::kmeans`]) of its current embeddings into
//! `k_c = max(1, round(n_c / n_min))` clusters (`round` takes halves away from zero); a class
//! with `n_c = n_min` has one cluster (its mean); an absent class has none. Clusters are numbered
//! class by class (all clusters of class 0 first). [`CentroidLoss::recluster`] does this and
//! returns every example's cluster; the training loop calls it every few epochs
//! ([`CentroidLossConfig::recluster_every`]) and carries the cluster ids with the examples (or
//! uses [`CentroidLoss::assign`], the nearest centroid of the example's own class, for examples
//! that were not clustered, e.g. fresh mixtures).
//!
//! # Centroids
//!
//! Each cluster `j` keeps a centroid `c_j`, set to the k-means centre at re-clustering and
//! then moved after every batch by an exponential moving average with momentum `m`
//! ([`CentroidLoss::update_centroids`]):
//!
//! ```text
//! c_j <- m c_j + (1 - m) mean{ e_i : k_i = j }     (only clusters with examples in the batch)
//! ```
//!
//! Centroids live on the host as plain numbers: no gradient flows through them.
//!
//! # The loss
//!
//! For a batch of embeddings `e_i` (`i = 1..B`) with labels `y_i` and cluster ids `k_i`
//! (`class(k_i) = y_i`), margin `M` and push weight `λ`:
//!
//! ```text
//! pull_i = ||e_i - c_{k_i}||²
//! O_i    = { j : class(j) != y_i }                              centroids of other classes
//! push_i = (1 / |O_i|) Σ_{j ∈ O_i} max(0, M - ||e_i - c_j||)²   (0 when O_i is empty)
//! loss   = (1 / B) Σ_i (pull_i + λ push_i)
//! ```
//!
//! Distances are Euclidean; `||·||` is computed as `sqrt(||·||² + 1e-12)` so that its gradient
//! is finite when an embedding sits on a centroid. Other clusters of the example's own class
//! neither pull nor push. Only example–centroid distances are computed: the cost is
//! `O(B × K × D)` for `K` clusters, against `O(B² × D)` for [`pairwise_contrastive_loss`].

use burn::config::Config;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::kmeans::{SplitMix64, kmeans, nearest_centroid};

/// Added to squared distances before the square root (finite gradients at zero distance).
pub const DISTANCE_EPS: f32 = 1e-12;

/// Configuration of the [`CentroidLoss`]; defaults in one place.
#[derive(Config, Debug)]
pub struct CentroidLossConfig {
    /// Margin `M` of the push term, in embedding units. Default 1.0.
    #[config(default = 1.0)]
    pub margin: f32,
    /// Weight `λ` of the push term relative to the pull term. Default 1.0.
    #[config(default = 1.0)]
    pub push_weight: f32,
    /// EMA momentum `m` of the centroids, in `[0, 1]` (0: a centroid becomes the last batch's
    /// mean; 1: it never moves). Default 0.9.
    #[config(default = 0.9)]
    pub momentum: f32,
    /// Seed of the k-means++ seeding (each re-clustering and class derives its own). Default 0.
    #[config(default = 0)]
    pub seed: u64,
    /// Maximum Lloyd iterations of each k-means. Default 50.
    #[config(default = 50)]
    pub kmeans_iters: usize,
    /// Epochs between re-clusterings, for the training loop. Default 5.
    #[config(default = 5)]
    pub recluster_every: usize,
}

/// Why the loss cannot be computed or updated: a caller's mistake in the inputs.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CentroidLossError {
    /// An array has the wrong length.
    #[error("{what}: {got} values, expected {expected}")]
    Length {
        /// Which array.
        what: &'static str,
        /// Its length.
        got: usize,
        /// The length expected.
        expected: usize,
    },
    /// A label is not a class.
    #[error("label {label} out of range ({n_classes} classes)")]
    Label {
        /// The label.
        label: usize,
        /// Number of classes.
        n_classes: usize,
    },
    /// A cluster id is not a cluster.
    #[error("cluster {cluster} out of range ({n_clusters} clusters)")]
    Cluster {
        /// The cluster id.
        cluster: usize,
        /// Number of clusters.
        n_clusters: usize,
    },
    /// An example's cluster belongs to another class than its label.
    #[error(
        "example {index}: cluster {cluster} belongs to class {cluster_class}, label is {label}"
    )]
    ClusterClass {
        /// Example index in the batch.
        index: usize,
        /// Its cluster.
        cluster: usize,
        /// The class of that cluster.
        cluster_class: usize,
        /// Its label.
        label: usize,
    },
    /// A class has no cluster (it had no example at the last re-clustering).
    #[error("class {label} has no cluster (it had no examples when clustered)")]
    NoCluster {
        /// The class.
        label: usize,
    },
    /// Nothing to cluster.
    #[error("no examples to cluster")]
    Empty,
    /// Centroid values that do not match the clusters.
    #[error("invalid centroids: {0}")]
    Centroids(String),
}

/// The clustered-centroid loss with its clusters and running centroids (see the [module
/// documentation](self) for the formulas).
#[derive(Debug, Clone)]
pub struct CentroidLoss {
    config: CentroidLossConfig,
    n_classes: usize,
    dim: usize,
    /// `K × dim`, row-major.
    centroids: Vec<f32>,
    /// Class of every cluster, non-decreasing.
    cluster_class: Vec<usize>,
    /// Re-clusterings so far (varies the k-means seed).
    rounds: u64,
}

impl CentroidLossConfig {
    /// A loss for `n_classes` classes and `dim`-dimensional embeddings, with no clusters yet:
    /// call [`CentroidLoss::recluster`] (or [`CentroidLoss::set_centroids`]) before the first
    /// batch.
    pub fn init(&self, n_classes: usize, dim: usize) -> CentroidLoss {
        CentroidLoss {
            config: self.clone(),
            n_classes,
            dim,
            centroids: Vec::new(),
            cluster_class: Vec::new(),
            rounds: 0,
        }
    }
}

/// A tensor's values as host f32, row-major (a detached copy).
fn host_values<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data")
}

fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), CentroidLossError> {
    if got == expected {
        Ok(())
    } else {
        Err(CentroidLossError::Length {
            what,
            got,
            expected,
        })
    }
}

impl CentroidLoss {
    /// The configuration.
    pub fn config(&self) -> &CentroidLossConfig {
        &self.config
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// Embedding size.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Number of clusters `K` (all classes).
    pub fn n_clusters(&self) -> usize {
        self.cluster_class.len()
    }

    /// The centroids, `K × dim`, row-major.
    pub fn centroids(&self) -> &[f32] {
        &self.centroids
    }

    /// The class of every cluster.
    pub fn cluster_class(&self) -> &[usize] {
        &self.cluster_class
    }

    /// Re-clusterings so far (each varies the k-means seed); saved with a checkpoint.
    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    /// Sets the re-clustering count (when restoring a checkpoint).
    pub fn set_rounds(&mut self, rounds: u64) {
        self.rounds = rounds;
    }

    /// The cluster ids of class `c` (a contiguous range).
    pub fn clusters_of(&self, c: usize) -> std::ops::Range<usize> {
        let start = self.cluster_class.partition_point(|&x| x < c);
        let end = self.cluster_class.partition_point(|&x| x <= c);
        start..end
    }

    /// Replaces the clusters: `centroids` (`K × dim`) and the class of each
    /// (`cluster_class`, non-decreasing, each `< n_classes`).
    pub fn set_centroids(
        &mut self,
        centroids: Vec<f32>,
        cluster_class: Vec<usize>,
    ) -> Result<(), CentroidLossError> {
        check_len("centroids", centroids.len(), cluster_class.len() * self.dim)?;
        if let Some(&label) = cluster_class.iter().find(|&&c| c >= self.n_classes) {
            return Err(CentroidLossError::Label {
                label,
                n_classes: self.n_classes,
            });
        }
        if cluster_class.windows(2).any(|w| w[0] > w[1]) {
            return Err(CentroidLossError::Centroids(
                "cluster classes must be non-decreasing".into(),
            ));
        }
        if centroids.iter().any(|v| !v.is_finite()) {
            return Err(CentroidLossError::Centroids("non-finite value".into()));
        }
        self.centroids = centroids;
        self.cluster_class = cluster_class;
        Ok(())
    }

    fn check_labels(&self, labels: &[usize]) -> Result<(), CentroidLossError> {
        match labels.iter().find(|&&l| l >= self.n_classes) {
            Some(&label) => Err(CentroidLossError::Label {
                label,
                n_classes: self.n_classes,
            }),
            None => Ok(()),
        }
    }

    /// Re-clusters from the current embeddings of a set of examples (`embeddings`:
    /// `n × dim` row-major, `labels`: `n`); replaces every cluster and centroid and returns the
    /// cluster id of every example. See the [module documentation](self) for the rule.
    pub fn recluster(
        &mut self,
        embeddings: &[f32],
        labels: &[usize],
    ) -> Result<Vec<usize>, CentroidLossError> {
        let n = labels.len();
        if n == 0 {
            return Err(CentroidLossError::Empty);
        }
        check_len("embeddings", embeddings.len(), n * self.dim)?;
        self.check_labels(labels)?;
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); self.n_classes];
        for (i, &l) in labels.iter().enumerate() {
            members[l].push(i);
        }
        let n_min = members
            .iter()
            .map(Vec::len)
            .filter(|&c| c > 0)
            .min()
            .expect("n > 0");
        self.rounds += 1;
        let mut centroids = Vec::new();
        let mut cluster_class = Vec::new();
        let mut assignment = vec![0usize; n];
        let d = self.dim;
        for (c, idx) in members.iter().enumerate() {
            if idx.is_empty() {
                continue;
            }
            let k = if idx.len() > n_min {
                ((idx.len() as f64 / n_min as f64).round() as usize).max(1)
            } else {
                1
            };
            let points: Vec<f32> = idx
                .iter()
                .flat_map(|&i| embeddings[i * d..(i + 1) * d].iter().copied())
                .collect();
            let seed = SplitMix64::new(
                self.config.seed ^ self.rounds.rotate_left(32) ^ (c as u64).wrapping_mul(0x9E37),
            )
            .next_u64();
            let km = kmeans(&points, d, k, seed, self.config.kmeans_iters);
            let first = cluster_class.len();
            for (&i, &a) in idx.iter().zip(&km.assignments) {
                assignment[i] = first + a;
            }
            cluster_class.extend(std::iter::repeat_n(c, km.k()));
            centroids.extend_from_slice(&km.centroids);
        }
        self.centroids = centroids;
        self.cluster_class = cluster_class;
        Ok(assignment)
    }

    /// The nearest cluster of each example's own class (`embeddings`: `n × dim` row-major).
    pub fn assign(
        &self,
        embeddings: &[f32],
        labels: &[usize],
    ) -> Result<Vec<usize>, CentroidLossError> {
        let d = self.dim;
        check_len("embeddings", embeddings.len(), labels.len() * d)?;
        self.check_labels(labels)?;
        labels
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                let range = self.clusters_of(l);
                if range.is_empty() {
                    return Err(CentroidLossError::NoCluster { label: l });
                }
                let cs = &self.centroids[range.start * d..range.end * d];
                Ok(range.start + nearest_centroid(&embeddings[i * d..(i + 1) * d], cs, d).0)
            })
            .collect()
    }

    fn check_batch(
        &self,
        batch: usize,
        dim: usize,
        labels: &[usize],
        clusters: &[usize],
    ) -> Result<(), CentroidLossError> {
        check_len("embedding size", dim, self.dim)?;
        check_len("labels", labels.len(), batch)?;
        check_len("cluster ids", clusters.len(), batch)?;
        self.check_labels(labels)?;
        for (index, (&label, &cluster)) in labels.iter().zip(clusters).enumerate() {
            let Some(&cluster_class) = self.cluster_class.get(cluster) else {
                return Err(CentroidLossError::Cluster {
                    cluster,
                    n_clusters: self.n_clusters(),
                });
            };
            if cluster_class != label {
                return Err(CentroidLossError::ClusterClass {
                    index,
                    cluster,
                    cluster_class,
                    label,
                });
            }
        }
        Ok(())
    }

    /// The per-example terms `(pull, push)`, each `[batch]`, of `embeddings: [batch, dim]`
    /// with `labels` and cluster ids `clusters` (one per example).
    pub fn terms<B: Backend>(
        &self,
        embeddings: Tensor<B, 2>,
        labels: &[usize],
        clusters: &[usize],
    ) -> Result<(Tensor<B, 1>, Tensor<B, 1>), CentroidLossError> {
        let [batch, dim] = embeddings.dims();
        self.check_batch(batch, dim, labels, clusters)?;
        let k = self.n_clusters();
        let device = embeddings.device();
        // Constant (gradient-free) centroids and masks, built on the host.
        let centroids =
            Tensor::<B, 2>::from_data(TensorData::new(self.centroids.clone(), [k, dim]), &device);
        let mut own = vec![0.0f32; batch * k];
        let mut other = vec![0.0f32; batch * k];
        let mut other_count = vec![0.0f32; batch];
        for i in 0..batch {
            own[i * k + clusters[i]] = 1.0;
            for (j, &cj) in self.cluster_class.iter().enumerate() {
                if cj != labels[i] {
                    other[i * k + j] = 1.0;
                    other_count[i] += 1.0;
                }
            }
        }
        let inv_other: Vec<f32> = other_count
            .iter()
            .map(|&c| if c > 0.0 { 1.0 / c } else { 0.0 })
            .collect();
        let own = Tensor::<B, 2>::from_data(TensorData::new(own, [batch, k]), &device);
        let other = Tensor::<B, 2>::from_data(TensorData::new(other, [batch, k]), &device);
        let inv_other = Tensor::<B, 1>::from_data(TensorData::new(inv_other, [batch]), &device);

        // Squared distances [batch, K] as |e|² + |c|² - 2 e·c: one matrix product, no
        // [batch, K, dim] tensor (a batch of frames times dozens of clusters would make it
        // tens of millions of values, forward and backward). Rounding can take a distance
        // just below 0: clamped.
        let e2 = embeddings.clone().powi_scalar(2).sum_dim(1); // [batch, 1]
        let c2 = centroids.clone().powi_scalar(2).sum_dim(1).reshape([1, k]);
        let d2 =
            (e2 + c2 - embeddings.matmul(centroids.transpose()).mul_scalar(2.0)).clamp_min(0.0);
        let pull = (d2.clone() * own).sum_dim(1).reshape([batch]);
        let hinge = (d2
            .add_scalar(DISTANCE_EPS)
            .sqrt()
            .neg()
            .add_scalar(self.config.margin))
        .clamp_min(0.0)
        .powi_scalar(2);
        let push = (hinge * other).sum_dim(1).reshape([batch]) * inv_other;
        Ok((pull, push))
    }

    /// The loss (a one-element tensor) of `embeddings: [batch, dim]` with `labels` and
    /// cluster ids `clusters`; differentiable with respect to `embeddings`.
    pub fn forward<B: Backend>(
        &self,
        embeddings: Tensor<B, 2>,
        labels: &[usize],
        clusters: &[usize],
    ) -> Result<Tensor<B, 1>, CentroidLossError> {
        let (pull, push) = self.terms(embeddings, labels, clusters)?;
        Ok((pull + push.mul_scalar(self.config.push_weight)).mean())
    }

    /// Moves the centroids toward the batch (EMA, see the [module documentation](self)),
    /// from host values `embeddings` (`n × dim`) and their cluster ids.
    pub fn update_centroids_from(
        &mut self,
        embeddings: &[f32],
        clusters: &[usize],
    ) -> Result<(), CentroidLossError> {
        let d = self.dim;
        check_len("embeddings", embeddings.len(), clusters.len() * d)?;
        let k = self.n_clusters();
        if let Some(&cluster) = clusters.iter().find(|&&j| j >= k) {
            return Err(CentroidLossError::Cluster {
                cluster,
                n_clusters: k,
            });
        }
        let mut sums = vec![0.0f64; k * d];
        let mut counts = vec![0usize; k];
        for (i, &j) in clusters.iter().enumerate() {
            counts[j] += 1;
            for (s, &x) in sums[j * d..(j + 1) * d]
                .iter_mut()
                .zip(&embeddings[i * d..(i + 1) * d])
            {
                *s += x as f64;
            }
        }
        let m = self.config.momentum as f64;
        for j in 0..k {
            if counts[j] == 0 {
                continue;
            }
            for t in 0..d {
                let mean = sums[j * d + t] / counts[j] as f64;
                let c = &mut self.centroids[j * d + t];
                *c = (m * *c as f64 + (1.0 - m) * mean) as f32;
            }
        }
        Ok(())
    }

    /// [`Self::update_centroids_from`] with the values of a tensor `[n, dim]` (copied to the
    /// host, so detached from any graph).
    pub fn update_centroids<B: Backend>(
        &mut self,
        embeddings: &Tensor<B, 2>,
        clusters: &[usize],
    ) -> Result<(), CentroidLossError> {
        let [_, dim] = embeddings.dims();
        check_len("embedding size", dim, self.dim)?;
        self.update_centroids_from(&host_values(embeddings), clusters)
    }
}

/// The classic all-pairs contrastive loss, for the speed comparison with the centroid loss:
/// over every unordered pair `i < j` of the batch,
///
/// ```text
/// l_ij = ||e_i - e_j||²                   if y_i = y_j
/// l_ij = max(0, M - ||e_i - e_j||)²       otherwise
/// loss = mean over the B(B-1)/2 pairs of l_ij
/// ```
///
/// (distances as in the centroid loss, `sqrt(d² + 1e-12)`). Cost `O(B² × D)`.
/// `embeddings: [batch, dim]`, `labels`: `batch` values; returns a one-element tensor
/// (zero when the batch has fewer than two examples).
///
/// # Panics
/// If `labels.len()` is not the batch size.
pub fn pairwise_contrastive_loss<B: Backend>(
    embeddings: Tensor<B, 2>,
    labels: &[usize],
    margin: f32,
) -> Tensor<B, 1> {
    let [batch, dim] = embeddings.dims();
    assert_eq!(
        labels.len(),
        batch,
        "pairwise_contrastive_loss: one label per example"
    );
    let device = embeddings.device();
    let pairs = batch * batch.saturating_sub(1) / 2;
    if pairs == 0 {
        return Tensor::zeros([1], &device);
    }
    let mut same = vec![0.0f32; batch * batch];
    let mut diff = vec![0.0f32; batch * batch];
    for i in 0..batch {
        for j in i + 1..batch {
            if labels[i] == labels[j] {
                same[i * batch + j] = 1.0;
            } else {
                diff[i * batch + j] = 1.0;
            }
        }
    }
    let same = Tensor::<B, 2>::from_data(TensorData::new(same, [batch, batch]), &device);
    let diff = Tensor::<B, 2>::from_data(TensorData::new(diff, [batch, batch]), &device);
    let delta = embeddings
        .clone()
        .unsqueeze_dim::<3>(1)
        .expand([batch, batch, dim])
        - embeddings.unsqueeze_dim::<3>(0).expand([batch, batch, dim]);
    let d2 = delta.powi_scalar(2).sum_dim(2).reshape([batch, batch]);
    let hinge = (d2
        .clone()
        .add_scalar(DISTANCE_EPS)
        .sqrt()
        .neg()
        .add_scalar(margin))
    .clamp_min(0.0)
    .powi_scalar(2);
    (d2 * same + hinge * diff).sum().div_scalar(pairs as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};
    use burn::module::{Module, Param};
    use burn::optim::{GradientsParams, Optimizer, SgdConfig};

    type B = Cpu;

    fn tensor(values: &[f32], rows: usize) -> Tensor<B, 2> {
        let cols = values.len() / rows;
        Tensor::from_data(
            TensorData::new(values.to_vec(), [rows, cols]),
            &Default::default(),
        )
    }

    fn scalar(t: Tensor<B, 1>) -> f32 {
        host_values(&t)[0]
    }

    fn close(a: f32, b: f32, tol: f32) {
        assert!((a - b).abs() <= tol, "{a} vs {b}");
    }

    /// Three 2-D centroids: c0 = (0, 0) of class 0; c1 = (1, 0) and c2 = (0, 2) of class 1.
    fn three_centroids(margin: f32, push_weight: f32) -> CentroidLoss {
        let mut loss = CentroidLossConfig::new()
            .with_margin(margin)
            .with_push_weight(push_weight)
            .init(2, 2);
        loss.set_centroids(vec![0.0, 0.0, 1.0, 0.0, 0.0, 2.0], vec![0, 1, 1])
            .unwrap();
        loss
    }

    /// Worked by hand, margin M = 2, λ = 0.5:
    ///
    /// e0 = (0, 1), class 0, cluster 0:
    ///   pull = ||(0,1) - (0,0)||² = 1
    ///   other-class centroids c1, c2:
    ///     ||e0 - c1|| = ||(-1, 1)|| = √2  → (2 - √2)² = 6 - 4√2 = 0.343146
    ///     ||e0 - c2|| = ||(0, -1)|| = 1   → (2 - 1)² = 1
    ///   push = (0.343146 + 1) / 2 = 0.671573
    /// e1 = (1, 1), class 1, cluster 1:
    ///   pull = ||(1,1) - (1,0)||² = 1
    ///   other-class centroid c0 only (c2 is its own class): ||(1,1)|| = √2 → 0.343146
    ///   push = 0.343146
    /// loss = ((1 + 0.5 · 0.671573) + (1 + 0.5 · 0.343146)) / 2
    ///      = (1.335786 + 1.171573) / 2 = 1.253680
    #[test]
    fn hand_computed_loss() {
        let loss = three_centroids(2.0, 0.5);
        let e = tensor(&[0.0, 1.0, 1.0, 1.0], 2);
        let (pull, push) = loss.terms(e.clone(), &[0, 1], &[0, 1]).unwrap();
        let (pull, push) = (host_values(&pull), host_values(&push));
        close(pull[0], 1.0, 1e-6);
        close(pull[1], 1.0, 1e-6);
        let r2 = 2f32.sqrt();
        close(push[0], ((2.0 - r2).powi(2) + 1.0) / 2.0, 1e-5);
        close(push[0], 0.671573, 1e-5);
        close(push[1], 0.343146, 1e-5);
        close(
            scalar(loss.forward(e, &[0, 1], &[0, 1]).unwrap()),
            1.25368,
            1e-5,
        );
    }

    /// The pull uses the example's own cluster, not the nearest centroid of its class:
    /// e = (0, 1.5), class 1, cluster 1 (c1 = (1, 0)), although c2 = (0, 2) is nearer.
    /// pull = 1² + 1.5² = 3.25; push from c0 with M = 1: ||e - c0|| = 1.5 > M → 0.
    #[test]
    fn pull_is_to_the_assigned_cluster() {
        let loss = three_centroids(1.0, 1.0);
        let e = tensor(&[0.0, 1.5], 1);
        close(
            scalar(loss.forward(e.clone(), &[1], &[1]).unwrap()),
            3.25,
            1e-5,
        );
        // Assigned to c2 instead: pull = 0.5² = 0.25.
        close(scalar(loss.forward(e, &[1], &[2]).unwrap()), 0.25, 1e-5);
    }

    /// Only centroids of other classes push. For e1 = (1, 1) of class 1 (cluster 1), moving
    /// its own class's other cluster c2 right next to it must not change the loss (a formula
    /// pushing from every other centroid would add (2 - 0.1)²/2 = 1.805 · λ here), while
    /// moving the other class's c0 next to it must.
    #[test]
    fn same_class_clusters_do_not_push() {
        let base = three_centroids(2.0, 0.5);
        let e = tensor(&[1.0, 1.0], 1);
        let before = scalar(base.forward(e.clone(), &[1], &[1]).unwrap());
        // 1 + 0.5 · (2 - √2)² = 1.171573.
        close(before, 1.171573, 1e-5);

        let mut same = base.clone();
        same.set_centroids(vec![0.0, 0.0, 1.0, 0.0, 1.0, 1.1], vec![0, 1, 1])
            .unwrap();
        close(
            scalar(same.forward(e.clone(), &[1], &[1]).unwrap()),
            before,
            1e-6,
        );

        let mut other = base.clone();
        other
            .set_centroids(vec![1.0, 1.1, 1.0, 0.0, 0.0, 2.0], vec![0, 1, 1])
            .unwrap();
        // push = (2 - 0.1)² = 3.61 → loss = 1 + 0.5 · 3.61 = 2.805.
        close(scalar(other.forward(e, &[1], &[1]).unwrap()), 2.805, 1e-5);
    }

    /// Centroids of other classes beyond the margin contribute nothing, and the push is
    /// averaged over the other-class centroids (not summed, not over all centroids).
    #[test]
    fn push_is_hinged_and_averaged() {
        // e = (0, 0.5), class 0: ||e - c1|| = √1.25 = 1.118034, ||e - c2|| = 1.5.
        // M = 1.2: (1.2 - 1.118034)² = 0.006718, c2 beyond the margin → 0.
        // push = 0.006718 / 2 = 0.003359; pull = 0.25.
        let loss = three_centroids(1.2, 1.0);
        let e = tensor(&[0.0, 0.5], 1);
        let (pull, push) = loss.terms(e, &[0], &[0]).unwrap();
        close(scalar(pull), 0.25, 1e-6);
        close(scalar(push), 0.003359, 1e-6);
    }

    #[test]
    fn no_other_class_means_no_push() {
        let mut loss = CentroidLossConfig::new().init(3, 2);
        loss.set_centroids(vec![0.0, 0.0, 5.0, 5.0], vec![1, 1])
            .unwrap();
        let (_, push) = loss.terms(tensor(&[0.1, 0.0], 1), &[1], &[0]).unwrap();
        close(scalar(push), 0.0, 0.0);
    }

    #[test]
    fn invalid_inputs_are_errors() {
        let loss = three_centroids(1.0, 1.0);
        let e = tensor(&[0.0, 1.0], 1);
        assert_eq!(
            loss.forward(e.clone(), &[0], &[1]).unwrap_err(),
            CentroidLossError::ClusterClass {
                index: 0,
                cluster: 1,
                cluster_class: 1,
                label: 0
            }
        );
        assert!(matches!(
            loss.forward(e.clone(), &[0], &[7]),
            Err(CentroidLossError::Cluster { cluster: 7, .. })
        ));
        assert!(matches!(
            loss.forward(e.clone(), &[5], &[0]),
            Err(CentroidLossError::Label { label: 5, .. })
        ));
        assert!(matches!(
            loss.forward(e, &[0, 1], &[0, 1]),
            Err(CentroidLossError::Length { .. })
        ));
    }

    /// One SGD step on the loss moves an embedding toward its centroid. Hand value: e = (0.5,
    /// 0.5), own centroid (0, 0), other-class centroid (3, 3) beyond the margin (M = 1), so
    /// loss = ||e||² and ∂loss/∂e = 2e = (1, 1); with lr 0.1, e becomes (0.4, 0.4).
    #[test]
    fn a_gradient_step_pulls_toward_the_centroid() {
        #[derive(Module, Debug)]
        struct Emb<B: Backend> {
            e: Param<Tensor<B, 2>>,
        }
        type A = CpuAutodiff;
        let device = Default::default();
        let mut loss = CentroidLossConfig::new().init(2, 2);
        loss.set_centroids(vec![0.0, 0.0, 3.0, 3.0], vec![0, 1])
            .unwrap();
        let mut model = Emb::<A> {
            e: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![0.5f32, 0.5], [1, 2]),
                &device,
            )),
        };
        let mut optim = SgdConfig::new().init();
        let dist = |m: &Emb<A>| {
            let v = host_values(&m.e.val());
            (v[0] * v[0] + v[1] * v[1]).sqrt()
        };
        let d0 = dist(&model);
        let l = loss.forward(model.e.val(), &[0], &[0]).unwrap();
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(0.1, model, grads);
        let v = host_values(&model.e.val());
        close(v[0], 0.4, 1e-6);
        close(v[1], 0.4, 1e-6);
        assert!(dist(&model) < d0);

        // The push: own centroid at e (no pull gradient), the other class's centroid (3, 3)
        // at d = ||e - (3, 3)|| = √0.5 = 0.707107 < M = 2. push = (M - d)², so
        // ∂/∂e = -2 (M - d) (e - c) / d = -2 · 1.292893 · (-0.5) / 0.707107 = 1.828427 per
        // coordinate: the step moves e away from (3, 3), to 2.5 - 0.1828427 = 2.317157.
        let mut loss = CentroidLossConfig::new().with_margin(2.0).init(2, 2);
        loss.set_centroids(vec![2.5, 2.5, 3.0, 3.0], vec![0, 1])
            .unwrap();
        let mut model = Emb::<A> {
            e: Param::from_tensor(Tensor::from_data(
                TensorData::new(vec![2.5f32, 2.5], [1, 2]),
                &device,
            )),
        };
        let l = loss.forward(model.e.val(), &[0], &[0]).unwrap();
        let grads = GradientsParams::from_grads(l.backward(), &model);
        model = optim.step(0.1, model, grads);
        let v = host_values(&model.e.val());
        close(v[0], 2.317157, 1e-5);
        close(v[1], 2.317157, 1e-5);
    }

    /// EMA with m = 0.9: c0 = (0, 0) receives (1, 1) and (3, 1), mean (2, 1):
    /// c0 <- 0.9 (0, 0) + 0.1 (2, 1) = (0.2, 0.1). c1 = (10, 0) receives (20, 10):
    /// c1 <- (9, 0) + (2, 1) = (11, 1). c2 receives nothing and stays (0, 2).
    #[test]
    fn ema_centroid_update() {
        let mut loss = CentroidLossConfig::new().with_momentum(0.9).init(2, 2);
        loss.set_centroids(vec![0.0, 0.0, 10.0, 0.0, 0.0, 2.0], vec![0, 1, 1])
            .unwrap();
        let e = tensor(&[1.0, 1.0, 20.0, 10.0, 3.0, 1.0], 3);
        loss.update_centroids(&e, &[0, 1, 0]).unwrap();
        let c = loss.centroids();
        let expect = [0.2, 0.1, 11.0, 1.0, 0.0, 2.0];
        for (a, b) in c.iter().zip(expect) {
            close(*a, b, 1e-5);
        }
        // Momentum 0: the centroid becomes the batch mean.
        let mut loss = CentroidLossConfig::new().with_momentum(0.0).init(1, 2);
        loss.set_centroids(vec![5.0, 5.0], vec![0]).unwrap();
        loss.update_centroids_from(&[1.0, 2.0, 3.0, 4.0], &[0, 0])
            .unwrap();
        assert_eq!(loss.centroids(), &[2.0, 3.0]);
    }

    /// Counts: class 0 has 2 examples (n_min), class 1 has 6 in three separated pairs
    /// (k = round(6/2) = 3), class 2 has 3 (k = round(1.5) = 2), class 3 none (no cluster).
    #[test]
    fn reclustering_splits_large_classes() {
        #[rustfmt::skip]
        let points: Vec<(f32, f32, usize)> = vec![
            (0.0, 0.0, 0), (0.2, 0.0, 0),
            (10.0, 0.0, 1), (10.2, 0.0, 1), (20.0, 0.0, 1), (20.2, 0.0, 1), (30.0, 0.0, 1), (30.2, 0.0, 1),
            (0.0, 10.0, 2), (0.0, 10.2, 2), (0.0, 30.0, 2),
        ];
        let emb: Vec<f32> = points.iter().flat_map(|p| [p.0, p.1]).collect();
        let labels: Vec<usize> = points.iter().map(|p| p.2).collect();
        let mut loss = CentroidLossConfig::new().with_seed(3).init(4, 2);
        let ids = loss.recluster(&emb, &labels).unwrap();
        assert_eq!(loss.cluster_class(), &[0, 1, 1, 1, 2, 2]);
        assert_eq!(loss.clusters_of(1), 1..4);
        assert_eq!(loss.clusters_of(3), 6..6);
        for (i, &id) in ids.iter().enumerate() {
            assert_eq!(loss.cluster_class()[id], labels[i], "example {i}");
        }
        // Each pair of class 1 is one cluster, the pairs are different clusters.
        assert_eq!(ids[2], ids[3]);
        assert_eq!(ids[4], ids[5]);
        assert_eq!(ids[6], ids[7]);
        assert!(ids[2] != ids[4] && ids[4] != ids[6] && ids[2] != ids[6]);
        // Class 2: the close pair together, the far point alone.
        assert_eq!(ids[8], ids[9]);
        assert_ne!(ids[8], ids[10]);
        // Class 0: one cluster, its mean.
        let c = &loss.centroids()[0..2];
        close(c[0], 0.1, 1e-6);
        close(c[1], 0.0, 1e-6);
        // Assigning by nearest own-class centroid gives the same ids here.
        assert_eq!(loss.assign(&emb, &labels).unwrap(), ids);
        // The ids drive the loss directly.
        let e = tensor(&emb, labels.len());
        assert!(scalar(loss.forward(e, &labels, &ids).unwrap()).is_finite());
        // A class without cluster cannot be assigned.
        assert_eq!(
            loss.assign(&[0.0, 0.0], &[3]).unwrap_err(),
            CentroidLossError::NoCluster { label: 3 }
        );
    }

    #[test]
    fn equal_counts_give_one_cluster_per_class() {
        let emb = [0.0, 0.0, 1.0, 0.0, 5.0, 5.0, 9.0, 5.0];
        let mut loss = CentroidLossConfig::new().init(2, 2);
        let ids = loss.recluster(&emb, &[0, 0, 1, 1]).unwrap();
        assert_eq!(ids, vec![0, 0, 1, 1]);
        assert_eq!(loss.centroids(), &[0.5, 0.0, 7.0, 5.0]);
    }

    /// e0 = (0, 0) and e1 = (3, 4) of class 0, e2 = (0, 1) of class 1, M = 2:
    /// (0, 1) same class: 3² + 4² = 25; (0, 2): d = 1 → (2 - 1)² = 1;
    /// (1, 2): d = √18 > 2 → 0. Mean over 3 pairs: 26 / 3 = 8.666667.
    #[test]
    fn pairwise_contrastive_hand_computed() {
        let e = tensor(&[0.0, 0.0, 3.0, 4.0, 0.0, 1.0], 3);
        close(
            scalar(pairwise_contrastive_loss(e, &[0, 0, 1], 2.0)),
            26.0 / 3.0,
            1e-5,
        );
        let one = tensor(&[1.0, 1.0], 1);
        close(scalar(pairwise_contrastive_loss(one, &[0], 2.0)), 0.0, 0.0);
    }
}
