//! Plain k-means with k-means++ seeding, on row-major f32 points, deterministic for a seed.
//!
//! Used by the clustered-centroid loss to split a large class into several clusters of its
//! current embeddings. Sizes are small (a class's examples × a 32-dimensional embedding), so
//! this is simple O(n k d) Lloyd iteration with no acceleration.

/// The result of [`kmeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    /// Point dimension.
    pub dim: usize,
    /// Cluster centres, `k × dim`, row-major.
    pub centroids: Vec<f32>,
    /// The cluster of every point.
    pub assignments: Vec<usize>,
    /// Sum over points of the squared distance to their centre.
    pub inertia: f64,
    /// Lloyd iterations run.
    pub iterations: usize,
}

impl KMeans {
    /// Number of clusters.
    pub fn k(&self) -> usize {
        self.centroids.len() / self.dim.max(1)
    }

    /// Centre `j`.
    pub fn centroid(&self, j: usize) -> &[f32] {
        &self.centroids[j * self.dim..(j + 1) * self.dim]
    }
}

/// A small deterministic generator (SplitMix64), so that clustering needs no extra crate and
/// gives the same result for the same seed everywhere.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_f64() * n as f64) as usize).min(n - 1)
    }
}

/// Squared Euclidean distance, accumulated in f64.
pub fn squared_distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            let d = (*x - *y) as f64;
            d * d
        })
        .sum()
}

