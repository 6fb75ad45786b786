//! Ensembles against class imbalance: the majority class (background) split into `members`
//! groups, one model per group trained on its group and on every minority (event) window,
//! the members' softmax scores averaged.
//!
//! - **Clustered** ([`EnsembleKind::Clustered`]): the groups are the k-means clusters (k =
//!   `members`) of a per-window summary of the majority windows, the mean and the standard
//!   deviation over the window's frames of every band of the standardised log-mel features
//!   ([`window_summary`]). Each member then sees one kind of background.
//! - **EasyEnsemble** ([`EnsembleKind::Easy`]): the majority windows shuffled (seeded) and cut
//!   into `members` groups of equal size (±1).
//!
//! Every member is trained by [`train_prepared`] with the run's configuration (its method,
//! network, epochs...) on its own training set, the validation set unchanged; member `k` uses
//! the seed `seed + k`. The ensemble's score of a window is the mean over the members of their
//! softmax at the window's last frame ([`EnsembleOutcome::scores`]), its prediction the most
//! probable class.
//!
//! # Export
//!
//! The members (LSTM networks of one shape) merge into one step graph of the runtime's
//! contract ([`StreamingNet::merge`]): one LSTM of `members × hidden` units with block-diagonal
//! weights, block-diagonal projection and classifier, then `Reshape [1, T, members, classes]`,
//! a softmax over the classes and the mean over the members. The runtime serves it like any
//! model; its state is `[layers, 1, members × hidden]`.
//!
//! # Configuration
//!
//! ```toml
//! [ensemble]
//! kind = "clustered"   # or "easy"
//! members = 4
//! ```
//!
//! `hark-train train` trains an ensemble when the section is present ([`run`]): the members'
//! checkpoints and metrics in `member<k>/` of the output folder, `model.onnx`,
//! `summary.json` and `ensemble.json` (the groups' sizes) at its top.

use std::fs;
use std::path::Path;

use hark::model::ModelMetadata;
use serde::{Deserialize, Serialize};

use crate::backend::Cpu;
use crate::data::BACKGROUND;
use crate::eval::{WindowMetrics, window_metrics};
use crate::examples::{ExampleSet, Rng};
use crate::export::{ExportError, StreamingNet};
use crate::kmeans::kmeans;
use crate::model::{Classifier, EmbeddingNet};
use crate::train::{
    CNN_NOT_EXPORTABLE, PreparedData, Progress, RunOptions, TrainConfig, TrainError, TrainOutcome,
    load_data_clips, metadata, prepare_data, streaming_net, train_prepared,
};

/// How the majority windows are split among the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnsembleKind {
    /// k-means clusters of the windows' summaries.
    Clustered,
    /// Random groups of equal size (EasyEnsemble).
    Easy,
}

/// Most members an ensemble may have (the merged LSTM has `members × hidden` units).
pub const MAX_MEMBERS: usize = 16;

/// Lloyd iterations of the clustering of the majority windows.
const KMEANS_ITERS: usize = 100;

/// The `[ensemble]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnsembleSection {
    /// `"clustered"` or `"easy"`. Required.
    pub kind: EnsembleKind,
    /// Members, 2 to [`MAX_MEMBERS`]. Default 4.
    #[serde(default = "default_members")]
    pub members: usize,
}

fn default_members() -> usize {
    4
}

impl EnsembleSection {
    /// Checks ranges.
    pub fn validate(&self) -> Result<(), TrainError> {
        if !(2..=MAX_MEMBERS).contains(&self.members) {
            return Err(TrainError::Config(format!(
                "ensemble.members must lie in 2..={MAX_MEMBERS} (got {})",
                self.members
            )));
        }
        Ok(())
    }
}

