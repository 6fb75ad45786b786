//! `hark-train experiment`: every imbalance remedy ([`crate::imbalance`]) trained with the
//! same architecture and budget on training sets of fixed class ratios, several seeds each,
//! evaluated on one balanced test set of held-out recordings.
//!
//! # Data
//!
//! The clips of `[train.data]` are split as in training: the test groups (and held-out
//! background files) make the **test set**, the validation groups the validation set (early
//! stopping and the choice of the best epoch), the rest the **pool**. From the pool, windows
//! are generated per class (event windows mixed into backgrounds with the configured
//! augmentation; background windows with hard negatives mixed in), as many as the largest
//! ratio needs. The training set of ratio `r` and seed `s` holds exactly `r_c × unit` windows of
//! class `c` (event classes in the order of `event_classes`, background last), drawn at random
//! (seeded by `s`) from that class's pool. Validation and test sets hold `val_per_class` and
//! `test_per_class` windows of every class (background included), without augmentation.
//!
//! # Evaluation
//!
//! Segment-based, one segment per test window: the prediction of a window is the most
//! probable class at its last frame, which lies 0.1 to 0.6 s after the event's onset
//! (`examples.onset_to_end_s`). The per-class error rate is the DCASE class-wise one,
//! `(FN_c + FP_c) / N_c`; the overall error rate is the DCASE segment-based one,
//! `(S + D + I) / N` over the event windows: a window of event class `a` predicted as another
//! event class is a substitution, as background a deletion; a background window predicted as
//! an event an insertion; `N` is the number of event windows. (The event-based error rate of
//! [`crate::eval`], onset with a 500 ms collar, needs streaming detection over long mixtures,
//! too slow for this many runs.)
//!
//! # Runs and outputs
//!
//! Every (architecture, ratio, technique, seed) is one run; runs go in parallel threads
//! (`--threads`). Each run writes its result as JSON (`runs/<arch>/<ratio>/<technique>/seed-<s>.json`
//! in the output folder); `--resume` skips runs whose JSON exists. The technique `transfer`
//! starts from an embedding network pretrained (one per seed and architecture, weighted
//! cross-entropy) on the synthetic set of `[pretrain]` (tones, chirps, noise bursts: another
//! task), kept under `pretrained/`. At the end `results.md`, `results.csv` and
//! `results.svg` (per-class and overall error rate, mean ± standard deviation over the seeds)
//! are written.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::data::{BACKGROUND, Clip, Role};
use crate::ensemble::{EnsembleKind, train_ensemble};
use crate::examples::{AugmentConfig, ExampleSet, Rng, SyntheticConfig, generate_cached};
use crate::imbalance::{ImbalanceSection, Resample};
use crate::train::{
    Method, ModelKind, Progress, RunOptions, TrainConfig, TrainError, evaluate, finish_prepared,
    load_data_clips, train_prepared,
};

/// The quick configuration (`--quick`): tiny generated data, every technique, one seed.
pub const QUICK_CONFIG: &str = include_str!("../configs/experiment-quick.toml");

/// A remedy compared by the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Technique {
    /// Plain cross-entropy (no remedy).
    Ce,
    /// Class-weighted cross-entropy: the baseline of the comparison.
    WeightedCe,
    /// Random oversampling, plain cross-entropy.
    Oversample,
    /// Random undersampling, plain cross-entropy.
    Undersample,
    /// SMOTE on the feature windows, plain cross-entropy.
    Smote,
    /// Focal loss.
    Focal,
    /// Augmented copies of the minority classes, plain cross-entropy.
    PartialAugmentation,
    /// Gaussian label smearing of the frame targets, class-weighted cross-entropy.
    LabelSmearing,
    /// Fine-tuning of a pretrained embedding network, class-weighted cross-entropy.
    Transfer,
    /// The clustered-centroid embedding.
    Centroid,
    /// Majority class split by k-means, one model per group, averaged.
    ClusteredEnsemble,
    /// Majority class split at random, one model per group, averaged.
    EasyEnsemble,
}

impl Technique {
    /// The name used in configurations, folders and tables.
    pub fn name(self) -> String {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// The embedding network's architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Architecture {
    /// The LSTM embedding network of the runtime's models.
    Lstm,
    /// A small CNN embedding network.
    Cnn,
}

impl Architecture {
    /// The trainer's network kind.
    pub fn kind(self) -> ModelKind {
        match self {
            Architecture::Lstm => ModelKind::Lstm,
            Architecture::Cnn => ModelKind::Cnn,
        }
    }

    /// The name used in configurations, folders and tables.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Lstm => "lstm",
            Architecture::Cnn => "cnn",
        }
    }
}