/// Clusters `points` (`n × dim`, row-major) into `k` clusters.
///
/// Seeding is k-means++ (the first centre a uniformly drawn point, each next one a point drawn
/// with probability proportional to its squared distance to the nearest centre so far; when
/// every point already coincides with a centre, uniformly). Then Lloyd iterations (assign each
/// point to its nearest centre, ties to the lowest index; move each centre to the mean of its
/// points) until no assignment changes or `max_iters` iterations. A cluster that becomes empty
/// takes the point farthest from its current centre.
///
/// `k` is clamped to `1..=n`.
///
/// # Panics
/// If `points` is empty, `dim` is zero, or `points.len()` is not a multiple of `dim`.
pub fn kmeans(points: &[f32], dim: usize, k: usize, seed: u64, max_iters: usize) -> KMeans {
    assert!(dim > 0, "kmeans: dim must be positive");
    assert!(
        !points.is_empty() && points.len().is_multiple_of(dim),
        "kmeans: points must be a non-empty n × dim array"
    );
    let n = points.len() / dim;
    let k = k.clamp(1, n);
    let point = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut rng = SplitMix64::new(seed);

    // k-means++ seeding.
    let mut centroids: Vec<f32> = Vec::with_capacity(k * dim);
    centroids.extend_from_slice(point(rng.below(n)));
    let mut nearest: Vec<f64> = (0..n)
        .map(|i| squared_distance(point(i), &centroids[..dim]))
        .collect();
    for _ in 1..k {
        let total: f64 = nearest.iter().sum();
        let chosen = if total > 0.0 {
            let mut target = rng.next_f64() * total;
            let mut chosen = n - 1;
            for (i, &d) in nearest.iter().enumerate() {
                if d > 0.0 && target < d {
                    chosen = i;
                    break;
                }
                target -= d;
            }
            // Rounding may run past the end: take the last point that is not a centre.
            if nearest[chosen] == 0.0 {
                chosen = nearest.iter().rposition(|&d| d > 0.0).unwrap_or(chosen);
            }
            chosen
        } else {
            rng.below(n)
        };
        let start = centroids.len();
        centroids.extend_from_slice(point(chosen));
        for (i, d) in nearest.iter_mut().enumerate() {
            *d = d.min(squared_distance(point(i), &centroids[start..start + dim]));
        }
    }

    // Lloyd iterations.
    let mut assignments = vec![usize::MAX; n];
    let mut iterations = 0;
    let mut sums = vec![0.0f64; k * dim];
    let mut counts = vec![0usize; k];
    while iterations < max_iters {
        iterations += 1;
        let mut changed = false;
        for (i, a) in assignments.iter_mut().enumerate() {
            let best = nearest_centroid(point(i), &centroids, dim).0;
            if *a != best {
                *a = best;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        sums.fill(0.0);
        counts.fill(0);
        for (i, &a) in assignments.iter().enumerate() {
            counts[a] += 1;
            for (s, &x) in sums[a * dim..(a + 1) * dim].iter_mut().zip(point(i)) {
                *s += x as f64;
            }
        }
        for j in 0..k {
            if counts[j] > 0 {
                for d in 0..dim {
                    centroids[j * dim + d] = (sums[j * dim + d] / counts[j] as f64) as f32;
                }
            }
        }
        // Empty clusters take the point farthest from its centre (if it is not at it).
        for j in 0..k {
            if counts[j] > 0 {
                continue;
            }
            let (far, far_d) = (0..n)
                .map(|i| {
                    let a = assignments[i];
                    (
                        i,
                        squared_distance(point(i), &centroids[a * dim..(a + 1) * dim]),
                    )
                })
                .fold((0, -1.0), |best, x| if x.1 > best.1 { x } else { best });
            if far_d > 0.0 && counts[assignments[far]] > 1 {
                counts[assignments[far]] -= 1;
                assignments[far] = j;
                counts[j] = 1;
                centroids[j * dim..(j + 1) * dim].copy_from_slice(point(far));
            }
        }
    }
    // Final assignment consistent with the final centres.
    for (i, a) in assignments.iter_mut().enumerate() {
        *a = nearest_centroid(point(i), &centroids, dim).0;
    }
    let inertia = (0..n)
        .map(|i| {
            let a = assignments[i];
            squared_distance(point(i), &centroids[a * dim..(a + 1) * dim])
        })
        .sum();
    KMeans {
        dim,
        centroids,
        assignments,
        inertia,
        iterations,
    }
}

/// Index of the nearest of the `centroids` (`k × dim`) to `x`, ties to the lowest index, and
/// its squared distance.
pub fn nearest_centroid(x: &[f32], centroids: &[f32], dim: usize) -> (usize, f64) {
    centroids
        .chunks_exact(dim)
        .map(|c| squared_distance(x, c))
        .enumerate()
        .fold(
            (0, f64::INFINITY),
            |best, (j, d)| if d < best.1 { (j, d) } else { best },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two tight blobs around (0, 0) and (10, 10), 2-D.
    fn two_blobs() -> Vec<f32> {
        vec![
            0.0, 0.0, 0.1, 0.0, 0.0, 0.1, -0.1, 0.0, // blob A
            10.0, 10.0, 10.1, 10.0, 10.0, 9.9, 9.9, 10.0, // blob B
        ]
    }

    #[test]
    fn finds_two_separated_blobs() {
        let pts = two_blobs();
        for seed in 0..20 {
            let km = kmeans(&pts, 2, 2, seed, 100);
            assert_eq!(km.k(), 2);
            let a = km.assignments[0];
            assert!(km.assignments[..4].iter().all(|&x| x == a), "seed {seed}");
            assert!(km.assignments[4..].iter().all(|&x| x != a), "seed {seed}");
            // Centre of blob A: mean of (0,0), (0.1,0), (0,0.1), (-0.1,0) = (0, 0.025).
            let ca = km.centroid(a);
            assert!(ca[0].abs() < 1e-6 && (ca[1] - 0.025).abs() < 1e-6, "{ca:?}");
            // Centre of blob B: (10 + 10.1 + 10 + 9.9)/4 = 10, (10 + 10 + 9.9 + 10)/4 = 9.975.
            let cb = km.centroid(1 - a);
            assert!(
                (cb[0] - 10.0).abs() < 1e-5 && (cb[1] - 9.975).abs() < 1e-5,
                "{cb:?}"
            );
        }
    }

    #[test]
    fn one_cluster_is_the_mean() {
        let pts = [1.0, 2.0, 3.0, 4.0, 5.0, 9.0];
        let km = kmeans(&pts, 2, 1, 7, 10);
        assert_eq!(km.centroids, vec![3.0, 5.0]);
        assert_eq!(km.assignments, vec![0, 0, 0]);
        // (4 + 9) + (0 + 1) + (4 + 16) = 34.
        assert!((km.inertia - 34.0).abs() < 1e-9);
    }

    #[test]
    fn k_equal_to_n_gives_each_point_its_own_cluster() {
        let pts = [0.0, 1.0, 5.0, 6.0, 20.0];
        let km = kmeans(&pts, 1, 5, 3, 10);
        let mut seen = km.assignments.clone();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        assert_eq!(km.inertia, 0.0);
        // k larger than n is clamped.
        assert_eq!(kmeans(&pts, 1, 9, 3, 10).k(), 5);
    }

    #[test]
    fn same_seed_same_result() {
        let pts: Vec<f32> = (0..40).map(|i| ((i * 37) % 17) as f32 * 0.3).collect();
        let a = kmeans(&pts, 2, 3, 42, 50);
        let b = kmeans(&pts, 2, 3, 42, 50);
        assert_eq!(a, b);
    }

    #[test]
    fn duplicate_points_do_not_panic() {
        let pts = [1.0f32; 12];
        let km = kmeans(&pts, 3, 3, 0, 10);
        assert_eq!(km.k(), 3);
        assert_eq!(km.assignments.len(), 4);
        assert_eq!(km.inertia, 0.0);
        assert!(km.centroids.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn nearest_centroid_breaks_ties_low() {
        let c = [0.0, 0.0, 2.0, 0.0];
        assert_eq!(nearest_centroid(&[1.0, 0.0], &c, 2), (0, 1.0));
        assert_eq!(nearest_centroid(&[1.5, 0.0], &c, 2), (1, 0.25));
    }
}
