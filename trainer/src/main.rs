//! The `hark-train` command.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hark::frontend::FrontendConfig;
use hark_trainer::features::features_of_file;

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
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Features { files } => {
            let cfg = FrontendConfig::default();
            for f in files {
                let feats = features_of_file(&cfg, &f)
                    .with_context(|| format!("features of {}", f.display()))?;
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
    }
}
