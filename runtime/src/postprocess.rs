//! Post-processing: per-hop class scores in, detected events out.
//!
//! One [`Postprocessor`] serves one stream. It is fed the model's scores once per hop with
//! [`Postprocessor::push`] and returns the events that hop completed; [`Postprocessor::flush`]
//! ends the stream and reports whatever is still open. All of its state has a fixed capacity
//! (at most [`MAX_CLASSES`] event classes): nothing is allocated after construction.
//!
//! # What happens to each event class, every hop
//!
//! The background class (`ModelMetadata::background`) and classes configured with
//! `enabled = false` are ignored: they never produce events. For every other class:
//!
//! 1. **Smoothing.** The raw score `x[t]` (NaN and infinities count as 0.0) goes through an
//!    exponential moving average with time constant `smoothing` seconds:
//!    `s[t] = s[t-1] + a (x[t] - s[t-1])` with `a = 1 - exp(-hop / smoothing)`; the first hop
//!    of a stream starts the average at `s[0] = x[0]`. `smoothing = 0` turns it off
//!    (`s = x`). The default, 0.05 s, is a time constant of five 10 ms hops.
//! 2. **Threshold with hysteresis.** An event starts at the first hop where `s >= threshold`
//!    (and the class is armed and out of its cooldown, below). It stays open while
//!    `s >= threshold - hysteresis` (the *off level*) and ends at the first hop where `s`
//!    falls below the off level. A score wavering around the threshold therefore gives one
//!    event, not a burst of them.
//! 3. **Minimum length.** An event shorter than `min_length` when it ends is dropped: it is
//!    not reported and it does not start a cooldown.
//! 4. **Maximum length.** An event that reaches `max_length` is closed and reported then, with
//!    `offset = onset + max_length` and [`Event::capped`] set. What follows depends on
//!    `after_max_length` ([`AfterMaxLength`]): `"rearm"` (the default) keeps the class silent
//!    until its score has fallen below the off level (and its cooldown, counted from the cap,
//!    is over), so a long sound is reported once; `"split"` opens a new event at once at the
//!    cap time ([`Event::continued`] set, no cooldown, exempt from the minimum length), so a
//!    long sound is reported as back-to-back pieces of `max_length`.
//! 5. **Cooldown.** After a reported event ends, that class cannot start a new event for
//!    `cooldown` seconds (counted from the event's offset).
//!
//! # Times
//!
//! Hop `t` (the `t`-th call of [`Postprocessor::push`] since the stream began, from 0) is at
//! `t * hop_seconds + frame_offset` seconds: with the default frontend, frame `t` covers
//! samples `[160 t, 160 t + 400)` and `frame_offset` defaults to its centre, 0.0125 s
//! (`FrontendConfig::frame_center_s`). An event that is active on hops `onset_hop ..
//! offset_hop` (end exclusive) has `onset` = the time of `onset_hop`, the hop at which the
//! smoothed score crossed the threshold, and `offset` = the time of `offset_hop`, the first
//! hop at which it had fallen below the off level (or the cap, or the end of the stream).
//! Its length is `(offset_hop - onset_hop) * hop_seconds`.
//!
//! # Confidence
//!
//! [`Event::confidence`] is the highest *smoothed* score over the event's hops: the same
//! quantity the threshold is applied to, so it is never below the class's threshold for an
//! event that started at a crossing, and a single-hop spike in the raw score does not
//! inflate it.
//!
//! Durations given in seconds are converted to whole hops once, at construction:
//! `min_length` and `cooldown` round up, `max_length` rounds down (at least one hop).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::model::ModelMetadata;

/// Most event classes (all classes but the background) one [`Postprocessor`] tracks.
pub const MAX_CLASSES: usize = 32;

/// The default value of every [`PostprocessConfig`] field, in one place.
pub mod defaults {
    use super::AfterMaxLength;

    /// Score smoothing time constant, seconds.
    pub const SMOOTHING: f64 = 0.05;
    /// Hysteresis below the threshold, in score units.
    pub const HYSTERESIS: f32 = 0.1;
    /// Minimum event length, seconds.
    pub const MIN_LENGTH: f64 = 0.05;
    /// Maximum event length, seconds.
    pub const MAX_LENGTH: f64 = 10.0;
    /// Cooldown after an event, seconds.
    pub const COOLDOWN: f64 = 1.0;
    /// What a class does after an event reached the maximum length.
    pub const AFTER_MAX_LENGTH: AfterMaxLength = AfterMaxLength::Rearm;
    /// Time constant of the smoothed sound level, seconds.
    pub const LEVEL_SMOOTHING: f64 = 0.5;
}

/// What a class does after one of its events was closed at the maximum length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterMaxLength {
    /// Stay silent until the smoothed score falls below the off level and the cooldown
    /// (counted from the cap) is over: a long sound is reported once, capped.
    #[default]
    Rearm,
    /// Start a new event at once at the cap time, without cooldown: a long sound is reported
    /// as consecutive pieces of at most `max_length`.
    Split,
}