/// The experiment configuration (TOML).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExperimentConfig {
    /// The event classes, in the order of the ratios' first entries. Default gunshot,
    /// glass_break, dog_bark.
    pub event_classes: Vec<String>,
    /// Class ratios: one entry per event class, then background. Default [6, 1, 2, 16] and
    /// [2, 2, 1, 26].
    pub ratios: Vec<Vec<usize>>,
    /// Training windows per ratio unit. Default 8.
    pub unit: usize,
    /// Seeds; every run is repeated with each. Default [1, 2, 3].
    pub seeds: Vec<u64>,
    /// Techniques compared (`weighted_ce` is the baseline and must be one). Default all.
    pub techniques: Vec<Technique>,
    /// Architectures compared. Default lstm and cnn.
    pub architectures: Vec<Architecture>,
    /// Validation windows per class. Default 24.
    pub val_per_class: usize,
    /// Test windows per class. Default 60.
    pub test_per_class: usize,
    /// σ of `label_smearing`, frames. Default 4.
    pub smear_sigma_frames: f32,
    /// Members of `clustered_ensemble` and `easy_ensemble` (background groups). Default 4.
    pub ensemble_members: usize,
    /// Seed of the pools and of the validation and test sets. Default 0.
    pub data_seed: u64,
    /// The synthetic set the `transfer` technique's network is pretrained on.
    pub pretrain: SyntheticConfig,
    /// Epochs of the pretraining. Default 6.
    pub pretrain_epochs: usize,
    /// The training configuration every run starts from (data, split, examples, model,
    /// epochs, learning rate); `method` and `[imbalance]` are set per technique, `seed` per
    /// seed.
    pub train: TrainConfig,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            event_classes: vec!["gunshot".into(), "glass_break".into(), "dog_bark".into()],
            ratios: vec![vec![6, 1, 2, 16], vec![2, 2, 1, 26]],
            unit: 8,
            seeds: vec![1, 2, 3],
            techniques: ALL_TECHNIQUES.to_vec(),
            architectures: vec![Architecture::Lstm, Architecture::Cnn],
            val_per_class: 24,
            test_per_class: 60,
            smear_sigma_frames: 4.0,
            ensemble_members: 4,
            data_seed: 0,
            pretrain: SyntheticConfig::default(),
            pretrain_epochs: 6,
            train: TrainConfig::default(),
        }
    }
}

/// Every technique, in table order.
pub const ALL_TECHNIQUES: [Technique; 12] = [
    Technique::Ce,
    Technique::WeightedCe,
    Technique::Oversample,
    Technique::Undersample,
    Technique::Smote,
    Technique::Focal,
    Technique::PartialAugmentation,
    Technique::LabelSmearing,
    Technique::Transfer,
    Technique::Centroid,
    Technique::ClusteredEnsemble,
    Technique::EasyEnsemble,
];

impl ExperimentConfig {
    /// Parses and checks a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self, TrainError> {
        let cfg: Self = toml::from_str(text).map_err(|e| TrainError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: String| Err(TrainError::Config(m));
        if self.event_classes.is_empty() {
            return bad("event_classes is empty".into());
        }
        for r in &self.ratios {
            if r.len() != self.event_classes.len() + 1 || r.contains(&0) {
                return bad(format!(
                    "ratio {r:?}: needs {} positive entries (event classes, then background)",
                    self.event_classes.len() + 1
                ));
            }
        }
        if self.ratios.is_empty() || self.seeds.is_empty() || self.unit == 0 {
            return bad("ratios, seeds and unit must not be empty or 0".into());
        }
        if !self.techniques.contains(&Technique::WeightedCe) {
            return bad("techniques must include weighted_ce (the baseline)".into());
        }
        let ensembles = self.techniques.contains(&Technique::ClusteredEnsemble)
            || self.techniques.contains(&Technique::EasyEnsemble);
        if ensembles && !(2..=crate::ensemble::MAX_MEMBERS).contains(&self.ensemble_members) {
            return bad(format!(
                "ensemble_members = {}: must be 2 to {}",
                self.ensemble_members,
                crate::ensemble::MAX_MEMBERS
            ));
        }
        if self.val_per_class == 0 || self.test_per_class == 0 {
            return bad("val_per_class and test_per_class must be positive".into());
        }
        if self.techniques.contains(&Technique::LabelSmearing)
            && self.train.examples.frame_targets.is_none()
        {
            return bad("label_smearing needs [train.examples.frame_targets]".into());
        }
        self.train.validate()
    }

    /// The class list of every run: background, then the event classes.
    pub fn classes(&self) -> Vec<String> {
        std::iter::once(BACKGROUND.to_string())
            .chain(self.event_classes.iter().cloned())
            .collect()
    }

    /// The name of a ratio, e.g. `6-1-2-16`.
    pub fn ratio_name(r: &[usize]) -> String {
        r.iter().map(usize::to_string).collect::<Vec<_>>().join("-")
    }

