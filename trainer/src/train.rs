//! The training loop: configuration, data preparation, the two methods, checkpoints, resume,
//! metrics, export.
//!
//! # Methods
//!
//! - `centroid` (default): stage 1 trains the [`EmbeddingNet`] alone with the
//!   [`CentroidLoss`] on the last frame's embedding of every window, re-clustering every
//!   `centroid.recluster_every` epochs with k-means on the current embeddings of the training
//!   set (validation: nearest-centroid classification). Stage 2 trains a [`Classifier`] on the
//!   embeddings with cross-entropy (weighted inversely to class frequency unless
//!   `classifier_weighted = false`) while fine-tuning the embedding network at
//!   `finetune_lr_scale` times the learning rate (`freeze_embedding = true` keeps it fixed).
//! - `weighted_ce` (baseline): the same network and classifier trained end to end from the
//!   start with the weighted cross-entropy, for `epochs` epochs.
//!
//! Every stage keeps its best epoch (validation balanced accuracy, or loss) and stops early
//! after `early_stopping.patience` epochs without improvement; the best models go on.
//!
//! # Determinism
//!
//! burn's generator is seeded (`B::seed`) before every model initialisation, and every
//! parameter is drawn right then, under a process-wide lock ([`init_seeded`]): burn initialises
//! parameters lazily and its generator is global, so runs in parallel threads (the experiment)
//! would otherwise draw from each other's streams. (Before this, a network's parameters were
//! drawn at its first forward pass, after the classifier's seeding in `weighted_ce`: the same
//! seed now gives other initial weights than in earlier versions.) Example
//! generation and shuffling use [`Rng`] seeded from `seed`, and the shuffling of epoch `e` of
//! a stage is derived from `(seed, stage, e)`: the same configuration gives the same loss curve,
//! and a run resumed from a checkpoint continues the curve it would have had.
//!
//! # Outputs (in the output folder)
//!
//! `config.toml` (the configuration as run), `metrics.csv` and `metrics.json` (one row per
//! epoch), `checkpoint/` (the latest epoch: burn records of the models and optimisers, and
//! `state.json`; `--resume` continues from it), `model.onnx` (the exported streaming model,
//! per-band feature normalisation folded into the first LSTM layer) and `summary.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::grad_clipping::GradientClippingConfig;
use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamConfig, GradientsParams, Optimizer};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use hark::frontend::FrontendConfig;
use hark::model::{FORMAT_VERSION, ModelMetadata};
use serde::{Deserialize, Serialize};

use crate::backend::{Cpu, CpuAutodiff};
use crate::data::{BACKGROUND, ClassMap, Clip, DataError, Skipped, Source, SplitConfig};
use crate::eval::{WindowMetrics, window_metrics};
use crate::examples::{
    ExampleConfig, ExampleError, ExampleSet, FrameTargets, Rng, SpecAugment, SyntheticConfig,
    class_list, generate, generate_cached, synthetic_clips,
};
use crate::export::{CnnStepNet, ExportError, StreamingNet};
use crate::imbalance::ImbalanceSection;
use crate::kmeans::nearest_centroid;
use crate::loss::{CentroidLoss, CentroidLossConfig, CentroidLossError};
use crate::model::{
    CausalCnnConfig, Classifier, ClassifierConfig, EmbeddingNet, EmbeddingNetConfig, LstmState,
};

/// The autodiff backend training runs on.
pub type A = CpuAutodiff;

/// Training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Clustered-centroid embedding, then classifier with fine-tuning.
    Centroid,
    /// End-to-end cross-entropy weighted inversely to class frequency (baseline).
    WeightedCe,
    /// End-to-end plain (unweighted) cross-entropy.
    Ce,
    /// End-to-end focal loss (`[imbalance.focal]`, see [`crate::imbalance`]).
    Focal,
}

impl Method {
    /// The method's name, as in the configuration and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Method::Centroid => "centroid",
            Method::WeightedCe => "weighted_ce",
            Method::Ce => "ce",
            Method::Focal => "focal",
        }
    }

    /// The stage name of an end-to-end method (`None` for `centroid`): its name.
    pub fn end_to_end_stage(self) -> Option<&'static str> {
        (self != Method::Centroid).then(|| self.name())
    }
}

/// The network's sizes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSection {
    /// The embedding network: `"lstm"` or `"cnn"` (a causal dilated CNN, `[model.cnn]`; it
    /// trains and evaluates like the LSTM and exports as a [`CnnStepNet`], its state the past
    /// frames of every layer). Default `"lstm"`.
    pub kind: ModelKind,
    /// LSTM hidden size. Default 64.
    pub hidden: usize,
    /// LSTM layers. Default 1.
    pub layers: usize,
    /// Embedding size. Default 32.
    pub embedding: usize,
    /// Initial forget-gate bias. Default 1.0.
    pub forget_bias: f64,
    /// The CNN of `kind = "cnn"`.
    pub cnn: CnnSection,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            kind: ModelKind::Lstm,
            hidden: 64,
            layers: 1,
            embedding: 32,
            forget_bias: 1.0,
            cnn: CnnSection::default(),
        }
    }
}

/// The kind of embedding network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// The LSTM stack (exportable, streaming).
    #[default]
    Lstm,
    /// A causal dilated 1-D CNN ([`crate::model::CausalCnn`]).
    Cnn,
}

/// The causal CNN (`[model.cnn]`), used when `model.kind = "cnn"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CnnSection {
    /// Channels of every layer. Default 48.
    pub channels: usize,
    /// Kernel size, frames. Default 3.
    pub kernel: usize,
    /// Dilation of each layer (one layer each). Default `[1, 2, 4, 8, 16]`.
    pub dilations: Vec<usize>,
}

impl Default for CnnSection {
    fn default() -> Self {
        Self {
            channels: 48,
            kernel: 3,
            dilations: vec![1, 2, 4, 8, 16],
        }
    }
}

/// Where the clips come from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DataSection {
    /// Datasets on disk (`[[data.sources]]` with `kind = "manifest" | "folders" | "esc50" |
    /// "urban_sound8k"` and `path`, relative to the configuration file). Default none.
    pub sources: Vec<Source>,
    /// The synthetic tones / chirps / noise bursts set (`[data.synthetic]`), added to the
    /// sources when present. Default absent.
    pub synthetic: Option<SyntheticConfig>,
    /// Synthetic infant cries (`[data.baby_cry]`), added when present. Default absent.
    pub baby_cry: Option<crate::synth::BabyCryConfig>,
    /// Synthetic breaking glass (`[data.glass]`), added to the real clips when present.
    /// Default absent.
    pub glass: Option<crate::synth::GlassConfig>,
    /// Source class → target class / `"background"` / `"negative"` / `"drop"`.
    /// Default: every class kept under its own name.
    pub class_map: ClassMap,
    /// Train/validation split by group. Default 20 % of the groups by hash.
    pub split: SplitConfig,
    /// Longer clips are cut to this many seconds. Default 30.
    pub max_clip_seconds: f64,
    /// The classes, in output order (must hold `"background"`). Default: `"background"` then
    /// the event classes of the training clips, sorted.
    pub classes: Option<Vec<String>>,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            sources: Vec::new(),
            synthetic: None,
            baby_cry: None,
            glass: None,
            class_map: ClassMap::default(),
            split: SplitConfig::default(),
            max_clip_seconds: 30.0,
            classes: None,
        }
    }
}

/// Settings of the centroid loss (see [`CentroidLossConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CentroidSection {
    /// Margin of the push term, embedding units. Default 1.0.
    pub margin: f32,
    /// Weight of the push term. Default 1.0.
    pub push_weight: f32,
    /// EMA momentum of the centroids. Default 0.9.
    pub momentum: f32,
    /// Lloyd iterations per k-means. Default 50.
    pub kmeans_iters: usize,
    /// Epochs between re-clusterings. Default 5.
    pub recluster_every: usize,
}

impl Default for CentroidSection {
    fn default() -> Self {
        Self {
            margin: 1.0,
            push_weight: 1.0,
            momentum: 0.9,
            kmeans_iters: 50,
            recluster_every: 5,
        }
    }
}

/// What early stopping watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMetric {
    /// Validation balanced accuracy (higher is better).
    BalancedAccuracy,
    /// Validation loss (lower is better).
    Loss,
    /// Validation mean average precision of the event classes (higher is better): how well
    /// the scores rank each class's frames (or windows) above the rest, whatever the
    /// threshold. What a detector tuned per class afterwards needs; balanced accuracy takes
    /// the argmax, which says little when most supervised frames are background.
    MeanAp,
}

/// Early stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EarlyStopping {
    /// The metric watched. Default `"balanced_accuracy"`.
    pub metric: StopMetric,
    /// Epochs without improvement before a stage stops (0: never stop early). Default 10.
    pub patience: usize,
    /// Smallest change that counts as an improvement. Default 0.0.
    pub min_delta: f64,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            metric: StopMetric::BalancedAccuracy,
            patience: 10,
            min_delta: 0.0,
        }
    }
}

/// The training configuration (TOML). Every field has a default; see each for its value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    /// `"centroid"`, `"weighted_ce"`, `"ce"` or `"focal"`. Default `"centroid"`.
    pub method: Method,
    /// Seed of everything random. Default 0.
    pub seed: u64,
    /// Epochs of stage 1 (`centroid`) or of the whole training (`weighted_ce`). Default 30.
    pub epochs: usize,
    /// Epochs of stage 2 (classifier) of `centroid`. Default 10.
    pub classifier_epochs: usize,
    /// Examples per batch. Default 32.
    pub batch_size: usize,
    /// Adam learning rate. Default 1e-3.
    pub learning_rate: f64,
    /// Gradient clipping by norm (per parameter tensor); 0 turns it off. Default 1.0.
    pub grad_clip_norm: f32,
    /// Stage 2: learning rate of the embedding network relative to the classifier's.
    /// Default 0.1.
    pub finetune_lr_scale: f64,
    /// Stage 2: keep the embedding network fixed. Default false.
    pub freeze_embedding: bool,
    /// Stage 2: weight the cross-entropy inversely to class frequency. Default true.
    pub classifier_weighted: bool,
    /// Network sizes.
    pub model: ModelSection,
    /// Train an ensemble instead of one model (`[ensemble]`, see [`crate::ensemble`]).
    /// Default absent.
    pub ensemble: Option<crate::ensemble::EnsembleSection>,
    /// Centroid loss.
    pub centroid: CentroidSection,
    /// Early stopping.
    pub early_stopping: EarlyStopping,
    /// Data sources, class map, split.
    pub data: DataSection,
    /// Example generation and augmentation (training set).
    pub examples: ExampleConfig,
    /// Augment the validation examples too (otherwise they are mixed without augmentation).
    /// Default false.
    pub augment_validation: bool,
    /// Carry the LSTM state from one batch to the next (truncated back-propagation through
    /// time): slot `i` of every batch continues the stream of slot `i` of the batch before,
    /// the state passed on without its gradient. The network then learns from states that
    /// have run for minutes, as the runtime's does, instead of only from the zero state at
    /// the start of each window. Default false.
    pub carry_state: bool,
    /// SpecAugment-style masking of the training batches (`[spec_augment]`, see
    /// [`SpecAugment`]). Default absent (off).
    pub spec_augment: Option<SpecAugment>,
    /// Folder of the on-disk feature cache, relative to the configuration file; none keeps
    /// features in memory only. Default none.
    pub cache_dir: Option<PathBuf>,
    /// The frontend (must stay the runtime's defaults for a deployable model).
    pub frontend: FrontendConfig,
    /// Detection threshold written into the model for every event class. Default 0.5.
    pub threshold: f32,
    /// Write PNG plots into the output folder: loss curves, the validation confusion
    /// matrix, PCA projections of the validation embeddings at several epochs
    /// ([`crate::plots`]). Default true.
    pub plots: bool,
    /// Remedies for class imbalance: resampling, partial augmentation, label smearing,
    /// transfer learning, focal loss settings (`[imbalance]`, see [`crate::imbalance`]).
    pub imbalance: ImbalanceSection,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            method: Method::Centroid,
            seed: 0,
            epochs: 30,
            classifier_epochs: 10,
            batch_size: 32,
            learning_rate: 1e-3,
            grad_clip_norm: 1.0,
            finetune_lr_scale: 0.1,
            freeze_embedding: false,
            classifier_weighted: true,
            model: ModelSection::default(),
            ensemble: None,
            centroid: CentroidSection::default(),
            early_stopping: EarlyStopping::default(),
            data: DataSection::default(),
            examples: ExampleConfig::default(),
            augment_validation: false,
            carry_state: false,
            spec_augment: None,
            cache_dir: None,
            frontend: FrontendConfig::default(),
            threshold: 0.5,
            plots: true,
            imbalance: ImbalanceSection::default(),
        }
    }
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The configuration is not valid.
    #[error("configuration: {0}")]
    Config(String),
    /// A dataset could not be listed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// Examples could not be made.
    #[error(transparent)]
    Examples(#[from] ExampleError),
    /// The loss rejected its inputs.
    #[error(transparent)]
    Loss(#[from] CentroidLossError),
    /// Export failed.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A file could not be read or written.
    #[error("{path}: {problem}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        problem: String,
    },
}

