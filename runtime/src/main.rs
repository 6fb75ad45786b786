//! The `hark` command. A thin layer over the library: arguments in, a validated request,
//! library calls, errors with context out.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hark::audio::AudioReader;
use hark::frontend::{Frontend, FrontendConfig};
use hark::model::{EngineChoice, Model};

mod alloc_count;
mod bench;
mod detect;
mod listen;

#[global_allocator]
static ALLOCATOR: alloc_count::Counting = alloc_count::Counting;
use detect::DetectArgs;
use listen::ListenArgs;

/// hark: real-time detection of rare sound events.
#[derive(Parser, Debug)]
#[command(name = "hark", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Detect events in audio files (or raw PCM on stdin with FILE "-"): one JSON line per
    /// event on stdout, a summary per file on stderr. Runs far faster than real time.
    Detect(DetectArgs),
    /// Live detection from the microphone (or any input device), as a long-running service:
    /// one JSON line per event with its wall-clock time.
    Listen(ListenArgs),
    /// Decode audio files and compute their log-mel features, streaming hop by hop; prints one
    /// JSON line per file (length, frames, levels) and optionally writes the features.
    Features {
        /// Audio files (WAV, FLAC, OGG Vorbis, MP3; any rate and channel count).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Write each file's features as raw little-endian float32 (64 values a frame) into
        /// this folder, as NAME.logmel.f32.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
    /// Benchmark the whole per-hop pipeline: latency percentiles, real-time factor, peak
    /// memory, allocations per hop.
    Bench(bench::BenchArgs),
    /// Show a model's classes, thresholds, features, state size and provenance.
    Info {
        /// The model file (ONNX).
        model: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Engine to step the model with (shown as the one in use): auto, native, tract.
        #[arg(long, value_enum, default_value = "auto")]
        engine: EngineChoice,
    },
}

/// Exit codes (all commands): 0 all went well; 1 an input could not be read or was damaged
/// (the others were processed, and every event found before the problem was printed);
/// 2 bad usage, configuration or model (nothing was processed).
fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("hark: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<bool> {
    match cli.command {
        Command::Detect(args) => detect::run(&args),
        Command::Listen(args) => listen::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Features { files, out_dir } => features(&files, out_dir.as_deref()),
        Command::Info {
            model,
            json,
            engine,
        } => info(&model, json, engine),
    }
}

fn features(files: &[PathBuf], out_dir: Option<&std::path::Path>) -> Result<bool> {
    if let Some(d) = out_dir {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let mut frontend = Frontend::new(FrontendConfig::default())?;
    let mut all_ok = true;
    for path in files {
        frontend.reset();
        let mut written = Vec::new();
        let (mut frames, mut peak, mut sum_sq) = (0u64, 0.0f32, 0.0f64);
        let mut reader = match AudioReader::open(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("hark: {e}");
                all_ok = false;
                continue;
            }
        };
        let mut error = None;
        loop {
            match reader.next_chunk() {
                Ok(Some(chunk)) => {
                    for &s in chunk.iter().filter(|s| s.is_finite()) {
                        peak = peak.max(s.abs());
                        sum_sq += (s as f64) * (s as f64);
                    }
                    frontend.push(chunk, |_, f| {
                        frames += 1;
                        if out_dir.is_some() {
                            written.extend(f.iter().flat_map(|v| v.to_le_bytes()));
                        }
                    })
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let info = reader.info();
        let line = serde_json::json!({
            "file": path.display().to_string(),
            "codec": info.codec,
            "sample_rate": info.sample_rate,
            "channels": info.channels,
            "seconds": frontend.samples_in() as f64 / 16_000.0,
            "frames": frames,
            "rms_dbfs": dbfs((sum_sq / frontend.samples_in().max(1) as f64).sqrt()),
            "peak_dbfs": dbfs(peak as f64),
            "nonfinite_samples": frontend.nonfinite_samples(),
            "skipped_packets": reader.decode_errors(),
        });
        println!("{line}");
        if let Some(d) = out_dir {
            let stem = path
                .file_name()
                .map_or("input".into(), |s| s.to_string_lossy());
            let out = d.join(format!("{stem}.logmel.f32"));
            std::fs::write(&out, &written).with_context(|| format!("writing {}", out.display()))?;
        }
        if let Some(e) = error {
            eprintln!("hark: {e}");
            all_ok = false;
        }
    }
    Ok(all_ok)
}

/// Level in dB relative to full scale, floored at -120 dBFS (digital silence).
fn dbfs(amplitude: f64) -> f64 {
    (20.0 * amplitude.max(1e-6).log10() * 10.0).round() / 10.0
}

fn info(path: &std::path::Path, json: bool, engine: EngineChoice) -> Result<bool> {
    let model = Model::load_with(path, engine)?;
    let meta = model.metadata();
    let (layers, hidden) = model.state_shape();
    if json {
        let v = serde_json::json!({
            "model": model.name(),
            "format_version": meta.format_version,
            "classes": meta.classes,
            "background": meta.background,
            "thresholds": meta.thresholds,
            "frontend": meta.frontend,
            "lstm": {"layers": layers, "hidden": hidden},
            "engine": model.engine(),
            "native_plan": model.native_summary(),
            "native_problem": model.native_problem(),
            "training": meta.training,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(true);
    }
    println!("model:      {}", model.name());
    println!("format:     hark model v{}", meta.format_version);
    println!("features:   {}", meta.frontend);
    println!("state:      [{layers}, 1, {hidden}] (h_in/c_in, carried from hop to hop)");
    println!("engine:     {}", model.engine());
    match (model.native_summary(), model.native_problem()) {
        (Some(plan), _) => println!("native:     {plan}; matches tract on the load probe"),
        (None, Some(why)) => println!("native:     unavailable: {why}"),
        (None, None) => {}
    }
    println!("classes:");
    for (i, c) in meta.classes.iter().enumerate() {
        match meta.thresholds.get(c) {
            Some(t) => println!("  {i:>2} {c:<24} threshold {t}"),
            None => println!("  {i:>2} {c:<24} (background, never reported)"),
        }
    }
    if !meta.training.is_null() {
        println!(
            "training:   {}",
            serde_json::to_string_pretty(&meta.training)?.replace('\n', "\n            ")
        );
    }
    Ok(true)
}
