//! The processing chain of one stream: frontend → model step (LSTM state carried) →
//! post-processing → events. Built once; [`Detector::push`] takes samples of any chunk size.

use crate::config::ConfigError;
use crate::frontend::{Frontend, FrontendConfigError};
use crate::level::LevelMeter;
use crate::model::{Model, ModelError, ModelStream};
use crate::postprocess::{Event, PostprocessConfig, Postprocessor};

/// Why a detector could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The model's frontend parameters cannot be computed.
    #[error(transparent)]
    Frontend(#[from] FrontendConfigError),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The post-processing configuration does not fit the model.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// One stream's detector.
pub struct Detector {
    frontend: Frontend,
    stream: ModelStream,
    post: Postprocessor,
    level: LevelMeter,
    last_scores: Vec<f32>,
    /// Class names by column (the events refer to columns).
    names: Vec<String>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("frontend", &self.frontend)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// A detector for `model` with post-processing `cfg` (thresholds default to the model's).
    pub fn new(model: &Model, cfg: &PostprocessConfig) -> Result<Self, PipelineError> {
        let fcfg = model.metadata().frontend.clone();
        let hop_s = fcfg.hop_s();
        let level = LevelMeter::new(fcfg.sample_rate, cfg.level_smoothing)?;
        Ok(Self {
            frontend: Frontend::new(fcfg)?,
            stream: model.stream()?,
            post: Postprocessor::new(model.metadata(), cfg, hop_s)?,
            level,
            last_scores: vec![0.0; model.n_classes()],
            names: model.metadata().classes.clone(),
        })
    }

    /// Pushes samples (mono, at the model's rate); calls `on_event` for every event that
    /// ends within them. Returns the first model error, if any (the hops before it were
    /// processed and their events reported).
    pub fn push(
        &mut self,
        samples: &[f32],
        mut on_event: impl FnMut(&Event, &str),
    ) -> Result<(), PipelineError> {
        self.level.update(samples);
        let (stream, post, last, names) = (
            &mut self.stream,
            &mut self.post,
            &mut self.last_scores,
            &self.names,
        );
        let mut error = None;
        self.frontend.push(samples, |_, frame| {
            if error.is_some() {
                return;
            }
            match stream.step(frame) {
                Ok(scores) => {
                    last.copy_from_slice(scores);
                    match post.push(scores) {
                        Ok(events) => {
                            for e in events {
                                on_event(e, &names[e.class]);
                            }
                        }
                        Err(e) => error = Some(ModelError::Run(e.to_string())),
                    }
                }
                Err(e) => error = Some(e),
            }
        });
        match error {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// End of stream: reports the events still open.
    pub fn finish(&mut self, mut on_event: impl FnMut(&Event, &str)) {
        for e in self.post.flush() {
            on_event(e, &self.names[e.class]);
        }
    }

    /// Starts a new, unrelated stream (state, frames and events forgotten).
    pub fn reset(&mut self) {
        self.frontend.reset();
        self.stream.reset();
        self.post.reset();
        self.level.reset();
    }

    /// The raw scores of the last hop, one per model class.
    pub fn last_scores(&self) -> &[f32] {
        &self.last_scores
    }

    /// The post-processor (smoothed scores, class names).
    pub fn postprocessor(&self) -> &Postprocessor {
        &self.post
    }

    /// Sound level meter.
    pub fn level(&self) -> &LevelMeter {
        &self.level
    }

    /// The frontend (hop count, non-finite samples replaced).
    pub fn frontend(&self) -> &Frontend {
        &self.frontend
    }
}

/// An event as written to JSON lines and sinks, in the design's field order:
/// `{"file": ..., "class": ..., "onset": ..., "offset": ..., "confidence": ...}` for file
/// input, `time` (RFC 3339 wall clock of the onset) instead of `file` for live input.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    /// The input file (file input only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub file: Option<String>,
    /// Wall-clock time of the onset, RFC 3339 (live input only).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub time: Option<String>,
    /// The class name.
    pub class: String,
    /// Onset, seconds from the start of the stream or file (millisecond precision).
    pub onset: f64,
    /// Offset, seconds from the start of the stream or file.
    pub offset: f64,
    /// Peak smoothed score during the event.
    pub confidence: f32,
}

impl EventRecord {
    /// The record of `event` of class `class` in `file`.
    pub fn for_file(file: &str, event: &Event, class: &str) -> Self {
        Self {
            file: Some(file.to_string()),
            time: None,
            class: class.to_string(),
            onset: round3(event.onset),
            offset: round3(event.offset),
            confidence: (event.confidence * 1000.0).round() / 1000.0,
        }
    }
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