fn plot_error(e: crate::plots::PlotError) -> TrainError {
    match e {
        crate::plots::PlotError::Io { path, problem } => TrainError::Io { path, problem },
        e => TrainError::Io {
            path: PathBuf::from("plots"),
            problem: e.to_string(),
        },
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |e| TrainError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    }
}

impl TrainConfig {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> Result<Self, TrainError> {
        let cfg: Self = toml::from_str(text).map_err(|e| TrainError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML configuration file.
    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = fs::read_to_string(path).map_err(io_err(path))?;
        Self::from_toml(&text).map_err(|e| match e {
            TrainError::Config(m) => TrainError::Config(format!("{}: {m}", path.display())),
            e => e,
        })
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("the configuration serialises to TOML")
    }

    /// Checks ranges.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |m: &str| Err(TrainError::Config(m.into()));
        if self.batch_size == 0 {
            return bad("batch_size must be positive");
        }
        if self.learning_rate.is_nan() || self.learning_rate <= 0.0 {
            return bad("learning_rate must be positive");
        }
        if self.model.hidden == 0 || self.model.layers == 0 || self.model.embedding == 0 {
            return bad("model sizes must be positive");
        }
        if self.model.kind == ModelKind::Cnn {
            let c = &self.model.cnn;
            if c.channels == 0 {
                return bad("model.cnn.channels must be positive");
            }
            if c.kernel == 0 {
                return bad("model.cnn.kernel must be positive");
            }
            if c.dilations.is_empty() || c.dilations.contains(&0) {
                return bad("model.cnn.dilations must be a non-empty list of positive numbers");
            }
            if self.carry_state {
                return bad("carry_state needs model.kind = \"lstm\" (a CNN carries no state)");
            }
        }
        if let Some(e) = &self.ensemble {
            e.validate()?;
        }
        if self.centroid.recluster_every == 0 {
            return bad("centroid.recluster_every must be positive");
        }
        if self.examples.window_frames == 0 {
            return bad("examples.window_frames must be positive");
        }
        if self.data.sources.is_empty() && self.data.synthetic.is_none() {
            return bad("no data: give [[data.sources]] or [data.synthetic]");
        }
        if self.threshold.is_nan() || self.threshold <= 0.0 || self.threshold >= 1.0 {
            return bad("threshold must lie in (0, 1)");
        }
        if let Some(c) = &self.data.classes
            && !c.iter().any(|c| c == BACKGROUND)
        {
            return bad("data.classes must hold \"background\"");
        }
        self.imbalance.validate().map_err(TrainError::Config)?;
        if self.imbalance.smear_sigma_frames > 0.0 && self.examples.frame_targets.is_none() {
            return bad("imbalance.smear_sigma_frames needs [examples.frame_targets]");
        }
        self.frontend
            .validate()
            .map_err(|e| TrainError::Config(e.to_string()))
    }
}

/// One epoch's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// `"embedding"` (centroid stage 1), `"classifier"` (stage 2) or `"weighted_ce"`.
    pub stage: String,
    /// Epoch within the stage, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches.
    pub train_loss: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation balanced accuracy.
    pub val_balanced_accuracy: f64,
    /// Validation accuracy.
    pub val_accuracy: f64,
    /// Validation macro F1.
    pub val_macro_f1: f64,
    /// Validation mean average precision of the event classes ([`mean_average_precision`]).
    #[serde(default)]
    pub val_mean_ap: f64,
    /// Wall-clock seconds of the epoch (training and validation).
    pub seconds: f64,
}

/// What the training loop reports while it runs.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A clip was skipped.
    Skipped(&'a Skipped),
    /// A message (data sizes, stage changes).
    Info(String),
    /// An epoch finished.
    Epoch(&'a EpochRecord),
    /// A training batch finished.
    Batch {
        /// The stage.
        stage: &'a str,
        /// The epoch within the stage, from 1.
        epoch: usize,
        /// Batches done in this epoch, from 1.
        batch: usize,
        /// Batches in this epoch.
        batches: usize,
        /// Mean training loss of the epoch so far.
        loss: f64,
    },
}

/// Options of one run that are not part of the configuration.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Output folder; none writes nothing (no checkpoints, no export).
    pub out_dir: Option<PathBuf>,
    /// Continue from the checkpoint in `out_dir`.
    pub resume: bool,
    /// Folder that relative paths of the configuration are resolved against.
    pub base_dir: PathBuf,
    /// Stop after this many epochs in all (simulates an interruption, for tests).
    pub stop_after_epochs: Option<usize>,
    /// The configuration file the run was started from, recorded in `checkpoint/data.json`
    /// for the model card's reproduction command. Default none.
    pub config_path: Option<PathBuf>,
}

/// The prepared data: classes, normalised training and validation examples, normalisation.
#[derive(Debug, Clone)]
pub struct PreparedData {
    /// Class names, output order.
    pub classes: Vec<String>,
    /// Training examples (normalised).
    pub train: ExampleSet,
    /// Validation examples (normalised).
    pub val: ExampleSet,
    /// Per-band feature mean (training set).
    pub mean: Vec<f32>,
    /// Per-band feature standard deviation (training set).
    pub std: Vec<f32>,
}

/// Loads the clips of the configuration (sources through the class map, and the synthetic
/// set), skipping clips that do not decode.
pub fn load_data_clips(
    cfg: &TrainConfig,
    base_dir: &Path,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Clip>, TrainError> {
    let mut clips = Vec::new();
    if let Some(s) = &cfg.data.synthetic {
        clips.extend(synthetic_clips(s, cfg.seed));
    }
    if let Some(s) = &cfg.data.baby_cry {
        clips.extend(crate::synth::baby_cry_clips(s, cfg.seed));
    }
    if let Some(s) = &cfg.data.glass {
        clips.extend(crate::synth::glass_clips(s, cfg.seed));
    }
    for src in &cfg.data.sources {
        let items = src.items(base_dir)?;
        let labeled = cfg.data.class_map.apply(&items);
        let (c, skipped) = crate::data::load_clips(&labeled, Some(cfg.data.max_clip_seconds));
        for s in &skipped {
            progress(Progress::Skipped(s));
        }
        progress(Progress::Info(format!(
            "{} items listed, {} kept by the class map, {} decoded",
            items.len(),
            labeled.len(),
            c.len()
        )));
        clips.extend(c);
    }
    Ok(clips)
}

/// Splits the clips by group, generates and normalises the examples.
pub fn prepare_data(
    cfg: &TrainConfig,
    clips: &[Clip],
    base_dir: &Path,
) -> Result<PreparedData, TrainError> {
    let (dev_clips, _test) = cfg.data.split.split_test(clips);
    let (train_clips, val_clips) = cfg.data.split.split_clips(&dev_clips);
    if train_clips.is_empty() || val_clips.is_empty() {
        return Err(TrainError::Config(format!(
            "the split leaves {} training and {} validation clips; both must be non-empty",
            train_clips.len(),
            val_clips.len()
        )));
    }
    let classes = match &cfg.data.classes {
        Some(c) => c.clone(),
        None => class_list(&train_clips),
    };
    if classes.len() < 2 {
        return Err(TrainError::Config(
            "fewer than two classes (background and at least one event class)".into(),
        ));
    }
    let cache = cfg.cache_dir.as_ref().map(|d| base_dir.join(d));
    let train = generate_cached(
        &train_clips,
        &classes,
        &cfg.examples,
        &cfg.frontend,
        cfg.seed ^ 0x7261_696e,
        cache.as_deref(),
    )?;
    let mut val_cfg = cfg.examples.clone();
    if !cfg.augment_validation {
        val_cfg.augment = crate::examples::AugmentConfig::none();
    }
    let val = generate_cached(
        &val_clips,
        &classes,
        &val_cfg,
        &cfg.frontend,
        cfg.seed ^ 0x7661_6c00,
        cache.as_deref(),
    )?;
    Ok(finish_prepared(cfg, classes, train, val))
}

/// Normalises raw training and validation examples with the training set's per-band
/// statistics, then applies the window-level imbalance remedies of `cfg.imbalance`
/// (resampling, partial augmentation) to the training set.
pub fn finish_prepared(
    cfg: &TrainConfig,
    classes: Vec<String>,
    mut train: ExampleSet,
    mut val: ExampleSet,
) -> PreparedData {
    let (mean, std) = train.band_stats();
    train.normalize(&mean, &std);
    val.normalize(&mean, &std);
    if cfg.imbalance.changes_windows() {
        train = crate::imbalance::rebalance(&train, &cfg.imbalance, &std, cfg.seed);
    }
    PreparedData {
        classes,
        train,
        val,
        mean,
        std,
    }
}

/// The rows `(b * frames + t, _)` of a batch's per-frame embeddings `[batch, frames, dim]`,
/// as `[rows, dim]`.
pub fn select_rows<B: Backend>(e: Tensor<B, 3>, rows: &[(usize, usize)]) -> Tensor<B, 2> {
    let [b, t, d] = e.dims();
    let device = e.device();
    let ix: Vec<i64> = rows.iter().map(|&(r, _)| r as i64).collect();
    let ix =
        Tensor::<B, 1, burn::tensor::Int>::from_data(TensorData::new(ix, [rows.len()]), &device);
    e.reshape([b * t, d]).select(0, ix)
}

/// Class weights `N / (K n_c)` over the `K` classes present (0 for absent classes).
pub fn class_weights(counts: &[usize]) -> Vec<f32> {
    let n: usize = counts.iter().sum();
    let k = counts.iter().filter(|&&c| c > 0).count().max(1);
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f32 / (k as f32 * c as f32)
            }
        })
        .collect()
}

/// Cross-entropy of `logits: [batch, classes]`, each example weighted by the weight of its
/// label: `-Σ w_{y_i} log p_i(y_i) / Σ w_{y_i}`.
pub fn weighted_cross_entropy<B: Backend>(
    logits: Tensor<B, 2>,
    labels: &[usize],
    weights: &[f32],
) -> Tensor<B, 1> {
    let [batch, n] = logits.dims();
    let mut mask = vec![0.0f32; batch * n];
    let mut total = 0.0f32;
    for (i, &y) in labels.iter().enumerate() {
        mask[i * n + y] = weights[y];
        total += weights[y];
    }
    let mask = Tensor::<B, 2>::from_data(TensorData::new(mask, [batch, n]), &logits.device());
    (log_softmax(logits, 1) * mask)
        .sum()
        .neg()
        .div_scalar(total.max(1e-12))
}