/// Settings for one class that replace the global ones. Every field is optional; a missing
/// field keeps the global value (for `threshold`: the model's threshold for that class).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassOverride {
    /// `false` never reports this class. Default: `true`.
    pub enabled: Option<bool>,
    /// Detection threshold on the smoothed score, in (0, 1). Default: the model's threshold
    /// for this class (`hark.thresholds`).
    pub threshold: Option<f32>,
    /// Hysteresis in score units, in [0, threshold). Default: the global `hysteresis`.
    pub hysteresis: Option<f32>,
    /// Smoothing time constant in seconds, >= 0. Default: the global `smoothing`.
    pub smoothing: Option<f64>,
    /// Minimum event length in seconds, >= 0. Default: the global `min_length`.
    pub min_length: Option<f64>,
    /// Maximum event length in seconds, > 0. Default: the global `max_length`.
    pub max_length: Option<f64>,
    /// Cooldown in seconds, >= 0. Default: the global `cooldown`.
    pub cooldown: Option<f64>,
}

/// The `[postprocess]` section: how scores become events. See the module documentation for
/// what each step does. Defaults are in [`defaults`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostprocessConfig {
    /// Time constant of the exponential moving average applied to each class's score, in
    /// seconds; 0 disables smoothing. Range [0, 10]. Default 0.05.
    pub smoothing: f64,
    /// An open event ends when the smoothed score falls below `threshold - hysteresis`; in
    /// score units, range [0, threshold). Default 0.1.
    pub hysteresis: f32,
    /// Events shorter than this are dropped, in seconds; range [0, max_length]. Default 0.05.
    pub min_length: f64,
    /// Events are closed and reported when they reach this length, in seconds; range
    /// (0, 3600]. Default 10.
    pub max_length: f64,
    /// After an event a class cannot start another one for this long, in seconds; range
    /// [0, 3600]. Default 1.
    pub cooldown: f64,
    /// What a class does after an event reached `max_length`: `"rearm"` or `"split"`.
    /// Default `"rearm"`.
    pub after_max_length: AfterMaxLength,
    /// Time of hop 0 in seconds (hop `t` is at `t * hop + frame_offset`); range [0, 10].
    /// Default: the centre of the model's first frame, `window_length / 2 / sample_rate`
    /// (0.0125 s for the 25 ms window).
    pub frame_offset: Option<f64>,
    /// Time constant of the smoothed sound level ([`crate::level::LevelMeter`]), in seconds;
    /// 0 disables smoothing. Range [0, 60]. Default 0.5.
    pub level_smoothing: f64,
    /// Per-class settings, keyed by class name (`[postprocess.classes.glass_break]`). Every
    /// name must be a class of the model other than the background. Default: none.
    pub classes: BTreeMap<String, ClassOverride>,
}

impl Default for PostprocessConfig {
    fn default() -> Self {
        Self {
            smoothing: defaults::SMOOTHING,
            hysteresis: defaults::HYSTERESIS,
            min_length: defaults::MIN_LENGTH,
            max_length: defaults::MAX_LENGTH,
            cooldown: defaults::COOLDOWN,
            after_max_length: defaults::AFTER_MAX_LENGTH,
            frame_offset: None,
            level_smoothing: defaults::LEVEL_SMOOTHING,
            classes: BTreeMap::new(),
        }
    }
}

fn invalid(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: None,
        field: field.into(),
        problem: problem.into(),
    }
}

/// Checks `lo <= v <= hi` (finite); the error names `field`.
fn in_range(field: &str, v: f64, lo: f64, hi: f64, unit: &str) -> Result<(), ConfigError> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{v} is out of range (must be from {lo} to {hi}{unit})"),
        ))
    }
}

/// Checks `0 < v <= hi` seconds; the error names `field`.
fn positive(field: &str, v: f64, hi: f64) -> Result<(), ConfigError> {
    if v > 0.0 && v <= hi {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("{v} is out of range (must be above 0 and at most {hi} s)"),
        ))
    }
}

