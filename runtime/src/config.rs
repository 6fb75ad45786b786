//! The daemon's configuration: one TOML profile per deployment (`firmware-config/*.toml`).
//!
//! ```toml
//! [audio]        # capture: device, rate, buffer sizes
//! [runtime]      # threads, model, verbosity
//! [postprocess]  # scores to events (crate::postprocess::PostprocessConfig)
//! [sinks]        # where events go: stdout, MQTT, a webhook, a command
//! [reconnect]    # back-off when the device or a sink goes away
//! ```
//!
//! Every section and field is optional and has a default (all of them in [`defaults`] and
//! [`crate::postprocess::defaults`]); an unknown section or key is an error naming it, and
//! so is a value of the wrong type or out of range. [`Config::load`] reads a file; its
//! errors name the file and, for TOML errors, the line, the column and the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::postprocess::PostprocessConfig;

/// The default value of every field, in one place (post-processing defaults are in
/// [`crate::postprocess::defaults`]).
pub mod defaults {
    /// Capture device name; empty means the system's default input.
    pub const DEVICE: &str = "";
    /// Requested capture rate, Hz.
    pub const SAMPLE_RATE: u32 = 16_000;
    /// Requested capture channels.
    pub const CHANNELS: u16 = 1;
    /// Frames per capture callback; 0 lets the device choose.
    pub const PERIOD_FRAMES: u32 = 0;
    /// Capacity of the capture ring buffer, seconds.
    pub const RING_SECONDS: f64 = 2.0;
    /// Processing threads.
    pub const THREADS: usize = 1;
    /// Model file; empty means the shipped default model.
    pub const MODEL: &str = "";
    /// Verbose logging.
    pub const VERBOSE: bool = false;
    /// Model step engine.
    pub const ENGINE: crate::model::EngineChoice = crate::model::EngineChoice::Auto;
    /// JSON lines on standard output.
    pub const STDOUT: bool = true;
    /// MQTT broker host.
    pub const MQTT_HOST: &str = "localhost";
    /// MQTT broker port.
    pub const MQTT_PORT: u16 = 1883;
    /// MQTT topic events are published to.
    pub const MQTT_TOPIC: &str = "hark/events";
    /// MQTT client identifier.
    pub const MQTT_CLIENT_ID: &str = "hark";
    /// MQTT quality of service.
    pub const MQTT_QOS: u8 = 1;
    /// MQTT retain flag.
    pub const MQTT_RETAIN: bool = false;
    /// Webhook request timeout, seconds.
    pub const WEBHOOK_TIMEOUT: f64 = 5.0;
    /// Time a command sink's program may run, seconds.
    pub const COMMAND_TIMEOUT: f64 = 10.0;
    /// Events each sink holds while it cannot deliver them.
    pub const SINK_QUEUE: usize = 10_000;
    /// On exit, time allowed to sinks to deliver what they hold, seconds.
    pub const FLUSH_TIMEOUT: f64 = 30.0;
    /// First reconnection delay, seconds.
    pub const INITIAL_BACKOFF: f64 = 1.0;
    /// Longest reconnection delay, seconds.
    pub const MAX_BACKOFF: f64 = 60.0;
}

/// Why a configuration cannot be used. Every variant names what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{}: cannot read the configuration: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("{}{}{}: {message}", .path.display(), position(*.line, *.column), key_note(.key))]
    Toml {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column of the error, when known.
        column: Option<usize>,
        /// Dotted key at the error (`runtime.threads`), when known.
        key: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// A value out of range or inconsistent with another.
    #[error("{}{field}: {problem}", file_prefix(.path))]
    Invalid {
        /// The file, when the configuration came from one.
        path: Option<PathBuf>,
        /// Dotted name of the field (`reconnect.max_backoff`).
        field: String,
        /// What is wrong.
        problem: String,
    },
}

fn position(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!(":{l}:{c}"),
        (Some(l), None) => format!(":{l}"),
        _ => String::new(),
    }
}

fn key_note(key: &Option<String>) -> String {
    key.as_ref().map_or(String::new(), |k| format!(": key {k}"))
}

fn file_prefix(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map_or(String::new(), |p| format!("{}: ", p.display()))
}

impl ConfigError {
    /// The dotted field or key this error is about, when known.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Io { .. } => None,
            Self::Toml { key, .. } => key.as_deref(),
            Self::Invalid { field, .. } => Some(field),
        }
    }

    fn in_file(self, file: &Path) -> Self {
        match self {
            Self::Invalid {
                path: None,
                field,
                problem,
            } => Self::Invalid {
                path: Some(file.to_path_buf()),
                field,
                problem,
            },
            other => other,
        }
    }
}

