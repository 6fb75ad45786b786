//! `hark-train export`: a finished run's best checkpoint to ONNX, and its model card.
//!
//! The model card is markdown written beside the ONNX file (`NAME.md` for `NAME.onnx`). Every
//! figure in it comes from what the run wrote (`config.toml`, `checkpoint/data.json`,
//! `metrics.json`, `summary.json`), from the exported network itself (parameters,
//! multiply-adds per hop, file size) or from the data manifests the configuration names.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use burn::module::Module;
use hark::model::ModelMetadata;

use crate::data::{BACKGROUND, ClassMap, Role, Source, split_fields};
use crate::eval::WindowMetrics;
use crate::examples::SYNTHETIC_CLASSES;
use crate::train::{
    EpochRecord, Method, RunData, StepNet, TrainConfig, TrainError, load_trained, metadata,
    step_net, streaming_net,
};

/// Sizes and costs of the exported network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Architecture {
    /// Feature bands (input).
    pub n_mels: usize,
    /// LSTM layers (convolutions of a CNN).
    pub layers: usize,
    /// LSTM hidden size (channels of a CNN).
    pub hidden: usize,
    /// The causal CNN's kernel and dilations, `None` for an LSTM.
    pub cnn: Option<CnnShape>,
    /// Embedding size.
    pub embedding: usize,
    /// Output classes (background included).
    pub n_classes: usize,
    /// Runs averaged into the model (1 for a single run; see [`merge_runs`]); `hidden`,
    /// `embedding` and `n_classes` are each run's.
    pub runs: usize,
    /// Trainable parameters of the embedding network and the classifier.
    pub parameters: usize,
    /// [`crate::export::StreamingNet::multiply_adds_per_hop`].
    pub multiply_adds_per_hop: usize,
    /// Size of the ONNX file, bytes.
    pub file_bytes: usize,
}

/// The shape of a causal CNN ([`crate::export::CnnStepNet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CnnShape {
    /// Kernel size, frames.
    pub kernel: usize,
    /// Dilation of each layer.
    pub dilations: Vec<usize>,
    /// Frames one output sees.
    pub receptive_field: usize,
}

/// One package of a manifest: its version, licence and files per target class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackageRow {
    /// Package name.
    pub package: String,
    /// Version(s) listed for it.
    pub version: String,
    /// Licence(s) listed for it.
    pub license: String,
    /// Files per target class (after the class map; `"hard negatives"`, `"dropped"`).
    pub files: BTreeMap<String, usize>,
}

/// What a data source of the configuration holds, as far as it can be read now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceSummary {
    /// `kind` and path, as in the configuration.
    pub description: String,
    /// Packages of a manifest with `package`, `version` and `license` columns.
    pub packages: Option<Vec<PackageRow>>,
    /// Files per target class (after the class map).
    pub files: BTreeMap<String, usize>,
    /// Why the source could not be read, if it could not.
    pub problem: Option<String>,
}

/// Everything the model card shows.
#[derive(Debug, Clone)]
pub struct CardInput<'a> {
    /// The model's name (the ONNX file's stem).
    pub name: &'a str,
    /// The ONNX file's name.
    pub file_name: &'a str,
    /// The training configuration (of the first run, when the model merges several).
    pub config: &'a TrainConfig,
    /// The exported metadata (classes, thresholds, frontend).
    pub metadata: &'a ModelMetadata,
    /// The network.
    pub architecture: Architecture,
    /// The trained runs in the model: one, or those [`merge_runs`] averaged.
    pub runs: &'a [RunPart<'a>],
    /// `checkpoint/data.json` (of the first run).
    pub data: &'a RunData,
    /// The configuration's data sources.
    pub sources: &'a [SourceSummary],
    /// The commands that reproduce the model.
    pub reproduce: &'a str,
}

/// One trained run of a model: what its model card shows of it.
#[derive(Debug, Clone)]
pub struct RunPart<'a> {
    /// A short name (the run folder's name), shown when a model merges several runs.
    pub label: String,
    /// The method.
    pub method: Method,
    /// The configuration as the run wrote it (`config.toml`).
    pub config_toml: &'a str,
    /// `metrics.json`: every epoch.
    pub history: &'a [EpochRecord],
    /// `summary.json`'s validation metrics of the run's best models.
    pub val_metrics: &'a WindowMetrics,
}

/// Fewer training clips than this in an event class is listed as a weakness.
pub const FEW_CLIPS: usize = 20;
/// Fewer validation windows than this in a class is listed as a weakness.
pub const FEW_VAL_WINDOWS: usize = 50;
/// Validation precision or recall below this is listed as a weakness.
pub const LOW_SCORE: f64 = 0.7;

fn target_key(map: &ClassMap, class: &str) -> String {
    match map.target(class) {
        None => "dropped".into(),
        Some((_, Role::Negative)) => "hard negatives".into(),
        Some((t, _)) => t,
    }
}