impl PostprocessConfig {
    /// Checks every value that can be checked without the model; errors name the field
    /// (`postprocess.min_length`, `postprocess.classes.glass_break.threshold`, ...).
    /// [`Postprocessor::new`] checks the rest (class names, hysteresis against the model's
    /// thresholds).
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_with(None)
    }

    fn validate_with(&self, hop_s: Option<f64>) -> Result<(), ConfigError> {
        let s = " s";
        in_range("postprocess.smoothing", self.smoothing, 0.0, 10.0, s)?;
        let h = self.hysteresis;
        if !(0.0..1.0).contains(&h) {
            return Err(invalid(
                "postprocess.hysteresis",
                format!("{h} is out of range (must be in [0, 1))"),
            ));
        }
        positive("postprocess.max_length", self.max_length, 3600.0)?;
        in_range("postprocess.min_length", self.min_length, 0.0, 3600.0, s)?;
        in_range("postprocess.cooldown", self.cooldown, 0.0, 3600.0, s)?;
        in_range(
            "postprocess.level_smoothing",
            self.level_smoothing,
            0.0,
            60.0,
            s,
        )?;
        if let Some(o) = self.frame_offset {
            in_range("postprocess.frame_offset", o, 0.0, 10.0, s)?;
        }
        for (name, c) in &self.classes {
            let field = |f: &str| format!("postprocess.classes.{name}.{f}");
            if let Some(t) = c.threshold
                && !(t > 0.0 && t < 1.0)
            {
                return Err(invalid(
                    field("threshold"),
                    format!("{t} is out of range (must be in (0, 1))"),
                ));
            }
            if let Some(h) = c.hysteresis
                && !(0.0..1.0).contains(&h)
            {
                return Err(invalid(
                    field("hysteresis"),
                    format!("{h} is out of range (must be in [0, 1))"),
                ));
            }
            // With the threshold given here the hysteresis can be checked without the model.
            if let Some(t) = c.threshold {
                let (h, f) = match c.hysteresis {
                    Some(h) => (h, field("hysteresis")),
                    None => (self.hysteresis, "postprocess.hysteresis".to_string()),
                };
                if h >= t {
                    return Err(invalid(
                        f,
                        format!("{h} is not below the threshold {t} of class {name:?}"),
                    ));
                }
            }
            if let Some(v) = c.smoothing {
                in_range(&field("smoothing"), v, 0.0, 10.0, s)?;
            }
            if let Some(v) = c.min_length {
                in_range(&field("min_length"), v, 0.0, 3600.0, s)?;
            }
            if let Some(v) = c.max_length {
                positive(&field("max_length"), v, 3600.0)?;
            }
            if let Some(v) = c.cooldown {
                in_range(&field("cooldown"), v, 0.0, 3600.0, s)?;
            }
        }
        // min_length <= max_length for the global values and every class, in hops when the
        // hop is known (rounding can turn equal lengths into min > max).
        let pairs = std::iter::once((
            "postprocess.min_length".to_string(),
            self.min_length,
            self.max_length,
        ))
        .chain(self.classes.iter().map(|(name, c)| {
            let field = if c.min_length.is_some() {
                format!("postprocess.classes.{name}.min_length")
            } else {
                format!("postprocess.classes.{name}.max_length")
            };
            (
                field,
                c.min_length.unwrap_or(self.min_length),
                c.max_length.unwrap_or(self.max_length),
            )
        }));
        for (field, min, max) in pairs {
            let bad = match hop_s {
                Some(h) => min_hops(min, h) > max_hops(max, h),
                None => min > max,
            };
            if bad {
                return Err(invalid(
                    field,
                    format!("minimum length {min} s is longer than the maximum length {max} s"),
                ));
            }
        }
        Ok(())
    }
}

fn min_hops(seconds: f64, hop_s: f64) -> u64 {
    (seconds / hop_s - 1e-9).ceil().max(0.0) as u64
}

fn max_hops(seconds: f64, hop_s: f64) -> u64 {
    ((seconds / hop_s + 1e-9).floor() as u64).max(1)
}

/// One class's settings after merging the model, the global config and its override.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClassParams {
    /// Threshold on the smoothed score.
    pub threshold: f32,
    /// `threshold - hysteresis`: an open event ends below this.
    pub off_level: f32,
    /// Smoothing coefficient per hop, `1 - exp(-hop / smoothing)` (1 = no smoothing).
    pub alpha: f32,
    /// Minimum length in hops.
    pub min_hops: u64,
    /// Maximum length in hops (>= 1, >= `min_hops`).
    pub max_hops: u64,
    /// Cooldown in hops.
    pub cooldown_hops: u64,
}

/// A detected event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Event {
    /// The class: its column in the model's output ([`Postprocessor::class_name`] gives the
    /// name).
    pub class: usize,
    /// Start, in seconds from the start of the stream (see the module documentation).
    pub onset: f64,
    /// End, in seconds from the start of the stream.
    pub offset: f64,
    /// The highest smoothed score during the event.
    pub confidence: f32,
    /// The first hop of the event.
    pub onset_hop: u64,
    /// The hop after its last one.
    pub offset_hop: u64,
    /// Closed at the maximum length while the score was still high.
    pub capped: bool,
    /// Started at the cap of the previous event of this class (`after_max_length = "split"`),
    /// not at a threshold crossing.
    pub continued: bool,
}

impl Event {
    /// Length in seconds.
    pub fn duration(&self) -> f64 {
        self.offset - self.onset
    }
}

/// Why a hop could not be processed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostprocessError {
    /// The scores do not have one value per model class.
    #[error("expected {expected} class scores, got {got}")]
    Scores {
        /// The model's class count.
        expected: usize,
        /// Values given.
        got: usize,
    },
}

#[derive(Debug, Clone, Copy)]
struct Open {
    onset_hop: u64,
    peak: f32,
    continued: bool,
}

/// The state of one event class.
#[derive(Debug, Clone)]
struct Track {
    class: usize,
    p: ClassParams,
    smoothed: f32,
    primed: bool,
    open: Option<Open>,
    /// False after a capped event (rearm mode) until the score falls below the off level.
    armed: bool,
    /// First hop at which a new event may start (end of the cooldown).
    ready_at: u64,
}