    /// The training configuration of a technique and seed (`pretrained`: the run folder of
    /// the pretrained network, for `transfer`).
    pub fn run_config(
        &self,
        arch: Architecture,
        t: Technique,
        seed: u64,
        pretrained: Option<&Path>,
    ) -> TrainConfig {
        let mut cfg = self.train.clone();
        cfg.model.kind = arch.kind();
        cfg.seed = seed;
        cfg.plots = false;
        let focal = cfg.imbalance.focal.clone();
        cfg.imbalance = ImbalanceSection {
            focal,
            ..Default::default()
        };
        let im = &mut cfg.imbalance;
        cfg.method = match t {
            Technique::Ce => Method::Ce,
            Technique::WeightedCe => Method::WeightedCe,
            Technique::Oversample => {
                im.resample = Resample::Oversample;
                Method::Ce
            }
            Technique::Undersample => {
                im.resample = Resample::Undersample;
                Method::Ce
            }
            Technique::Smote => {
                im.resample = Resample::Smote;
                Method::Ce
            }
            Technique::Focal => Method::Focal,
            Technique::PartialAugmentation => {
                im.partial_augmentation = true;
                Method::Ce
            }
            Technique::LabelSmearing => {
                im.smear_sigma_frames = self.smear_sigma_frames;
                Method::WeightedCe
            }
            Technique::Transfer => {
                im.init_from = pretrained.map(Path::to_path_buf);
                Method::WeightedCe
            }
            Technique::Centroid => {
                // The same epoch budget, split between the two stages.
                cfg.epochs = cfg.epochs.saturating_sub(cfg.classifier_epochs).max(1);
                Method::Centroid
            }
            // The members are trained as the baseline is, each on its group of the
            // background and every event window.
            Technique::ClusteredEnsemble | Technique::EasyEnsemble => Method::WeightedCe,
        };
        cfg
    }
}

/// Options of `hark-train experiment` that are not part of the configuration.
#[derive(Debug, Clone)]
pub struct ExperimentOptions {
    /// Output folder.
    pub out_dir: PathBuf,
    /// Folder relative paths of the configuration are resolved against.
    pub base_dir: PathBuf,
    /// Skip runs whose result exists.
    pub resume: bool,
    /// Parallel runs.
    pub threads: usize,
    /// The command line, recorded in `results.md`.
    pub command: String,
}

/// The result of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Architecture name.
    pub architecture: String,
    /// Ratio name (`6-1-2-16`).
    pub ratio: String,
    /// Technique name.
    pub technique: String,
    /// Seed.
    pub seed: u64,
    /// `"ok"`, or why there is no result (`"not available in this build: ..."`).
    pub status: String,
    /// Test error rate per event class.
    pub class_error_rate: BTreeMap<String, f64>,
    /// Overall test error rate `(S + D + I) / N` (none without a result).
    pub error_rate: Option<f64>,
    /// Test balanced accuracy, background included (none without a result).
    pub balanced_accuracy: Option<f64>,
    /// Training windows per class after the technique's resampling (class order).
    pub train_windows: Vec<usize>,
    /// Epochs run.
    pub epochs: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Error rates of a confusion matrix (`confusion[r][p]`, class `bg` is background): the
/// per-class `(FN + FP) / N` of every other class and the overall `(S + D + I) / N`.
pub fn error_rates(confusion: &[Vec<usize>], bg: usize) -> (Vec<Option<f64>>, f64) {
    let n = confusion.len();
    let per_class = (0..n)
        .map(|c| {
            let support: usize = confusion[c].iter().sum();
            let tp = confusion[c][c];
            let predicted: usize = (0..n).map(|r| confusion[r][c]).sum();
            (c != bg && support > 0)
                .then(|| ((support - tp) + (predicted - tp)) as f64 / support as f64)
        })
        .collect();
    let (mut s, mut d, mut i, mut total) = (0usize, 0usize, 0usize, 0usize);
    for (r, row) in confusion.iter().enumerate() {
        for (p, &k) in row.iter().enumerate() {
            if r == bg {
                if p != bg {
                    i += k;
                }
                continue;
            }
            total += k;
            if p == bg {
                d += k;
            } else if p != r {
                s += k;
            }
        }
    }
    let overall = if total == 0 {
        0.0
    } else {
        (s + d + i) as f64 / total as f64
    };
    (per_class, overall)
}

/// The per-class pools, validation and test sets (raw features, not normalised).
struct Sets {
    classes: Vec<String>,
    /// Training windows of every class (class order).
    pools: Vec<ExampleSet>,
    val: ExampleSet,
    test: ExampleSet,
}

/// Where windows come from: the clips of one split, the classes, the training
/// configuration's example settings and feature cache.
struct WindowSource<'a> {
    clips: &'a [Clip],
    classes: &'a [String],
    cfg: &'a TrainConfig,
    cache: Option<&'a Path>,
}

