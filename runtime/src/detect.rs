//! `hark detect`: files (or raw PCM on stdin) through the detector, events as JSON lines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use hark::audio::{AudioReader, ChunkSource, PcmFormat, PcmReader};
use hark::config::Config;
use hark::model::{EngineChoice, Model};
use hark::pipeline::{Detector, EventRecord};
use hark::postprocess::{Event, PostprocessConfig};
use hark::sinks::Sinks;

/// Output format of events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// One JSON object per line (the event contract).
    Json,
    /// An aligned table for people.
    Table,
}

#[derive(Args, Debug)]
pub struct DetectArgs {
    /// Audio files (WAV, FLAC, OGG Vorbis, MP3); "-" reads raw PCM from standard input.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Model file (ONNX). Default: the shipped model (see `hark info`).
    #[arg(long, short)]
    pub model: Option<PathBuf>,
    /// Engine that steps the model: auto (native if it can run the model, else tract),
    /// native, tract. Default: the configuration's runtime.engine, else auto.
    #[arg(long, value_enum)]
    pub engine: Option<EngineChoice>,
    /// Configuration file (TOML): its [postprocess] section sets thresholds, smoothing,
    /// lengths and cooldowns; its [sinks] section sends the events to MQTT, a webhook or a
    /// command as well (with [reconnect]'s back-off); see firmware-config/.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Override one class's threshold: CLASS=VALUE (repeatable).
    #[arg(long = "threshold", value_name = "CLASS=VALUE")]
    pub thresholds: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// Print every class's smoothed score each N hops on stderr (N = --verbose-every), to
    /// tune thresholds.
    #[arg(long, short)]
    pub verbose: bool,
    /// Hops between two lines of --verbose output (10 ms each).
    #[arg(long, default_value_t = 10)]
    pub verbose_every: u64,
    /// Raw PCM sample format on stdin: s16le or f32le.
    #[arg(long, default_value = "s16le")]
    pub raw_format: PcmFormat,
    /// Raw PCM sample rate on stdin, in Hz.
    #[arg(long, default_value_t = 16_000)]
    pub rate: u32,
    /// Raw PCM channel count on stdin.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
}

/// Where the default model is looked for, in order.
pub fn default_model_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("HARK_MODEL") {
        v.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        v.push(dir.join("default.onnx"));
        v.push(dir.join("../share/hark/default.onnx"));
    }
    v.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/default.onnx"));
    v
}