/// A tensor's values on the host.
fn host<Bk: Backend, const D: usize>(t: Tensor<Bk, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data")
}

/// The last-frame embeddings of every example (`n × embedding`), in batches.
pub fn embed_all(net: &EmbeddingNet<Cpu>, set: &ExampleSet, batch: usize) -> Vec<f32> {
    let device = Default::default();
    let mut out = Vec::with_capacity(set.len() * net.embedding());
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, _) = set.batch::<Cpu>(chunk, &device);
        out.extend(host(net.forward(x)));
    }
    out
}

/// Window-level evaluation of a network and classifier on a (normalised) example set: the
/// prediction of a window is the most probable class at its last frame.
pub fn evaluate(
    net: &EmbeddingNet<Cpu>,
    clf: &Classifier<Cpu>,
    set: &ExampleSet,
    batch: usize,
) -> WindowMetrics {
    let (pred, _, _, _) = classify(net, clf, set, batch, None, None);
    window_metrics(&set.labels, &pred, &set.classes)
}

/// The embeddings of the rows `rows_of(chunk)` picks (`(b * frames + t, label)` pairs, `b`
/// the window's place in its batch) of every window, each window from zero state, and their
/// labels: `(embeddings [rows × dim], labels)`.
fn embed_rows(
    net: &EmbeddingNet<Cpu>,
    set: &ExampleSet,
    batch: usize,
    rows_of: impl Fn(&[usize]) -> Vec<(usize, usize)>,
) -> (Vec<f32>, Vec<usize>) {
    let device = Default::default();
    let (mut emb, mut labels) = (Vec::new(), Vec::new());
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, _) = set.batch::<Cpu>(chunk, &device);
        let rows = rows_of(chunk);
        emb.extend(host(select_rows(net.forward_frames(x), &rows)));
        labels.extend(rows.iter().map(|&(_, l)| l));
    }
    (emb, labels)
}

/// Frame-level validation for sets whose events carry extents (the `stream` layout): the
/// embeddings of every supervised frame under `ft` (each window from zero state) and their
/// labels, `(embeddings [rows × dim], labels)`.
pub fn embed_frames(
    net: &EmbeddingNet<Cpu>,
    set: &ExampleSet,
    batch: usize,
    ft: &FrameTargets,
) -> (Vec<f32>, Vec<usize>) {
    embed_rows(net, set, batch, |chunk| set.frame_targets(chunk, Some(ft)))
}

/// One embedding per window, for clustering windows whose events carry extents: the
/// embedding at the middle of an event window's labelled span (clamped into the window), at
/// the last frame of any other window.
pub fn embed_spans(
    net: &EmbeddingNet<Cpu>,
    set: &ExampleSet,
    batch: usize,
    ft: &FrameTargets,
) -> Vec<f32> {
    let last = set.frames as i64 - 1;
    let middle = |chunk: &[usize]| {
        chunk
            .iter()
            .enumerate()
            .map(|(b, &i)| {
                let t = set
                    .event_span(i, ft)
                    .map_or(last, |(a, z)| ((a + z.min(last)) / 2).clamp(0, last));
                (b * set.frames + t as usize, set.labels[i])
            })
            .collect()
    };
    embed_rows(net, set, batch, middle).0
}

/// The frame targets to validate on: `Some` when the validation set's events carry extents
/// (`stream` layout), where the last frame of a window says little; `None` for the
/// window-level validation (the last frame of each window).
fn frame_validation<'a>(cfg: &'a TrainConfig, val: &ExampleSet) -> Option<&'a FrameTargets> {
    cfg.examples
        .frame_targets
        .as_ref()
        .filter(|_| !val.ends.is_empty())
}

/// Predictions (argmax), reference labels, softmax scores (`rows × classes`) and the weighted
/// cross-entropy (when `weights` are given): of every supervised frame of `set` under `ft`
/// ([`frame_validation`]), or of each window's last frame when `ft` is `None`.
fn classify(
    net: &EmbeddingNet<Cpu>,
    clf: &Classifier<Cpu>,
    set: &ExampleSet,
    batch: usize,
    ft: Option<&FrameTargets>,
    weights: Option<&[f32]>,
) -> (Vec<usize>, Vec<usize>, Vec<f32>, f64) {
    let device = Default::default();
    let (mut pred, mut labels, mut probs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut loss, mut wsum) = (0.0f64, 0.0f64);
    let idx: Vec<usize> = (0..set.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let (x, window_labels) = set.batch::<Cpu>(chunk, &device);
        let (emb, y) = match ft {
            None => (net.forward(x), window_labels),
            Some(ft) => {
                let rows = set.frame_targets(chunk, Some(ft));
                if rows.is_empty() {
                    continue;
                }
                let y = rows.iter().map(|&(_, l)| l).collect();
                (select_rows(net.forward_frames(x), &rows), y)
            }
        };
        let logits = clf.forward(emb);
        if let Some(w) = weights {
            let bw: f64 = y.iter().map(|&l| w[l] as f64).sum();
            let l = host(weighted_cross_entropy(logits.clone(), &y, w))[0] as f64;
            loss += l * bw;
            wsum += bw;
        }
        probs.extend(host(softmax(logits.clone(), 1)));
        let arg = logits.argmax(1).into_data().convert::<i64>();
        pred.extend(
            arg.to_vec::<i64>()
                .expect("int tensor data")
                .iter()
                .map(|&v| v as usize),
        );
        labels.extend(y);
    }
    (
        pred,
        labels,
        probs,
        if wsum > 0.0 { loss / wsum } else { 0.0 },
    )
}

/// Mean average precision over the classes other than `background` that have at least one
/// positive: for class `c`, the rows sorted by `scores[row * n + c]` (descending), the mean
/// of the precision at each row labelled `c`. Ties are broken by row order. 0 when no class
/// has a positive.
pub fn mean_average_precision(
    labels: &[usize],
    scores: &[f32],
    n: usize,
    background: usize,
) -> f64 {
    let mut aps = Vec::new();
    for c in (0..n).filter(|&c| c != background) {
        let positives = labels.iter().filter(|&&l| l == c).count();
        if positives == 0 {
            continue;
        }
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.sort_by(|&a, &b| scores[b * n + c].total_cmp(&scores[a * n + c]));
        let (mut hits, mut sum) = (0usize, 0.0f64);
        for (rank, &row) in order.iter().enumerate() {
            if labels[row] == c {
                hits += 1;
                sum += hits as f64 / (rank + 1) as f64;
            }
        }
        aps.push(sum / positives as f64);
    }
    if aps.is_empty() {
        0.0
    } else {
        aps.iter().sum::<f64>() / aps.len() as f64
    }
}

/// Per-class scores of embeddings under a centroid loss: minus the distance to the class's
/// nearest centroid (`-inf` for a class without clusters), `rows × classes`.
fn centroid_scores(loss: &CentroidLoss, emb: &[f32], n_classes: usize) -> Vec<f32> {
    let d = loss.dim();
    let (cents, owner) = (loss.centroids(), loss.cluster_class());
    let mut out = Vec::with_capacity(emb.len() / d.max(1) * n_classes);
    for e in emb.chunks_exact(d) {
        let mut best = vec![f32::NEG_INFINITY; n_classes];
        for (k, c) in cents.chunks_exact(d).enumerate() {
            let dist = crate::kmeans::squared_distance(e, c).sqrt() as f32;
            let s = &mut best[owner[k]];
            *s = s.max(-dist);
        }
        out.extend(best);
    }
    out
}

/// The class of the centroid nearest to an embedding.
fn nearest_class(loss: &CentroidLoss, emb: &[f32]) -> usize {
    let (j, _) = nearest_centroid(emb, loss.centroids(), loss.dim());
    loss.cluster_class()[j]
}

/// Folds the per-band normalisation `(x - mean) / std` into the first LSTM layer of an
/// exported network, so that it takes raw log-mel features: `W' = W / std` (per input
/// column), `b' = b - W (mean / std)`.
pub fn fold_normalization(net: &mut StreamingNet, mean: &[f32], std: &[f32]) {
    let l = &mut net.lstm[0];
    let d = l.input_size;
    for g in 0..4 * l.hidden_size {
        let row = &mut l.w[g * d..(g + 1) * d];
        let mut shift = 0.0f32;
        for k in 0..d {
            row[k] /= std[k];
            shift += row[k] * mean[k];
        }
        l.b[g] -= shift;
    }
}

/// A run's results.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// Every epoch, in order (including epochs before a resume).
    pub history: Vec<EpochRecord>,
    /// The trained embedding network (best epochs).
    pub net: EmbeddingNet<Cpu>,
    /// The trained classifier.
    pub classifier: Classifier<Cpu>,
    /// Class names.
    pub classes: Vec<String>,
    /// Validation metrics of the final models.
    pub val_metrics: WindowMetrics,
    /// Training examples per class.
    pub train_counts: Vec<usize>,
    /// Per-band normalisation (mean, std) used in training and folded into the export.
    pub normalization: (Vec<f32>, Vec<f32>),
    /// Whether the run stopped early because of `stop_after_epochs`.
    pub interrupted: bool,
}

/// Checkpoint state besides the burn records.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    stage: String,
    /// Epochs done in this stage.
    epoch: usize,
    history: Vec<EpochRecord>,
    best: Option<f64>,
    bad_epochs: usize,
    stopped: bool,
    centroids: Vec<f32>,
    cluster_class: Vec<usize>,
    rounds: u64,
    clusters: Vec<usize>,
}

type Rec = NamedMpkFileRecorder<FullPrecisionSettings>;

struct Checkpoints {
    dir: Option<PathBuf>,
}

impl Checkpoints {
    fn path(&self, name: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(name))
    }

    fn rec_err(path: &Path, e: impl std::fmt::Display) -> TrainError {
        TrainError::Io {
            path: path.to_path_buf(),
            problem: e.to_string(),
        }
    }

    fn save_module<M: Module<A>>(&self, name: &str, m: &M) -> Result<(), TrainError> {
        if let Some(p) = self.path(name) {
            m.clone()
                .save_file(p.clone(), &Rec::new())
                .map_err(|e| Self::rec_err(&p, e))?;
        }
        Ok(())
    }

    fn load_module<M: Module<A>>(&self, name: &str, m: M) -> Result<M, TrainError> {
        let p = self.path(name).expect("resume needs a folder");
        m.load_file(p.clone(), &Rec::new(), &Default::default())
            .map_err(|e| Self::rec_err(&p, e))
    }

    fn save_optim<M: AutodiffModule<A>, O: Optimizer<M, A>>(
        &self,
        name: &str,
        o: &O,
    ) -> Result<(), TrainError> {
        if let Some(p) = self.path(name) {
            Recorder::<A>::record(&Rec::new(), o.to_record(), p.clone())
                .map_err(|e| Self::rec_err(&p, e))?;
        }
        Ok(())
    }

    fn load_optim<M: AutodiffModule<A>, O: Optimizer<M, A>>(
        &self,
        name: &str,
        o: O,
    ) -> Result<O, TrainError> {
        let p = self.path(name).expect("resume needs a folder");
        let r = Recorder::<A>::load(&Rec::new(), p.clone(), &Default::default())
            .map_err(|e| Self::rec_err(&p, e))?;
        Ok(o.load_record(r))
    }

    fn save_state(&self, s: &State) -> Result<(), TrainError> {
        if let Some(p) = self.path("state.json") {
            let tmp = p.with_extension("json.tmp");
            fs::write(&tmp, serde_json::to_vec(s).expect("state serialises"))
                .map_err(io_err(&tmp))?;
            fs::rename(&tmp, &p).map_err(io_err(&p))?;
        }
        Ok(())
    }

    fn load_state(&self) -> Result<State, TrainError> {
        let p = self.path("state.json").expect("resume needs a folder");
        let bytes = fs::read(&p).map_err(io_err(&p))?;
        serde_json::from_slice(&bytes).map_err(|e| Self::rec_err(&p, e))
    }
}