/// `n` windows of class `label` (background or an event class) generated from the clips of
/// `src`.
fn class_windows(
    src: &WindowSource,
    label: usize,
    n: usize,
    augment: bool,
    seed: u64,
) -> Result<ExampleSet, TrainError> {
    let WindowSource {
        clips,
        classes,
        cfg,
        cache,
    } = *src;
    let class = &classes[label];
    let is_bg = class == BACKGROUND;
    let mine: Vec<Clip> = clips
        .iter()
        .filter(|c| c.role != Role::Event || (!is_bg && c.class == *class))
        .cloned()
        .collect();
    let sources = if is_bg {
        crate::examples::by_kind(mine.iter().filter(|c| c.role == Role::Background))
            .len()
            .max(1)
    } else {
        mine.iter().filter(|c| c.role == Role::Event).count()
    };
    if sources == 0 {
        return Err(TrainError::Config(format!(
            "no {class} clips in this split: the experiment needs every class in training, \
             validation and test clips"
        )));
    }
    let mut ex = cfg.examples.clone();
    ex.windows_per_event = n.div_ceil(sources);
    ex.background_ratio = 0.0;
    if !augment {
        ex.augment = AugmentConfig::none();
    }
    let set = generate_cached(
        &mine,
        classes,
        &ex,
        &cfg.frontend,
        seed ^ crate::data::fnv1a(class.as_bytes()),
        cache,
    )?;
    // A random n of them (spread over every clip).
    let mut idx: Vec<usize> = (0..set.len()).filter(|&i| set.labels[i] == label).collect();
    Rng::new(seed ^ 0x706f_6f6c).shuffle(&mut idx);
    idx.truncate(n);
    idx.sort_unstable();
    Ok(crate::imbalance::subset(&set, &idx))
}

fn concat(sets: &[ExampleSet]) -> ExampleSet {
    let mut out = sets[0].clone();
    for s in &sets[1..] {
        out.labels.extend_from_slice(&s.labels);
        out.features.extend_from_slice(&s.features);
        out.onsets.extend_from_slice(&s.onsets);
        out.ends.extend_from_slice(&s.ends);
    }
    out
}

fn make_sets(
    cfg: &ExperimentConfig,
    base_dir: &Path,
    progress: &mut dyn FnMut(String),
) -> Result<Sets, TrainError> {
    let tc = &cfg.train;
    let clips = load_data_clips(tc, base_dir, &mut |p| {
        if let Progress::Info(m) = p {
            progress(m)
        }
    })?;
    let (dev, test_clips) = tc.data.split.split_test(&clips);
    let (train_clips, val_clips) = tc.data.split.split_clips(&dev);
    let classes = cfg.classes();
    let cache = tc.cache_dir.as_ref().map(|d| base_dir.join(d));
    let cache = cache.as_deref();
    let k = classes.len();
    let mut pools = Vec::new();
    let (mut vals, mut tests) = (Vec::new(), Vec::new());
    for label in 0..k {
        // Ratio entries: event classes first, background last.
        let pos = if label == 0 { k - 1 } else { label - 1 };
        let need = cfg.ratios.iter().map(|r| r[pos]).max().unwrap_or(1) * cfg.unit;
        let s = cfg.data_seed;
        let (train_src, val_src, test_src) = (
            WindowSource {
                clips: &train_clips,
                classes: &classes,
                cfg: tc,
                cache,
            },
            WindowSource {
                clips: &val_clips,
                classes: &classes,
                cfg: tc,
                cache,
            },
            WindowSource {
                clips: &test_clips,
                classes: &classes,
                cfg: tc,
                cache,
            },
        );
        pools.push(class_windows(&train_src, label, need, true, s ^ 0x7472)?);
        vals.push(class_windows(
            &val_src,
            label,
            cfg.val_per_class,
            tc.augment_validation,
            s ^ 0x7661,
        )?);
        tests.push(class_windows(
            &test_src,
            label,
            cfg.test_per_class,
            false,
            s ^ 0x7465,
        )?);
        progress(format!(
            "{}: pool {} windows, validation {}, test {} (clips: train {}, val {}, test {})",
            classes[label],
            pools[label].len(),
            vals[label].len(),
            tests[label].len(),
            count_clips(&train_clips, &classes[label]),
            count_clips(&val_clips, &classes[label]),
            count_clips(&test_clips, &classes[label]),
        ));
    }
    Ok(Sets {
        classes,
        pools,
        val: concat(&vals),
        test: concat(&tests),
    })
}

fn count_clips(clips: &[Clip], class: &str) -> usize {
    clips
        .iter()
        .filter(|c| c.class == class && (class == BACKGROUND || c.role == Role::Event))
        .count()
}

/// The training windows of a ratio and seed: exactly `r_c × unit` of class `c`, drawn from
/// its pool.
fn training_set(cfg: &ExperimentConfig, sets: &Sets, ratio: &[usize], seed: u64) -> ExampleSet {
    let k = sets.classes.len();
    let parts: Vec<ExampleSet> = (0..k)
        .map(|label| {
            let pos = if label == 0 { k - 1 } else { label - 1 };
            let n = ratio[pos] * cfg.unit;
            let pool = &sets.pools[label];
            let mut idx: Vec<usize> = (0..pool.len()).collect();
            Rng::new(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ label as u64).shuffle(&mut idx);
            idx.truncate(n);
            idx.sort_unstable();
            crate::imbalance::subset(pool, &idx)
        })
        .collect();
    concat(&parts)
}