/// `[audio]`: live capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudioConfig {
    /// Input device name as the audio system lists it; empty for the default input.
    /// Default `""`.
    pub device: String,
    /// Sample rate to request from the device, in Hz; the stream is resampled to the model's
    /// rate whatever the device delivers. Range 8000 to 192000. Default 16000.
    pub sample_rate: u32,
    /// Channels to request; they are averaged to mono. Range 1 to 32. Default 1.
    pub channels: u16,
    /// Frames per capture callback (the period); 0 lets the device choose. Smaller is lower
    /// latency and more wake-ups. Range 0, or 16 to 65536. Default 0.
    pub period_frames: u32,
    /// Capacity of the ring buffer between the capture callback and the processing thread,
    /// in seconds of audio at `sample_rate`: how long processing may stall before samples
    /// are dropped (and counted). Range 0.05 to 60. Default 2.
    pub ring_seconds: f64,
}

impl Default for AudioConfig {
    fn default() -> Self {
        Self {
            device: defaults::DEVICE.into(),
            sample_rate: defaults::SAMPLE_RATE,
            channels: defaults::CHANNELS,
            period_frames: defaults::PERIOD_FRAMES,
            ring_seconds: defaults::RING_SECONDS,
        }
    }
}

/// `[runtime]`: the processing side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads for processing and inference. Range 1 to 64. Default 1.
    pub threads: usize,
    /// Model file (ONNX); empty for the shipped default model. [`Config::load`] resolves a
    /// relative path against the configuration file's directory. Default `""`.
    pub model: PathBuf,
    /// Log every hop's timing and every dropped candidate to standard error. Default false.
    pub verbose: bool,
    /// Engine that steps the model, hop by hop: `"native"` (hark's own, no allocation per
    /// hop), `"tract"`, or `"auto"`: native when it can run the model and agrees with tract
    /// on a probe at load, tract otherwise. `"native"` on a model it cannot run is an error
    /// naming the reason. Default `"auto"`.
    pub engine: crate::model::EngineChoice,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            threads: defaults::THREADS,
            model: PathBuf::from(defaults::MODEL),
            verbose: defaults::VERBOSE,
            engine: defaults::ENGINE,
        }
    }
}

impl RuntimeConfig {
    /// The configured model file, or `None` for the shipped default.
    pub fn model_path(&self) -> Option<&Path> {
        (!self.model.as_os_str().is_empty()).then_some(self.model.as_path())
    }
}

/// `[sinks.mqtt]`: publish each event's JSON to an MQTT broker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MqttConfig {
    /// Publish events over MQTT. Default false.
    pub enabled: bool,
    /// Broker host name or address; must not be empty when enabled. Default `"localhost"`.
    pub host: String,
    /// Broker TCP port, 1 to 65535. Default 1883.
    pub port: u16,
    /// Topic events are published to; no wildcards (`+`, `#`), not empty when enabled.
    /// Default `"hark/events"`.
    pub topic: String,
    /// Client identifier (1 to 23 characters are accepted by every broker). Default `"hark"`.
    pub client_id: String,
    /// Quality of service: 0 (at most once), 1 (at least once) or 2 (exactly once).
    /// Default 1.
    pub qos: u8,
    /// Ask the broker to keep the last event for new subscribers. Default false.
    pub retain: bool,
}

impl Default for MqttConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            host: defaults::MQTT_HOST.into(),
            port: defaults::MQTT_PORT,
            topic: defaults::MQTT_TOPIC.into(),
            client_id: defaults::MQTT_CLIENT_ID.into(),
            qos: defaults::MQTT_QOS,
            retain: defaults::MQTT_RETAIN,
        }
    }
}

/// `[sinks.webhook]`: POST each event's JSON to a URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Post events to `url`. Default false.
    pub enabled: bool,
    /// `http://` URL (`http://host[:port][/path]`); required when enabled. Plain HTTP only:
    /// `https://` is refused (put a local TLS-terminating relay in front). Default `""`.
    pub url: String,
    /// Time allowed for one request, in seconds. Range (0, 300]. Default 5.
    pub timeout: f64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            url: String::new(),
            timeout: defaults::WEBHOOK_TIMEOUT,
        }
    }
}

/// `[sinks.command]`: run a program for each event, the event's JSON line on its standard
/// input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CommandConfig {
    /// Run `program` for each event. Default false.
    pub enabled: bool,
    /// The program (a path, or a name looked up in `PATH`); required when enabled. No shell
    /// is involved. Default `""`.
    pub program: String,
    /// Its arguments. Default `[]`.
    pub args: Vec<String>,
    /// Time the program may take for one event, in seconds; it is killed after that and
    /// the event retried. Range (0, 3600]. Default 10.
    pub timeout: f64,
}