/// Loads `--model` or the default model, to be stepped by the engine `engine` asks for.
pub fn load_model(path: Option<&Path>, engine: EngineChoice) -> Result<Model> {
    if let Some(p) = path {
        return Ok(Model::load_with(p, engine)?);
    }
    let candidates = default_model_candidates();
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(Model::load_with(p, engine)?),
        None => bail!(
            "no model given and no default model found (looked in: {}); pass --model FILE",
            candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The configuration from `--config` (the defaults without it), with `--threshold`
/// overrides applied to its [postprocess] section.
pub fn load_config(config: Option<&Path>, overrides: &[String]) -> Result<Config> {
    let mut cfg = match config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    apply_thresholds(&mut cfg.postprocess, overrides)?;
    Ok(cfg)
}

/// Applies `--threshold CLASS=VALUE` overrides.
pub fn apply_thresholds(cfg: &mut PostprocessConfig, overrides: &[String]) -> Result<()> {
    for o in overrides {
        let (class, value) = o
            .split_once('=')
            .with_context(|| format!("--threshold {o:?}: expected CLASS=VALUE"))?;
        let v: f32 = value
            .parse()
            .with_context(|| format!("--threshold {o:?}: {value:?} is not a number"))?;
        cfg.classes.entry(class.to_string()).or_default().threshold = Some(v);
    }
    Ok(())
}

/// Starts the configured sinks (none without a configuration), saying which on stderr.
pub fn start_sinks(cfg: &Config) -> Result<Sinks> {
    let sinks = Sinks::start(&cfg.sinks, &cfg.reconnect).context("starting the event sinks")?;
    if !sinks.is_empty() {
        eprintln!("hark: events also go to: {}", sinks.names().join(", "));
    }
    Ok(sinks)
}

/// Closes the sinks (waiting up to sinks.flush_timeout for what they hold); false when an
/// event was lost on the way to one of them.
pub fn close_sinks(sinks: Sinks) -> bool {
    sinks.close().iter().all(|r| r.complete())
}

struct Printer {
    format: Format,
    out: std::io::BufWriter<std::io::Stdout>,
    header: bool,
    stdout: bool,
    sinks: Sinks,
}

impl Printer {
    fn event(&mut self, file: &str, e: &Event, class: &str) {
        let line = serde_json::to_string(&EventRecord::for_file(file, e, class))
            .expect("an event serialises");
        self.sinks.send(&line);
        if !self.stdout {
            return;
        }
        let res = match self.format {
            Format::Json => writeln!(self.out, "{line}"),
            Format::Table => {
                if !self.header {
                    self.header = true;
                    let _ = writeln!(
                        self.out,
                        "{:<32} {:<16} {:>9} {:>9} {:>6}",
                        "file", "class", "onset", "offset", "conf"
                    );
                }
                writeln!(
                    self.out,
                    "{:<32} {:<16} {:>9.3} {:>9.3} {:>6.3}",
                    file, class, e.onset, e.offset, e.confidence
                )
            }
        };
        // Events are flushed as they come, so a pipe sees them at once.
        let _ = res.and_then(|()| self.out.flush());
    }
}

pub fn run(args: &DetectArgs) -> Result<bool> {
    let cfg = load_config(args.config.as_deref(), &args.thresholds)?;
    let model = load_model(
        args.model.as_deref(),
        args.engine.unwrap_or(cfg.runtime.engine),
    )?;
    let mut detector =
        Detector::new(&model, &cfg.postprocess).context("configuring the detector")?;
    let mut printer = Printer {
        format: args.format,
        out: std::io::BufWriter::new(std::io::stdout()),
        header: false,
        stdout: cfg.sinks.stdout,
        sinks: start_sinks(&cfg)?,
    };
    let mut all_ok = true;
    let (mut total_audio, started) = (0.0f64, Instant::now());
    for path in &args.files {
        detector.reset();
        let name = path.display().to_string();
        let t0 = Instant::now();
        let mut events = 0usize;
        let mut problem: Option<String> = None;
        let mut opened = true;
        let mut reader_nonfinite = 0u64;
        let mut on_event = |e: &Event, class: &str| {
            events += 1;
            printer.event(&name, e, class);
        };
        let verbose = args.verbose.then_some(args.verbose_every.max(1));
        let mut next_verbose = 0u64;
        let mut feed = |detector: &mut Detector,
                        chunk: &[f32],
                        on_event: &mut dyn FnMut(&Event, &str)|
         -> Option<String> {
            let Some(every) = verbose else {
                return detector
                    .push(chunk, &mut *on_event)
                    .err()
                    .map(|e| e.to_string());
            };
            // One hop at a time, so that each line shows the scores of its own hop.
            let hop = detector.frontend().config().hop_length.max(1);
            for piece in chunk.chunks(hop) {
                if let Err(e) = detector.push(piece, &mut *on_event) {
                    return Some(e.to_string());
                }
                if detector.frontend().frames_out() >= next_verbose + every {
                    next_verbose = detector.frontend().frames_out();
                    verbose_line(detector);
                }
            }
            None
        };
        let source: Result<Box<dyn ChunkSource>, String> = if name == "-" {
            PcmReader::new(
                std::io::stdin().lock(),
                "<stdin>",
                args.raw_format,
                args.rate,
                args.channels,
            )
            .map(|r| Box::new(r) as Box<dyn ChunkSource>)
            .map_err(|e| e.to_string())
        } else {
            AudioReader::open(path)
                .map(|r| Box::new(r) as Box<dyn ChunkSource>)
                .map_err(|e| e.to_string())
        };
        match source {
            Err(e) => {
                problem = Some(e);
                opened = false;
            }
            Ok(mut reader) => {
                loop {
                    match reader.next_chunk() {
                        Ok(Some(chunk)) => {
                            if let Some(p) = feed(&mut detector, chunk, &mut on_event) {
                                problem = Some(p);
                                break;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            problem = Some(e.to_string());
                            break;
                        }
                    }
                }
                reader_nonfinite = reader.nonfinite_samples();
            }
        }
        // Events still open at the end (or before a read error) are reported, never lost.
        detector.finish(&mut on_event);
        let secs = detector.frontend().samples_in() as f64 / 16_000.0;
        total_audio += secs;
        let took = t0.elapsed().as_secs_f64();
        let nonfinite = detector.frontend().nonfinite_samples() + reader_nonfinite;
        if opened {
            eprintln!(
                "hark: {name}: {secs:.2} s of audio, {events} event(s), {:.0}x real time{}",
                secs / took.max(1e-9),
                if nonfinite > 0 {
                    format!(", {nonfinite} NaN/inf samples replaced by 0")
                } else {
                    String::new()
                }
            );
        }
        if let Some(p) = problem {
            eprintln!("hark: {p}");
            all_ok = false;
        }
    }
    if args.files.len() > 1 {
        eprintln!(
            "hark: {} files, {total_audio:.1} s of audio in {:.2} s",
            args.files.len(),
            started.elapsed().as_secs_f64()
        );
    }
    // Every event detected reaches its sinks (or is written to stderr and counted).
    let delivered = close_sinks(printer.sinks);
    Ok(all_ok && delivered)
}

pub fn verbose_line(d: &Detector) {
    let post = d.postprocessor();
    let t = d.frontend().frames_out() as f64 * 0.01;
    let mut line = format!("{t:>8.2}s {:>6.1} dBFS", d.level().smoothed_dbfs());
    for c in post.event_classes() {
        let s = post.smoothed(c).unwrap_or(0.0);
        let bar = "#".repeat((s * 10.0).round() as usize);
        line.push_str(&format!("  {}={s:.2} {bar:<10}", post.class_name(c)));
    }
    eprintln!("{line}");
}