/// The embedding network's configuration.
pub fn net_config(cfg: &TrainConfig) -> EmbeddingNetConfig {
    let m = &cfg.model;
    let cnn = (m.kind == ModelKind::Cnn).then(|| {
        CausalCnnConfig::new(cfg.frontend.n_mels)
            .with_channels(m.cnn.channels)
            .with_kernel(m.cnn.kernel)
            .with_dilations(m.cnn.dilations.clone())
    });
    EmbeddingNetConfig::new()
        .with_n_mels(cfg.frontend.n_mels)
        .with_hidden(m.hidden)
        .with_layers(m.layers)
        .with_embedding(m.embedding)
        .with_forget_bias(m.forget_bias)
        .with_cnn(cnn)
}

/// The classifier's configuration.
fn classifier_config(cfg: &TrainConfig, n_classes: usize) -> ClassifierConfig {
    ClassifierConfig::new(n_classes).with_embedding(cfg.model.embedding)
}

/// Seeds burn's generator on the training device.
fn seed_burn(seed: u64) {
    <A as Backend>::seed(&Default::default(), seed);
}

/// Forces every lazily initialised parameter of a module.
struct ForceInit;

impl<B: Backend> burn::module::ModuleVisitor<B> for ForceInit {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<B, D>>) {
        let _ = param.val();
    }
}

/// Held while burn's global generator is seeded and drawn from.
static SEEDED_INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Initialises a module from burn's generator seeded with `seed`, deterministically even when
/// several trainings run in parallel threads: burn's generator is global and its parameters
/// are initialised lazily (at first use), so the seeding, the initialisation and the drawing
/// of every parameter happen together under one process-wide lock.
pub fn init_seeded<M: Module<A>>(seed: u64, init: impl FnOnce() -> M) -> M {
    let _guard = SEEDED_INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    seed_burn(seed);
    let m = init();
    m.visit(&mut ForceInit);
    m
}

/// The embedding network of a finished training run (`checkpoint/best_net` of `run_dir`), for
/// transfer learning (`imbalance.init_from`); its sizes must be those of `cfg`.
pub fn load_pretrained_net(
    run_dir: &Path,
    cfg: &TrainConfig,
) -> Result<EmbeddingNet<A>, TrainError> {
    let cfg_path = run_dir.join("config.toml");
    let text = fs::read_to_string(&cfg_path).map_err(|e| TrainError::Io {
        path: cfg_path.clone(),
        problem: format!("imbalance.init_from: not a training output folder ({e})"),
    })?;
    let theirs = TrainConfig::from_toml(&text)?;
    let (a, b) = (&theirs.model, &cfg.model);
    if a.kind != b.kind
        || a.hidden != b.hidden
        || a.layers != b.layers
        || a.embedding != b.embedding
        || theirs.frontend.n_mels != cfg.frontend.n_mels
    {
        return Err(TrainError::Config(format!(
            "imbalance.init_from {}: the pretrained network has kind {:?}, hidden {}, layers {}, embedding {} \
             and {} mel bands; this configuration has kind {:?}, hidden {}, layers {}, embedding {} and {} mel bands",
            run_dir.display(),
            a.kind,
            a.hidden,
            a.layers,
            a.embedding,
            theirs.frontend.n_mels,
            b.kind,
            b.hidden,
            b.layers,
            b.embedding,
            cfg.frontend.n_mels
        )));
    }
    let ck = Checkpoints {
        dir: Some(run_dir.join("checkpoint")),
    };
    let net = init_seeded(cfg.seed, || net_config(cfg).init(&Default::default()));
    ck.load_module("best_net", net)
}

/// The epoch's shuffled order (derived from seed, stage and epoch only).
fn epoch_order(n: usize, seed: u64, stage: &str, epoch: usize) -> Vec<usize> {
    let mut rng = Rng::new(
        seed ^ crate::data::fnv1a(stage.as_bytes()) ^ (epoch as u64).wrapping_mul(0x9E37_79B9),
    );
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    order
}

fn is_better(metric: StopMetric, value: f64, best: Option<f64>, min_delta: f64) -> bool {
    match best {
        None => true,
        Some(b) => match metric {
            StopMetric::BalancedAccuracy | StopMetric::MeanAp => value > b + min_delta,
            StopMetric::Loss => value < b - min_delta,
        },
    }
}

/// How a classifier stage trains.
#[derive(Debug, Clone, Copy)]
struct ClassifierStage {
    epochs: usize,
    /// Learning rate of the embedding network relative to the classifier's.
    net_lr_scale: f64,
    /// Keep the embedding network fixed.
    freeze: bool,
    /// Weight the cross-entropy inversely to class frequency.
    weighted: bool,
    /// Focal loss (alpha, gamma) instead of the cross-entropy.
    focal: Option<(f32, f32)>,
}

struct Ctx<'a> {
    cfg: &'a TrainConfig,
    base_dir: PathBuf,
    data: &'a PreparedData,
    ck: Checkpoints,
    history: Vec<EpochRecord>,
    stop_after: Option<usize>,
    interrupted: bool,
    progress: &'a mut dyn FnMut(Progress),
    snapshots: crate::plots::Snapshots,
}