impl Track {
    fn new(class: usize, p: ClassParams) -> Self {
        Self {
            class,
            p,
            smoothed: 0.0,
            primed: false,
            open: None,
            armed: true,
            ready_at: 0,
        }
    }

    fn reset(&mut self) {
        *self = Self::new(self.class, self.p);
    }

    /// Ends `open` at hop `end`; the event if it is kept.
    fn close(&mut self, open: Open, end: u64, capped: bool) -> Option<(Open, u64, bool)> {
        let len = end - open.onset_hop;
        let keep = if open.continued {
            len > 0
        } else {
            len >= self.p.min_hops
        };
        if keep {
            self.ready_at = end + self.p.cooldown_hops;
            Some((open, end, capped))
        } else {
            None
        }
    }

    /// Processes hop `t` with raw score `x` (finite).
    fn step(&mut self, t: u64, x: f32, mode: AfterMaxLength) -> Option<(Open, u64, bool)> {
        self.smoothed = if self.primed {
            self.smoothed + self.p.alpha * (x - self.smoothed)
        } else {
            self.primed = true;
            x
        };
        let s = self.smoothed;
        match self.open {
            None => {
                if s < self.p.off_level {
                    self.armed = true;
                }
                if !(self.armed && t >= self.ready_at && s >= self.p.threshold) {
                    return None;
                }
                self.open = Some(Open {
                    onset_hop: t,
                    peak: s,
                    continued: false,
                });
            }
            Some(open) if s < self.p.off_level => {
                self.open = None;
                return self.close(open, t, false);
            }
            Some(_) => {}
        }
        let open = self.open.as_mut().expect("open above");
        open.peak = open.peak.max(s);
        let end = t + 1;
        if end - open.onset_hop < self.p.max_hops {
            return None;
        }
        let open = self.open.take().expect("open above");
        let ev = self.close(open, end, true);
        match mode {
            AfterMaxLength::Rearm => self.armed = false,
            AfterMaxLength::Split => {
                self.open = Some(Open {
                    onset_hop: end,
                    peak: 0.0,
                    continued: true,
                })
            }
        }
        ev
    }
}

/// Turns per-hop class scores into events; see the module documentation.
#[derive(Debug, Clone)]
pub struct Postprocessor {
    names: Vec<String>,
    hop_s: f64,
    offset_s: f64,
    mode: AfterMaxLength,
    tracks: heapless::Vec<Track, MAX_CLASSES>,
    out: heapless::Vec<Event, MAX_CLASSES>,
    hop: u64,
    nonfinite: u64,
}

impl Postprocessor {
    /// Builds the post-processor of one stream of `meta`'s model, whose hops are
    /// `hop_seconds` apart. Thresholds come from `meta.thresholds` unless `cfg` overrides
    /// them. Errors name the offending field: a class the model does not have (or its
    /// background), a value out of range, a hysteresis not below its class's threshold, a
    /// minimum length above the maximum, more than [`MAX_CLASSES`] event classes.
    pub fn new(
        meta: &ModelMetadata,
        cfg: &PostprocessConfig,
        hop_seconds: f64,
    ) -> Result<Self, ConfigError> {
        if !(hop_seconds.is_finite() && hop_seconds > 0.0) {
            return Err(invalid(
                "hop_seconds",
                format!("{hop_seconds} must be above 0"),
            ));
        }
        cfg.validate_with(Some(hop_seconds))?;
        for name in cfg.classes.keys() {
            if meta.background.as_ref() == Some(name) {
                return Err(invalid(
                    format!("postprocess.classes.{name}"),
                    "this is the model's background class, which never produces events",
                ));
            }
            if !meta.classes.contains(name) {
                return Err(invalid(
                    format!("postprocess.classes.{name}"),
                    format!(
                        "the model has no class {name:?} (its classes: {})",
                        meta.classes.join(", ")
                    ),
                ));
            }
        }
        let mut tracks = heapless::Vec::new();
        for (column, name) in meta.event_classes() {
            let o = cfg.classes.get(name).cloned().unwrap_or_default();
            if o.enabled == Some(false) {
                continue;
            }
            let field = |f: &str, overridden: bool| {
                if overridden {
                    format!("postprocess.classes.{name}.{f}")
                } else {
                    format!("postprocess.{f}")
                }
            };
            let threshold = match o.threshold.or_else(|| meta.thresholds.get(name).copied()) {
                Some(t) => t,
                None => {
                    return Err(invalid(
                        field("threshold", true),
                        "the model has no threshold for this class: set one",
                    ));
                }
            };
            let hysteresis = o.hysteresis.unwrap_or(cfg.hysteresis);
            if hysteresis >= threshold {
                return Err(invalid(
                    field("hysteresis", o.hysteresis.is_some()),
                    format!(
                        "{hysteresis} is not below the threshold {threshold} of class {name:?}"
                    ),
                ));
            }
            let smoothing = o.smoothing.unwrap_or(cfg.smoothing);
            let alpha = if smoothing > 0.0 {
                (1.0 - (-hop_seconds / smoothing).exp()) as f32
            } else {
                1.0
            };
            let p = ClassParams {
                threshold,
                off_level: threshold - hysteresis,
                alpha,
                min_hops: min_hops(o.min_length.unwrap_or(cfg.min_length), hop_seconds),
                max_hops: max_hops(o.max_length.unwrap_or(cfg.max_length), hop_seconds),
                cooldown_hops: min_hops(o.cooldown.unwrap_or(cfg.cooldown), hop_seconds),
            };
            if tracks.push(Track::new(column, p)).is_err() {
                return Err(invalid(
                    "hark.classes",
                    format!("the model has more than {MAX_CLASSES} event classes"),
                ));
            }
        }
        let offset_s = cfg.frame_offset.unwrap_or_else(|| {
            meta.frontend.window_length as f64 / 2.0 / meta.frontend.sample_rate as f64
        });
        Ok(Self {
            names: meta.classes.clone(),
            hop_s: hop_seconds,
            offset_s,
            mode: cfg.after_max_length,
            tracks,
            out: heapless::Vec::new(),
            hop: 0,
            nonfinite: 0,
        })
    }