impl Default for CommandConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            program: String::new(),
            args: Vec::new(),
            timeout: defaults::COMMAND_TIMEOUT,
        }
    }
}

/// `[sinks]`: where events go. Any number may be on at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinksConfig {
    /// Write each event as one JSON line on standard output. Default true.
    pub stdout: bool,
    /// MQTT.
    pub mqtt: MqttConfig,
    /// Webhook.
    pub webhook: WebhookConfig,
    /// Command.
    pub command: CommandConfig,
    /// Events each sink (MQTT, webhook, command) holds while it cannot deliver them; an
    /// event that finds its queue full is dropped, counted and written to standard error.
    /// Range 1 to 1000000. Default 10000.
    pub queue: usize,
    /// When hark exits, how long the sinks may go on trying to deliver the events they
    /// hold, in seconds; what is still undelivered then is written to standard error.
    /// Range 0 to 3600. Default 30.
    pub flush_timeout: f64,
}

impl Default for SinksConfig {
    fn default() -> Self {
        Self {
            queue: defaults::SINK_QUEUE,
            flush_timeout: defaults::FLUSH_TIMEOUT,
            stdout: defaults::STDOUT,
            mqtt: MqttConfig::default(),
            webhook: WebhookConfig::default(),
            command: CommandConfig::default(),
        }
    }
}

/// `[reconnect]`: when the capture device or a network sink fails, retry after a delay that
/// starts at `initial_backoff` and doubles up to `max_backoff`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconnectConfig {
    /// First delay, in seconds. Range (0, 3600]. Default 1.
    pub initial_backoff: f64,
    /// Longest delay, in seconds; at least `initial_backoff`, at most 3600. Default 60.
    pub max_backoff: f64,
}

impl Default for ReconnectConfig {
    fn default() -> Self {
        Self {
            initial_backoff: defaults::INITIAL_BACKOFF,
            max_backoff: defaults::MAX_BACKOFF,
        }
    }
}

/// A whole profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Capture.
    pub audio: AudioConfig,
    /// Processing.
    pub runtime: RuntimeConfig,
    /// Scores to events.
    pub postprocess: PostprocessConfig,
    /// Event outputs.
    pub sinks: SinksConfig,
    /// Reconnection back-off.
    pub reconnect: ReconnectConfig,
}

fn invalid(field: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        field: field.into(),
        problem: problem.into(),
    }
}

fn range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
    unit: &str,
) -> Result<(), ConfigError> {
    // `!(a && b)` rather than `a || b` so that NaN fails.
    if !(v >= lo && v <= hi) {
        return Err(invalid(
            field,
            format!("{v} is out of range (must be from {lo} to {hi}{unit})"),
        ));
    }
    Ok(())
}

/// Checks `0 < v <= hi`; the error names `field`.
fn positive(field: &str, v: f64, hi: f64, unit: &str) -> Result<(), ConfigError> {
    if !(v > 0.0 && v <= hi) {
        return Err(invalid(
            field,
            format!("{v} is out of range (must be above 0 and at most {hi}{unit})"),
        ));
    }
    Ok(())
}