/// The summary of window `i` that the clustered ensemble clusters: per band, the mean over
/// the window's frames, then per band the standard deviation (`2 × n_mels` values).
pub fn window_summary(set: &ExampleSet, i: usize) -> Vec<f32> {
    let m = set.n_mels;
    let (mut sum, mut sq) = (vec![0.0f64; m], vec![0.0f64; m]);
    for frame in set.example(i).chunks_exact(m) {
        for k in 0..m {
            sum[k] += frame[k] as f64;
            sq[k] += (frame[k] as f64).powi(2);
        }
    }
    let n = set.frames.max(1) as f64;
    let mean: Vec<f64> = sum.iter().map(|s| s / n).collect();
    let std = sq
        .iter()
        .zip(&mean)
        .map(|(q, mu)| (q / n - mu * mu).max(0.0).sqrt() as f32);
    mean.iter().map(|&v| v as f32).chain(std).collect()
}

/// The majority class of a set: [`BACKGROUND`] when the set has it, else the most frequent.
pub fn majority_class(set: &ExampleSet) -> usize {
    set.classes
        .iter()
        .position(|c| c == BACKGROUND)
        .unwrap_or_else(|| {
            let counts = set.class_counts();
            (0..counts.len()).max_by_key(|&c| counts[c]).unwrap_or(0)
        })
}

/// Splits the majority windows of `set` into `members` groups (indices into `set`, each
/// sorted): k-means clusters of [`window_summary`] for [`EnsembleKind::Clustered`], a seeded
/// shuffle cut into equal parts for [`EnsembleKind::Easy`]. Every group is non-empty; together
/// they hold every majority window exactly once.
pub fn majority_groups(
    set: &ExampleSet,
    kind: EnsembleKind,
    members: usize,
    seed: u64,
) -> Result<Vec<Vec<usize>>, TrainError> {
    let major = majority_class(set);
    let idx: Vec<usize> = (0..set.len()).filter(|&i| set.labels[i] == major).collect();
    if members == 0 || idx.len() < members {
        return Err(TrainError::Config(format!(
            "ensemble.members = {members}, but the training set has {} {} windows",
            idx.len(),
            set.classes.get(major).map_or("majority", String::as_str)
        )));
    }
    let mut groups = vec![Vec::new(); members];
    match kind {
        EnsembleKind::Clustered => {
            let dim = 2 * set.n_mels;
            let points: Vec<f32> = idx.iter().flat_map(|&i| window_summary(set, i)).collect();
            let km = kmeans(&points, dim, members, seed, KMEANS_ITERS);
            for (&i, &c) in idx.iter().zip(&km.assignments) {
                groups[c].push(i);
            }
        }
        EnsembleKind::Easy => {
            let mut order = idx.clone();
            Rng::new(seed ^ 0xEA5E_E25E).shuffle(&mut order);
            let n = order.len();
            for (k, g) in groups.iter_mut().enumerate() {
                g.extend_from_slice(&order[k * n / members..(k + 1) * n / members]);
                g.sort_unstable();
            }
        }
    }
    if groups.iter().any(Vec::is_empty) {
        return Err(TrainError::Config(
            "the clustering left an ensemble member without majority windows".into(),
        ));
    }
    Ok(groups)
}

/// The examples `idx` of a set (in that order).
pub fn subset(set: &ExampleSet, idx: &[usize]) -> ExampleSet {
    let mut features = Vec::with_capacity(idx.len() * set.example_size());
    for &i in idx {
        features.extend_from_slice(set.example(i));
    }
    ExampleSet {
        classes: set.classes.clone(),
        frames: set.frames,
        n_mels: set.n_mels,
        labels: idx.iter().map(|&i| set.labels[i]).collect(),
        features,
        onsets: if set.onsets.len() == set.len() {
            idx.iter().map(|&i| set.onsets[i]).collect()
        } else {
            Vec::new()
        },
        ends: if set.ends.len() == set.len() {
            idx.iter().map(|&i| set.ends[i]).collect()
        } else {
            Vec::new()
        },
    }
}

/// The training set of the member of `group`: its majority windows and every window of the
/// other classes, in the order of `set` (indices into `set`).
pub fn member_indices(set: &ExampleSet, group: &[usize]) -> Vec<usize> {
    let major = majority_class(set);
    let mut idx: Vec<usize> = (0..set.len())
        .filter(|&i| set.labels[i] != major)
        .chain(group.iter().copied())
        .collect();
    idx.sort_unstable();
    idx
}