impl Ctx<'_> {
    fn adam(&self) -> AdamConfig {
        let c = AdamConfig::new();
        if self.cfg.grad_clip_norm > 0.0 {
            c.with_grad_clipping(Some(GradientClippingConfig::Norm(self.cfg.grad_clip_norm)))
        } else {
            c
        }
    }

    /// A fresh embedding network, or the pretrained one of `imbalance.init_from`.
    fn new_net(&self) -> Result<EmbeddingNet<A>, TrainError> {
        if let Some(p) = &self.cfg.imbalance.init_from {
            return load_pretrained_net(&self.base_dir.join(p), self.cfg);
        }
        Ok(init_seeded(self.cfg.seed, || {
            net_config(self.cfg).init(&Default::default())
        }))
    }

    fn new_classifier(&self) -> Classifier<A> {
        init_seeded(self.cfg.seed ^ 0xC1A5_5000, || {
            classifier_config(self.cfg, self.data.classes.len()).init(&Default::default())
        })
    }

    /// Whether the epoch budget of this run is spent.
    fn budget_spent(&mut self) -> bool {
        if let Some(n) = self.stop_after
            && self.history.len() >= n
        {
            self.interrupted = true;
            return true;
        }
        false
    }

    fn batches(&self, stage: &str, epoch: usize) -> Vec<Vec<usize>> {
        epoch_order(self.data.train.len(), self.cfg.seed, stage, epoch)
            .chunks(self.cfg.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// The training batch `b` of `epoch` in `stage`: its features (masked when
    /// `spec_augment` is set) and labels.
    fn train_batch(
        &self,
        idx: &[usize],
        stage: &str,
        epoch: usize,
        b: usize,
    ) -> (Tensor<A, 3>, Vec<usize>) {
        let train = &self.data.train;
        match &self.cfg.spec_augment {
            None => train.batch::<A>(idx, &Default::default()),
            Some(m) => {
                let seed = self.cfg.seed
                    ^ crate::data::fnv1a(stage.as_bytes())
                    ^ ((epoch as u64) << 32 | b as u64).wrapping_mul(0x2545_F491_4F6C_DD1D);
                train.batch_masked::<A>(idx, m, &mut Rng::new(seed), &Default::default())
            }
        }
    }

    /// The training forward pass: every frame's embedding `[batch, frames, dim]`, from the
    /// state `carry` left by the batch before when `carry_state` is set (then updated, without
    /// its gradient), from zeros otherwise.
    fn forward_train(
        &self,
        net: &EmbeddingNet<A>,
        x: Tensor<A, 3>,
        carry: &mut Option<LstmState<A>>,
    ) -> Tensor<A, 3> {
        if !self.cfg.carry_state {
            return net.forward_frames(x);
        }
        let batch = x.dims()[0];
        let state = carry.take().and_then(|s| {
            let n = s.hidden.dims()[1];
            (n >= batch).then(|| LstmState {
                hidden: s.hidden.narrow(1, 0, batch),
                cell: s.cell.narrow(1, 0, batch),
            })
        });
        let (e, s) = net.forward_with_state(x, state);
        *carry = Some(LstmState {
            hidden: s.hidden.detach(),
            cell: s.cell.detach(),
        });
        e
    }

    fn centroid_loss(&self) -> CentroidLoss {
        let c = &self.cfg.centroid;
        CentroidLossConfig::new()
            .with_margin(c.margin)
            .with_push_weight(c.push_weight)
            .with_momentum(c.momentum)
            .with_kmeans_iters(c.kmeans_iters)
            .with_recluster_every(c.recluster_every)
            .with_seed(self.cfg.seed)
            .init(self.data.classes.len(), self.cfg.model.embedding)
    }

    /// Validation of the embedding stage: nearest-centroid predictions and the centroid loss.
    fn validate_embedding(
        &self,
        net: &EmbeddingNet<Cpu>,
        loss: &CentroidLoss,
    ) -> Result<(f64, WindowMetrics, f64), TrainError> {
        let val = &self.data.val;
        let d = loss.dim();
        let (emb, val_labels) = match frame_validation(self.cfg, val) {
            Some(ft) => embed_frames(net, val, self.cfg.batch_size, ft),
            None => (embed_all(net, val, self.cfg.batch_size), val.labels.clone()),
        };
        let pred: Vec<usize> = emb
            .chunks_exact(d)
            .map(|e| nearest_class(loss, e))
            .collect();
        // The loss over the examples whose class has clusters.
        let keep: Vec<usize> = (0..val_labels.len())
            .filter(|&i| !loss.clusters_of(val_labels[i]).is_empty())
            .collect();
        let mut vloss = 0.0;
        if !keep.is_empty() {
            let e: Vec<f32> = keep
                .iter()
                .flat_map(|&i| emb[i * d..(i + 1) * d].iter().copied())
                .collect();
            let labels: Vec<usize> = keep.iter().map(|&i| val_labels[i]).collect();
            let ids = loss.assign(&e, &labels)?;
            let t = Tensor::<Cpu, 2>::from_data(
                TensorData::new(e, [keep.len(), d]),
                &Default::default(),
            );
            vloss = host(loss.forward(t, &labels, &ids)?)[0] as f64;
        }
        let n = val.classes.len();
        let ap = mean_average_precision(
            &val_labels,
            &centroid_scores(loss, &emb, n),
            n,
            val.background_label(),
        );
        Ok((vloss, window_metrics(&val_labels, &pred, &val.classes), ap))
    }

    fn record_epoch(
        &mut self,
        stage: &str,
        epoch: usize,
        train_loss: f64,
        (val_loss, m, mean_ap): (f64, &WindowMetrics, f64),
        start: Instant,
    ) -> EpochRecord {
        let r = EpochRecord {
            stage: stage.into(),
            epoch,
            train_loss,
            val_loss,
            val_balanced_accuracy: m.balanced_accuracy,
            val_accuracy: m.accuracy,
            val_macro_f1: m.macro_f1,
            val_mean_ap: mean_ap,
            seconds: start.elapsed().as_secs_f64(),
        };
        self.history.push(r.clone());
        (self.progress)(Progress::Epoch(&r));
        r
    }

    /// Reports a finished batch (`b` from 0) of `epoch` (from 0).
    fn batch_done(&mut self, stage: &str, epoch: usize, b: usize, batches: usize, loss: f64) {
        (self.progress)(Progress::Batch {
            stage,
            epoch: epoch + 1,
            batch: b + 1,
            batches,
            loss,
        });
    }

    /// The plots' hook after an epoch (from 1): an embedding snapshot when one is due.
    fn snapshot(
        &mut self,
        stage: &str,
        epoch: usize,
        stopped: bool,
        net: &EmbeddingNet<A>,
    ) -> Result<(), TrainError> {
        self.snapshots
            .after_epoch(self.cfg, stage, epoch, stopped, net, &self.data.val)
            .map_err(plot_error)
    }

    fn stop_value(&self, r: &EpochRecord) -> f64 {
        match self.cfg.early_stopping.metric {
            StopMetric::BalancedAccuracy => r.val_balanced_accuracy,
            StopMetric::Loss => r.val_loss,
            StopMetric::MeanAp => r.val_mean_ap,
        }
    }

    fn write_metrics(&self) -> Result<(), TrainError> {
        let Some(dir) = &self.ck.dir else {
            return Ok(());
        };
        let dir = dir.parent().unwrap_or(dir);
        let mut csv = String::from(
            "stage,epoch,train_loss,val_loss,val_balanced_accuracy,val_accuracy,val_macro_f1,val_mean_ap,seconds\n",
        );
        for r in &self.history {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{:.3}\n",
                r.stage,
                r.epoch,
                r.train_loss,
                r.val_loss,
                r.val_balanced_accuracy,
                r.val_accuracy,
                r.val_macro_f1,
                r.val_mean_ap,
                r.seconds
            ));
        }
        let p = dir.join("metrics.csv");
        fs::write(&p, csv).map_err(io_err(&p))?;
        let p = dir.join("metrics.json");
        fs::write(
            &p,
            serde_json::to_vec_pretty(&self.history).expect("serialisable"),
        )
        .map_err(io_err(&p))
    }

    /// Stage 1 of `centroid`. Returns the best embedding network.
    fn embedding_stage(&mut self, resume: Option<State>) -> Result<EmbeddingNet<A>, TrainError> {
        const STAGE: &str = "embedding";
        let train = &self.data.train;
        let d = self.cfg.model.embedding;
        let mut loss = self.centroid_loss();
        let mut net = self.new_net()?;
        let mut optim = self.adam().init::<A, EmbeddingNet<A>>();
        let mut best_net = net.clone();
        let (mut start_epoch, mut best, mut bad, mut clusters) = (0, None, 0, Vec::new());
        if let Some(s) = resume {
            net = self.ck.load_module("net", net)?;
            best_net = self.ck.load_module("best_net", best_net)?;
            optim = self.ck.load_optim("optim_net", optim)?;
            if !s.cluster_class.is_empty() {
                loss.set_centroids(s.centroids, s.cluster_class)?;
            }
            loss.set_rounds(s.rounds);
            (start_epoch, best, bad, clusters) = (s.epoch, s.best, s.bad_epochs, s.clusters);
            if s.stopped {
                return Ok(best_net);
            }
        }
        let lr = self.cfg.learning_rate;
        for epoch in start_epoch..self.cfg.epochs {
            if self.budget_spent() {
                return Ok(best_net);
            }
            let t0 = Instant::now();
            if epoch % self.cfg.centroid.recluster_every == 0 || clusters.is_empty() {
                let emb = match frame_validation(self.cfg, train) {
                    Some(ft) => embed_spans(&net.valid(), train, self.cfg.batch_size, ft),
                    None => embed_all(&net.valid(), train, self.cfg.batch_size),
                };
                clusters = loss.recluster(&emb, &train.labels)?;
            }
            let (mut sum, mut count) = (0.0f64, 0usize);
            let batches = self.batches(STAGE, epoch);
            let n_batches = batches.len();
            let mut carry = None;
            for (b, idx) in batches.into_iter().enumerate() {
                let (x, y) = self.train_batch(&idx, STAGE, epoch, b);
                // The supervised frames labelled with their window's class (the last frame
                // without frame targets), each in its window's cluster.
                let rows: Vec<(usize, usize)> = train
                    .frame_targets(&idx, self.cfg.examples.frame_targets.as_ref())
                    .into_iter()
                    .filter(|&(r, l)| l == y[r / train.frames])
                    .collect();
                let ids: Vec<usize> = rows
                    .iter()
                    .map(|&(r, _)| clusters[idx[r / train.frames]])
                    .collect();
                let y: Vec<usize> = rows.iter().map(|&(_, l)| l).collect();
                let e = select_rows(self.forward_train(&net, x, &mut carry), &rows);
                let l = loss.forward(e.clone(), &y, &ids)?;
                sum += host(l.clone().inner())[0] as f64 * idx.len() as f64;
                count += idx.len();
                let grads = GradientsParams::from_grads(l.backward(), &net);
                net = optim.step(lr, net, grads);
                loss.update_centroids(&e.inner(), &ids)?;
                self.batch_done(STAGE, epoch, b, n_batches, sum / count as f64);
            }
            let (vloss, m, ap) = self.validate_embedding(&net.valid(), &loss)?;
            let r = self.record_epoch(
                STAGE,
                epoch + 1,
                sum / count.max(1) as f64,
                (vloss, &m, ap),
                t0,
            );
            let v = self.stop_value(&r);
            let es = &self.cfg.early_stopping;
            if is_better(es.metric, v, best, es.min_delta) {
                best = Some(v);
                bad = 0;
                best_net = net.clone();
            } else {
                bad += 1;
            }
            let stopped = es.patience > 0 && bad >= es.patience;
            self.snapshot(STAGE, epoch + 1, stopped, &net)?;
            debug_assert_eq!(loss.n_clusters() * d, loss.centroids().len());
            self.ck.save_module("net", &net)?;
            self.ck.save_module("best_net", &best_net)?;
            self.ck
                .save_optim::<EmbeddingNet<A>, _>("optim_net", &optim)?;
            self.ck.save_state(&State {
                stage: STAGE.into(),
                epoch: epoch + 1,
                history: self.history.clone(),
                best,
                bad_epochs: bad,
                stopped,
                centroids: loss.centroids().to_vec(),
                cluster_class: loss.cluster_class().to_vec(),
                rounds: loss.rounds(),
                clusters: clusters.clone(),
            })?;
            self.write_metrics()?;
            if stopped {
                (self.progress)(Progress::Info(format!(
                    "{STAGE}: no improvement for {bad} epochs, stopping"
                )));
                break;
            }
        }
        Ok(best_net)
    }

    /// Stage 2 of `centroid` (`stage = "classifier"`) or the whole of `weighted_ce`: the
    /// classifier (and the network, unless frozen) with the weighted cross-entropy.
    fn classifier_stage(
        &mut self,
        stage: &str,
        net: EmbeddingNet<A>,
        how: ClassifierStage,
        resume: Option<State>,
    ) -> Result<(EmbeddingNet<A>, Classifier<A>), TrainError> {
        let ClassifierStage {
            epochs,
            net_lr_scale,
            freeze,
            weighted,
            focal,
        } = how;
        let train = &self.data.train;
        let counts = train.target_counts(self.cfg.examples.frame_targets.as_ref());
        let weights = crate::imbalance::loss_weights(
            &counts,
            &self.data.classes,
            weighted,
            focal.map(|(alpha, _)| alpha),
        );
        let gamma = focal.map_or(0.0, |(_, g)| g);
        let sigma = self.cfg.imbalance.smear_sigma_frames;
        let mut net = net;
        let mut clf = self.new_classifier();
        let mut optim_net = self.adam().init::<A, EmbeddingNet<A>>();
        let mut optim_clf = self.adam().init::<A, Classifier<A>>();
        let (mut best_net, mut best_clf) = (net.clone(), clf.clone());
        let (mut start_epoch, mut best, mut bad) = (0, None, 0);
        if let Some(s) = resume {
            net = self.ck.load_module("net", net)?;
            clf = self.ck.load_module("clf", clf)?;
            best_net = self.ck.load_module("best_net", best_net)?;
            best_clf = self.ck.load_module("best_clf", best_clf)?;
            optim_net = self.ck.load_optim("optim_net", optim_net)?;
            optim_clf = self.ck.load_optim("optim_clf", optim_clf)?;
            (start_epoch, best, bad) = (s.epoch, s.best, s.bad_epochs);
            if s.stopped {
                return Ok((best_net, best_clf));
            }
        }
        let lr = self.cfg.learning_rate;
        for epoch in start_epoch..epochs {
            if self.budget_spent() {
                return Ok((best_net, best_clf));
            }
            let t0 = Instant::now();
            let (mut sum, mut count) = (0.0f64, 0usize);
            let batches = self.batches(stage, epoch);
            let n_batches = batches.len();
            let mut carry = None;
            for (b, idx) in batches.into_iter().enumerate() {
                let (x, _) = self.train_batch(&idx, stage, epoch, b);
                let (rows, q) = crate::imbalance::frame_soft_targets(
                    train,
                    &idx,
                    self.cfg.examples.frame_targets.as_ref(),
                    sigma,
                );
                let mut e = select_rows(self.forward_train(&net, x, &mut carry), &rows);
                if freeze {
                    e = e.detach();
                }
                let l = crate::imbalance::soft_loss(clf.forward(e), &q, &weights, gamma);
                sum += host(l.clone().inner())[0] as f64 * idx.len() as f64;
                count += idx.len();
                let mut grads = l.backward();
                let g_clf = GradientsParams::from_module(&mut grads, &clf);
                clf = optim_clf.step(lr, clf, g_clf);
                if !freeze {
                    let g_net = GradientsParams::from_module(&mut grads, &net);
                    net = optim_net.step(lr * net_lr_scale, net, g_net);
                }
                self.batch_done(stage, epoch, b, n_batches, sum / count as f64);
            }
            let (pred, reference, probs, vloss) = classify(
                &net.valid(),
                &clf.valid(),
                &self.data.val,
                self.cfg.batch_size,
                frame_validation(self.cfg, &self.data.val),
                Some(&weights),
            );
            let m = window_metrics(&reference, &pred, &self.data.classes);
            let n = self.data.classes.len();
            let ap =
                mean_average_precision(&reference, &probs, n, self.data.val.background_label());
            let r = self.record_epoch(
                stage,
                epoch + 1,
                sum / count.max(1) as f64,
                (vloss, &m, ap),
                t0,
            );
            let v = self.stop_value(&r);
            let es = &self.cfg.early_stopping;
            if is_better(es.metric, v, best, es.min_delta) {
                best = Some(v);
                bad = 0;
                best_net = net.clone();
                best_clf = clf.clone();
            } else {
                bad += 1;
            }
            let stopped = es.patience > 0 && bad >= es.patience;
            self.snapshot(stage, epoch + 1, stopped, &net)?;
            self.ck.save_module("net", &net)?;
            self.ck.save_module("clf", &clf)?;
            self.ck.save_module("best_net", &best_net)?;
            self.ck.save_module("best_clf", &best_clf)?;
            self.ck
                .save_optim::<EmbeddingNet<A>, _>("optim_net", &optim_net)?;
            self.ck
                .save_optim::<Classifier<A>, _>("optim_clf", &optim_clf)?;
            self.ck.save_state(&State {
                stage: stage.into(),
                epoch: epoch + 1,
                history: self.history.clone(),
                best,
                bad_epochs: bad,
                stopped,
                centroids: Vec::new(),
                cluster_class: Vec::new(),
                rounds: 0,
                clusters: Vec::new(),
            })?;
            self.write_metrics()?;
            if stopped {
                (self.progress)(Progress::Info(format!(
                    "{stage}: no improvement for {bad} epochs, stopping"
                )));
                break;
            }
        }
        Ok((best_net, best_clf))
    }
}