/// One run to do.
#[derive(Debug, Clone)]
struct Job {
    arch: Architecture,
    ratio: Vec<usize>,
    technique: Technique,
    seed: u64,
}

impl Job {
    fn path(&self, out: &Path) -> PathBuf {
        out.join("runs")
            .join(self.arch.name())
            .join(ExperimentConfig::ratio_name(&self.ratio))
            .join(self.technique.name())
            .join(format!("seed-{}.json", self.seed))
    }
}

fn pretrained_dir(out: &Path, arch: Architecture, seed: u64) -> PathBuf {
    out.join("pretrained")
        .join(arch.name())
        .join(format!("seed-{seed}"))
}

/// Pretrains the network of `transfer` on the synthetic set (unless it exists).
fn pretrain(
    cfg: &ExperimentConfig,
    out: &Path,
    arch: Architecture,
    seed: u64,
) -> Result<(), TrainError> {
    let dir = pretrained_dir(out, arch, seed);
    if dir.join("summary.json").is_file() {
        return Ok(());
    }
    let mut tc = cfg.train.clone();
    tc.model.kind = arch.kind();
    tc.method = Method::WeightedCe;
    tc.seed = seed;
    tc.plots = false;
    tc.epochs = cfg.pretrain_epochs;
    tc.imbalance = ImbalanceSection::default();
    tc.cache_dir = None;
    tc.data = crate::train::DataSection {
        synthetic: Some(cfg.pretrain.clone()),
        split: crate::data::SplitConfig {
            val_groups: vec!["synth0".into()],
            ..Default::default()
        },
        ..Default::default()
    };
    let opts = RunOptions {
        out_dir: Some(dir),
        ..Default::default()
    };
    crate::train::run(&tc, &opts, &mut |_| {})?;
    Ok(())
}

/// Trains and evaluates one run.
fn run_one(
    cfg: &ExperimentConfig,
    sets: &Sets,
    job: &Job,
    out: &Path,
) -> Result<RunResult, TrainError> {
    let t0 = Instant::now();
    let pre = pretrained_dir(out, job.arch, job.seed);
    let tc = cfg.run_config(job.arch, job.technique, job.seed, Some(&pre));
    let train = training_set(cfg, sets, &job.ratio, job.seed);
    let data = finish_prepared(&tc, sets.classes.clone(), train, sets.val.clone());
    let mut test = sets.test.clone();
    test.normalize(&data.mean, &data.std);
    let opts = RunOptions::default();
    let ensemble = match job.technique {
        Technique::ClusteredEnsemble => Some(EnsembleKind::Clustered),
        Technique::EasyEnsemble => Some(EnsembleKind::Easy),
        _ => None,
    };
    let (m, epochs) = match ensemble {
        Some(kind) => {
            let e = train_ensemble(&tc, &data, kind, cfg.ensemble_members, &opts, &mut |_| {})?;
            let epochs = e.members.iter().map(|o| o.history.len()).sum();
            (e.evaluate(&test), epochs)
        }
        None => {
            let outcome = train_prepared(&tc, &data, &opts, &mut |_| {})?;
            let m = evaluate(&outcome.net, &outcome.classifier, &test, tc.batch_size);
            (m, outcome.history.len())
        }
    };
    let (per_class, overall) = error_rates(&m.confusion, 0);
    Ok(RunResult {
        architecture: job.arch.name().into(),
        ratio: ExperimentConfig::ratio_name(&job.ratio),
        technique: job.technique.name(),
        seed: job.seed,
        status: "ok".into(),
        class_error_rate: sets
            .classes
            .iter()
            .zip(per_class)
            .filter_map(|(c, e)| e.map(|e| (c.clone(), e)))
            .collect(),
        error_rate: Some(overall),
        balanced_accuracy: Some(m.balanced_accuracy),
        train_windows: data.train.class_counts(),
        epochs,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn write_json(path: &Path, v: &impl Serialize) -> Result<(), TrainError> {
    let err = |e: std::io::Error| TrainError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    };
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).map_err(err)?;
    }
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec_pretty(v).expect("serialisable")).map_err(err)?;
    fs::rename(&tmp, path).map_err(err)
}

/// Runs `work` over `items` in `threads` threads; the first error stops the rest.
fn parallel<T: Sync>(
    items: &[T],
    threads: usize,
    work: impl Fn(&T) -> Result<(), TrainError> + Sync,
) -> Result<(), TrainError> {
    let next = AtomicUsize::new(0);
    let error: Mutex<Option<TrainError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads.clamp(1, items.len().max(1)) {
            s.spawn(|| {
                loop {
                    if error.lock().map(|e| e.is_some()).unwrap_or(true) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else { return };
                    if let Err(e) = work(item)
                        && let Ok(mut slot) = error.lock()
                    {
                        slot.get_or_insert(e);
                    }
                }
            });
        }
    });
    match error.into_inner().unwrap_or(None) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let m = v.iter().sum::<f64>() / n;
    let sd = if v.len() > 1 {
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        0.0
    };
    (m, sd)
}