/// Per-window class probabilities of one model: the softmax at each window's last frame,
/// row-major `[windows, classes]` (the frame the window-level evaluation predicts from).
pub fn window_scores(
    net: &EmbeddingNet<Cpu>,
    clf: &Classifier<Cpu>,
    set: &ExampleSet,
    batch: usize,
) -> Vec<f32> {
    let device = Default::default();
    let mut out = Vec::with_capacity(set.len() * clf.n_classes());
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, _) = set.batch::<Cpu>(chunk, &device);
        let p = clf.probabilities(net.forward(x));
        out.extend(
            p.into_data()
                .convert::<f32>()
                .to_vec::<f32>()
                .expect("f32 tensor data"),
        );
    }
    out
}

/// [`window_scores`] of a trained outcome.
pub fn outcome_scores(out: &TrainOutcome, set: &ExampleSet, batch: usize) -> Vec<f32> {
    window_scores(&out.net, &out.classifier, set, batch)
}

/// The most probable class of every row of `scores` (`[rows, classes]`).
pub fn argmax_rows(scores: &[f32], classes: usize) -> Vec<usize> {
    scores
        .chunks_exact(classes)
        .map(|row| {
            (0..classes)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]).then(b.cmp(&a)))
                .unwrap_or(0)
        })
        .collect()
}

/// A trained ensemble.
#[derive(Debug, Clone)]
pub struct EnsembleOutcome {
    /// How the majority was split.
    pub kind: EnsembleKind,
    /// The members, in group order.
    pub members: Vec<TrainOutcome>,
    /// The majority windows of each member (indices into the training set).
    pub groups: Vec<Vec<usize>>,
    /// Class names.
    pub classes: Vec<String>,
    /// Training examples per class (the whole training set).
    pub train_counts: Vec<usize>,
    /// Validation metrics of the ensemble (averaged scores).
    pub val_metrics: WindowMetrics,
    /// Per-band normalisation (mean, std), shared by the members.
    pub normalization: (Vec<f32>, Vec<f32>),
    /// Examples per batch when scoring.
    pub batch: usize,
    /// Whether a member's training was cut short by `stop_after_epochs` (the members after
    /// it were not trained).
    pub interrupted: bool,
}

impl EnsembleOutcome {
    /// The mean over the members of their [`window_scores`]: `[windows, classes]`,
    /// row-major, on a normalised set.
    pub fn scores(&self, set: &ExampleSet) -> Vec<f32> {
        let mut mean = vec![0.0f32; set.len() * self.classes.len()];
        let w = 1.0 / self.members.len().max(1) as f32;
        for m in &self.members {
            for (a, b) in mean.iter_mut().zip(outcome_scores(m, set, self.batch)) {
                *a += w * b;
            }
        }
        mean
    }

    /// Window-level evaluation of the averaged scores (prediction: the most probable class).
    pub fn evaluate(&self, set: &ExampleSet) -> WindowMetrics {
        let pred = argmax_rows(&self.scores(set), self.classes.len());
        window_metrics(&set.labels, &pred, &set.classes)
    }

    /// The merged streaming network, normalisation folded in. CNN members are refused.
    pub fn streaming_net(&self) -> Result<StreamingNet, TrainError> {
        if self.members.iter().any(|m| m.net.is_cnn()) {
            return Err(ExportError(CNN_NOT_EXPORTABLE.into()).into());
        }
        let nets: Vec<StreamingNet> = self.members.iter().map(streaming_net).collect();
        Ok(StreamingNet::merge(&nets)?)
    }