impl Config {
    /// Reads, parses and validates a profile. Errors name the file; TOML errors add the
    /// line, column and key; value errors the dotted field. A relative `runtime.model` is
    /// resolved against the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg = Self::parse(&text, path)?;
        if let Some(model) = cfg.runtime.model_path()
            && model.is_relative()
            && let Some(dir) = path.parent()
        {
            cfg.runtime.model = dir.join(model);
        }
        Ok(cfg)
    }

    /// Parses and validates a profile from its text; `path` is used in messages. Relative
    /// paths are left as written.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Self = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let (line, column) = span
                .as_ref()
                .map(|s| line_column(text, s.start))
                .map_or((None, None), |(l, c)| (Some(l), Some(c)));
            ConfigError::Toml {
                path: path.to_path_buf(),
                line,
                column,
                key: span.and_then(|s| key_at(text, s.start)),
                message: e.message().trim().to_string(),
            }
        })?;
        cfg.validate().map_err(|e| e.in_file(path))?;
        Ok(cfg)
    }

    /// Checks every value's range and the relations between values; the error names the
    /// field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = &self.audio;
        range("audio.sample_rate", a.sample_rate, 8000, 192_000, " Hz")?;
        range("audio.channels", a.channels, 1, 32, "")?;
        if a.period_frames != 0 {
            range(
                "audio.period_frames",
                a.period_frames,
                16,
                65_536,
                " frames",
            )?;
        }
        range("audio.ring_seconds", a.ring_seconds, 0.05, 60.0, " s")?;
        let period_s = a.period_frames as f64 / a.sample_rate as f64;
        if a.ring_seconds < 2.0 * period_s {
            return Err(invalid(
                "audio.ring_seconds",
                format!(
                    "{} s holds fewer than two periods of {} frames",
                    a.ring_seconds, a.period_frames
                ),
            ));
        }
        range("runtime.threads", self.runtime.threads, 1, 64, "")?;

        self.postprocess.validate()?;

        let m = &self.sinks.mqtt;
        range("sinks.mqtt.port", m.port, 1, u16::MAX, "")?;
        range("sinks.mqtt.qos", m.qos, 0, 2, "")?;
        if m.topic.contains(['+', '#']) {
            return Err(invalid(
                "sinks.mqtt.topic",
                format!("{:?} contains a wildcard (+ or #)", m.topic),
            ));
        }
        if m.enabled {
            if m.host.trim().is_empty() {
                return Err(invalid("sinks.mqtt.host", "empty, but MQTT is enabled"));
            }
            if m.topic.is_empty() {
                return Err(invalid("sinks.mqtt.topic", "empty, but MQTT is enabled"));
            }
        }
        let w = &self.sinks.webhook;
        positive("sinks.webhook.timeout", w.timeout, 300.0, " s")?;
        if w.url.starts_with("https://") {
            return Err(invalid(
                "sinks.webhook.url",
                format!(
                    "{:?}: https:// is not supported (hark posts plain HTTP; put a local TLS-terminating relay in front)",
                    w.url
                ),
            ));
        }
        if (w.enabled || !w.url.is_empty()) && !w.url.starts_with("http://") {
            return Err(invalid(
                "sinks.webhook.url",
                format!("{:?} is not an http:// URL", w.url),
            ));
        }
        range("sinks.queue", self.sinks.queue, 1, 1_000_000, " events")?;
        range(
            "sinks.flush_timeout",
            self.sinks.flush_timeout,
            0.0,
            3600.0,
            " s",
        )?;
        let c = &self.sinks.command;
        positive("sinks.command.timeout", c.timeout, 3600.0, " s")?;
        if c.enabled && c.program.trim().is_empty() {
            return Err(invalid(
                "sinks.command.program",
                "empty, but the command sink is enabled",
            ));
        }

        let r = &self.reconnect;
        positive("reconnect.initial_backoff", r.initial_backoff, 3600.0, " s")?;
        range(
            "reconnect.max_backoff",
            r.max_backoff,
            r.initial_backoff,
            3600.0,
            " s (at least reconnect.initial_backoff)",
        )?;
        Ok(())
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..text.floor_char_boundary(offset)];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// The dotted key at byte `offset`: the last table header above it (`[a.b]`) joined with
/// the key of the `key = value` line it falls on (or the last such line above it, for a
/// value spanning lines). A best effort for messages; `None` when nothing is found.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let offset = text.floor_char_boundary(offset.min(text.len()));
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let mut table: Option<String> = None;
    let mut key: Option<String> = None;
    for line in text[..line_end].lines() {
        let l = line.trim();
        if l.starts_with('[') {
            let inner = l.trim_start_matches('[');
            let inner = &inner[..inner.find(']').unwrap_or(inner.len())];
            table = Some(
                inner
                    .split('.')
                    .map(|p| p.trim().trim_matches('"'))
                    .collect::<Vec<_>>()
                    .join("."),
            );
            key = None;
        } else if !l.starts_with('#')
            && let Some(eq) = l.find('=')
        {
            let k = l[..eq].trim().trim_matches('"');
            if !k.is_empty() {
                key = Some(k.to_string());
            }
        } else if !l.starts_with('#') && !l.is_empty() && !l.contains('=') {
            // A bare word on its own line (an unknown key without a value): take it.
            key = Some(l.to_string());
        }
    }
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
        Config::default().validate().unwrap();
    }

    #[test]
    fn key_at_finds_the_dotted_key() {
        let t =
            "a = 1\n[runtime]\nthreads = \"x\"\n[postprocess.classes.glass_break]\nthreshold = 2\n";
        assert_eq!(
            key_at(t, t.find("\"x\"").unwrap()).as_deref(),
            Some("runtime.threads")
        );
        assert_eq!(
            key_at(t, t.rfind('2').unwrap()).as_deref(),
            Some("postprocess.classes.glass_break.threshold")
        );
        assert_eq!(key_at(t, 4).as_deref(), Some("a"));
        assert_eq!(line_column(t, t.find("threads").unwrap()), (3, 1));
    }
}