/// The figures of one (architecture, ratio, technique) over its seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// Architecture name.
    pub architecture: String,
    /// Ratio name.
    pub ratio: String,
    /// Technique name.
    pub technique: String,
    /// `"ok"` or why not.
    pub status: String,
    /// Seeds with results.
    pub seeds: usize,
    /// Per event class, then `"overall"`: (mean, standard deviation) of the error rate.
    pub error_rate: BTreeMap<String, (f64, f64)>,
    /// Per event class, then `"overall"`: relative error reduction of the mean against the
    /// baseline's mean, `(ER_base - ER) / ER_base`.
    pub reduction: BTreeMap<String, f64>,
}

/// Aggregates the run results into rows (architectures, ratios and techniques in the
/// configuration's order).
pub fn aggregate(cfg: &ExperimentConfig, results: &[RunResult]) -> Vec<Row> {
    let mut keys: Vec<String> = cfg.event_classes.clone();
    keys.push("overall".into());
    let mut rows = Vec::new();
    for arch in &cfg.architectures {
        for ratio in &cfg.ratios {
            let rn = ExperimentConfig::ratio_name(ratio);
            let mut block: Vec<Row> = Vec::new();
            for t in &cfg.techniques {
                let mine: Vec<&RunResult> = results
                    .iter()
                    .filter(|r| {
                        r.architecture == arch.name() && r.ratio == rn && r.technique == t.name()
                    })
                    .collect();
                let ok: Vec<&&RunResult> = mine.iter().filter(|r| r.status == "ok").collect();
                let status = if ok.is_empty() {
                    mine.first()
                        .map(|r| r.status.clone())
                        .unwrap_or_else(|| "missing".into())
                } else {
                    "ok".into()
                };
                let mut er = BTreeMap::new();
                if !ok.is_empty() {
                    for k in &keys {
                        let v: Vec<f64> = ok
                            .iter()
                            .map(|r| {
                                if k == "overall" {
                                    r.error_rate.unwrap_or(f64::NAN)
                                } else {
                                    r.class_error_rate.get(k).copied().unwrap_or(f64::NAN)
                                }
                            })
                            .collect();
                        er.insert(k.clone(), mean_sd(&v));
                    }
                }
                block.push(Row {
                    architecture: arch.name().into(),
                    ratio: rn.clone(),
                    technique: t.name(),
                    status,
                    seeds: ok.len(),
                    error_rate: er,
                    reduction: BTreeMap::new(),
                });
            }
            let base = block
                .iter()
                .find(|r| r.technique == Technique::WeightedCe.name())
                .map(|r| r.error_rate.clone())
                .unwrap_or_default();
            for r in &mut block {
                for (k, &(m, _)) in &r.error_rate {
                    if let Some(&(b, _)) = base.get(k)
                        && b > 0.0
                    {
                        r.reduction.insert(k.clone(), (b - m) / b);
                    }
                }
            }
            rows.extend(block);
        }
    }
    rows
}

fn pct(v: f64) -> String {
    format!("{:+.0} %", 100.0 * v)
}