    /// The model metadata: as for a single model (of member 0's configuration), with the
    /// whole training set's counts, the ensemble's validation figures and `ensemble` (kind,
    /// members, majority windows per member) in the training summary.
    pub fn metadata(&self, cfg: &TrainConfig) -> ModelMetadata {
        let mut meta = metadata(cfg, &self.members[0]);
        let t = &mut meta.training;
        let counts: serde_json::Map<String, serde_json::Value> = self
            .classes
            .iter()
            .zip(&self.train_counts)
            .map(|(c, &n)| (c.clone(), n.into()))
            .collect();
        t["train_examples_per_class"] = counts.into();
        t["epochs_run"] = self
            .members
            .iter()
            .map(|m| m.history.len())
            .sum::<usize>()
            .into();
        t["val_balanced_accuracy"] = self.val_metrics.balanced_accuracy.into();
        t["val_macro_f1"] = self.val_metrics.macro_f1.into();
        t["ensemble"] = serde_json::json!({
            "kind": self.kind,
            "members": self.members.len(),
            "majority_windows_per_member": self.groups.iter().map(Vec::len).collect::<Vec<_>>(),
            "member_seeds": (0..self.members.len()).map(|k| cfg.seed.wrapping_add(k as u64)).collect::<Vec<_>>(),
            "combination": "mean of the members' softmax scores",
        });
        meta
    }

    /// The merged ONNX model.
    pub fn export_onnx(&self, cfg: &TrainConfig) -> Result<Vec<u8>, TrainError> {
        Ok(self.streaming_net()?.to_onnx(&self.metadata(cfg))?)
    }
}

