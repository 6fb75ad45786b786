//! The `hark-train` command.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use hark::frontend::FrontendConfig;
use hark_trainer::card::export_run;
use hark_trainer::features::features_of_file;
use hark_trainer::train::{EpochRecord, Progress, RunOptions, TrainConfig, run};
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
            "{:<11} epoch {:>3}  loss {:.4}  val loss {:.4}  val balanced acc {:.3}  val macro F1 {:.3}  ({:.2} s)",
            r.stage,
            r.epoch,
            r.train_loss,
            r.val_loss,
            r.val_balanced_accuracy,
            r.val_macro_f1,
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

fn train(config: PathBuf, out: Option<PathBuf>, resume: bool, quiet: bool) -> Result<()> {
    let cfg = TrainConfig::load(&config)
        .with_context(|| format!("reading the configuration {}", config.display()))?;
    let base_dir = config
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let out = out.unwrap_or_else(|| {
        let stem = config.file_stem().unwrap_or_default().to_string_lossy();
        PathBuf::from("runs").join(stem.as_ref())
    });
    if resume && !out.join("checkpoint").join("state.json").is_file() {
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
    let outcome = run(&cfg, &opts, &mut |p| reporter.report(p));
    if let Some(b) = reporter.bar.take() {
        b.finish_and_clear();
    }
    let outcome = outcome.with_context(|| format!("training with {}", config.display()))?;
    let m = &outcome.val_metrics;
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
    eprintln!("model written to {}", out.join("model.onnx").display());
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

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Features { files } => features(files),
        Command::Train {
            config,
            out,
            resume,
            quiet,
        } => train(config, out, resume, quiet),
        Command::Export {
            run_dir,
            output,
            thresholds,
        } => export(run_dir, output, thresholds),
    }
}