/// `results.csv`: one line per (architecture, ratio, technique, class or overall).
pub fn results_csv(cfg: &ExperimentConfig, rows: &[Row]) -> String {
    let mut s = String::from(
        "architecture,ratio,technique,status,seeds,class,error_rate_mean,error_rate_sd,relative_reduction_vs_weighted_ce\n",
    );
    let mut keys = cfg.event_classes.clone();
    keys.push("overall".into());
    for r in rows {
        for k in &keys {
            let (m, sd) = r
                .error_rate
                .get(k)
                .map(|&(m, sd)| (format!("{m:.4}"), format!("{sd:.4}")))
                .unwrap_or_default();
            let red = r
                .reduction
                .get(k)
                .map(|v| format!("{v:.4}"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "{},{},{},\"{}\",{},{},{},{},{}",
                r.architecture, r.ratio, r.technique, r.status, r.seeds, k, m, sd, red
            );
        }
    }
    s
}

/// `results.md`: a table per (architecture, ratio) and the centroid-versus-baseline check.
pub fn results_md(cfg: &ExperimentConfig, rows: &[Row], opts_line: &str, seconds: f64) -> String {
    let mut s = String::new();
    let mut keys = cfg.event_classes.clone();
    keys.push("overall".into());
    let _ = writeln!(s, "# Class-imbalance remedies compared\n");
    let _ = writeln!(
        s,
        "Command: `{opts_line}`  \nWall time: {:.1} min. Seeds: {:?}. Training windows per ratio unit: {}. \
         Test: {} windows per class (background included), held-out recordings.\n",
        seconds / 60.0,
        cfg.seeds,
        cfg.unit,
        cfg.test_per_class
    );
    let _ = writeln!(
        s,
        "Error rates are segment-based, one segment per test window (its last frame): per class \
         `(FN + FP) / N`, overall `(S + D + I) / N`; mean ± standard deviation over the seeds. \
         \"vs baseline\" is the relative error reduction of the mean against `weighted_ce` \
         (positive: fewer errors).\n"
    );
    for arch in &cfg.architectures {
        for ratio in &cfg.ratios {
            let rn = ExperimentConfig::ratio_name(ratio);
            let _ = writeln!(
                s,
                "## {} embedding network, ratio {} ({} : background)\n",
                arch.name().to_uppercase(),
                ratio
                    .iter()
                    .map(usize::to_string)
                    .collect::<Vec<_>>()
                    .join(":"),
                cfg.event_classes.join(" : ")
            );
            let block: Vec<&Row> = rows
                .iter()
                .filter(|r| r.architecture == arch.name() && r.ratio == rn)
                .collect();
            if let Some(first) = block.first()
                && first.status != "ok"
                && block.iter().all(|r| r.status == first.status)
            {
                let _ = writeln!(s, "Every technique: {}.\n", first.status);
                continue;
            }
            let _ = write!(s, "| technique |");
            for k in &keys {
                let _ = write!(s, " {k} ER | vs baseline |");
            }
            let _ = writeln!(s);
            let _ = writeln!(s, "|---|{}", "---|---|".repeat(keys.len()));
            for r in block {
                if r.status != "ok" {
                    let _ = writeln!(
                        s,
                        "| {} | {} |{}",
                        r.technique,
                        r.status,
                        " |".repeat(2 * keys.len() - 1)
                    );
                    continue;
                }
                let _ = write!(s, "| {} |", r.technique);
                for k in &keys {
                    let (m, sd) = r.error_rate[k];
                    let red = r.reduction.get(k).map(|&v| pct(v)).unwrap_or_default();
                    let _ = write!(s, " {m:.2} ± {sd:.2} | {red} |");
                }
                let _ = writeln!(s);
            }
            let _ = writeln!(s);
            if let Some(c) = rows.iter().find(|r| {
                r.architecture == arch.name()
                    && r.ratio == rn
                    && r.technique == "centroid"
                    && r.status == "ok"
            }) {
                let parts: Vec<String> = keys
                    .iter()
                    .filter_map(|k| c.reduction.get(k).map(|v| format!("{k} {}", pct(*v))))
                    .collect();
                let _ = writeln!(
                    s,
                    "Centroid against the class-weighted baseline (claim: 15 to 30 % fewer errors per \
                     class, 22 % overall): {}.\n",
                    parts.join(", ")
                );
            }
        }
    }
    s
}

/// Runs the whole experiment (see the [module documentation](self)); returns the rows.
pub fn run_experiment(
    cfg: &ExperimentConfig,
    opts: &ExperimentOptions,
    progress: &(dyn Fn(String) + Sync),
) -> Result<Vec<Row>, TrainError> {
    cfg.validate()?;
    let t0 = Instant::now();
    let out = &opts.out_dir;
    fs::create_dir_all(out).map_err(|e| TrainError::Io {
        path: out.clone(),
        problem: e.to_string(),
    })?;
    let cfg_text = toml::to_string_pretty(cfg).expect("serialisable");
    let cfg_path = out.join("experiment.toml");
    if opts.resume
        && let Ok(old) = fs::read_to_string(&cfg_path)
        && old != cfg_text
    {
        return Err(TrainError::Config(format!(
            "--resume: {} was run with another configuration; use a new output folder",
            out.display()
        )));
    }
    fs::write(&cfg_path, cfg_text).map_err(|e| TrainError::Io {
        path: out.join("experiment.toml"),
        problem: e.to_string(),
    })?;
    let mut jobs = Vec::new();
    for &arch in &cfg.architectures {
        for ratio in &cfg.ratios {
            for &technique in &cfg.techniques {
                for &seed in &cfg.seeds {
                    jobs.push(Job {
                        arch,
                        ratio: ratio.clone(),
                        technique,
                        seed,
                    });
                }
            }
        }
    }
    let todo: Vec<Job> = jobs
        .iter()
        .filter(|j| !(opts.resume && j.path(out).is_file()))
        .cloned()
        .collect();
    progress(format!(
        "{} runs, {} to do, {} threads",
        jobs.len(),
        todo.len(),
        opts.threads
    ));
    if !todo.is_empty() {
        let sets = make_sets(cfg, &opts.base_dir, &mut |m| progress(m))?;
        // The pretrained networks of `transfer` first.
        let pre: Vec<(Architecture, u64)> = {
            let mut v: Vec<(Architecture, u64)> = todo
                .iter()
                .filter(|j| j.technique == Technique::Transfer)
                .map(|j| (j.arch, j.seed))
                .collect();
            v.sort();
            v.dedup();
            v
        };
        parallel(&pre, opts.threads, |&(arch, seed)| {
            pretrain(cfg, out, arch, seed)?;
            progress(format!("pretrained {} seed {seed}", arch.name()));
            Ok(())
        })?;
        let done = AtomicUsize::new(0);
        // Longest first (centroid has two stages, resampling enlarges the set) keeps the
        // threads busy to the end.
        let mut todo = todo;
        todo.sort_by_key(|j| {
            std::cmp::Reverse(match j.technique {
                Technique::Centroid => 3,
                Technique::Oversample | Technique::Smote | Technique::PartialAugmentation => 2,
                _ => 1,
            })
        });
        let n = todo.len();
        parallel(&todo, opts.threads, |job| {
            let r = run_one(cfg, &sets, job, out)?;
            write_json(&job.path(out), &r)?;
            let k = done.fetch_add(1, Ordering::SeqCst) + 1;
            progress(format!(
                "[{k}/{n}] {} {} {} seed {}: {} ER {} ({:.0} s)",
                r.architecture,
                r.ratio,
                r.technique,
                r.seed,
                r.status,
                r.error_rate.map_or("-".into(), |e| format!("{e:.3}")),
                r.seconds
            ));
            Ok(())
        })?;
    }
    let mut results = Vec::new();
    for j in &jobs {
        let p = j.path(out);
        let bytes = fs::read(&p).map_err(|e| TrainError::Io {
            path: p.clone(),
            problem: e.to_string(),
        })?;
        let r: RunResult = serde_json::from_slice(&bytes).map_err(|e| TrainError::Io {
            path: p.clone(),
            problem: e.to_string(),
        })?;
        results.push(r);
    }
    let rows = aggregate(cfg, &results);
    let write = |name: &str, text: String| -> Result<(), TrainError> {
        let p = out.join(name);
        fs::write(&p, text).map_err(|e| TrainError::Io {
            path: p.clone(),
            problem: e.to_string(),
        })
    };
    write("results.csv", results_csv(cfg, &rows))?;
    write(
        "results.md",
        results_md(cfg, &rows, &opts.command, t0.elapsed().as_secs_f64()),
    )?;
    write("results.svg", crate::plots::experiment_svg(cfg, &rows))?;
    Ok(rows)
}

/// Reads an experiment configuration file.
pub fn load(path: &Path) -> Result<ExperimentConfig, TrainError> {
    let text = fs::read_to_string(path).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    ExperimentConfig::from_toml(&text).map_err(|e| match e {
        TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
        e => e,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_rates_by_hand() {
        // Classes: background, a, b. Rows: reference; columns: prediction.
        let c = vec![vec![8, 2, 0], vec![1, 6, 3], vec![0, 0, 10]];
        let (per, overall) = error_rates(&c, 0);
        assert_eq!(per[0], None);
        // a: FN 4, FP 2 over 10; b: FN 0, FP 3 over 10.
        assert_eq!(per[1], Some(0.6));
        assert_eq!(per[2], Some(0.3));
        // S 3, D 1, I 2 over N = 20.
        assert!((overall - 0.3).abs() < 1e-12);
    }

    #[test]
    fn quick_configuration_parses_and_lists_every_technique() {
        let cfg = ExperimentConfig::from_toml(QUICK_CONFIG).unwrap();
        assert_eq!(cfg.techniques, ALL_TECHNIQUES.to_vec());
        let t = cfg.run_config(Architecture::Lstm, Technique::Smote, 3, None);
        assert_eq!(t.imbalance.resample, Resample::Smote);
        assert_eq!((t.method, t.seed), (Method::Ce, 3));
    }

    #[test]
    fn aggregation_means_and_reductions() {
        let cfg = ExperimentConfig {
            event_classes: vec!["a".into()],
            ratios: vec![vec![1, 4]],
            techniques: vec![Technique::WeightedCe, Technique::Centroid],
            architectures: vec![Architecture::Lstm],
            ..Default::default()
        };
        let r = |t: &str, seed, er: f64| RunResult {
            architecture: "lstm".into(),
            ratio: "1-4".into(),
            technique: t.into(),
            seed,
            status: "ok".into(),
            class_error_rate: [("a".to_string(), er)].into(),
            error_rate: Some(er),
            balanced_accuracy: None,
            train_windows: vec![],
            epochs: 1,
            seconds: 0.0,
        };
        let rows = aggregate(
            &cfg,
            &[
                r("weighted_ce", 1, 0.4),
                r("weighted_ce", 2, 0.6),
                r("centroid", 1, 0.3),
                r("centroid", 2, 0.5),
            ],
        );
        assert_eq!(rows.len(), 2);
        let (m, sd) = rows[1].error_rate["overall"];
        assert!((m - 0.4).abs() < 1e-12 && (sd - 0.02f64.sqrt()).abs() < 1e-12);
        assert!((rows[1].reduction["a"] - 0.2).abs() < 1e-12);
        assert!(results_md(&cfg, &rows, "cmd", 1.0).contains("a +20 %"));
        assert!(results_csv(&cfg, &rows).contains("lstm,1-4,centroid,\"ok\",2,a,0.4000"));
    }
}