/// Trains on prepared data (see the [module documentation](self)); writes checkpoints and
/// metrics when `opts.out_dir` is set. Does not export.
pub fn train_prepared(
    cfg: &TrainConfig,
    data: &PreparedData,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainOutcome, TrainError> {
    cfg.validate()?;
    let ck_dir = opts.out_dir.as_ref().map(|d| d.join("checkpoint"));
    if let Some(d) = &ck_dir {
        fs::create_dir_all(d).map_err(io_err(d))?;
    }
    let snapshots = crate::plots::Snapshots::new(cfg.plots, ck_dir.as_deref(), opts.resume)
        .map_err(plot_error)?;
    let mut ctx = Ctx {
        cfg,
        base_dir: opts.base_dir.clone(),
        data,
        ck: Checkpoints { dir: ck_dir },
        history: Vec::new(),
        stop_after: opts.stop_after_epochs,
        interrupted: false,
        progress,
        snapshots,
    };
    let resume = if opts.resume {
        if ctx.ck.dir.is_none() {
            return Err(TrainError::Config("--resume needs an output folder".into()));
        }
        let s = ctx.ck.load_state()?;
        ctx.history = s.history.clone();
        (ctx.progress)(Progress::Info(format!(
            "resuming after epoch {} of stage {}",
            s.epoch, s.stage
        )));
        Some(s)
    } else {
        None
    };
    let (net, clf) = match cfg.method {
        Method::WeightedCe | Method::Ce | Method::Focal => {
            let net = ctx.new_net()?;
            let how = ClassifierStage {
                epochs: cfg.epochs,
                net_lr_scale: 1.0,
                freeze: false,
                weighted: cfg.method == Method::WeightedCe,
                focal: (cfg.method == Method::Focal)
                    .then_some((cfg.imbalance.focal.alpha, cfg.imbalance.focal.gamma)),
            };
            let stage = cfg.method.end_to_end_stage().expect("end to end");
            ctx.classifier_stage(stage, net, how, resume)?
        }
        Method::Centroid => {
            let (emb_resume, clf_resume) = match resume {
                Some(s) if s.stage == "embedding" => (Some(s), None),
                Some(s) => (None, Some(s)),
                None => (None, None),
            };
            let net = if clf_resume.is_some() {
                ctx.new_net()? // replaced by the checkpoint's
            } else {
                ctx.embedding_stage(emb_resume)?
            };
            if ctx.interrupted {
                (net, ctx.new_classifier())
            } else {
                ctx.classifier_stage(
                    "classifier",
                    net,
                    ClassifierStage {
                        epochs: cfg.classifier_epochs,
                        net_lr_scale: cfg.finetune_lr_scale,
                        freeze: cfg.freeze_embedding,
                        weighted: cfg.classifier_weighted,
                        focal: None,
                    },
                    clf_resume,
                )?
            }
        }
    };
    let (net, classifier) = (net.valid(), clf.valid());
    let (pred, reference, _, _) = classify(
        &net,
        &classifier,
        &data.val,
        cfg.batch_size,
        frame_validation(cfg, &data.val),
        None,
    );
    let val_metrics = window_metrics(&reference, &pred, &data.classes);
    if let Some(d) = &opts.out_dir
        && cfg.plots
        && !ctx.interrupted
    {
        // A plot that fails is reported, never the end of a trained run.
        let s = &ctx.snapshots.taken;
        match crate::plots::write_run_plots(d, &ctx.history, &val_metrics, &data.classes, s) {
            Ok(files) => {
                let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
                (ctx.progress)(Progress::Info(format!("plots: {}", names.join(", "))))
            }
            Err(e) => (ctx.progress)(Progress::Info(format!("warning: plots not written: {e}"))),
        }
    }
    Ok(TrainOutcome {
        history: ctx.history,
        net,
        classifier,
        classes: data.classes.clone(),
        val_metrics,
        train_counts: data.train.class_counts(),
        normalization: (data.mean.clone(), data.std.clone()),
        interrupted: ctx.interrupted,
    })
}

/// The model metadata of a trained outcome.
pub fn metadata(cfg: &TrainConfig, out: &TrainOutcome) -> ModelMetadata {
    let thresholds: BTreeMap<String, f32> = out
        .classes
        .iter()
        .filter(|c| *c != BACKGROUND)
        .map(|c| (c.clone(), cfg.threshold))
        .collect();
    let counts: BTreeMap<&str, usize> = out
        .classes
        .iter()
        .map(String::as_str)
        .zip(out.train_counts.iter().copied())
        .collect();
    ModelMetadata {
        format_version: FORMAT_VERSION,
        classes: out.classes.clone(),
        background: Some(BACKGROUND.into()),
        thresholds,
        frontend: cfg.frontend.clone(),
        training: serde_json::json!({
            "trainer": concat!("hark-trainer ", env!("CARGO_PKG_VERSION")),
            "method": cfg.method,
            "seed": cfg.seed,
            "epochs_run": out.history.len(),
            "train_examples_per_class": counts,
            "window_frames": cfg.examples.window_frames,
            "model": cfg.model,
            "val_balanced_accuracy": out.val_metrics.balanced_accuracy,
            "val_macro_f1": out.val_metrics.macro_f1,
            "normalization": "per-band mean/std of the training set, folded into the first LSTM layer",
        }),
    }
}

/// The streaming network of a trained outcome, normalisation folded in.
pub fn streaming_net(out: &TrainOutcome) -> StreamingNet {
    let mut sn = StreamingNet::from_models(&out.net, &out.classifier);
    fold_normalization(&mut sn, &out.normalization.0, &out.normalization.1);
    sn
}

/// The step graph of a trained model: an LSTM's or a causal CNN's.
#[derive(Debug, Clone)]
pub enum StepNet {
    /// An LSTM network, normalisation folded in ([`streaming_net`]).
    Lstm(StreamingNet),
    /// A causal CNN, normalisation explicit at its input.
    Cnn(CnnStepNet),
}

impl StepNet {
    /// The ONNX model of the graph with `meta`.
    pub fn to_onnx(&self, meta: &ModelMetadata) -> Result<Vec<u8>, ExportError> {
        match self {
            StepNet::Lstm(n) => n.to_onnx(meta),
            StepNet::Cnn(n) => n.to_onnx(meta),
        }
    }
}

/// The step graph of a trained outcome.
pub fn step_net(out: &TrainOutcome) -> StepNet {
    let (mean, std) = &out.normalization;
    match CnnStepNet::from_models(&out.net, &out.classifier, mean, std) {
        Some(cnn) => StepNet::Cnn(cnn),
        None => StepNet::Lstm(streaming_net(out)),
    }
}

/// The ONNX model of a trained outcome (normalisation folded in for the LSTM, explicit for a
/// CNN, whose step graph is a [`CnnStepNet`]).
pub fn export_onnx(cfg: &TrainConfig, out: &TrainOutcome) -> Result<Vec<u8>, TrainError> {
    Ok(step_net(out).to_onnx(&metadata(cfg, out))?)
}

/// Why an ensemble of CNN members is not exported.
pub const CNN_NOT_EXPORTABLE: &str = "an ensemble of CNN members (model.kind = \"cnn\") has no merged ONNX export; single CNN models and LSTM ensembles export";

/// Clips of one class (or role) in the training and validation splits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClipCounts {
    /// Training clips.
    pub train: usize,
    /// Validation clips.
    pub val: usize,
    /// Clips held out for testing (never trained or validated on).
    #[serde(default)]
    pub test: usize,
}

/// What a run records about its data in `checkpoint/data.json`: enough, with the checkpoint,
/// to rebuild the trained models and export them without the data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunData {
    /// Class names, output order.
    pub classes: Vec<String>,
    /// Training examples (windows) per class.
    pub train_examples: Vec<usize>,
    /// Validation examples (windows) per class.
    pub val_examples: Vec<usize>,
    /// Clips per event class, `"background"` (ambient clips) and `"hard negatives"`.
    pub clips: BTreeMap<String, ClipCounts>,
    /// Per-band feature mean of the training set.
    pub mean: Vec<f32>,
    /// Per-band feature standard deviation of the training set.
    pub std: Vec<f32>,
    /// Folder relative paths of the configuration were resolved against.
    pub base_dir: PathBuf,
    /// The configuration file the run was started from, when known.
    pub config_path: Option<PathBuf>,
}

impl RunData {
    fn new(cfg: &TrainConfig, clips: &[Clip], data: &PreparedData, opts: &RunOptions) -> Self {
        let mut counts: BTreeMap<String, ClipCounts> = BTreeMap::new();
        for c in clips {
            let key = match c.role {
                crate::data::Role::Negative => "hard negatives".to_string(),
                _ => c.class.clone(),
            };
            let e = counts.entry(key).or_default();
            if cfg.data.split.is_test(&c.name, &c.group, c.role) {
                e.test += 1;
            } else if cfg.data.split.is_val_clip(&c.name, &c.group, c.role) {
                e.val += 1;
            } else {
                e.train += 1;
            }
        }
        Self {
            classes: data.classes.clone(),
            train_examples: data.train.class_counts(),
            val_examples: data.val.class_counts(),
            clips: counts,
            mean: data.mean.clone(),
            std: data.std.clone(),
            base_dir: opts.base_dir.clone(),
            config_path: opts.config_path.clone(),
        }
    }
}

/// A finished run read back from its output folder.
#[derive(Debug, Clone)]
pub struct TrainedRun {
    /// The run's folder.
    pub dir: PathBuf,
    /// `config.toml` as written by the run (text).
    pub config_toml: String,
    /// The configuration.
    pub config: TrainConfig,
    /// `checkpoint/data.json`.
    pub data: RunData,
    /// The best models of the checkpoint, the history of `metrics.json` and the validation
    /// metrics of `summary.json`.
    pub outcome: TrainOutcome,
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, TrainError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    serde_json::from_slice(&bytes).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })
}

/// Reads a finished training run from its output folder: `config.toml`, the best models of
/// `checkpoint/` (`best_net`, `best_clf`), `checkpoint/data.json` (classes, normalisation),
/// `metrics.json` and `summary.json`. A folder without a checkpoint, or whose training has not
/// finished, is an error saying so.
pub fn load_trained(run_dir: &Path) -> Result<TrainedRun, TrainError> {
    let missing = |what: String| TrainError::Io {
        path: run_dir.to_path_buf(),
        problem: what,
    };
    let ck = Checkpoints {
        dir: Some(run_dir.join("checkpoint")),
    };
    let state = ck.path("state.json").expect("a folder");
    if !state.is_file() {
        return Err(missing(
            "no checkpoint (checkpoint/state.json): not a training output folder".into(),
        ));
    }
    let cfg_path = run_dir.join("config.toml");
    let config_toml = fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
    let config = TrainConfig::from_toml(&config_toml).map_err(|e| match e {
        TrainError::Config(m) => TrainError::Config(format!("{}: {m}", cfg_path.display())),
        e => e,
    })?;
    let summary_path = run_dir.join("summary.json");
    if !summary_path.is_file() {
        return Err(missing(
            "training has not finished (no summary.json); continue it with `hark-train train --resume`"
                .into(),
        ));
    }
    let data_path = ck.path("data.json").expect("a folder");
    if !data_path.is_file() {
        return Err(missing(
            "no checkpoint/data.json (normalisation and classes): trained by an older hark-train; train it again".into(),
        ));
    }
    let data: RunData = read_json(&data_path)?;
    let summary: serde_json::Value = read_json(&summary_path)?;
    let val_metrics: WindowMetrics = serde_json::from_value(summary["val_metrics"].clone())
        .map_err(|e| TrainError::Io {
            path: summary_path.clone(),
            problem: format!("val_metrics: {e}"),
        })?;
    let history: Vec<EpochRecord> = read_json(&run_dir.join("metrics.json"))?;
    let device = Default::default();
    let net: EmbeddingNet<A> = ck.load_module("best_net", net_config(&config).init(&device))?;
    let clf: Classifier<A> = ck.load_module(
        "best_clf",
        classifier_config(&config, data.classes.len()).init(&device),
    )?;
    let outcome = TrainOutcome {
        history,
        net: net.valid(),
        classifier: clf.valid(),
        classes: data.classes.clone(),
        val_metrics,
        train_counts: data.train_examples.clone(),
        normalization: (data.mean.clone(), data.std.clone()),
        interrupted: false,
    };
    Ok(TrainedRun {
        dir: run_dir.to_path_buf(),
        config_toml,
        config,
        data,
        outcome,
    })
}