    /// Processes one hop: `scores` has one value per model class, in the model's order.
    /// Returns the events this hop completed (at most one per class), oldest class column
    /// first. Never allocates.
    pub fn push(&mut self, scores: &[f32]) -> Result<&[Event], PostprocessError> {
        if scores.len() != self.names.len() {
            return Err(PostprocessError::Scores {
                expected: self.names.len(),
                got: scores.len(),
            });
        }
        self.out.clear();
        let t = self.hop;
        for i in 0..self.tracks.len() {
            let raw = scores[self.tracks[i].class];
            let x = if raw.is_finite() {
                raw
            } else {
                self.nonfinite += 1;
                0.0
            };
            if let Some(done) = self.tracks[i].step(t, x, self.mode) {
                self.emit(i, done);
            }
        }
        self.hop += 1;
        Ok(&self.out)
    }

    /// Ends the stream: closes every open event at the current hop and returns those long
    /// enough to be kept (an event continued by `"split"` is kept if it has any length). The
    /// per-class state (smoothing, cooldown) is cleared; the hop count keeps running, so a
    /// later [`push`](Self::push) continues the same timeline. Never allocates.
    pub fn flush(&mut self) -> &[Event] {
        self.out.clear();
        let t = self.hop;
        for i in 0..self.tracks.len() {
            let track = &mut self.tracks[i];
            let done = track.open.take().and_then(|o| track.close(o, t, false));
            track.reset();
            if let Some(done) = done {
                self.emit(i, done);
            }
        }
        &self.out
    }

    /// Starts a new, unrelated stream: clears every class's state and the hop count. Open
    /// events are discarded (call [`flush`](Self::flush) first to keep them).
    pub fn reset(&mut self) {
        for t in &mut self.tracks {
            t.reset();
        }
        self.out.clear();
        self.hop = 0;
        self.nonfinite = 0;
    }

    fn emit(&mut self, track: usize, (open, end, capped): (Open, u64, bool)) {
        let ev = Event {
            class: self.tracks[track].class,
            onset: self.hop_time(open.onset_hop),
            offset: self.hop_time(end),
            confidence: open.peak,
            onset_hop: open.onset_hop,
            offset_hop: end,
            capped,
            continued: open.continued,
        };
        self.out
            .push(ev)
            .expect("at most one event per class per hop");
    }

    /// Time of hop `t` in seconds: `t * hop_seconds + frame_offset`.
    pub fn hop_time(&self, t: u64) -> f64 {
        t as f64 * self.hop_s + self.offset_s
    }

    /// The name of model class `class` (an [`Event::class`]).
    pub fn class_name(&self, class: usize) -> &str {
        &self.names[class]
    }

