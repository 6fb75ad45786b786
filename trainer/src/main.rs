//! The `hark-train` command.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hark::frontend::FrontendConfig;
use hark_trainer::card::export_run;
use hark_trainer::ensemble;
use hark_trainer::features::features_of_file;
use hark_trainer::mixtures::{self, MixtureConfig};
use hark_trainer::train::{
    EpochRecord, Method, Progress, RunOptions, TrainConfig, load_data_clips, run,
};
use indicatif::{ProgressBar, ProgressStyle};

/// hark-train: data preparation, training, evaluation and export for hark.
#[derive(Parser, Debug)]
#[command(name = "hark-train", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Compute the training features of audio files (the runtime's frontend) and print a
    /// JSON line per file: frames and per-band mean.
    Features {
        /// Audio files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Train a model from a TOML configuration and export it as ONNX (`model.onnx` in the
    /// output folder, beside `config.toml`, `metrics.csv`, `metrics.json`, `summary.json`,
    /// `checkpoint/` and, unless `plots = false`, the PNG plots `loss_curves.png`,
    /// `confusion_matrix.png` and `embeddings_pca.png`).
    Train {
        /// The training configuration (TOML); relative paths in it are resolved against its
        /// folder.
        #[arg(long)]
        config: PathBuf,
        /// Output folder. Default `runs/<config file stem>`.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Continue from the checkpoint in the output folder.
        #[arg(long)]
        resume: bool,
        /// No progress bars and no per-epoch lines (warnings and the final summary are still
        /// printed). Progress bars are shown only when standard error is a terminal.
        #[arg(short, long)]
        quiet: bool,
        /// Override the configuration's method: `centroid`, `weighted_ce` (the baseline), `ce`
        /// or `focal`.
        #[arg(long)]
        method: Option<String>,
    },
    /// Export a finished training run (its `config.toml` and best checkpoint) as ONNX, with
    /// its model card (markdown) beside it (`NAME.md` for `NAME.onnx`).
    Export {
        /// The training output folder.
        run_dir: PathBuf,
        /// The ONNX file to write, e.g. `models/NAME.onnx`.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// JSON object of detection thresholds, `{"class": 0.6, ...}`, one for every event
        /// class, each in (0, 1); replaces the run's thresholds.
        #[arg(long)]
        thresholds: Option<PathBuf>,
    },
    /// Average trained runs into one model: single LSTM runs of one shape, classes and
    /// features (e.g. the centroid model and the class-weighted baseline of one
    /// configuration); the model's scores are the mean of the runs' softmax scores. Writes
    /// its model card beside it (`NAME.md` for `NAME.onnx`).
    Merge {
        /// The training output folders (two or more).
        #[arg(required = true, num_args = 2..)]
        run_dirs: Vec<PathBuf>,
        /// The ONNX file to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// JSON object of detection thresholds, as for `export`; default: the first run's.
        #[arg(long)]
        thresholds: Option<PathBuf>,
    },
    /// Write evaluation audio the DCASE 2017 Task 2 way from one split of a configuration's
    /// data: 30-second mixtures with one event each (-6, 0, +6 dB), long background-only
    /// files with hard negatives (false alarms per hour), `reference.tsv`, `manifest.json`.
    Mixtures {
        /// The training configuration (its data, class map and split).
        #[arg(long)]
        config: PathBuf,
        /// `test` (held-out groups), `val` (validation groups) or `train`.
        #[arg(long)]
        split: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Mixtures per event clip.
        #[arg(long, default_value_t = 3)]
        per_event: usize,
        /// Minutes of background-only audio.
        #[arg(long, default_value_t = 60.0)]
        background_minutes: f32,
        /// Seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Score `hark detect`'s JSON lines on a mixture folder: per-class event F1 and error rate
    /// (onset only, 500 ms collar) and false alarms per hour.
    Score {
        /// The mixture folder.
        mixtures: PathBuf,
        /// The JSON lines of `hark detect` on its files (`-` for stdin).
        detections: PathBuf,
        /// Also write the figures as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Choose per-class thresholds of a model on a validation mixture folder and write them
    /// as JSON (for `hark-train export --thresholds`).
    Tune {
        /// The ONNX model.
        #[arg(long)]
        model: PathBuf,
        /// The validation mixture folder.
        #[arg(long)]
        mixtures: PathBuf,
        /// Output JSON of thresholds.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// False-alarm budget per hour, shared by the event classes.
        #[arg(long, default_value_t = 1.0)]
        max_false_alarms_per_hour: f64,
    },
    /// Write a short demonstration recording (WAV): one clip of every class from a split of
    /// a configuration's data over real background, with `NAME.tsv` of its events beside it.
    Demo {
        /// The training configuration.
        #[arg(long)]
        config: PathBuf,
        /// `test` (held-out groups), `val` or `train` (how well the model fits its own training data).
        #[arg(long, default_value = "test")]
        split: String,
        /// The WAV file to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        /// Seconds between events.
        #[arg(long, default_value_t = 6.0)]
        spacing: f32,
        /// Event-to-background ratio, dB.
        #[arg(long, default_value_t = 6.0)]
        ebr: f32,
    },
    /// Add the test evaluation (the JSON of `hark-train score` for one or more methods) to a
    /// model card, before its known weaknesses.
    CardEval {
        /// The model card (markdown), rewritten in place.
        #[arg(long)]
        card: PathBuf,
        /// `NAME=SCORE.json`, once per method, in the order to show.
        #[arg(long = "method", required = true)]
        methods: Vec<String>,
        /// The test mixture folder the scores are of.
        #[arg(long)]
        mixtures: PathBuf,
        /// The command that reproduces the figures.
        #[arg(long)]
        command: String,
        /// A markdown file of further known weaknesses, one `- ` item per line.
        #[arg(long)]
        weaknesses: Option<PathBuf>,
    },
    /// Compare the class-imbalance remedies: every technique trained with the same network
    /// and budget on training sets of fixed class ratios over several seeds, evaluated on one
    /// balanced held-out test set; writes `results.md`, `results.csv` and `results.svg` (and
    /// every run's result as JSON under `runs/`) into the output folder.
    Experiment {
        /// The experiment configuration (TOML), e.g. `trainer/configs/experiment.toml`.
        #[arg(long, required_unless_present = "quick")]
        config: Option<PathBuf>,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// Skip the runs whose result is already in the output folder.
        #[arg(long)]
        resume: bool,
        /// Runs at a time. Default: the number of cores.
        #[arg(long)]
        threads: Option<usize>,
        /// The quick mode (`trainer/configs/experiment-quick.toml`, built in): every technique
        /// on tiny generated data, one seed; replaces `--config`.
        #[arg(long)]
        quick: bool,
    },
}

fn experiment(
    config: Option<PathBuf>,
    out: PathBuf,
    resume: bool,
    threads: Option<usize>,
    quick: bool,
) -> Result<()> {
    use hark_trainer::experiment::{ExperimentConfig, ExperimentOptions, QUICK_CONFIG};
    let (cfg, base_dir) = if quick {
        (
            ExperimentConfig::from_toml(QUICK_CONFIG)
                .context("the built-in quick configuration")?,
            PathBuf::from("."),
        )
    } else {
        let path = config.context("--config is needed without --quick")?;
        (
            hark_trainer::experiment::load(&path)?,
            config_base_dir(&path),
        )
    };
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let command = std::iter::once("hark-train".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let opts = ExperimentOptions {
        out_dir: out.clone(),
        base_dir,
        resume,
        threads,
        command,
    };
    let t0 = std::time::Instant::now();
    let rows = hark_trainer::experiment::run_experiment(&cfg, &opts, &|m| eprintln!("{m}"))?;
    eprintln!(
        "{} rows; results in {} ({:.1} min)",
        rows.len(),
        out.join("results.md").display(),
        t0.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}

fn features(files: Vec<PathBuf>) -> Result<()> {
    let cfg = FrontendConfig::default();
    for f in files {
        let feats =
            features_of_file(&cfg, &f).with_context(|| format!("features of {}", f.display()))?;
        let n = feats.n_frames().max(1) as f32;
        let band_mean: Vec<f32> = (0..cfg.n_mels)
            .map(|m| {
                (0..feats.n_frames())
                    .map(|i| feats.frame(i)[m])
                    .sum::<f32>()
                    / n
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({"file": f.display().to_string(), "frames": feats.n_frames(), "band_mean": band_mean})
        );
    }
    Ok(())
}

/// What `hark-train train` prints while it runs: a progress bar per epoch (batches, running
/// loss) when standard error is a terminal, and a line per epoch.
struct Reporter {
    quiet: bool,
    bars: bool,
    bar: Option<ProgressBar>,
}

impl Reporter {
    fn new(quiet: bool) -> Self {
        Self {
            quiet,
            bars: !quiet && std::io::stderr().is_terminal(),
            bar: None,
        }
    }

    /// Prints a line without tearing the bar.
    fn line(&self, text: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
    }

    fn epoch_line(r: &EpochRecord) -> String {
        format!(
            "{:<11} epoch {:>3}  loss {:.4}  val loss {:.4}  val balanced acc {:.3}  val macro F1 {:.3}  val mean AP {:.3}  ({:.2} s)",
            r.stage,
            r.epoch,
            r.train_loss,
            r.val_loss,
            r.val_balanced_accuracy,
            r.val_macro_f1,
            r.val_mean_ap,
            r.seconds
        )
    }

    fn report(&mut self, p: Progress) {
        match p {
            Progress::Skipped(s) => self.line(&format!(
                "warning: skipping {}: {}",
                s.path.display(),
                s.reason
            )),
            Progress::Info(m) => {
                if !self.quiet || m.starts_with("warning") {
                    self.line(&m)
                }
            }
            Progress::Batch {
                stage,
                epoch,
                batch,
                batches,
                loss,
            } => {
                if !self.bars {
                    return;
                }
                if batch == 1 || self.bar.is_none() {
                    if let Some(b) = self.bar.take() {
                        b.finish_and_clear();
                    }
                    let b = ProgressBar::new(batches as u64).with_style(
                        ProgressStyle::with_template(
                            "{prefix:<11} {msg} [{bar:30}] {pos}/{len} batches {elapsed} (eta {eta})",
                        )
                        .expect("a valid template")
                        .progress_chars("=> "),
                    );
                    b.set_prefix(stage.to_string());
                    self.bar = Some(b);
                }
                if let Some(b) = &self.bar {
                    b.set_message(format!("epoch {epoch:>3}  loss {loss:.4}"));
                    b.set_position(batch as u64);
                }
            }
            Progress::Epoch(r) => {
                if let Some(b) = self.bar.take() {
                    b.finish_and_clear();
                }
                if !self.quiet {
                    eprintln!("{}", Self::epoch_line(r));
                }
            }
        }
    }
}

fn train(
    config: PathBuf,
    out: Option<PathBuf>,
    resume: bool,
    method: Option<String>,
    quiet: bool,
) -> Result<()> {
    let mut cfg = TrainConfig::load(&config)
        .with_context(|| format!("reading the configuration {}", config.display()))?;
    if let Some(m) = method {
        cfg.method = [
            Method::Centroid,
            Method::WeightedCe,
            Method::Ce,
            Method::Focal,
        ]
        .into_iter()
        .find(|x| x.name() == m)
        .with_context(|| format!("--method {m:?}: expected centroid, weighted_ce, ce or focal"))?;
    }
    let base_dir = config_base_dir(&config);
    let out = out.unwrap_or_else(|| {
        let stem = config.file_stem().unwrap_or_default().to_string_lossy();
        PathBuf::from("runs").join(stem.as_ref())
    });
    // An ensemble keeps a checkpoint per member, the first in `member0/`.
    let first = if cfg.ensemble.is_some() {
        out.join("member0")
    } else {
        out.clone()
    };
    if resume && !first.join("checkpoint").join("state.json").is_file() {
        bail!("--resume: no checkpoint in {}", out.display());
    }
    let opts = RunOptions {
        out_dir: Some(out.clone()),
        resume,
        base_dir,
        stop_after_epochs: None,
        config_path: Some(config.clone()),
    };
    eprintln!("training ({:?}) into {}", cfg.method, out.display());
    let mut reporter = Reporter::new(quiet);
    let outcome = if cfg.ensemble.is_some() {
        ensemble::run(&cfg, &opts, &mut |p| reporter.report(p)).map(|o| o.val_metrics)
    } else {
        run(&cfg, &opts, &mut |p| reporter.report(p)).map(|o| o.val_metrics)
    };
    if let Some(b) = reporter.bar.take() {
        b.finish_and_clear();
    }
    let m = &outcome.with_context(|| format!("training with {}", config.display()))?;
    eprintln!(
        "validation: balanced accuracy {:.3}, accuracy {:.3}, macro F1 {:.3}",
        m.balanced_accuracy, m.accuracy, m.macro_f1
    );
    for c in &m.classes {
        eprintln!(
            "  {:<16} support {:>4}  precision {:.3}  recall {:.3}  F1 {:.3}",
            c.class, c.support, c.precision, c.recall, c.f1
        );
    }
    let model = out.join("model.onnx");
    if model.is_file() {
        eprintln!("model written to {}", model.display());
    }
    Ok(())
}

fn export(run_dir: PathBuf, output: PathBuf, thresholds: Option<PathBuf>) -> Result<()> {
    let done = export_run(&run_dir, &output, thresholds.as_deref())
        .with_context(|| format!("exporting {}", run_dir.display()))?;
    eprintln!(
        "model written to {} ({} bytes), model card to {}",
        done.onnx.display(),
        done.onnx_bytes,
        done.card.display()
    );
    Ok(())
}

/// The folder relative paths of a configuration are resolved against: its own.
fn config_base_dir(config: &std::path::Path) -> PathBuf {
    config
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn make_mixtures(
    config: PathBuf,
    split: String,
    out: PathBuf,
    per_event: usize,
    background_minutes: f32,
    seed: u64,
) -> Result<()> {
    let (cfg, chosen) = split_clips(&config, &split)?;
    let classes = cfg
        .data
        .classes
        .clone()
        .unwrap_or_else(|| hark_trainer::examples::class_list(&chosen));
    let mcfg = MixtureConfig {
        per_event,
        background_minutes,
        seed,
        ..Default::default()
    };
    let m = mixtures::make(&chosen, &classes, &mcfg, &out)
        .with_context(|| format!("making {split} mixtures in {}", out.display()))?;
    eprintln!(
        "{} mixtures ({} event clips: {:?}), {:.0} s of background from {} clips with {} hard negatives, in {}",
        m.mixtures.len(),
        m.event_clips.values().sum::<usize>(),
        m.event_clips,
        m.background_seconds,
        m.background_clips,
        m.negative_clips,
        out.display()
    );
    Ok(())
}

fn split_clips(
    config: &std::path::Path,
    split: &str,
) -> Result<(TrainConfig, Vec<hark_trainer::data::Clip>)> {
    let cfg = TrainConfig::load(config)
        .with_context(|| format!("reading the configuration {}", config.display()))?;
    let base_dir = config_base_dir(config);
    let clips = load_data_clips(&cfg, &base_dir, &mut |p| {
        if let Progress::Skipped(s) = p {
            eprintln!("warning: skipping {}: {}", s.path.display(), s.reason)
        }
    })?;
    let (dev, test) = cfg.data.split.split_test(&clips);
    let chosen = match split {
        "test" => test,
        "val" => cfg.data.split.split_clips(&dev).1,
        "train" => cfg.data.split.split_clips(&dev).0,
        other => bail!("--split {other:?}: expected test, val or train"),
    };
    Ok((cfg, chosen))
}

fn demo(config: PathBuf, split: String, output: PathBuf, spacing: f32, ebr: f32) -> Result<()> {
    let (cfg, clips) = split_clips(&config, &split)?;
    let classes = cfg
        .data
        .classes
        .clone()
        .unwrap_or_else(|| hark_trainer::examples::class_list(&clips));
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let (x, refs) = mixtures::demo(&clips, &classes, spacing, ebr, &name, cfg.seed)?;
    hark_trainer::data::write_wav(&output, &x, 16_000)
        .with_context(|| format!("writing {}", output.display()))?;
    let tsv = output.with_extension("tsv");
    let mut t = String::from("onset\toffset\tclass\tsource\n");
    for r in &refs {
        t.push_str(&format!(
            "{:.3}\t{:.3}\t{}\t{}\n",
            r.onset, r.offset, r.class, r.source
        ));
    }
    std::fs::write(&tsv, t).with_context(|| format!("writing {}", tsv.display()))?;
    eprintln!(
        "{} ({:.1} s, {} events) and {} written",
        output.display(),
        x.len() as f32 / 16_000.0,
        refs.len(),
        tsv.display()
    );
    Ok(())
}

fn score(dir: PathBuf, detections: PathBuf, json: Option<PathBuf>) -> Result<()> {
    let manifest = mixtures::read_manifest(&dir)?;
    let text = if detections.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(&detections)
            .with_context(|| format!("reading {}", detections.display()))?
    };
    let dets = mixtures::parse_detections(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", detections.display()))?;
    let s = mixtures::score(&manifest, &dets).map_err(anyhow::Error::msg)?;
    print!("{}", mixtures::score_table(&s));
    eprintln!(
        "({:.2} h of background-only audio; onset-only matching, 500 ms collar)",
        s.background_hours
    );
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_vec_pretty(&s)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

fn tune(model: PathBuf, dir: PathBuf, output: PathBuf, budget: f64) -> Result<()> {
    let m = hark::model::Model::load(&model)?;
    let manifest = mixtures::read_manifest(&dir)?;
    let t = hark_trainer::tune::tune(&m, &dir, &manifest, budget)?;
    for (c, cands) in &t.candidates {
        let chosen = t.thresholds[c];
        let at = cands.iter().find(|x| x.threshold == chosen);
        eprintln!(
            "{c:<14} threshold {chosen:.2}  validation F1 {:.3}  false alarms/h {:.2}",
            at.map(|x| x.f1).unwrap_or(0.0),
            at.map(|x| x.false_alarms_per_hour).unwrap_or(0.0)
        );
    }
    std::fs::write(&output, serde_json::to_vec_pretty(&t.thresholds)?)
        .with_context(|| format!("writing {}", output.display()))?;
    let detail = output.with_extension("candidates.json");
    std::fs::write(&detail, serde_json::to_vec_pretty(&t)?)
        .with_context(|| format!("writing {}", detail.display()))?;
    Ok(())
}

fn card_eval(
    card: PathBuf,
    methods: Vec<String>,
    dir: PathBuf,
    command: String,
    weaknesses: Option<PathBuf>,
) -> Result<()> {
    let manifest = mixtures::read_manifest(&dir)?;
    let mut scores = Vec::new();
    for m in methods {
        let (name, path) = m
            .split_once('=')
            .with_context(|| format!("--method {m:?}: expected NAME=SCORE.json"))?;
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let sc: mixtures::Score =
            serde_json::from_str(&text).with_context(|| format!("{path}: not a score"))?;
        scores.push((name.to_string(), sc));
    }
    let extra: Vec<String> = match &weaknesses {
        Some(p) => std::fs::read_to_string(p)
            .with_context(|| format!("reading {}", p.display()))?
            .lines()
            .filter_map(|l| l.strip_prefix("- ").map(str::to_string))
            .collect(),
        None => Vec::new(),
    };
    let text =
        std::fs::read_to_string(&card).with_context(|| format!("reading {}", card.display()))?;
    let section = hark_trainer::card::evaluation_section(&scores, &manifest, &command);
    let out = hark_trainer::card::insert_evaluation(&text, &section, &extra);
    std::fs::write(&card, out).with_context(|| format!("writing {}", card.display()))?;
    eprintln!("evaluation added to {}", card.display());
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Features { files } => features(files),
        Command::Train {
            config,
            out,
            resume,
            method,
            quiet,
        } => train(config, out, resume, method, quiet),
        Command::Export {
            run_dir,
            output,
            thresholds,
        } => export(run_dir, output, thresholds),
        Command::Merge {
            run_dirs,
            output,
            thresholds,
        } => {
            let done = hark_trainer::card::merge_runs(&run_dirs, &output, thresholds.as_deref())
                .context("merging runs")?;
            eprintln!(
                "model written to {} ({} bytes): the mean of {} runs; model card {}",
                output.display(),
                done.onnx_bytes,
                run_dirs.len(),
                done.card.display()
            );
            Ok(())
        }
        Command::Mixtures {
            config,
            split,
            out,
            per_event,
            background_minutes,
            seed,
        } => make_mixtures(config, split, out, per_event, background_minutes, seed),
        Command::Score {
            mixtures,
            detections,
            json,
        } => score(mixtures, detections, json),
        Command::Tune {
            model,
            mixtures,
            output,
            max_false_alarms_per_hour,
        } => tune(model, mixtures, output, max_false_alarms_per_hour),
        Command::Demo {
            config,
            split,
            output,
            spacing,
            ebr,
        } => demo(config, split, output, spacing, ebr),
        Command::CardEval {
            card,
            methods,
            mixtures,
            command,
            weaknesses,
        } => card_eval(card, methods, mixtures, command, weaknesses),
        Command::Experiment {
            config,
            out,
            resume,
            threads,
            quick,
        } => experiment(config, out, resume, threads, quick),
    }
}