fn join_set(s: &BTreeSet<String>) -> String {
    s.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Versions, licences and files per class of one package, while a manifest is read.
type PackageAcc = (BTreeSet<String>, BTreeSet<String>, BTreeMap<String, usize>);

/// Reads a manifest's packages (when it has `package`, `version` and `license` columns) and
/// its files per target class.
fn summarise_manifest(path: &Path, map: &ClassMap) -> Result<SourceSummary, String> {
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = split_fields(
        lines
            .next()
            .ok_or("empty manifest")?
            .trim_start_matches('\u{feff}'),
        '\t',
    )
    .into_iter()
    .map(|h| h.trim().to_string())
    .collect();
    let col = |n: &str| header.iter().position(|h| h == n);
    let class_col = col("class").ok_or("no `class` column")?;
    let pkg_cols = match (col("package"), col("version"), col("license")) {
        (Some(p), Some(v), Some(l)) => Some((p, v, l)),
        _ => None,
    };
    let mut files = BTreeMap::new();
    let mut packages: BTreeMap<String, PackageAcc> = BTreeMap::new();
    for line in lines {
        let row = split_fields(line.trim_end_matches('\r'), '\t');
        let field = |i: usize| row.get(i).map(|s| s.trim().to_string()).unwrap_or_default();
        let key = target_key(map, &field(class_col));
        *files.entry(key.clone()).or_insert(0) += 1;
        if let Some((p, v, l)) = pkg_cols {
            let e = packages.entry(field(p)).or_default();
            e.0.insert(field(v));
            e.1.insert(field(l));
            *e.2.entry(key).or_insert(0) += 1;
        }
    }
    Ok(SourceSummary {
        description: String::new(),
        packages: pkg_cols.map(|_| {
            packages
                .into_iter()
                .map(|(package, (v, l, files))| PackageRow {
                    package,
                    version: join_set(&v),
                    license: join_set(&l),
                    files,
                })
                .collect()
        }),
        files,
        problem: None,
    })
}

/// Summarises a data source of the configuration; relative paths resolve against `base`. A
/// source that cannot be read now gives a summary saying why.
pub fn summarise_source(src: &Source, base: &Path, map: &ClassMap) -> SourceSummary {
    let (kind, path) = match src {
        Source::Manifest { path } => ("manifest", path),
        Source::Folders { path } => ("folders", path),
        Source::Esc50 { path } => ("esc50", path),
        Source::UrbanSound8k { path } => ("urban_sound8k", path),
    };
    let description = format!("{kind} `{}`", path.display());
    let result = match src {
        Source::Manifest { path } => summarise_manifest(&base.join(path), map),
        _ => src.items(base).map_err(|e| e.to_string()).map(|items| {
            let mut files = BTreeMap::new();
            for it in &items {
                *files.entry(target_key(map, &it.class)).or_insert(0) += 1;
            }
            SourceSummary {
                description: String::new(),
                packages: None,
                files,
                problem: None,
            }
        }),
    };
    match result {
        Ok(s) => SourceSummary { description, ..s },
        Err(problem) => SourceSummary {
            description,
            packages: None,
            files: BTreeMap::new(),
            problem: Some(problem),
        },
    }
}

fn counts(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Whether validation scored every supervised frame (the stream layout with frame targets)
/// rather than each window's last frame.
fn validated_on_frames(cfg: &TrainConfig) -> bool {
    cfg.examples.layout == crate::examples::Layout::Stream && cfg.examples.frame_targets.is_some()
}

fn method_text(m: Method) -> &'static str {
    match m {
        Method::Centroid => {
            "`centroid`: the embedding network trained with the clustered-centroid loss \
             (stage `embedding`), then a classifier trained on the embeddings with \
             cross-entropy while the network is fine-tuned (stage `classifier`)"
        }
        Method::WeightedCe => {
            "`weighted_ce`: the network and classifier trained end to end with cross-entropy \
             weighted inversely to class frequency (the baseline)"
        }
        Method::Ce => {
            "`ce`: the network and classifier trained end to end with plain cross-entropy"
        }
        Method::Focal => {
            "`focal`: the network and classifier trained end to end with the focal loss"
        }
    }
}

/// The model card (markdown). Pure: every figure comes from `input`.
pub fn model_card(input: &CardInput) -> String {
    let mut s = String::new();
    let cfg = input.config;
    let meta = input.metadata;
    let a = &input.architecture;
    let data = input.data;
    let synthetic_only = cfg.data.sources.is_empty() && cfg.data.synthetic.is_some();
    let merged = input.runs.len() > 1;
    let _ = writeln!(s, "# {}\n", input.name);
    let how = match input.runs {
        [one] => format!("with the `{}` method", one.method.name()),
        runs => format!(
            "as the mean of the scores of {} runs of one configuration ({})",
            runs.len(),
            runs.iter()
                .map(|r| format!("`{}`: method `{}`", r.label, r.method.name()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    };
    let _ = writeln!(
        s,
        "Streaming sound event detector for hark (`{}`), trained by {} {how}.{}\n",
        input.file_name,
        meta.training
            .get("trainer")
            .and_then(|t| t.as_str())
            .unwrap_or("hark-trainer"),
        if synthetic_only {
            " It was **trained on synthetic sounds only** (see Data)."
        } else {
            ""
        }
    );

    // Classes.
    let _ = writeln!(s, "## Classes and thresholds\n");
    let _ = writeln!(
        s,
        "| class | threshold | training clips | validation clips | training windows | validation windows |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|");
    for (i, c) in meta.classes.iter().enumerate() {
        let th = if meta.background.as_deref() == Some(c.as_str()) {
            "(background)".to_string()
        } else {
            meta.thresholds
                .get(c)
                .map_or("?".into(), |t| format!("{t}"))
        };
        let clips = data.clips.get(c).cloned().unwrap_or_default();
        let _ = writeln!(
            s,
            "| {c} | {th} | {} | {} | {} | {} |",
            clips.train,
            clips.val,
            data.train_examples.get(i).copied().unwrap_or(0),
            data.val_examples.get(i).copied().unwrap_or(0)
        );
    }
    if let Some(neg) = data.clips.get("hard negatives") {
        let _ = writeln!(
            s,
            "\nHard negatives (event-like sounds labelled background): {} training, {} validation clips.",
            neg.train, neg.val
        );
    }
    let _ = writeln!(
        s,
        "\nThe scores are a softmax over the classes; an event class fires when its smoothed \
         score crosses its threshold (`hark.thresholds` in the model).\n"
    );

    // Features.
    let _ = writeln!(s, "## Features\n");
    let _ = writeln!(s, "`{}`\n", meta.frontend);
    let _ = writeln!(
        s,
        "{}\n",
        if a.cnn.is_some() {
            "The per-band mean and standard deviation of the training features are subtracted \
             and divided at the model's input: the model takes the runtime's raw log-mel frames."
        } else {
            "The per-band mean and standard deviation of the training features are folded into \
             the first LSTM layer: the model takes the runtime's raw log-mel frames."
        }
    );

    // Architecture.
    let _ = writeln!(s, "## Architecture\n");
    let _ = writeln!(s, "| part | size |\n|---|---|");
    if a.runs > 1 {
        let _ = writeln!(
            s,
            "| LSTM | {} layer(s) × {} hidden (input {} bands): the {} runs' LSTMs of {} side by \
             side, block-diagonal (each run's units see only their own state) |",
            a.layers,
            a.runs * a.hidden,
            a.n_mels,
            a.runs,
            a.hidden
        );
        let _ = writeln!(
            s,
            "| embedding | {} × {} (each run's linear projection of its last LSTM output) |",
            a.runs, a.embedding
        );
        let _ = writeln!(
            s,
            "| classifier | per run linear {} → {} classes, softmax; the model's scores are \
             the mean of the runs' softmaxes |",
            a.embedding, a.n_classes
        );
    } else {
        let last = match &a.cnn {
            Some(c) => {
                let _ = writeln!(
                    s,
                    "| causal CNN | {} dilated convolutions × {} channels, kernel {}, dilations \
                     {:?}, ReLU, residual from the second on (input {} bands); it sees the last \
                     {} frames ({} ms); its state is their past frames |",
                    a.layers,
                    a.hidden,
                    c.kernel,
                    c.dilations,
                    a.n_mels,
                    c.receptive_field,
                    c.receptive_field * 10
                );
                "convolution's"
            }
            None => {
                let _ = writeln!(
                    s,
                    "| LSTM | {} layer(s) × {} hidden (input {} bands) |",
                    a.layers, a.hidden, a.n_mels
                );
                "LSTM"
            }
        };
        let _ = writeln!(
            s,
            "| embedding | {} (linear projection of the last {last} output) |",
            a.embedding
        );
        let _ = writeln!(
            s,
            "| classifier | linear {} → {} classes, softmax |",
            a.embedding, a.n_classes
        );
    }
    let _ = writeln!(s, "| parameters | {} |", a.parameters);
    let _ = writeln!(
        s,
        "| multiply-adds per hop (10 ms) | {} |",
        a.multiply_adds_per_hop
    );
    let _ = writeln!(s, "| file size | {} bytes |\n", a.file_bytes);

    // Training.
    let _ = writeln!(s, "## Training\n");
    // The early-stopping metric: higher is better except for the loss.
    let (metric, value): (&str, fn(&EpochRecord) -> f64) = match cfg.early_stopping.metric {
        crate::train::StopMetric::BalancedAccuracy => {
            ("balanced accuracy", |r| r.val_balanced_accuracy)
        }
        crate::train::StopMetric::MeanAp => ("mean average precision", |r| r.val_mean_ap),
        crate::train::StopMetric::Loss => ("loss", |r| -r.val_loss),
    };
    for run in input.runs {
        if merged {
            let _ = writeln!(
                s,
                "Run `{}`: method {}.\n",
                run.label,
                method_text(run.method)
            );
        } else {
            let _ = writeln!(s, "Method {}.\n", method_text(run.method));
        }
        let mut stages: Vec<&str> = Vec::new();
        for r in run.history {
            if !stages.contains(&r.stage.as_str()) {
                stages.push(&r.stage);
            }
        }
        for st in &stages {
            let rows: Vec<&EpochRecord> = run.history.iter().filter(|r| &r.stage == st).collect();
            let best = rows
                .iter()
                .copied()
                .fold(None::<&EpochRecord>, |b, r| match b {
                    Some(b) if value(b) >= value(r) => Some(b),
                    _ => Some(r),
                });
            if let Some(b) = best {
                let _ = writeln!(
                    s,
                    "- stage `{st}`: {} epochs; best validation {metric} {:.3} (epoch {})",
                    rows.len(),
                    value(b).abs(),
                    b.epoch
                );
            }
        }
        let _ = writeln!(s);
    }
    // The configuration: once when the runs differ in their method only.
    let strip = |t: &str| -> String {
        t.lines()
            .filter(|l| !l.starts_with("method = "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let first = strip(input.runs.first().map_or("", |r| r.config_toml));
    if input.runs.iter().all(|r| strip(r.config_toml) == first) {
        let _ = writeln!(
            s,
            "The training configuration (`config.toml`{}):\n",
            if merged {
                " of the first run; the others differ in `method` only"
            } else {
                ""
            }
        );
        let toml = input.runs.first().map_or("", |r| r.config_toml);
        let _ = writeln!(s, "```toml\n{}\n```\n", toml.trim_end());
    } else {
        for run in input.runs {
            let _ = writeln!(s, "The training configuration of run `{}`:\n", run.label);
            let _ = writeln!(s, "```toml\n{}\n```\n", run.config_toml.trim_end());
        }
    }

    // Data.
    let _ = writeln!(s, "## Data\n");
    if let Some(sy) = &cfg.data.synthetic {
        let classes: Vec<String> = SYNTHETIC_CLASSES
            .iter()
            .map(|(c, share)| format!("`{c}` ({} clips)", share * sy.unit))
            .collect();
        let _ = writeln!(
            s,
            "{} synthetic sounds from hark-trainer's generator: {}, {} coloured-noise \
             backgrounds of {} s and {} hum bursts as hard negatives, spread over {} groups. \
             These are generated signals, not recordings of real events.\n",
            if synthetic_only {
                "This model was trained on"
            } else {
                "The training data includes"
            },
            classes.join(", "),
            sy.backgrounds,
            sy.background_seconds,
            sy.negatives,
            sy.groups
        );
    }
    for src in input.sources {
        let _ = writeln!(s, "Source {}:\n", src.description);
        if let Some(p) = &src.problem {
            let _ = writeln!(
                s,
                "The source is unavailable now ({p}); its packages and files cannot be listed here.\n"
            );
            continue;
        }
        match &src.packages {
            Some(pk) => {
                let _ = writeln!(
                    s,
                    "| package | version | licence | files per class |\n|---|---|---|---|"
                );
                for p in pk {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | {} |",
                        p.package,
                        p.version,
                        p.license,
                        counts(&p.files)
                    );
                }
                let _ = writeln!(s);
            }
            None => {
                let _ = writeln!(s, "Files per class: {}.\n", counts(&src.files));
            }
        }
    }
    let _ = writeln!(
        s,
        "Class map: {}; split: {}.\n",
        if cfg.data.class_map.map.is_empty() {
            format!("every class `{}`", cfg.data.class_map.default)
        } else {
            format!(
                "{} (others `{}`)",
                cfg.data
                    .class_map
                    .map
                    .iter()
                    .map(|(k, v)| format!("{k} → {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                cfg.data.class_map.default
            )
        },
        if cfg.data.split.val_groups.is_empty() {
            format!(
                "{:.0} % of the groups held out for validation",
                cfg.data.split.val_fraction * 100.0
            )
        } else {
            format!("validation groups {}", cfg.data.split.val_groups.join(", "))
        }
    );

    // Evaluation.
    let (level, unit) = if validated_on_frames(cfg) {
        (
            "frame level: the most probable class at every supervised frame of a window",
            "frames",
        )
    } else {
        (
            "window level: the most probable class at a window's last frame",
            "windows",
        )
    };
    let _ = writeln!(s, "## Evaluation\n");
    if merged {
        let _ = writeln!(
            s,
            "The validation figures below are each run's own; the merged model's scores are \
             evaluated through `hark detect` on the held-out packages (next section, when the \
             card has it).\n"
        );
    }
    for run in input.runs {
        let m = run.val_metrics;
        let whose = if merged {
            format!("Run `{}` on", run.label)
        } else {
            "On".to_string()
        };
        let _ = writeln!(
            s,
            "{whose} the validation split ({level}), from `summary.json`: balanced accuracy \
             {:.3}, accuracy {:.3}, macro F1 {:.3}.\n",
            m.balanced_accuracy, m.accuracy, m.macro_f1
        );
        let _ = writeln!(
            s,
            "| class | {unit} | precision | recall | F1 |\n|---|---|---|---|---|"
        );
        for c in &m.classes {
            let _ = writeln!(
                s,
                "| {} | {} | {:.3} | {:.3} | {:.3} |",
                c.class, c.support, c.precision, c.recall, c.f1
            );
        }
        let _ = writeln!(
            s,
            "\nConfusion matrix (rows: reference, columns: predicted):\n"
        );
        let names: Vec<&str> = m.classes.iter().map(|c| c.class.as_str()).collect();
        let _ = writeln!(s, "| | {} |", names.join(" | "));
        let _ = writeln!(s, "|---|{}", "---|".repeat(names.len()));
        for (name, row) in names.iter().zip(&m.confusion) {
            let cells: Vec<String> = row.iter().map(usize::to_string).collect();
            let _ = writeln!(s, "| {name} | {} |", cells.join(" | "));
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "Every epoch (`metrics.json`):\n");
    let _ = writeln!(
        s,
        "| stage | epoch | training loss | validation loss | balanced accuracy | macro F1 | mean AP |\n|---|---|---|---|---|---|---|"
    );
    for run in input.runs {
        for r in run.history {
            let stage = if merged {
                format!("{}/{}", run.label, r.stage)
            } else {
                r.stage.clone()
            };
            let _ = writeln!(
                s,
                "| {stage} | {} | {:.4} | {:.4} | {:.3} | {:.3} | {:.3} |",
                r.epoch,
                r.train_loss,
                r.val_loss,
                r.val_balanced_accuracy,
                r.val_macro_f1,
                r.val_mean_ap
            );
        }
    }
    let _ = writeln!(s);

    // Weaknesses.
    let _ = writeln!(s, "## Known weaknesses\n");
    for w in weaknesses(input) {
        let _ = writeln!(s, "- {w}");
    }
    let _ = writeln!(s);

    // Reproduce.
    let _ = writeln!(s, "## Reproduce\n");
    let _ = writeln!(s, "```\n{}\n```", input.reproduce.trim_end());
    s
}

/// What the run's own figures say is weak.
fn weaknesses(input: &CardInput) -> Vec<String> {
    let cfg = input.config;
    let data = input.data;
    let mut w = Vec::new();
    if cfg.data.sources.is_empty() {
        w.push(
            "Trained on synthetic sounds only: it detects the generator's tones, chirps and \
             noise bursts, not real-world events."
                .to_string(),
        );
    }
    for c in input.metadata.classes.iter().filter(|c| *c != BACKGROUND) {
        let clips = data.clips.get(c).cloned().unwrap_or_default();
        if clips.train < FEW_CLIPS {
            w.push(format!(
                "`{c}`: only {} training clips ({} for validation).",
                clips.train, clips.val
            ));
        }
        if clips.val == 0 {
            w.push(format!(
                "`{c}`: no validation clips; its figures are missing."
            ));
        }
    }
    let ev: Vec<(usize, &String)> = data
        .classes
        .iter()
        .enumerate()
        .filter(|(_, c)| *c != BACKGROUND)
        .collect();
    let n = |i: usize| data.train_examples.get(i).copied().unwrap_or(0);
    if let (Some(&(lo, lc)), Some(&(hi, hc))) = (
        ev.iter().min_by_key(|(i, _)| n(*i)),
        ev.iter().max_by_key(|(i, _)| n(*i)),
    ) && n(lo) * 5 <= n(hi)
    {
        w.push(format!(
            "Imbalanced training data: `{lc}` has {} training windows, `{hc}` {}.",
            n(lo),
            n(hi)
        ));
    }
    let unit = if validated_on_frames(cfg) {
        "frames"
    } else {
        "windows"
    };
    let merged = input.runs.len() > 1;
    for run in input.runs {
        let whose = if merged {
            format!(" (run `{}`)", run.label)
        } else {
            String::new()
        };
        for c in &run.val_metrics.classes {
            if c.support > 0 && c.support < FEW_VAL_WINDOWS {
                w.push(format!(
                    "`{}`: the validation figures{whose} rest on {} {unit} only.",
                    c.class, c.support
                ));
            }
            if c.support > 0 && (c.recall < LOW_SCORE || c.precision < LOW_SCORE) {
                w.push(format!(
                    "`{}`: validation precision {:.3}, recall {:.3}{whose}.",
                    c.class, c.precision, c.recall
                ));
            }
        }
    }
    for src in input.sources {
        if let Some(p) = &src.problem {
            w.push(format!(
                "Source {} could not be read when the card was written ({p}).",
                src.description
            ));
        }
    }
    w.push(
        "The validation split also chose the best epoch (early stopping): the figures above \
         are not from an independent test set."
            .to_string(),
    );
    w
}

/// Reads a thresholds file (`{"class": 0.6, ...}`): one value in (0, 1) for every event class
/// of the model and nothing else.
pub fn load_thresholds(
    path: &Path,
    meta: &ModelMetadata,
) -> Result<BTreeMap<String, f32>, TrainError> {
    let err = |m: String| TrainError::Config(format!("thresholds {}: {m}", path.display()));
    let text = fs::read_to_string(path).map_err(|e| TrainError::Io {
        path: path.to_path_buf(),
        problem: e.to_string(),
    })?;
    let raw: BTreeMap<String, f64> = serde_json::from_str(&text)
        .map_err(|e| err(format!("not a JSON object of class → number: {e}")))?;
    let events: Vec<&String> = meta
        .classes
        .iter()
        .filter(|c| meta.background.as_deref() != Some(c.as_str()))
        .collect();
    for (c, &t) in &raw {
        if !events.contains(&c) {
            return Err(err(format!(
                "{c:?} is not an event class of the model (event classes: {})",
                events
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        if t.is_nan() || t <= 0.0 || t >= 1.0 {
            return Err(err(format!("threshold {t} for {c:?} is not in (0, 1)")));
        }
    }
    let missing: Vec<&str> = events
        .iter()
        .filter(|c| !raw.contains_key(c.as_str()))
        .map(|c| c.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(err(format!("no threshold for {}", missing.join(", "))));
    }
    Ok(raw.into_iter().map(|(c, t)| (c, t as f32)).collect())
}

/// What [`export_run`] and [`merge_runs`] wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The ONNX file.
    pub onnx: PathBuf,
    /// Its size, bytes.
    pub onnx_bytes: usize,
    /// The model card.
    pub card: PathBuf,
    /// The metadata written into the model.
    pub metadata: ModelMetadata,
    /// The network's sizes and costs.
    pub architecture: Architecture,
}

/// Averages trained runs into one model (`hark-train merge`) and writes its model card beside
/// it (same name, `.md`): single LSTM runs of one shape, classes and frontend (say the
/// clustered-centroid model and the class-weighted baseline of one configuration). Their step
/// graphs merge into one ([`crate::export::StreamingNet::merge`]: a block-diagonal LSTM, one
/// softmax per run, the mean of the softmaxes); the metadata is the first run's, with
/// `merged_runs` (each run's folder and method) and `combination` in its training summary,
/// and `thresholds` (a JSON file as for [`export_run`]) when given.
pub fn merge_runs(
    run_dirs: &[PathBuf],
    onnx: &Path,
    thresholds: Option<&Path>,
) -> Result<Exported, TrainError> {
    let bad = |path: &Path, problem: String| TrainError::Io {
        path: path.to_path_buf(),
        problem,
    };
    if run_dirs.len() < 2 {
        return Err(bad(onnx, "merging needs at least two runs".into()));
    }
    let mut runs = Vec::new();
    for d in run_dirs {
        if d.join("ensemble.json").is_file() {
            return Err(bad(d, "an ensemble run: merge takes single models".into()));
        }
        let run = load_trained(d)?;
        if run.outcome.net.is_cnn() {
            return Err(bad(d, "a CNN run: merge takes LSTM models only".into()));
        }
        runs.push(run);
    }
    let first = &runs[0];
    for r in &runs[1..] {
        if r.outcome.classes != first.outcome.classes {
            return Err(bad(
                &r.dir,
                format!(
                    "classes {:?} differ from {:?} of {}",
                    r.outcome.classes,
                    first.outcome.classes,
                    first.dir.display()
                ),
            ));
        }
        if r.config.frontend != first.config.frontend {
            return Err(bad(
                &r.dir,
                format!("its features differ from those of {}", first.dir.display()),
            ));
        }
    }
    let nets: Vec<_> = runs.iter().map(|r| streaming_net(&r.outcome)).collect();
    let merged =
        crate::export::StreamingNet::merge(&nets).map_err(|e| bad(&runs[1].dir, e.to_string()))?;
    let mut meta = metadata(&first.config, &first.outcome);
    meta.training["merged_runs"] = runs
        .iter()
        .map(|r| {
            serde_json::json!({
                "run": r.dir.display().to_string(),
                "method": r.config.method,
            })
        })
        .collect::<Vec<_>>()
        .into();
    meta.training["combination"] = "mean of the runs' softmax scores".into();
    if let Some(t) = thresholds {
        meta.thresholds = load_thresholds(t, &meta)?;
    }
    let mut reproduce = String::new();
    for r in &runs {
        let _ = writeln!(reproduce, "{}", train_command(r));
    }
    let _ = write!(
        reproduce,
        "hark-train merge {} -o {}",
        runs.iter()
            .map(|r| r.dir.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        onnx.display()
    );
    if let Some(t) = thresholds {
        let _ = write!(reproduce, " --thresholds {}", t.display());
    }
    write_model(&runs, &StepNet::Lstm(merged), meta, onnx, &reproduce)
}

/// `hark-train train` of a run, as its card gives it.
fn train_command(run: &crate::train::TrainedRun) -> String {
    let config = run
        .data
        .config_path
        .clone()
        .unwrap_or_else(|| run.dir.join("config.toml"));
    format!(
        "hark-train train --config {}{} --out {}",
        config.display(),
        if run.data.config_path.is_some() {
            format!(" --method {}", run.config.method.name())
        } else {
            String::new()
        },
        run.dir.display()
    )
}

/// Writes `net` (with `meta`) to `onnx` and the model card of `runs` beside it.
fn write_model(
    runs: &[crate::train::TrainedRun],
    net: &StepNet,
    meta: ModelMetadata,
    onnx: &Path,
    reproduce: &str,
) -> Result<Exported, TrainError> {
    let first = &runs[0];
    let cfg = &first.config;
    let parameters = runs
        .iter()
        .map(|r| r.outcome.net.num_params() + r.outcome.classifier.num_params())
        .sum();
    let bytes = net.to_onnx(&meta)?;
    // What differs between the two graphs: the sizes and the cost.
    let (n_mels, layers, hidden, cnn, n_classes, multiply_adds_per_hop) = match net {
        StepNet::Lstm(net) => (
            net.n_mels,
            net.layers(),
            net.hidden() / runs.len(),
            None,
            net.n_classes(),
            net.multiply_adds_per_hop(),
        ),
        StepNet::Cnn(net) => (
            net.n_mels,
            net.convs.len(),
            net.convs.last().map_or(0, |c| c.c_out),
            Some(CnnShape {
                kernel: net.convs.first().map_or(0, |c| c.kernel),
                dilations: net.convs.iter().map(|c| c.dilation).collect(),
                receptive_field: net.receptive_field(),
            }),
            net.n_classes(),
            net.multiply_adds_per_hop(),
        ),
    };
    let architecture = Architecture {
        n_mels,
        layers,
        hidden,
        cnn,
        embedding: cfg.model.embedding,
        n_classes,
        runs: runs.len(),
        parameters,
        multiply_adds_per_hop,
        file_bytes: bytes.len(),
    };
    write_creating_dir(onnx, &bytes)?;
    let sources: Vec<SourceSummary> = cfg
        .data
        .sources
        .iter()
        .map(|s| summarise_source(s, &first.data.base_dir, &cfg.data.class_map))
        .collect();
    let name = onnx
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let file_name = onnx
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let parts: Vec<RunPart> = runs
        .iter()
        .map(|r| RunPart {
            label: r.dir.file_name().map_or_else(
                || r.dir.display().to_string(),
                |n| n.to_string_lossy().into(),
            ),
            method: r.config.method,
            config_toml: &r.config_toml,
            history: &r.outcome.history,
            val_metrics: &r.outcome.val_metrics,
        })
        .collect();
    let card_text = model_card(&CardInput {
        name: &name,
        file_name: &file_name,
        config: cfg,
        metadata: &meta,
        architecture: architecture.clone(),
        runs: &parts,
        data: &first.data,
        sources: &sources,
        reproduce,
    });
    let card = onnx.with_extension("md");
    write_creating_dir(&card, card_text.as_bytes())?;
    Ok(Exported {
        onnx: onnx.to_path_buf(),
        onnx_bytes: bytes.len(),
        card,
        metadata: meta,
        architecture,
    })
}

/// Writes `bytes` to `path`, creating its folder first.
fn write_creating_dir(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    let err = |p: &Path, e: std::io::Error| TrainError::Io {
        path: p.to_path_buf(),
        problem: e.to_string(),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| err(parent, e))?;
    }
    fs::write(path, bytes).map_err(|e| err(path, e))
}

/// Exports a finished run (`run_dir`, see [`load_trained`]) to `onnx` and writes its model
/// card beside it (same name, `.md`); `thresholds` (see [`load_thresholds`]) replaces the
/// run's thresholds.
pub fn export_run(
    run_dir: &Path,
    onnx: &Path,
    thresholds: Option<&Path>,
) -> Result<Exported, TrainError> {
    if run_dir.join("ensemble.json").is_file() {
        return Err(TrainError::Io {
            path: run_dir.to_path_buf(),
            problem: "an ensemble run: `hark-train train` wrote its merged model.onnx; export (and the model card) handle single models only".into(),
        });
    }
    let run = load_trained(run_dir)?;
    let mut meta = metadata(&run.config, &run.outcome);
    if let Some(t) = thresholds {
        meta.thresholds = load_thresholds(t, &meta)?;
    }
    let graph = step_net(&run.outcome);
    let mut reproduce = format!(
        "{}\nhark-train export {} -o {}",
        train_command(&run),
        run_dir.display(),
        onnx.display()
    );
    if let Some(t) = thresholds {
        let _ = write!(reproduce, " --thresholds {}", t.display());
    }
    write_model(&[run], &graph, meta, onnx, &reproduce)
}

/// The section "Evaluation on held-out packages" of a model card: for every method, the
/// event metrics of `hark detect` on the test mixtures (onset only, 500 ms collar) and false
/// alarms per hour on the background-only audio.
pub fn evaluation_section(
    methods: &[(String, crate::mixtures::Score)],
    manifest: &crate::mixtures::Manifest,
    command: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "## Evaluation on held-out packages (through `hark detect`)\n"
    );
    let clips: Vec<String> = manifest
        .event_clips
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    let _ = writeln!(
        s,
        "Test audio from the held-out packages only (`test_groups` and the held-out background \
         files of the configuration; thresholds were chosen on the validation packages, never \
         on these): {} mixtures of {:.0} s, each with one event at an event-to-background ratio \
         of {} dB over real backgrounds and up to {} unlabelled hard negatives (event clips: {}); \
         and {:.2} h of background-only audio from {} background clips with a hard negative \
         every {:.0} s on average ({} hard-negative clips), on which every event is a false \
         alarm. Scored on onsets with a 500 ms collar (DCASE 2017 Task 2).\n",
        manifest.mixtures.len(),
        manifest.config.seconds,
        manifest
            .config
            .ebr_db
            .iter()
            .map(|v| format!("{v:+}"))
            .collect::<Vec<_>>()
            .join(", "),
        manifest.config.negatives_per_mixture[1],
        clips.join(", "),
        manifest.background_seconds / 3600.0,
        manifest.background_clips,
        manifest.config.negative_every_s,
        manifest.negative_clips,
    );
    for (name, sc) in methods {
        let _ = writeln!(s, "**{name}**\n");
        let _ = writeln!(s, "{}", crate::mixtures::score_table(sc));
    }
    let _ = writeln!(s, "Reproduce: `{command}`.\n");
    s
}

/// Inserts `section` before the card's "## Known weaknesses" (or at the end), replacing an
/// earlier evaluation section of the same title; `weaknesses` are added to that list.
pub fn insert_evaluation(card: &str, section: &str, weaknesses: &[String]) -> String {
    let title = section.lines().next().unwrap_or_default();
    let mut card = card.to_string();
    if let Some(a) = card.find(title) {
        let rest = &card[a + title.len()..];
        let b = rest
            .find("\n## ")
            .map(|i| a + title.len() + i + 1)
            .unwrap_or(card.len());
        card.replace_range(a..b, "");
    }
    let at = card.find("## Known weaknesses").unwrap_or(card.len());
    card.insert_str(at, section);
    if !weaknesses.is_empty() {
        let head = "## Known weaknesses\n\n";
        if let Some(w) = card.find(head) {
            let list: String = weaknesses.iter().map(|w| format!("- {w}\n")).collect();
            card.insert_str(w + head.len(), &list);
        }
    }
    card
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evaluation_goes_before_the_weaknesses_and_replaces_an_old_one() {
        let card = "# m\n\n## Evaluation\n\nold\n\n## Known weaknesses\n\n- a\n\n## Reproduce\n";
        let sec = "## Evaluation on held-out packages (x)\n\nv1\n\n";
        let once = insert_evaluation(card, sec, &["b".to_string()]);
        assert!(once.find("v1").unwrap() < once.find("## Known weaknesses").unwrap());
        assert!(once.contains("## Known weaknesses\n\n- b\n- a\n"));
        let twice = insert_evaluation(&once, &sec.replace("v1", "v2"), &[]);
        assert!(twice.contains("v2") && !twice.contains("v1"), "{twice}");
        assert_eq!(twice.matches("## Evaluation on held-out").count(), 1);
        assert!(twice.contains("## Reproduce"));
    }
    use crate::eval::window_metrics;
    use crate::train::{ClipCounts, Method, RunOptions, run, tiny_config};

    fn tiny_run(dir: &Path) -> TrainConfig {
        let mut cfg = tiny_config(Method::Centroid);
        cfg.epochs = 2;
        cfg.classifier_epochs = 1;
        let opts = RunOptions {
            out_dir: Some(dir.to_path_buf()),
            ..Default::default()
        };
        run(&cfg, &opts, &mut |_| {}).unwrap();
        cfg
    }

    #[test]
    fn a_cnn_run_exports_with_thresholds_and_a_card_describing_the_cnn() {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("run");
        let mut cfg = tiny_config(Method::WeightedCe);
        cfg.epochs = 2;
        cfg.plots = false;
        cfg.model.kind = crate::train::ModelKind::Cnn;
        cfg.model.cnn = crate::train::CnnSection {
            channels: 8,
            kernel: 3,
            dilations: vec![1, 2],
        };
        let opts = RunOptions {
            out_dir: Some(run_dir.clone()),
            ..Default::default()
        };
        run(&cfg, &opts, &mut |_| {}).unwrap();
        let th = tmp.path().join("thresholds.json");
        fs::write(&th, r#"{"chirp": 0.7, "noise_burst": 0.6, "tone": 0.9}"#).unwrap();
        let onnx = tmp.path().join("cnn.onnx");
        let done = export_run(&run_dir, &onnx, Some(&th)).unwrap();
        let model = hark::model::Model::load(&onnx).unwrap();
        assert_eq!(model.metadata().thresholds["tone"], 0.9);
        // The state holds the past frames of both layers: 64 bands x 2, 8 channels x 4.
        assert_eq!(model.state_shape(), (1, 64 * 2 + 8 * 4));
        // The same scores as the run's own model.onnx (same weights, other thresholds).
        let own = hark::model::Model::load(run_dir.join("model.onnx")).unwrap();
        let frames: Vec<f32> = (0..64 * 30)
            .map(|i| ((i * 37 % 101) as f32) * 0.1 - 8.0)
            .collect();
        let (x, y) = (
            model.run_sequence(&frames).unwrap(),
            own.run_sequence(&frames).unwrap(),
        );
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-6));
        let a = &done.architecture;
        let shape = a.cnn.as_ref().expect("a CNN architecture");
        assert_eq!((a.layers, a.hidden), (2, 8));
        assert_eq!(shape.dilations, [1, 2]);
        assert_eq!(shape.receptive_field, 7);
        // Convolutions 64*8*3 + 8*8*3, projection 8 x embedding, classifier embedding x 4.
        let e = cfg.model.embedding;
        assert_eq!(
            a.multiply_adds_per_hop,
            64 * 8 * 3 + 8 * 8 * 3 + 8 * e + e * 4
        );
        let card = fs::read_to_string(&done.card).unwrap();
        assert!(
            card.contains("| causal CNN | 2 dilated convolutions × 8 channels"),
            "{card}"
        );
        assert!(card.contains("7 frames (70 ms)"), "{card}");
        assert!(!card.contains("LSTM |"), "{card}");
        assert!(card.contains("| tone | 0.9 |"), "{card}");
    }

    #[test]
    fn export_writes_a_loadable_model_and_its_card() {
        let tmp = tempfile::tempdir().unwrap();
        let run_dir = tmp.path().join("run");
        tiny_run(&run_dir);
        let onnx = tmp.path().join("models").join("tiny.onnx");
        let done = export_run(&run_dir, &onnx, None).unwrap();
        let model = hark::model::Model::load(&onnx).unwrap();
        let meta = model.metadata();
        assert_eq!(meta, &done.metadata);
        assert_eq!(meta.classes, ["background", "chirp", "noise_burst", "tone"]);
        assert!(meta.thresholds.values().all(|&t| t == 0.5));
        // The exported model computes what the run's own export computes.
        let trained = fs::read(run_dir.join("model.onnx")).unwrap();
        assert_eq!(fs::metadata(&onnx).unwrap().len(), done.onnx_bytes as u64);
        let own = hark::model::Model::from_bytes(&trained, "model.onnx").unwrap();
        assert_eq!(own.metadata().classes, meta.classes);
        assert_eq!(own.metadata().thresholds, meta.thresholds);
        let frames: Vec<f32> = (0..64 * 20)
            .map(|i| ((i * 37 % 101) as f32) * 0.1 - 8.0)
            .collect();
        let (x, y) = (
            model.run_sequence(&frames).unwrap(),
            own.run_sequence(&frames).unwrap(),
        );
        assert_eq!(x.len(), y.len());
        assert!(x.iter().zip(&y).all(|(a, b)| (a - b).abs() < 1e-6));

        let card = fs::read_to_string(tmp.path().join("models").join("tiny.md")).unwrap();
        assert_eq!(done.card, tmp.path().join("models").join("tiny.md"));
        assert!(card.starts_with("# tiny\n"), "{card}");
        for c in &meta.classes {
            assert!(card.contains(&format!("| {c} | ")), "{c}");
        }
        assert!(card.contains("| tone | 0.5 |"), "{card}");
        let run = load_trained(&run_dir).unwrap();
        let ma = streaming_net(&run.outcome).multiply_adds_per_hop();
        assert_eq!(done.architecture.multiply_adds_per_hop, ma);
        assert!(
            card.contains(&format!("| multiply-adds per hop (10 ms) | {ma} |")),
            "{card}"
        );
        assert!(card.contains(&format!("| file size | {} bytes |", done.onnx_bytes)));
        assert!(card.contains("trained on synthetic sounds only"), "{card}");
        assert!(card.contains("1 layer(s) × 32 hidden"));
        // The figures of metrics.json and summary.json.
        let history: Vec<EpochRecord> =
            serde_json::from_slice(&fs::read(run_dir.join("metrics.json")).unwrap()).unwrap();
        assert_eq!(history.len(), 3);
        for r in &history {
            assert!(
                card.contains(&format!(
                    "| {} | {} | {:.4} | {:.4} | {:.3} | {:.3} |",
                    r.stage,
                    r.epoch,
                    r.train_loss,
                    r.val_loss,
                    r.val_balanced_accuracy,
                    r.val_macro_f1
                )),
                "{r:?}"
            );
        }
        let summary: serde_json::Value =
            serde_json::from_slice(&fs::read(run_dir.join("summary.json")).unwrap()).unwrap();
        let m: WindowMetrics = serde_json::from_value(summary["val_metrics"].clone()).unwrap();
        assert!(card.contains(&format!("balanced accuracy {:.3}", m.balanced_accuracy)));
        for c in &m.classes {
            assert!(card.contains(&format!(
                "| {} | {} | {:.3} | {:.3} | {:.3} |",
                c.class, c.support, c.precision, c.recall, c.f1
            )));
        }
        assert!(card.contains("```toml\n"));
        assert!(card.contains(&format!(
            "hark-train export {} -o {}",
            run_dir.display(),
            onnx.display()
        )));

        // Thresholds override.
        let th = tmp.path().join("th.json");
        fs::write(&th, r#"{"tone": 0.6, "chirp": 0.7, "noise_burst": 0.25}"#).unwrap();
        let onnx2 = tmp.path().join("tuned.onnx");
        export_run(&run_dir, &onnx2, Some(&th)).unwrap();
        let model = hark::model::Model::load(&onnx2).unwrap();
        let t = &model.metadata().thresholds;
        assert_eq!((t["tone"], t["chirp"], t["noise_burst"]), (0.6, 0.7, 0.25));
        let card = fs::read_to_string(tmp.path().join("tuned.md")).unwrap();
        assert!(card.contains("| chirp | 0.7 |"), "{card}");
        assert!(card.contains(&format!("--thresholds {}", th.display())));

        // Bad thresholds files are errors naming the problem, and write nothing.
        for (text, needle) in [
            (
                r#"{"tone": 0.6, "chirp": 0.7, "noise_burst": 0.2, "dog": 0.5}"#,
                "\"dog\" is not an event class",
            ),
            (
                r#"{"tone": 1.5, "chirp": 0.7, "noise_burst": 0.2}"#,
                "threshold 1.5 for \"tone\" is not in (0, 1)",
            ),
            (
                r#"{"tone": 0.6, "chirp": 0.7, "noise_burst": 0.2, "background": 0.5}"#,
                "\"background\" is not an event class",
            ),
            (r#"{"tone": 0.6}"#, "no threshold for chirp, noise_burst"),
            (r#"[0.5]"#, "not a JSON object"),
        ] {
            fs::write(&th, text).unwrap();
            let bad = tmp.path().join("bad.onnx");
            let e = export_run(&run_dir, &bad, Some(&th))
                .unwrap_err()
                .to_string();
            assert!(e.contains(needle), "{text}: {e}");
            assert!(e.contains("th.json"), "{e}");
            assert!(!bad.exists());
        }
    }

    #[test]
    fn a_folder_without_checkpoint_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let onnx = tmp.path().join("x.onnx");
        let e = export_run(tmp.path(), &onnx, None).unwrap_err().to_string();
        assert!(e.contains("no checkpoint"), "{e}");
        let e = export_run(&tmp.path().join("absent"), &onnx, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no checkpoint"), "{e}");
        // A checkpoint without a finished run.
        fs::create_dir_all(tmp.path().join("checkpoint")).unwrap();
        fs::write(tmp.path().join("checkpoint/state.json"), "{}").unwrap();
        fs::write(
            tmp.path().join("config.toml"),
            tiny_config(Method::Centroid).to_toml(),
        )
        .unwrap();
        let e = export_run(tmp.path(), &onnx, None).unwrap_err().to_string();
        assert!(e.contains("has not finished"), "{e}");
        assert!(!onnx.exists());
    }

    #[test]
    fn manifest_packages_licences_and_files_per_class() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(
            tmp.path().join("sources.tsv"),
            "file\tclass\tpackage\tversion\tlicense\n\
             a.flac\tglass\tpkg-a\t1.0\tGPL-2+\n\
             b.flac\tglass\tpkg-a\t1.0\tGPL-2+\n\
             c.flac\tcrowd\tpkg-b\t2.1\tCC0\n\
             d.flac\thum\tpkg-b\t2.1\tCC0\n\
             e.flac\tjunk\tpkg-b\t2.1\tCC0\n",
        )
        .unwrap();
        let mut map = ClassMap::default();
        map.map.insert("glass".into(), "glass_break".into());
        map.map.insert("crowd".into(), "background".into());
        map.map.insert("hum".into(), "negative".into());
        map.map.insert("junk".into(), "drop".into());
        let src = Source::Manifest {
            path: "sources.tsv".into(),
        };
        let s = summarise_source(&src, tmp.path(), &map);
        assert_eq!(s.problem, None);
        let pk = s.packages.unwrap();
        assert_eq!(pk.len(), 2);
        assert_eq!(
            (
                pk[0].package.as_str(),
                pk[0].version.as_str(),
                pk[0].license.as_str()
            ),
            ("pkg-a", "1.0", "GPL-2+")
        );
        assert_eq!(counts(&pk[0].files), "glass_break 2");
        assert_eq!(
            counts(&pk[1].files),
            "background 1, dropped 1, hard negatives 1"
        );
        // A manifest that is not there says so.
        let gone = summarise_source(&src, &tmp.path().join("nowhere"), &map);
        assert!(gone.problem.is_some());
    }

    /// The card of hand-made figures: sections, tables, weaknesses.
    #[test]
    fn card_of_hand_made_figures() {
        let mut cfg = tiny_config(Method::WeightedCe);
        cfg.data.sources.push(Source::Manifest {
            path: "data/sources.tsv".into(),
        });
        let classes: Vec<String> = ["background", "glass_break", "dog_bark"]
            .map(String::from)
            .to_vec();
        let metadata = ModelMetadata {
            format_version: hark::model::FORMAT_VERSION,
            classes: classes.clone(),
            background: Some("background".into()),
            thresholds: [("glass_break".into(), 0.6), ("dog_bark".into(), 0.4)].into(),
            frontend: cfg.frontend.clone(),
            training: serde_json::json!({"trainer": "hark-trainer 9.9"}),
        };
        // 10 background windows right; glass_break 4 of 5; dog_bark 1 of 2.
        let reference = [vec![0; 10], vec![1; 5], vec![2; 2]].concat();
        let predicted = [vec![0; 10], vec![1, 1, 1, 1, 0], vec![2, 0]].concat();
        let m = window_metrics(&reference, &predicted, &classes);
        let data = RunData {
            classes: classes.clone(),
            train_examples: vec![100, 50, 6],
            val_examples: vec![10, 5, 2],
            clips: [
                (
                    "background".into(),
                    ClipCounts {
                        train: 30,
                        val: 5,
                        test: 0,
                    },
                ),
                (
                    "glass_break".into(),
                    ClipCounts {
                        train: 40,
                        val: 4,
                        test: 0,
                    },
                ),
                (
                    "dog_bark".into(),
                    ClipCounts {
                        train: 3,
                        val: 1,
                        test: 0,
                    },
                ),
            ]
            .into(),
            mean: vec![0.0; 64],
            std: vec![1.0; 64],
            base_dir: ".".into(),
            config_path: None,
        };
        let history = vec![EpochRecord {
            stage: "weighted_ce".into(),
            epoch: 1,
            train_loss: 1.25,
            val_loss: 1.5,
            val_balanced_accuracy: 0.75,
            val_accuracy: 0.8,
            val_macro_f1: 0.7,
            val_mean_ap: 0.6,
            seconds: 1.0,
        }];
        let sources = vec![SourceSummary {
            description: "manifest `data/sources.tsv`".into(),
            packages: Some(vec![PackageRow {
                package: "sound-pkg".into(),
                version: "1.2-3".into(),
                license: "CC-BY-4.0".into(),
                files: [("glass_break".into(), 7)].into(),
            }]),
            files: [("glass_break".into(), 7)].into(),
            problem: None,
        }];
        let part = RunPart {
            label: "r".into(),
            method: Method::WeightedCe,
            config_toml: "method = \"weighted_ce\"\n",
            history: &history,
            val_metrics: &m,
        };
        let card = model_card(&CardInput {
            name: "demo",
            file_name: "demo.onnx",
            config: &cfg,
            metadata: &metadata,
            architecture: Architecture {
                n_mels: 64,
                layers: 2,
                hidden: 48,
                embedding: 16,
                n_classes: 3,
                runs: 1,
                parameters: 12345,
                cnn: None,
                multiply_adds_per_hop: 67890,
                file_bytes: 4242,
            },
            runs: std::slice::from_ref(&part),
            data: &data,
            sources: &sources,
            reproduce: "hark-train train --config c.toml --out r",
        });
        for needle in [
            "# demo\n",
            "trained by hark-trainer 9.9 with the `weighted_ce` method.",
            "| background | (background) | 30 | 5 | 100 | 10 |",
            "| glass_break | 0.6 | 40 | 4 | 50 | 5 |",
            "| dog_bark | 0.4 | 3 | 1 | 6 | 2 |",
            "`log-mel 64 bands",
            "| LSTM | 2 layer(s) × 48 hidden (input 64 bands) |",
            "| classifier | linear 16 → 3 classes, softmax |",
            "| parameters | 12345 |",
            "| multiply-adds per hop (10 ms) | 67890 |",
            "| file size | 4242 bytes |",
            "Method `weighted_ce`",
            "- stage `weighted_ce`: 1 epochs; best validation balanced accuracy 0.750 (epoch 1)",
            "```toml\nmethod = \"weighted_ce\"\n```",
            "The training data includes synthetic sounds",
            "| sound-pkg | 1.2-3 | CC-BY-4.0 | glass_break 7 |",
            "| glass_break | 5 | 1.000 | 0.800 | 0.889 |",
            "| dog_bark | 2 | 1.000 | 0.500 | 0.667 |",
            "| glass_break | 1 | 4 | 0 |",
            "| weighted_ce | 1 | 1.2500 | 1.5000 | 0.750 | 0.700 |",
            "`dog_bark`: only 3 training clips (1 for validation).",
            "Imbalanced training data: `dog_bark` has 6 training windows, `glass_break` 50.",
            "`dog_bark`: the validation figures rest on 2 windows only.",
            "`dog_bark`: validation precision 1.000, recall 0.500.",
            "not from an independent test set",
            "## Reproduce\n\n```\nhark-train train --config c.toml --out r\n```",
        ] {
            assert!(card.contains(needle), "missing {needle:?} in\n{card}");
        }
        assert!(!card.contains("synthetic sounds only"));
        assert!(!card.contains("`glass_break`: only"));
        // An unreadable source is said to be unavailable.
        let gone = [SourceSummary {
            description: "manifest `x.tsv`".into(),
            packages: None,
            files: BTreeMap::new(),
            problem: Some("No such file or directory".into()),
        }];
        let card = model_card(&CardInput {
            sources: &gone,
            name: "demo",
            file_name: "demo.onnx",
            config: &cfg,
            metadata: &metadata,
            architecture: Architecture {
                n_mels: 64,
                layers: 1,
                hidden: 8,
                embedding: 4,
                n_classes: 3,
                runs: 1,
                parameters: 1,
                cnn: None,
                multiply_adds_per_hop: 1,
                file_bytes: 1,
            },
            runs: std::slice::from_ref(&part),
            data: &data,
            reproduce: "",
        });
        assert!(card.contains("The source is unavailable now (No such file or directory)"));
    }
}