    /// Model class columns that can produce events, in order.
    pub fn event_classes(&self) -> impl Iterator<Item = usize> + '_ {
        self.tracks.iter().map(|t| t.class)
    }

    /// The resolved settings of model class `class`, or `None` if it never produces events.
    pub fn params(&self, class: usize) -> Option<&ClassParams> {
        self.tracks.iter().find(|t| t.class == class).map(|t| &t.p)
    }

    /// The current smoothed score of model class `class` (`None` if it is not tracked).
    pub fn smoothed(&self, class: usize) -> Option<f32> {
        self.tracks
            .iter()
            .find(|t| t.class == class)
            .map(|t| t.smoothed)
    }

    /// Hops processed since the stream began.
    pub fn hops(&self) -> u64 {
        self.hop
    }

    /// Non-finite scores seen (each counted as 0.0).
    pub fn nonfinite_scores(&self) -> u64 {
        self.nonfinite
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::FrontendConfig;

    const HOP: f64 = 0.01;

    /// Classes: background, glass_break (threshold 0.5), dog_bark (threshold 0.6).
    fn meta() -> ModelMetadata {
        ModelMetadata {
            format_version: 1,
            classes: vec!["background".into(), "glass_break".into(), "dog_bark".into()],
            background: Some("background".into()),
            thresholds: [("glass_break".into(), 0.5), ("dog_bark".into(), 0.6)].into(),
            frontend: FrontendConfig::default(),
            training: serde_json::Value::Null,
        }
    }

    /// No smoothing, no minimum length, no cooldown, no frame offset: hop t is at t * 10 ms.
    fn plain() -> PostprocessConfig {
        PostprocessConfig {
            smoothing: 0.0,
            min_length: 0.0,
            cooldown: 0.0,
            frame_offset: Some(0.0),
            ..PostprocessConfig::default()
        }
    }

    /// Runs `glass` as glass_break's score (background at 1 - glass, dog_bark at 0), flushes,
    /// returns every event.
    fn run(cfg: &PostprocessConfig, glass: &[f32]) -> Vec<Event> {
        let mut pp = Postprocessor::new(&meta(), cfg, HOP).unwrap();
        let mut events = Vec::new();
        for &g in glass {
            events.extend_from_slice(pp.push(&[1.0 - g, g, 0.0]).unwrap());
        }
        events.extend_from_slice(pp.flush());
        events
    }

    /// The concatenation of `(n, v)`: `n` hops of score `v`.
    fn hops(parts: &[(usize, f32)]) -> Vec<f32> {
        parts
            .iter()
            .flat_map(|&(n, v)| std::iter::repeat_n(v, n))
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn a_clean_pulse_gives_one_event_with_its_onset_offset_and_peak() {
        let mut scores = hops(&[(100, 0.05), (30, 0.9), (100, 0.05)]);
        scores[115] = 0.97;
        let ev = run(&plain(), &scores);
        assert_eq!(ev.len(), 1, "{ev:?}");
        let e = ev[0];
        assert_eq!(e.class, 1);
        assert_eq!((e.onset_hop, e.offset_hop), (100, 130));
        assert!(close(e.onset, 1.0) && close(e.offset, 1.3), "{e:?}");
        assert_eq!(e.confidence, 0.97);
        assert!(!e.capped && !e.continued);
    }

    #[test]
    fn the_default_frame_offset_is_the_centre_of_the_first_frame() {
        let cfg = PostprocessConfig {
            frame_offset: None,
            ..plain()
        };
        let ev = run(&cfg, &hops(&[(10, 0.0), (10, 0.9), (10, 0.0)]));
        assert!(close(ev[0].onset, 0.1 + 0.0125), "{:?}", ev[0]);
        assert!(close(ev[0].offset, 0.2 + 0.0125), "{:?}", ev[0]);
    }

    #[test]
    fn smoothing_delays_the_onset_and_lowers_a_spike() {
        let cfg = PostprocessConfig {
            smoothing: 0.05,
            ..plain()
        };
        // A step from 0 to 1: the EMA with tau = 5 hops crosses 0.5 after ln 2 * tau, at the
        // 4th hop of the step (1 - e^{-4/5} = 0.55; after 3 hops 0.45).
        let ev = run(&cfg, &hops(&[(50, 0.0), (50, 1.0), (50, 0.0)]));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].onset_hop, 53);
        // Off level 0.4: after the step down (from s = 1 - e^{-10}), s = e^{-k/5} after k
        // hops of 0, below 0.4 first at k = 5, the 5th hop of silence.
        assert_eq!(ev[0].offset_hop, 104);
        assert!(ev[0].confidence > 0.99 && ev[0].confidence <= 1.0);
        // A one-hop spike to 1.0 is smoothed to 0.18: no event.
        assert!(run(&cfg, &hops(&[(50, 0.0), (1, 1.0), (50, 0.0)])).is_empty());
    }

    #[test]
    fn hysteresis_keeps_a_noisy_score_around_the_threshold_in_one_event() {
        // Threshold 0.5, hysteresis 0.1: a score alternating 0.45 / 0.55 for a second.
        let noisy: Vec<f32> = (0..100)
            .map(|i| if i % 2 == 0 { 0.55 } else { 0.45 })
            .collect();
        let scores = [hops(&[(20, 0.0)]), noisy.clone(), hops(&[(20, 0.0)])].concat();
        let ev = run(&plain(), &scores);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!((ev[0].onset_hop, ev[0].offset_hop), (20, 120));
        assert_eq!(ev[0].confidence, 0.55);
        // Without hysteresis the same score chatters: one event per hop above threshold.
        let cfg = PostprocessConfig {
            hysteresis: 0.0,
            ..plain()
        };
        assert_eq!(run(&cfg, &scores).len(), 50);
    }

    #[test]
    fn blips_shorter_than_the_minimum_length_are_dropped() {
        let cfg = PostprocessConfig {
            min_length: 0.05,
            ..plain()
        };
        // 4-hop blips (40 ms) are dropped; a 5-hop one (50 ms) is kept.
        let scores = hops(&[
            (10, 0.0),
            (4, 0.9),
            (10, 0.0),
            (1, 0.9),
            (10, 0.0),
            (5, 0.9),
            (10, 0.0),
        ]);
        let ev = run(&cfg, &scores);
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!((ev[0].onset_hop, ev[0].offset_hop), (35, 40));
        // A dropped blip starts no cooldown: the kept event right after it is reported.
        let cfg = PostprocessConfig {
            min_length: 0.05,
            cooldown: 1.0,
            ..plain()
        };
        let ev = run(
            &cfg,
            &hops(&[(10, 0.0), (2, 0.9), (2, 0.0), (8, 0.9), (10, 0.0)]),
        );
        assert_eq!(ev.len(), 1, "{ev:?}");
        assert_eq!(ev[0].onset_hop, 14);
    }

    #[test]
    fn the_maximum_length_caps_a_long_event_and_rearm_waits_for_the_score_to_fall() {
        let cfg = PostprocessConfig {
            max_length: 0.5,
            ..plain()
        };
        // 2 s of a steady sound, a gap, then another sound.
        let scores = hops(&[(10, 0.0), (200, 0.9), (5, 0.0), (10, 0.9), (10, 0.0)]);
        let ev = run(&cfg, &scores);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!((ev[0].onset_hop, ev[0].offset_hop), (10, 60));
        assert!(ev[0].capped && close(ev[0].duration(), 0.5));
        assert_eq!((ev[1].onset_hop, ev[1].offset_hop), (215, 225));
        assert!(!ev[1].capped);
    }

    #[test]
    fn the_maximum_length_splits_a_long_event_in_split_mode() {
        let cfg = PostprocessConfig {
            max_length: 0.5,
            after_max_length: AfterMaxLength::Split,
            cooldown: 1.0,
            ..plain()
        };
        let ev = run(&cfg, &hops(&[(10, 0.0), (120, 0.9), (10, 0.0)]));
        let spans: Vec<(u64, u64, bool, bool)> = ev
            .iter()
            .map(|e| (e.onset_hop, e.offset_hop, e.capped, e.continued))
            .collect();
        assert_eq!(
            spans,
            [
                (10, 60, true, false),
                (60, 110, true, true),
                (110, 130, false, true)
            ]
        );
        assert!(ev.iter().all(|e| e.confidence == 0.9));
    }

    #[test]
    fn a_cooldown_suppresses_a_second_event_of_the_same_class() {
        let cfg = PostprocessConfig {
            cooldown: 0.5,
            ..plain()
        };
        // Event 10..20; a second pulse at 40..50 is inside the cooldown (until hop 70); a
        // third at 80..90 is after it.
        let scores = hops(&[
            (10, 0.0),
            (10, 0.9),
            (20, 0.0),
            (10, 0.9),
            (30, 0.0),
            (10, 0.9),
            (10, 0.0),
        ]);
        let ev = run(&cfg, &scores);
        let spans: Vec<(u64, u64)> = ev.iter().map(|e| (e.onset_hop, e.offset_hop)).collect();
        assert_eq!(spans, [(10, 20), (80, 90)]);
        // A score that stays high through the end of the cooldown starts an event there.
        let ev = run(&cfg, &hops(&[(10, 0.9), (5, 0.0), (100, 0.9)]));
        let spans: Vec<(u64, u64)> = ev.iter().map(|e| (e.onset_hop, e.offset_hop)).collect();
        assert_eq!(spans, [(0, 10), (60, 115)]);
    }

    #[test]
    fn the_cooldown_is_per_class() {
        let cfg = PostprocessConfig {
            cooldown: 5.0,
            ..plain()
        };
        let mut pp = Postprocessor::new(&meta(), &cfg, HOP).unwrap();
        let mut ev = Vec::new();
        for t in 0..100 {
            let g = if (10..20).contains(&t) { 0.9 } else { 0.0 };
            let d = if (30..40).contains(&t) { 0.9 } else { 0.0 };
            ev.extend_from_slice(pp.push(&[0.0, g, d]).unwrap());
        }
        let classes: Vec<&str> = ev.iter().map(|e| pp.class_name(e.class)).collect();
        assert_eq!(classes, ["glass_break", "dog_bark"]);
    }

    #[test]
    fn flush_reports_an_open_event() {
        let mut pp = Postprocessor::new(&meta(), &plain(), HOP).unwrap();
        for t in 0..50 {
            let g = if t >= 20 { 0.8 } else { 0.0 };
            assert!(pp.push(&[1.0 - g, g, 0.0]).unwrap().is_empty());
        }
        let ev = pp.flush().to_vec();
        assert_eq!(ev.len(), 1);
        assert_eq!((ev[0].onset_hop, ev[0].offset_hop), (20, 50));
        assert!(close(ev[0].offset, 0.5));
        assert_eq!(ev[0].confidence, 0.8);
        // Nothing is left open afterwards.
        assert!(pp.flush().is_empty());
        // Too short at the end of the stream: dropped, as anywhere else.
        let cfg = PostprocessConfig {
            min_length: 0.1,
            ..plain()
        };
        assert!(run(&cfg, &hops(&[(20, 0.0), (3, 0.9)])).is_empty());
    }

    #[test]
    fn the_background_class_never_produces_events() {
        let mut pp = Postprocessor::new(&meta(), &plain(), HOP).unwrap();
        let mut n = 0;
        for _ in 0..500 {
            n += pp.push(&[1.0, 0.0, 0.0]).unwrap().len();
        }
        n += pp.flush().len();
        assert_eq!(n, 0);
        assert!(pp.params(0).is_none());
        assert_eq!(pp.event_classes().collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn thresholds_come_from_the_model_unless_overridden() {
        let pp = Postprocessor::new(&meta(), &PostprocessConfig::default(), HOP).unwrap();
        assert_eq!(pp.params(1).unwrap().threshold, 0.5);
        assert_eq!(pp.params(2).unwrap().threshold, 0.6);
        let mut cfg = plain();
        cfg.classes.insert(
            "dog_bark".into(),
            ClassOverride {
                threshold: Some(0.8),
                hysteresis: Some(0.3),
                cooldown: Some(0.255),
                ..ClassOverride::default()
            },
        );
        let pp = Postprocessor::new(&meta(), &cfg, HOP).unwrap();
        let p = pp.params(2).unwrap();
        assert_eq!(p.threshold, 0.8);
        assert!((p.off_level - 0.5).abs() < 1e-6);
        assert_eq!(p.cooldown_hops, 26);
        assert_eq!(pp.params(1).unwrap().threshold, 0.5);
        // glass_break keeps the model's threshold of 0.5: a score of 0.7 is an event.
        let ev = run(&cfg, &hops(&[(10, 0.7)]));
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].class, 1);
    }

    #[test]
    fn a_disabled_class_never_produces_events() {
        let mut cfg = plain();
        cfg.classes.insert(
            "glass_break".into(),
            ClassOverride {
                enabled: Some(false),
                ..ClassOverride::default()
            },
        );
        assert!(run(&cfg, &hops(&[(10, 0.0), (50, 0.9)])).is_empty());
    }

    #[test]
    fn non_finite_scores_count_as_zero() {
        let mut pp = Postprocessor::new(&meta(), &plain(), HOP).unwrap();
        assert!(pp.push(&[0.0, f32::NAN, f32::INFINITY]).unwrap().is_empty());
        assert_eq!(pp.nonfinite_scores(), 2);
        assert_eq!(pp.smoothed(1), Some(0.0));
        assert_eq!(
            pp.push(&[0.0, 1.0]),
            Err(PostprocessError::Scores {
                expected: 3,
                got: 2
            })
        );
    }

    fn field_of(e: ConfigError) -> String {
        match e {
            ConfigError::Invalid { field, .. } => field,
            other => panic!("not a value error: {other}"),
        }
    }

    #[test]
    fn bad_settings_are_refused_naming_the_field() {
        let m = meta();
        let with = |f: &dyn Fn(&mut PostprocessConfig)| {
            let mut c = PostprocessConfig::default();
            f(&mut c);
            field_of(Postprocessor::new(&m, &c, HOP).unwrap_err())
        };
        assert_eq!(with(&|c| c.smoothing = -0.1), "postprocess.smoothing");
        assert_eq!(with(&|c| c.hysteresis = 0.55), "postprocess.hysteresis");
        assert_eq!(with(&|c| c.max_length = 0.0), "postprocess.max_length");
        assert_eq!(with(&|c| c.cooldown = f64::NAN), "postprocess.cooldown");
        assert_eq!(
            with(&|c| {
                c.min_length = 2.0;
                c.max_length = 1.0;
            }),
            "postprocess.min_length"
        );
        assert_eq!(
            with(&|c| {
                c.classes.insert("cat".into(), ClassOverride::default());
            }),
            "postprocess.classes.cat"
        );
        assert_eq!(
            with(&|c| {
                c.classes
                    .insert("background".into(), ClassOverride::default());
            }),
            "postprocess.classes.background"
        );
        assert_eq!(
            with(&|c| {
                c.classes.insert(
                    "glass_break".into(),
                    ClassOverride {
                        threshold: Some(1.5),
                        ..ClassOverride::default()
                    },
                );
            }),
            "postprocess.classes.glass_break.threshold"
        );
        assert_eq!(
            with(&|c| {
                c.classes.insert(
                    "glass_break".into(),
                    ClassOverride {
                        threshold: Some(0.3),
                        hysteresis: Some(0.4),
                        ..ClassOverride::default()
                    },
                );
            }),
            "postprocess.classes.glass_break.hysteresis"
        );
        // The global hysteresis against a per-class threshold names the global field.
        assert_eq!(
            with(&|c| {
                c.classes.insert(
                    "glass_break".into(),
                    ClassOverride {
                        threshold: Some(0.05),
                        ..ClassOverride::default()
                    },
                );
            }),
            "postprocess.hysteresis"
        );
        assert_eq!(
            field_of(Postprocessor::new(&m, &PostprocessConfig::default(), 0.0).unwrap_err()),
            "hop_seconds"
        );
    }

    #[test]
    fn too_many_event_classes_are_refused() {
        let classes: Vec<String> = (0..=MAX_CLASSES).map(|i| format!("c{i}")).collect();
        let m = ModelMetadata {
            thresholds: classes.iter().map(|c| (c.clone(), 0.5)).collect(),
            classes,
            background: None,
            ..meta()
        };
        let e = Postprocessor::new(&m, &PostprocessConfig::default(), HOP).unwrap_err();
        assert_eq!(field_of(e), "hark.classes");
    }
}