/// The whole run: loads the data, trains, and (with an output folder) writes `config.toml`,
/// metrics, checkpoints, `model.onnx` and `summary.json`.
pub fn run(
    cfg: &TrainConfig,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<TrainOutcome, TrainError> {
    cfg.validate()?;
    if cfg.ensemble.is_some() {
        return Err(TrainError::Config(
            "[ensemble]: an ensemble is trained by hark_trainer::ensemble::run".into(),
        ));
    }
    if let Some(d) = &opts.out_dir {
        fs::create_dir_all(d).map_err(io_err(d))?;
        let p = d.join("config.toml");
        fs::write(&p, cfg.to_toml()).map_err(io_err(&p))?;
    }
    let clips = load_data_clips(cfg, &opts.base_dir, progress)?;
    let data = prepare_data(cfg, &clips, &opts.base_dir)?;
    if let Some(d) = &opts.out_dir {
        let dir = d.join("checkpoint");
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let p = dir.join("data.json");
        let rd = RunData::new(cfg, &clips, &data, opts);
        fs::write(&p, serde_json::to_vec_pretty(&rd).expect("serialisable")).map_err(io_err(&p))?;
    }
    progress(Progress::Info(format!(
        "classes {:?}; training examples per class {:?}, validation {:?}",
        data.classes,
        data.train.class_counts(),
        data.val.class_counts()
    )));
    let out = train_prepared(cfg, &data, opts, progress)?;
    if let Some(d) = &opts.out_dir
        && !out.interrupted
    {
        let bytes = export_onnx(cfg, &out)?;
        let p = d.join("model.onnx");
        fs::write(&p, bytes).map_err(io_err(&p))?;
        let p = d.join("summary.json");
        let summary = serde_json::json!({
            "metadata": metadata(cfg, &out),
            "val_metrics": out.val_metrics,
        });
        fs::write(
            &p,
            serde_json::to_vec_pretty(&summary).expect("serialisable"),
        )
        .map_err(io_err(&p))?;
    }
    Ok(out)
}

/// A quick synthetic configuration (the one of `configs/tiny.toml`): small network, 0.25 s
/// windows, events 6 or 12 dB above the background; trains in a few seconds.
pub fn tiny_config(method: Method) -> TrainConfig {
    TrainConfig {
        method,
        seed: 1,
        epochs: 12,
        classifier_epochs: 6,
        batch_size: 16,
        learning_rate: 3e-3,
        finetune_lr_scale: 1.0,
        model: ModelSection {
            hidden: 32,
            layers: 1,
            embedding: 16,
            forget_bias: 1.0,
            ..Default::default()
        },
        centroid: CentroidSection {
            recluster_every: 3,
            ..Default::default()
        },
        early_stopping: EarlyStopping {
            patience: 0,
            ..Default::default()
        },
        data: DataSection {
            synthetic: Some(SyntheticConfig {
                unit: 8,
                backgrounds: 8,
                negatives: 4,
                background_seconds: 1.0,
                groups: 4,
            }),
            split: SplitConfig {
                val_groups: vec!["synth0".into()],
                ..Default::default()
            },
            ..Default::default()
        },
        examples: ExampleConfig {
            window_frames: 25,
            windows_per_event: 3,
            ebr_db: vec![6.0, 12.0],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Generates a fresh example set from synthetic clips of another seed, normalised like the
/// training data: held-out data for tests and reports.
pub fn synthetic_test_set(
    cfg: &TrainConfig,
    synth: &SyntheticConfig,
    seed: u64,
    data: &PreparedData,
) -> Result<ExampleSet, TrainError> {
    let clips = synthetic_clips(synth, seed);
    let mut ex = cfg.examples.clone();
    ex.augment = crate::examples::AugmentConfig::none();
    let mut set = generate(&clips, &data.classes, &ex, &cfg.frontend, seed)?;
    set.normalize(&data.mean, &data.std);
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::examples::RATE;
    use hark::frontend::Frontend;

    fn quiet() -> impl FnMut(Progress) {
        |_| {}
    }

    fn prepared(cfg: &TrainConfig) -> PreparedData {
        let clips = load_data_clips(cfg, Path::new("."), &mut quiet()).unwrap();
        prepare_data(cfg, &clips, Path::new(".")).unwrap()
    }

    fn losses(h: &[EpochRecord], stage: &str) -> Vec<f64> {
        h.iter()
            .filter(|r| r.stage == stage)
            .map(|r| r.train_loss)
            .collect()
    }

    /// Balanced accuracy on synthetic clips of another seed (never seen in training).
    fn held_out(cfg: &TrainConfig, data: &PreparedData, out: &TrainOutcome) -> WindowMetrics {
        let synth = cfg.data.synthetic.clone().unwrap();
        let set = synthetic_test_set(cfg, &synth, 999, data).unwrap();
        evaluate(&out.net, &out.classifier, &set, 64)
    }

    fn without_time(h: &[EpochRecord]) -> Vec<EpochRecord> {
        h.iter()
            .map(|r| EpochRecord {
                seconds: 0.0,
                ..r.clone()
            })
            .collect()
    }

    fn assert_learns(method: Method, stages: &[&str]) {
        assert_config_learns(&tiny_config(method), stages)
    }

    fn assert_config_learns(cfg: &TrainConfig, stages: &[&str]) {
        let (cfg, method) = (cfg.clone(), cfg.method);
        let data = prepared(&cfg);
        let out = train_prepared(&cfg, &data, &RunOptions::default(), &mut quiet()).unwrap();
        for stage in stages {
            let l = losses(&out.history, stage);
            assert!(l.len() >= 3, "{stage}: {l:?}");
            assert!(
                l[l.len() - 1] < 0.8 * l[0],
                "{method:?} {stage}: loss does not fall: {l:?}"
            );
        }
        let m = held_out(&cfg, &data, &out);
        // 4 classes: chance is 0.25.
        assert!(
            m.balanced_accuracy > 0.6,
            "{method:?}: held-out balanced accuracy {} ({:?})",
            m.balanced_accuracy,
            m.confusion
        );
        // Every class is recognised at least sometimes, the rare ones included.
        assert!(m.classes.iter().all(|c| c.recall > 0.0), "{:?}", m.classes);
    }

    #[test]
    fn centroid_method_learns_the_synthetic_classes() {
        assert_learns(Method::Centroid, &["embedding", "classifier"]);
    }

    #[test]
    fn weighted_ce_learns_the_synthetic_classes() {
        assert_learns(Method::WeightedCe, &["weighted_ce"]);
    }

    fn streaming(method: Method) -> TrainConfig {
        TrainConfig {
            carry_state: true,
            spec_augment: Some(SpecAugment {
                freq_width: 4,
                time_width: 4,
                ..Default::default()
            }),
            ..tiny_config(method)
        }
    }

    #[test]
    fn carried_state_and_masked_batches_still_learn() {
        assert_config_learns(&streaming(Method::WeightedCe), &["weighted_ce"]);
        assert_config_learns(&streaming(Method::Centroid), &["embedding", "classifier"]);
    }

    #[test]
    fn carried_state_changes_training_and_stays_deterministic() {
        let run = |cfg: &TrainConfig| {
            let data = prepared(cfg);
            let out = train_prepared(cfg, &data, &RunOptions::default(), &mut quiet()).unwrap();
            without_time(&out.history)
        };
        let plain = short(Method::WeightedCe);
        let carried = TrainConfig {
            carry_state: true,
            ..plain.clone()
        };
        let a = run(&carried);
        assert_eq!(a, run(&carried));
        // Same data, same order, same initial weights: only the carried state differs.
        assert_ne!(
            losses(&a, "weighted_ce"),
            losses(&run(&plain), "weighted_ce")
        );
    }

    fn short(method: Method) -> TrainConfig {
        TrainConfig {
            epochs: 4,
            classifier_epochs: 3,
            ..tiny_config(method)
        }
    }

    #[test]
    fn seeded_networks_do_not_depend_on_other_threads() {
        let cfg = tiny_config(Method::WeightedCe);
        // The projection is a burn `Linear`, whose parameters burn draws lazily.
        let weights = move |seed: u64, reseed: bool| {
            let net: EmbeddingNet<A> =
                init_seeded(seed, || net_config(&cfg).init(&Default::default()));
            if reseed {
                // Someone else seeds the generator and draws from it before the weights are
                // first used (the classifier's initialisation): they must not change.
                let _: Classifier<A> = init_seeded(seed + 1000, || {
                    classifier_config(&cfg, 3).init(&Default::default())
                });
            }
            net.projection_weights().weight
        };
        let alone = weights(3, false);
        assert_eq!(alone, weights(3, true));
        let other = weights(4, false);
        assert_ne!(alone, other, "the seed must matter");
        // Four threads creating networks from two seeds at once: each seed always gives the
        // same weights.
        let handles: Vec<_> = (0..4u64)
            .map(|i| {
                let weights = weights.clone();
                std::thread::spawn(move || {
                    (0..10)
                        .map(|_| weights(3 + i % 2, true))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            for w in h.join().unwrap() {
                assert!(w == if i % 2 == 0 { &alone } else { &other }[..]);
            }
        }
    }

    #[test]
    fn same_seed_same_loss_curve() {
        for method in [Method::Centroid, Method::WeightedCe] {
            let cfg = short(method);
            let data = prepared(&cfg);
            let run = |cfg: &TrainConfig| {
                train_prepared(cfg, &data, &RunOptions::default(), &mut quiet()).unwrap()
            };
            let a = run(&cfg);
            let b = run(&cfg);
            assert_eq!(without_time(&a.history), without_time(&b.history));
            assert_eq!(
                a.history.len(),
                cfg.epochs + if method == Method::Centroid { 3 } else { 0 }
            );
            let other = run(&TrainConfig {
                seed: 2,
                ..cfg.clone()
            });
            assert_ne!(
                losses(&a.history, &a.history[0].stage),
                losses(&other.history, &a.history[0].stage)
            );
        }
    }

    /// Interrupted after `stop` epochs and resumed, a run continues the curve of the run
    /// that was never interrupted, in either stage.
    #[test]
    fn resume_continues_the_same_curve() {
        let cfg = short(Method::Centroid);
        let data = prepared(&cfg);
        let dir = tempfile::tempdir().unwrap();
        let opts = |name: &str| RunOptions {
            out_dir: Some(dir.path().join(name)),
            ..Default::default()
        };
        let full = train_prepared(&cfg, &data, &opts("full"), &mut quiet()).unwrap();
        assert!(!full.interrupted);
        for stop in [2, 5] {
            let name = format!("stop{stop}");
            let part = train_prepared(
                &cfg,
                &data,
                &RunOptions {
                    stop_after_epochs: Some(stop),
                    ..opts(&name)
                },
                &mut quiet(),
            )
            .unwrap();
            assert!(part.interrupted);
            assert_eq!(part.history.len(), stop);
            let resumed = train_prepared(
                &cfg,
                &data,
                &RunOptions {
                    resume: true,
                    ..opts(&name)
                },
                &mut quiet(),
            )
            .unwrap();
            // The epochs before the interruption come back from `state.json` (JSON may
            // round the last bit of a float); the epochs after it are recomputed exactly.
            assert_eq!(resumed.history.len(), full.history.len());
            for (i, (a, b)) in resumed.history.iter().zip(&full.history).enumerate() {
                assert_eq!((&a.stage, a.epoch), (&b.stage, b.epoch));
                let (fa, fb) = (
                    [
                        a.train_loss,
                        a.val_loss,
                        a.val_balanced_accuracy,
                        a.val_macro_f1,
                    ],
                    [
                        b.train_loss,
                        b.val_loss,
                        b.val_balanced_accuracy,
                        b.val_macro_f1,
                    ],
                );
                for (x, y) in fa.iter().zip(fb) {
                    if i >= stop {
                        assert_eq!(*x, y, "epoch {i} after a stop at {stop}");
                    } else {
                        assert!((x - y).abs() < 1e-12, "epoch {i}: {x} vs {y}");
                    }
                }
            }
            assert_eq!(resumed.val_metrics, full.val_metrics);
        }
        // Resuming without a checkpoint is an error, not a panic.
        let err = train_prepared(
            &cfg,
            &data,
            &RunOptions {
                resume: true,
                ..opts("nothing")
            },
            &mut quiet(),
        );
        assert!(matches!(err, Err(TrainError::Io { .. })));
    }

    /// The exported network on raw features equals burn on normalised features.
    #[test]
    fn normalization_folds_into_the_export() {
        let cfg = short(Method::WeightedCe);
        let data = prepared(&cfg);
        let (net, clf) = {
            let _guard = SEEDED_INIT_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            seed_burn(5);
            let net = EmbeddingNetConfig::new()
                .with_hidden(8)
                .with_embedding(4)
                .init::<Cpu>(&Default::default());
            let clf = ClassifierConfig::new(4)
                .with_embedding(4)
                .init::<Cpu>(&Default::default());
            (net, clf)
        };
        let mut sn = StreamingNet::from_models(&net, &clf);
        fold_normalization(&mut sn, &data.mean, &data.std);
        // A raw example: de-normalise the first validation example.
        let norm = data.val.example(0).to_vec();
        let raw: Vec<f32> = norm
            .chunks_exact(64)
            .flat_map(|f| {
                f.iter()
                    .enumerate()
                    .map(|(k, &v)| v * data.std[k] + data.mean[k])
                    .collect::<Vec<_>>()
            })
            .collect();
        let (mut h, mut c) = (vec![0.0; 8], vec![0.0; 8]);
        let got = sn.forward_reference(&raw, &mut h, &mut c);
        let (x, _) = data.val.batch::<Cpu>(&[0], &Default::default());
        let expect = host(clf.probabilities(net.forward_frames(x)));
        assert_eq!(got.len(), expect.len());
        for (a, b) in got.iter().zip(&expect) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// `imbalance.init_from` starts from the given run's network (with 0 epochs the
    /// outcome is that network), and a network of other sizes is refused with a clear error.
    #[test]
    fn transfer_starts_from_the_pretrained_weights() {
        let mut cfg = short(Method::WeightedCe);
        cfg.epochs = 1;
        cfg.plots = false;
        let dir = tempfile::tempdir().unwrap();
        let pre = dir.path().join("pre");
        let opts = RunOptions {
            out_dir: Some(pre.clone()),
            ..Default::default()
        };
        let trained = run(&cfg, &opts, &mut quiet()).unwrap();
        let mut ft = cfg.clone();
        ft.epochs = 0;
        ft.seed = 99;
        ft.imbalance.init_from = Some(PathBuf::from("pre"));
        let data = prepared(&ft);
        let o = RunOptions {
            base_dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let out = train_prepared(&ft, &data, &o, &mut quiet()).unwrap();
        assert_eq!(out.net.lstm_weights(), trained.net.lstm_weights());
        assert_eq!(
            out.net.projection_weights(),
            trained.net.projection_weights()
        );
        // Without init_from, seed 99 starts elsewhere.
        ft.imbalance.init_from = None;
        let fresh = train_prepared(&ft, &data, &o, &mut quiet()).unwrap();
        assert_ne!(fresh.net.lstm_weights(), trained.net.lstm_weights());
        // Other sizes: a configuration error naming them.
        ft.imbalance.init_from = Some(PathBuf::from("pre"));
        ft.model.hidden += 4;
        let err = train_prepared(&ft, &data, &o, &mut quiet()).unwrap_err();
        assert!(
            err.to_string()
                .contains("pretrained network has kind Lstm, hidden 32")
                && err
                    .to_string()
                    .contains("configuration has kind Lstm, hidden 36"),
            "{err}"
        );
    }

    /// Every remedy trains to something that still recognises the synthetic classes.
    #[test]
    fn imbalance_remedies_train() {
        use crate::imbalance::Resample;
        let base = short(Method::Ce);
        let mut smote = base.clone();
        smote.imbalance.resample = Resample::Smote;
        let data = prepared(&smote);
        let c = data.train.class_counts();
        assert!(c.iter().all(|&n| n == c[0]), "{c:?}");
        let mut focal = base.clone();
        focal.method = Method::Focal;
        let mut smear = base.clone();
        smear.method = Method::WeightedCe;
        smear.examples.frame_targets = Some(crate::examples::FrameTargets {
            stride: 4,
            warmup: 4,
            lead_frames: [2, 10],
            ..Default::default()
        });
        smear.imbalance.smear_sigma_frames = 2.0;
        for cfg in [smote, focal, smear] {
            let data = prepared(&cfg);
            let out = train_prepared(&cfg, &data, &RunOptions::default(), &mut quiet()).unwrap();
            let l = losses(&out.history, cfg.method.end_to_end_stage().unwrap());
            assert!(l.last().unwrap() < &l[0], "{:?}: {l:?}", cfg.method);
        }
        // Smearing without frame targets is refused.
        let mut bad = short(Method::Ce);
        bad.imbalance.smear_sigma_frames = 2.0;
        bad.examples.frame_targets = None;
        assert!(bad.validate().is_err());
    }

    #[test]
    fn run_writes_outputs_and_a_loadable_model() {
        let mut cfg = short(Method::Centroid);
        cfg.epochs = 2;
        cfg.classifier_epochs = 1;
        let dir = tempfile::tempdir().unwrap();
        let opts = RunOptions {
            out_dir: Some(dir.path().to_path_buf()),
            ..Default::default()
        };
        let mut epochs = 0;
        let out = run(&cfg, &opts, &mut |p| {
            if let Progress::Epoch(_) = p {
                epochs += 1
            }
        })
        .unwrap();
        assert_eq!(epochs, 3);
        for f in [
            "config.toml",
            "metrics.csv",
            "metrics.json",
            "model.onnx",
            "summary.json",
        ] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
        let csv = fs::read_to_string(dir.path().join("metrics.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4);
        let saved = TrainConfig::load(&dir.path().join("config.toml")).unwrap();
        assert_eq!(saved, cfg);
        let bytes = fs::read(dir.path().join("model.onnx")).unwrap();
        let model = hark::model::Model::from_bytes(&bytes, "model.onnx").unwrap();
        let meta = model.metadata();
        assert_eq!(meta.classes, out.classes);
        assert_eq!(meta.classes[0], "background");
        assert_eq!(meta.background.as_deref(), Some("background"));
        assert_eq!(meta.thresholds.len(), 3);
        assert!(meta.thresholds.values().all(|&t| t == 0.5));
        // The runtime's streaming model on raw features of a clip gives probabilities.
        let clip = &synthetic_clips(&SyntheticConfig::default(), 3)[0];
        let mut fe = Frontend::new(cfg.frontend.clone()).unwrap();
        let (frames, _) = fe.compute(&clip.samples);
        let mut stream = model.stream().unwrap();
        for f in frames.chunks_exact(64) {
            let s = stream.step(f).unwrap();
            assert_eq!(s.len(), 4);
            assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        }
        assert!(clip.samples.len() as f32 / RATE > 0.2);
    }

    #[test]
    fn mean_average_precision_hand_computed() {
        // Three classes, background 0; class 2 has no positive and is left out.
        let labels = [1, 0, 1, 0];
        let scores = [
            0.1, 0.9, 0.0, // row 0: class 1 ranked first
            0.2, 0.8, 0.0, // row 1: a background row above the second positive
            0.3, 0.7, 0.0, //
            0.9, 0.1, 0.0,
        ];
        // Precision 1/1 at the first positive, 2/3 at the second.
        let ap = mean_average_precision(&labels, &scores, 3, 0);
        assert!((ap - (1.0 + 2.0 / 3.0) / 2.0).abs() < 1e-9, "{ap}");
        // A perfect ranking scores 1, and no positives at all scores 0.
        let perfect = [0.0, 0.9, 0.0, 0.0, 0.1, 0.0, 0.0, 0.8, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(mean_average_precision(&labels, &perfect, 3, 0), 1.0);
        assert_eq!(mean_average_precision(&[0, 0], &[0.5; 6], 3, 0), 0.0);
    }

    #[test]
    fn weighted_cross_entropy_hand_computed() {
        // Example 1: logits (0, ln 3), label 1: p = 3/4, -ln(3/4) = 0.287682, weight 3.
        // Example 2: logits (0, 0), label 0: ln 2 = 0.693147, weight 1.
        // (3 × 0.287682 + 0.693147) / 4 = 0.389048.
        let logits = Tensor::<Cpu, 2>::from_data(
            TensorData::new(vec![0.0f32, 3f32.ln(), 0.0, 0.0], [2, 2]),
            &Default::default(),
        );
        let l = host(weighted_cross_entropy(logits, &[1, 0], &[1.0, 3.0]))[0];
        assert!((l - 0.389048).abs() < 1e-5, "{l}");
        // N = 60 over K = 3 present classes: 60 / (3 n_c).
        assert_eq!(
            class_weights(&[30, 10, 0, 20]),
            vec![60.0 / 90.0, 2.0, 0.0, 1.0]
        );
    }

    #[test]
    fn configuration_from_toml() {
        let cfg = TrainConfig::from_toml(include_str!("../configs/tiny.toml")).unwrap();
        assert_eq!(cfg, tiny_config(Method::Centroid));
        // Everything has a default; round trip through TOML.
        let d = TrainConfig::from_toml("[data.synthetic]\n").unwrap();
        assert_eq!(d.epochs, 30);
        assert_eq!(d.examples.ebr_db, vec![-6.0, 0.0, 6.0]);
        assert_eq!(TrainConfig::from_toml(&d.to_toml()).unwrap(), d);
        // Unknown keys and bad values are errors naming the problem.
        assert!(TrainConfig::from_toml("[data.synthetic]\nepoch = 3\n").is_err());
        let e = TrainConfig::from_toml("batch_size = 0\n[data.synthetic]\n").unwrap_err();
        assert!(e.to_string().contains("batch_size"), "{e}");
        assert!(TrainConfig::from_toml("epochs = 3\n").is_err());
    }
}