/// Trains an ensemble of `members` models on prepared data (see the [module
/// documentation](self)). With `opts.out_dir`, member `k` writes its checkpoints and metrics
/// into `member<k>/` there (and `opts.resume` resumes each member that has a checkpoint, the
/// others start afresh). `opts.stop_after_epochs` counts each member's epochs; a member cut
/// short ends the ensemble's training there (`interrupted`).
pub fn train_ensemble(
    cfg: &TrainConfig,
    data: &PreparedData,
    kind: EnsembleKind,
    members: usize,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<EnsembleOutcome, TrainError> {
    cfg.validate()?;
    EnsembleSection { kind, members }.validate()?;
    let groups = majority_groups(&data.train, kind, members, cfg.seed)?;
    let mut outcomes = Vec::with_capacity(members);
    let mut interrupted = false;
    for (k, group) in groups.iter().enumerate() {
        let idx = member_indices(&data.train, group);
        let member_data = PreparedData {
            classes: data.classes.clone(),
            train: subset(&data.train, &idx),
            val: data.val.clone(),
            mean: data.mean.clone(),
            std: data.std.clone(),
        };
        let member_cfg = TrainConfig {
            seed: cfg.seed.wrapping_add(k as u64),
            ensemble: None,
            ..cfg.clone()
        };
        let out_dir = opts.out_dir.as_ref().map(|d| d.join(format!("member{k}")));
        let resume = opts.resume
            && out_dir
                .as_ref()
                .is_some_and(|d| d.join("checkpoint").join("state.json").is_file());
        let member_opts = RunOptions {
            out_dir,
            resume,
            ..opts.clone()
        };
        progress(Progress::Info(format!(
            "ensemble member {}/{members}: {} majority windows, {} windows in all",
            k + 1,
            group.len(),
            idx.len()
        )));
        let out = train_prepared(&member_cfg, &member_data, &member_opts, progress)?;
        interrupted = out.interrupted;
        outcomes.push(out);
        if interrupted {
            break;
        }
    }
    let mut ens = EnsembleOutcome {
        kind,
        val_metrics: outcomes[0].val_metrics.clone(), // replaced below
        members: outcomes,
        groups,
        classes: data.classes.clone(),
        train_counts: data.train.class_counts(),
        normalization: (data.mean.clone(), data.std.clone()),
        batch: cfg.batch_size,
        interrupted,
    };
    ens.val_metrics = ens.evaluate(&data.val);
    Ok(ens)
}

/// A trained model of either kind, for callers that take any configuration.
#[derive(Debug, Clone)]
pub enum Trained {
    /// One model ([`train_prepared`]).
    Single(Box<TrainOutcome>),
    /// An ensemble ([`train_ensemble`]).
    Ensemble(Box<EnsembleOutcome>),
}

impl Trained {
    /// Per-window class probabilities, `[windows, classes]` row-major, on a normalised set
    /// ([`outcome_scores`] or [`EnsembleOutcome::scores`]).
    pub fn scores(&self, set: &ExampleSet) -> Vec<f32> {
        match self {
            Trained::Single(o) => outcome_scores(o, set, 64),
            Trained::Ensemble(e) => e.scores(set),
        }
    }

    /// Window-level evaluation (prediction: the most probable class at the last frame).
    pub fn evaluate(&self, set: &ExampleSet) -> WindowMetrics {
        match self {
            Trained::Single(o) => crate::train::evaluate(&o.net, &o.classifier, set, 64),
            Trained::Ensemble(e) => e.evaluate(set),
        }
    }

    /// The validation metrics of training.
    pub fn val_metrics(&self) -> &WindowMetrics {
        match self {
            Trained::Single(o) => &o.val_metrics,
            Trained::Ensemble(e) => &e.val_metrics,
        }
    }

    /// The ONNX model.
    pub fn export_onnx(&self, cfg: &TrainConfig) -> Result<Vec<u8>, TrainError> {
        match self {
            Trained::Single(o) => crate::train::export_onnx(cfg, o),
            Trained::Ensemble(e) => e.export_onnx(cfg),
        }
    }
}

/// Trains what the configuration asks for on prepared data: an ensemble when it has
/// `[ensemble]`, one model otherwise (either with `[model] kind = "lstm"` or `"cnn"`).
pub fn train_configured(
    cfg: &TrainConfig,
    data: &PreparedData,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Trained, TrainError> {
    Ok(match &cfg.ensemble {
        Some(e) => Trained::Ensemble(Box::new(train_ensemble(
            cfg, data, e.kind, e.members, opts, progress,
        )?)),
        None => Trained::Single(Box::new(train_prepared(cfg, data, opts, progress)?)),
    })
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

/// The whole run of a configuration with `[ensemble]`: loads the data, trains the members,
/// and (with an output folder) writes `config.toml`, `ensemble.json`, `model.onnx` (not for
/// CNN members) and `summary.json`.
pub fn run(
    cfg: &TrainConfig,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<EnsembleOutcome, TrainError> {
    cfg.validate()?;
    let Some(section) = cfg.ensemble.clone() else {
        return Err(TrainError::Config("no [ensemble] section".into()));
    };
    if let Some(d) = &opts.out_dir {
        fs::create_dir_all(d).map_err(io_err(d))?;
        let p = d.join("config.toml");
        fs::write(&p, cfg.to_toml()).map_err(io_err(&p))?;
    }
    let clips = load_data_clips(cfg, &opts.base_dir, progress)?;
    let data = prepare_data(cfg, &clips, &opts.base_dir)?;
    progress(Progress::Info(format!(
        "classes {:?}; training examples per class {:?}, validation {:?}; {:?} ensemble of {}",
        data.classes,
        data.train.class_counts(),
        data.val.class_counts(),
        section.kind,
        section.members
    )));
    let out = train_ensemble(cfg, &data, section.kind, section.members, opts, progress)?;
    if let Some(d) = &opts.out_dir {
        let p = d.join("ensemble.json");
        let info = serde_json::json!({
            "kind": out.kind,
            "members": section.members,
            "majority_windows_per_member": out.groups.iter().map(Vec::len).collect::<Vec<_>>(),
            "classes": out.classes,
            "mean": out.normalization.0,
            "std": out.normalization.1,
        });
        fs::write(&p, serde_json::to_vec_pretty(&info).expect("serialisable"))
            .map_err(io_err(&p))?;
        if !out.interrupted {
            if out.members.iter().any(|m| m.net.is_cnn()) {
                progress(Progress::Info(format!(
                    "warning: model.onnx not written: {CNN_NOT_EXPORTABLE}"
                )));
            } else {
                let p = d.join("model.onnx");
                fs::write(&p, out.export_onnx(cfg)?).map_err(io_err(&p))?;
            }
            let p = d.join("summary.json");
            let summary = serde_json::json!({
                "metadata": out.metadata(cfg),
                "val_metrics": out.val_metrics,
                "member_val_metrics": out.members.iter().map(|m| &m.val_metrics).collect::<Vec<_>>(),
            });
            fs::write(
                &p,
                serde_json::to_vec_pretty(&summary).expect("serialisable"),
            )
            .map_err(io_err(&p))?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kmeans::SplitMix64;
    use crate::model::{ClassifierConfig, EmbeddingNetConfig};
    use crate::train::tiny_config;
    use burn::tensor::backend::Backend;

    /// A set of `per_cluster × 3` background windows drawn around three far-apart levels (in
    /// the order cluster 0, 1, 2, 0, 1, 2, ...), and `minority` windows of each event class.
    fn clustered_set(per_cluster: usize, minority: usize) -> (ExampleSet, Vec<usize>) {
        let (frames, n_mels) = (4, 3);
        let mut rng = SplitMix64::new(7);
        let mut noise = || (rng.next_f64() as f32 - 0.5) * 0.2;
        let (mut labels, mut features, mut cluster) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..3 * per_cluster {
            let level = [-5.0, 0.0, 5.0][i % 3];
            labels.push(0);
            cluster.push(i % 3);
            features.extend((0..frames * n_mels).map(|_| level + noise()));
        }
        for c in 1..3 {
            for _ in 0..minority {
                labels.push(c);
                cluster.push(usize::MAX);
                features.extend((0..frames * n_mels).map(|_| c as f32 + noise()));
            }
        }
        let onsets = labels
            .iter()
            .map(|&l| if l == 0 { -1 } else { 1 })
            .collect();
        let set = ExampleSet {
            classes: vec!["background".into(), "a".into(), "b".into()],
            frames,
            n_mels,
            labels,
            features,
            onsets,
            ends: Vec::new(),
        };
        (set, cluster)
    }

    #[test]
    fn groups_partition_the_majority_and_members_see_every_minority_window() {
        let (set, _) = clustered_set(10, 4);
        let background: Vec<usize> = (0..30).collect();
        let minority: Vec<usize> = (30..38).collect();
        for kind in [EnsembleKind::Clustered, EnsembleKind::Easy] {
            for members in [2, 3, 7] {
                let groups = majority_groups(&set, kind, members, 3).unwrap();
                assert_eq!(groups.len(), members);
                assert!(groups.iter().all(|g| !g.is_empty()));
                let mut all: Vec<usize> = groups.concat();
                all.sort_unstable();
                assert_eq!(all, background, "{kind:?} {members}");
                if kind == EnsembleKind::Easy {
                    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
                    let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                    assert!(hi - lo <= 1, "{sizes:?}");
                }
                for g in &groups {
                    let idx = member_indices(&set, g);
                    let sub = subset(&set, &idx);
                    assert_eq!(sub.class_counts(), vec![g.len(), 4, 4]);
                    assert!(minority.iter().all(|i| idx.contains(i)));
                    assert_eq!(sub.onsets.len(), sub.len());
                    assert_eq!(sub.example(0), set.example(idx[0]));
                }
            }
        }
        // More members than background windows is a configuration error.
        assert!(majority_groups(&set, EnsembleKind::Easy, 31, 0).is_err());
    }

    #[test]
    fn clustered_groups_follow_the_obvious_clusters_and_random_ones_do_not() {
        let (set, cluster) = clustered_set(12, 3);
        let purity = |groups: &[Vec<usize>]| {
            groups
                .iter()
                .filter(|g| g.iter().all(|&i| cluster[i] == cluster[g[0]]))
                .count()
        };
        let clustered = majority_groups(&set, EnsembleKind::Clustered, 3, 1).unwrap();
        assert_eq!(purity(&clustered), 3, "{clustered:?}");
        let sizes: Vec<usize> = clustered.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![12, 12, 12]);
        let easy = majority_groups(&set, EnsembleKind::Easy, 3, 1).unwrap();
        assert_eq!(purity(&easy), 0, "{easy:?}");
        // The summary: per band mean, then per band std.
        let s = window_summary(&set, 0);
        assert_eq!(s.len(), 6);
        assert!(s[..3].iter().all(|v| (v + 5.0).abs() < 0.2), "{s:?}");
        assert!(s[3..].iter().all(|v| *v >= 0.0 && *v < 0.2), "{s:?}");
    }

    #[test]
    fn section_is_validated() {
        let base = "[data.synthetic]\n";
        let ok = TrainConfig::from_toml(&format!("{base}[ensemble]\nkind = \"easy\"\n")).unwrap();
        assert_eq!(
            ok.ensemble,
            Some(EnsembleSection {
                kind: EnsembleKind::Easy,
                members: 4
            })
        );
        assert_eq!(TrainConfig::from_toml(&ok.to_toml()).unwrap(), ok);
        for (text, key) in [
            (
                "[ensemble]\nkind = \"clustered\"\nmembers = 1\n",
                "ensemble.members",
            ),
            (
                "[ensemble]\nkind = \"clustered\"\nmembers = 99\n",
                "ensemble.members",
            ),
            ("[ensemble]\nkind = \"kmeans\"\n", "kind"),
            ("[ensemble]\nmembers = 3\n", "kind"),
            ("[ensemble]\nkind = \"easy\"\nmember = 3\n", "member"),
        ] {
            let e = TrainConfig::from_toml(&format!("{base}{text}")).unwrap_err();
            assert!(e.to_string().contains(key), "{text}: {e}");
        }
    }

    /// Untrained members of one shape, as trained outcomes, with a normalisation.
    fn members(n: usize) -> EnsembleOutcome {
        let classes: Vec<String> = ["background", "a", "b"].map(String::from).to_vec();
        let mut rng = SplitMix64::new(11);
        let mean: Vec<f32> = (0..64).map(|_| rng.next_f64() as f32 * 4.0 - 6.0).collect();
        let std: Vec<f32> = (0..64).map(|_| 0.5 + rng.next_f64() as f32).collect();
        let dummy = window_metrics(&[0], &[0], &classes);
        let members = (0..n)
            .map(|k| {
                <Cpu as Backend>::seed(&Default::default(), 100 + k as u64);
                let net = EmbeddingNetConfig::new()
                    .with_hidden(6)
                    .with_layers(2)
                    .with_embedding(4)
                    .init::<Cpu>(&Default::default());
                let classifier = ClassifierConfig::new(3)
                    .with_embedding(4)
                    .init::<Cpu>(&Default::default());
                crate::model::materialize(&net);
                crate::model::materialize(&classifier);
                TrainOutcome {
                    history: Vec::new(),
                    net,
                    classifier,
                    classes: classes.clone(),
                    val_metrics: dummy.clone(),
                    train_counts: vec![10, 2, 2],
                    normalization: (mean.clone(), std.clone()),
                    interrupted: false,
                }
            })
            .collect();
        EnsembleOutcome {
            kind: EnsembleKind::Easy,
            members,
            groups: vec![vec![0]; n],
            classes,
            train_counts: vec![30, 2, 2],
            val_metrics: dummy,
            normalization: (mean, std),
            batch: 8,
            interrupted: false,
        }
    }

    /// The merged ONNX model, served by the runtime (tract), scores the mean of the members'
    /// own softmax outputs (each member exported alone, and burn on normalised features), over
    /// a whole sequence and hop by hop.
    #[test]
    fn merged_export_scores_the_mean_of_the_members() {
        let ens = members(3);
        let cfg = tiny_config(crate::train::Method::WeightedCe);
        let model = hark::model::Model::from_bytes(&ens.export_onnx(&cfg).unwrap(), "ens").unwrap();
        assert_eq!(model.state_shape(), (2, 18));
        assert_eq!(model.n_classes(), 3);
        let meta = model.metadata();
        assert_eq!(meta.training["ensemble"]["members"], 3);
        assert_eq!(meta.training["train_examples_per_class"]["background"], 30);

        let t = 30;
        let mut rng = SplitMix64::new(5);
        let (mean, std) = &ens.normalization;
        let raw: Vec<f32> = (0..t * 64)
            .map(|i| mean[i % 64] + std[i % 64] * (rng.next_f64() as f32 * 4.0 - 2.0))
            .collect();
        let whole = model.run_sequence(&raw).unwrap();
        assert_eq!(whole.len(), t * 3);

        // Each member alone, through the runtime.
        let mut expect = vec![0.0f32; t * 3];
        for m in &ens.members {
            let alone = hark::model::Model::from_bytes(
                &crate::train::export_onnx(&cfg, m).unwrap(),
                "member",
            )
            .unwrap();
            for (e, v) in expect.iter_mut().zip(alone.run_sequence(&raw).unwrap()) {
                *e += v / 3.0;
            }
        }
        let diff = |a: &[f32], b: &[f32]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max)
        };
        assert!(diff(&whole, &expect) < 1e-4, "{}", diff(&whole, &expect));

        // burn on the normalised features.
        let set = ExampleSet {
            classes: ens.classes.clone(),
            frames: t,
            n_mels: 64,
            labels: vec![0],
            features: raw
                .iter()
                .enumerate()
                .map(|(i, v)| (v - mean[i % 64]) / std[i % 64])
                .collect(),
            onsets: Vec::new(),
            ends: Vec::new(),
        };
        let (x, _) = set.batch::<Cpu>(&[0], &Default::default());
        let mut burn_mean = vec![0.0f32; t * 3];
        for m in &ens.members {
            let p = m.classifier.probabilities(m.net.forward_frames(x.clone()));
            let p = p.into_data().convert::<f32>().to_vec::<f32>().unwrap();
            for (e, v) in burn_mean.iter_mut().zip(p) {
                *e += v / 3.0;
            }
        }
        assert!(
            diff(&whole, &burn_mean) < 1e-4,
            "{}",
            diff(&whole, &burn_mean)
        );
        // The ensemble's window score is the last frame's mean.
        assert!(diff(&ens.scores(&set), &burn_mean[(t - 1) * 3..]) < 1e-5);
        // The plain-Rust reference of the merged graph agrees too.
        let sn = ens.streaming_net().unwrap();
        let (mut h, mut c) = (vec![0.0; 2 * 18], vec![0.0; 2 * 18]);
        assert!(diff(&sn.forward_reference(&raw, &mut h, &mut c), &whole) < 1e-4);

        // Hop by hop equals the whole sequence.
        let mut stream = model.stream().unwrap();
        let mut hops = Vec::new();
        for f in raw.chunks_exact(64) {
            hops.extend_from_slice(stream.step(f).unwrap());
        }
        assert!(diff(&hops, &whole) < 1e-5, "{}", diff(&hops, &whole));
    }

    #[test]
    fn merge_refuses_members_of_different_shapes() {
        let ens = members(2);
        let a = streaming_net(&ens.members[0]);
        let mut b = a.clone();
        b.dense.pop();
        assert!(StreamingNet::merge(&[a.clone(), b]).is_err());
        assert!(StreamingNet::merge(&[]).is_err());
        assert_eq!(StreamingNet::merge(&[a]).unwrap().n_classes(), 3);
    }

    #[test]
    fn train_configured_trains_an_ensemble_whose_members_see_their_groups() {
        let mut cfg = tiny_config(crate::train::Method::WeightedCe);
        cfg.epochs = 2;
        cfg.plots = false;
        cfg.ensemble = Some(EnsembleSection {
            kind: EnsembleKind::Clustered,
            members: 3,
        });
        let clips = load_data_clips(&cfg, Path::new("."), &mut |_| {}).unwrap();
        let data = prepare_data(&cfg, &clips, Path::new(".")).unwrap();
        let trained = train_configured(&cfg, &data, &RunOptions::default(), &mut |_| {}).unwrap();
        let Trained::Ensemble(ens) = &trained else {
            panic!("not an ensemble")
        };
        assert_eq!(ens.members.len(), 3);
        let counts = data.train.class_counts();
        for (m, g) in ens.members.iter().zip(&ens.groups) {
            assert_eq!(m.history.len(), 2);
            // The member trained on its group and every event window.
            let mut expect = counts.clone();
            expect[0] = g.len();
            assert_eq!(m.train_counts, expect);
        }
        assert_eq!(ens.groups.iter().map(Vec::len).sum::<usize>(), counts[0]);
        let scores = trained.scores(&data.val);
        assert_eq!(scores.len(), data.val.len() * 4);
        for row in scores.chunks_exact(4) {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
        assert_eq!(trained.evaluate(&data.val), *trained.val_metrics());
        assert!(trained.export_onnx(&cfg).is_ok());
    }
}
