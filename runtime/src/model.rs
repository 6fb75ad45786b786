//! The model file and its runtime: metadata, loading with tract, one step per hop with the
//! native engine or tract.
//!
//! # The model file (format version 1)
//!
//! Standard ONNX (opset 14 to 21) with a streaming step graph:
//!
//! | name | shape | what |
//! |---|---|---|
//! | input `features` | `[1, T, n_mels]` (T symbolic) | log-mel frames |
//! | input `h_in`, `c_in` | `[layers, 1, hidden]` | LSTM state before the first frame |
//! | output `scores` | `[1, T, n_classes]` | per-class probabilities of each frame |
//! | output `h_out`, `c_out` | `[layers, 1, hidden]` | LSTM state after the last frame |
//!
//! `metadata_props` (all values JSON):
//!
//! | key | value |
//! |---|---|
//! | `hark.format_version` | `1` |
//! | `hark.classes` | array of the output columns' names, in order |
//! | `hark.background` | the name of the background column, or `null` if there is none |
//! | `hark.thresholds` | object: a detection threshold in (0, 1) for every class but the background |
//! | `hark.frontend` | the [`FrontendConfig`] the model was trained with |
//! | `hark.training` | free-form training summary (data, method, figures) |
//!
//! The runtime configures its frontend from `hark.frontend` and refuses a model whose
//! features it cannot compute, whose metadata is missing or inconsistent, or whose graph does
//! not have the inputs and outputs above, with an error that says which.
//!
//! # Engines
//!
//! tract always loads the model: it checks the graph, it is the reference, and it runs
//! [`Model::run_sequence`]. The hop-by-hop step has two engines ([`Engine`]):
//!
//! - **native** ([`crate::native`]): the graph translated at load into a static plan over
//!   preallocated buffers; a step allocates nothing. It is served only when it translates
//!   and, on a probe of [`PROBE_HOPS`] hops of pseudo-random frames from a zero state, gives
//!   the scores and states tract gives within [`PROBE_TOLERANCE`] (absolute; relative for
//!   values above 1 in magnitude, as the cell state can be).
//! - **tract**: tract's `SimpleState`, 37 to 43 allocations a hop.
//!
//! [`EngineChoice::Auto`] (the default) takes the native engine when it built and agreed
//! with tract, tract otherwise, and keeps the reason ([`Model::native_problem`]);
//! [`EngineChoice::Native`] makes that reason an error.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tract_onnx::pb::ModelProto;
use tract_onnx::prelude::*;

use crate::frontend::FrontendConfig;
use crate::native::{NativePlan, NativeState};

/// The model-file format this runtime reads and the trainer writes.
pub const FORMAT_VERSION: u32 = 1;
/// Lowest default-domain opset accepted (the LSTM `layout` attribute needs 14).
pub const MIN_OPSET: i64 = 14;
/// Highest default-domain opset accepted.
pub const MAX_OPSET: i64 = 21;

/// Hops of the probe run through both engines at load.
pub const PROBE_HOPS: usize = 200;
/// Largest difference allowed between the engines on the probe (scores and states), absolute
/// for values of magnitude up to 1, relative above (the LSTM cell state can grow large).
pub const PROBE_TOLERANCE: f32 = 1e-4;

/// Which engine steps the model, as asked for (`runtime.engine`, `--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// The native engine if it translated the graph and agreed with tract, tract otherwise.
    #[default]
    Auto,
    /// The native engine, or an error saying why it cannot serve the model.
    Native,
    /// tract.
    Tract,
}

/// The engine a model steps with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// [`crate::native`]: no allocation per hop.
    Native,
    /// tract's `SimpleState`.
    Tract,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Native => "native",
            Engine::Tract => "tract",
        })
    }
}

/// Metadata keys.
pub mod keys {
    /// Format version.
    pub const FORMAT_VERSION: &str = "hark.format_version";
    /// Output class names.
    pub const CLASSES: &str = "hark.classes";
    /// Background class name or null.
    pub const BACKGROUND: &str = "hark.background";
    /// Per-class thresholds.
    pub const THRESHOLDS: &str = "hark.thresholds";
    /// Frontend parameters.
    pub const FRONTEND: &str = "hark.frontend";
    /// Training summary.
    pub const TRAINING: &str = "hark.training";
}

/// What a model file says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelMetadata {
    /// Format version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// Output columns, in order.
    pub classes: Vec<String>,
    /// The background column, never reported as an event.
    pub background: Option<String>,
    /// Detection threshold per event class (every class but the background).
    pub thresholds: BTreeMap<String, f32>,
    /// Frontend parameters the model was trained with.
    pub frontend: FrontendConfig,
    /// Free-form training summary.
    pub training: serde_json::Value,
}

/// Why a model cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The file cannot be read.
    #[error("{name}: cannot read the model: {source}")]
    Io {
        /// The model's name.
        name: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Not decodable as ONNX.
    #[error("{name}: not an ONNX model (truncated or another kind of file): {detail}")]
    NotOnnx {
        /// The model's name.
        name: String,
        /// The decoder's message.
        detail: String,
    },
    /// Opset out of range.
    #[error(
        "{name}: ONNX opset {found} is not supported (hark reads opsets {MIN_OPSET} to {MAX_OPSET})"
    )]
    Opset {
        /// The model's name.
        name: String,
        /// The opset found (0 if none).
        found: i64,
    },
    /// Metadata missing or malformed.
    #[error("{name}: model metadata {key}: {problem}")]
    Metadata {
        /// The model's name.
        name: String,
        /// The metadata key.
        key: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// The graph's inputs or outputs are not the streaming step graph.
    #[error("{name}: not a hark streaming model: {problem}")]
    Interface {
        /// The model's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// tract could not load or optimise the graph.
    #[error("{name}: the ONNX graph cannot be run: {detail}")]
    Graph {
        /// The model's name.
        name: String,
        /// tract's message, with its causes.
        detail: String,
    },
    /// `--engine native` (or `runtime.engine = "native"`) on a model the native engine
    /// cannot serve.
    #[error("{name}: the native engine cannot run this model: {reason} (use engine auto or tract)")]
    Engine {
        /// The model's name.
        name: String,
        /// Why (an unsupported op, a mismatch with tract on the probe).
        reason: String,
    },
    /// Running a step failed.
    #[error("model step failed: {0}")]
    Run(String),
    /// Wrong number of values handed to the model.
    #[error("expected {expected} feature values, got {got}")]
    Input {
        /// Expected.
        expected: usize,
        /// Got.
        got: usize,
    },
}

impl ModelMetadata {
    /// The `metadata_props` entries of this metadata.
    pub fn to_props(&self) -> Vec<(String, String)> {
        let j = |v: serde_json::Value| v.to_string();
        vec![
            (keys::FORMAT_VERSION.into(), j(self.format_version.into())),
            (keys::CLASSES.into(), j(serde_json::json!(self.classes))),
            (
                keys::BACKGROUND.into(),
                j(serde_json::json!(self.background)),
            ),
            (
                keys::THRESHOLDS.into(),
                j(serde_json::json!(self.thresholds)),
            ),
            (
                keys::FRONTEND.into(),
                j(serde_json::to_value(&self.frontend).expect("serialisable")),
            ),
            (keys::TRAINING.into(), j(self.training.clone())),
        ]
    }

    /// Reads and validates metadata from `metadata_props` entries.
    pub fn from_props<'a>(
        name: &str,
        props: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, ModelError> {
        let map: BTreeMap<&str, &str> = props.into_iter().collect();
        let err = |key: &'static str, problem: String| ModelError::Metadata {
            name: name.to_string(),
            key,
            problem,
        };
        fn get<T: serde::de::DeserializeOwned>(
            map: &BTreeMap<&str, &str>,
            key: &'static str,
            err: &dyn Fn(&'static str, String) -> ModelError,
        ) -> Result<T, ModelError> {
            let raw = map.get(key).ok_or_else(|| {
                err(
                    key,
                    "missing (not a hark model, or made by another tool)".into(),
                )
            })?;
            serde_json::from_str(raw).map_err(|e| err(key, format!("malformed: {e} in {raw:?}")))
        }
        let format_version: u32 = get(&map, keys::FORMAT_VERSION, &err)?;
        if format_version != FORMAT_VERSION {
            return Err(err(
                keys::FORMAT_VERSION,
                format!("version {format_version}, this hark reads version {FORMAT_VERSION}"),
            ));
        }
        let meta = Self {
            format_version,
            classes: get(&map, keys::CLASSES, &err)?,
            background: get(&map, keys::BACKGROUND, &err)?,
            thresholds: get(&map, keys::THRESHOLDS, &err)?,
            frontend: get(&map, keys::FRONTEND, &err)?,
            training: map
                .get(keys::TRAINING)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or(serde_json::Value::Null),
        };
        meta.validate(name)?;
        Ok(meta)
    }

    /// Checks the metadata's internal consistency.
    pub fn validate(&self, name: &str) -> Result<(), ModelError> {
        let err = |key: &'static str, problem: String| ModelError::Metadata {
            name: name.to_string(),
            key,
            problem,
        };
        if self.classes.is_empty() {
            return Err(err(keys::CLASSES, "no classes".into()));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.classes {
            if c.is_empty() || !seen.insert(c) {
                return Err(err(
                    keys::CLASSES,
                    format!("empty or repeated class name {c:?}"),
                ));
            }
        }
        if let Some(bg) = &self.background
            && !self.classes.contains(bg)
        {
            return Err(err(
                keys::BACKGROUND,
                format!("{bg:?} is not one of the classes"),
            ));
        }
        let events: Vec<&String> = self.event_classes().map(|(_, c)| c).collect();
        if events.is_empty() {
            return Err(err(
                keys::CLASSES,
                "no event class besides the background".into(),
            ));
        }
        for c in &events {
            match self.thresholds.get(*c) {
                None => {
                    return Err(err(
                        keys::THRESHOLDS,
                        format!("no threshold for class {c:?}"),
                    ));
                }
                Some(t) if !(*t > 0.0 && *t < 1.0) => {
                    return Err(err(
                        keys::THRESHOLDS,
                        format!("threshold {t} for {c:?} is not in (0, 1)"),
                    ));
                }
                Some(_) => {}
            }
        }
        if let Some(extra) = self.thresholds.keys().find(|k| !events.contains(k)) {
            return Err(err(
                keys::THRESHOLDS,
                format!("threshold for {extra:?}, which is not an event class of this model"),
            ));
        }
        self.frontend
            .validate()
            .map_err(|e| err(keys::FRONTEND, e.to_string()))
    }

    /// `(column, name)` of every class that is reported as an event.
    pub fn event_classes(&self) -> impl Iterator<Item = (usize, &String)> {
        self.classes
            .iter()
            .enumerate()
            .filter(move |(_, c)| Some(*c) != self.background.as_ref())
    }
}

/// A loaded, optimised model, shared by any number of streams.
#[derive(Debug, Clone)]
pub struct Model {
    name: String,
    meta: ModelMetadata,
    layers: usize,
    hidden: usize,
    n_classes: usize,
    inference: Arc<InferenceModel>,
    step_plan: Arc<TypedRunnableModel>,
    /// The native plan, when it translated and agreed with tract.
    native: Option<Arc<NativePlan>>,
    /// Why there is no native plan.
    native_problem: Option<String>,
    engine: Engine,
}

fn graph_err(name: &str) -> impl Fn(TractError) -> ModelError + '_ {
    move |e| ModelError::Graph {
        name: name.to_string(),
        detail: format!("{e:#}"),
    }
}

fn dims_of(v: &tract_onnx::pb::ValueInfoProto) -> Option<Vec<Option<i64>>> {
    use tract_onnx::pb::tensor_shape_proto::dimension::Value as D;
    use tract_onnx::pb::type_proto::Value as T;
    let T::TensorType(t) = v.r#type.as_ref()?.value.as_ref()?;
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(D::DimValue(n)) => Some(n),
                _ => None,
            })
            .collect(),
    )
}

impl Model {
    /// Loads a model file, with the default engine choice (auto).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelError> {
        Self::load_with(path, EngineChoice::Auto)
    }

    /// Loads a model file to be stepped by the engine `choice` asks for.
    pub fn load_with(path: impl AsRef<Path>, choice: EngineChoice) -> Result<Self, ModelError> {
        let path = path.as_ref();
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            name: name.clone(),
            source,
        })?;
        Self::from_bytes_with(&bytes, &name, choice)
    }

    /// Loads a model from its bytes; `name` is used in messages. Engine choice auto.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self, ModelError> {
        Self::from_bytes_with(bytes, name, EngineChoice::Auto)
    }

    /// Loads a model from its bytes, to be stepped by the engine `choice` asks for.
    pub fn from_bytes_with(
        bytes: &[u8],
        name: &str,
        choice: EngineChoice,
    ) -> Result<Self, ModelError> {
        let not_onnx = |detail: String| ModelError::NotOnnx {
            name: name.to_string(),
            detail,
        };
        if bytes.is_empty() {
            return Err(not_onnx("the file is empty".into()));
        }
        let onnx = tract_onnx::onnx();
        let proto: ModelProto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| not_onnx(format!("{e:#}")))?;
        let graph = proto
            .graph
            .as_ref()
            .ok_or_else(|| not_onnx("no graph in the file".into()))?;
        let opset = proto
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(0, |o| o.version);
        if !(MIN_OPSET..=MAX_OPSET).contains(&opset) {
            return Err(ModelError::Opset {
                name: name.to_string(),
                found: opset,
            });
        }
        let meta = ModelMetadata::from_props(
            name,
            proto
                .metadata_props
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_str())),
        )?;
        let iface = |problem: String| ModelError::Interface {
            name: name.to_string(),
            problem,
        };
        let names = |v: &[tract_onnx::pb::ValueInfoProto]| -> Vec<String> {
            v.iter().map(|i| i.name.clone()).collect()
        };
        let initializers: std::collections::HashSet<&str> =
            graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let inputs: Vec<&tract_onnx::pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !initializers.contains(i.name.as_str()))
            .collect();
        let input_names: Vec<String> = inputs.iter().map(|i| i.name.clone()).collect();
        if input_names != ["features", "h_in", "c_in"] {
            return Err(iface(format!(
                "inputs are {input_names:?}, expected [\"features\", \"h_in\", \"c_in\"]"
            )));
        }
        if names(&graph.output) != ["scores", "h_out", "c_out"] {
            return Err(iface(format!(
                "outputs are {:?}, expected [\"scores\", \"h_out\", \"c_out\"]",
                names(&graph.output)
            )));
        }
        let n_mels = meta.frontend.n_mels as i64;
        match dims_of(inputs[0]).as_deref() {
            Some([Some(1), _, Some(m)]) if *m == n_mels => {}
            other => {
                return Err(iface(format!(
                    "input features has shape {other:?}, expected [1, T, {n_mels}] (n_mels from hark.frontend)"
                )));
            }
        }
        let state_shape = |i: usize| match dims_of(inputs[i]).as_deref() {
            Some(&[Some(l), Some(1), Some(h)]) if l > 0 && h > 0 => Ok((l as usize, h as usize)),
            other => Err(iface(format!(
                "input {} has shape {other:?}, expected [layers, 1, hidden]",
                inputs[i].name
            ))),
        };
        let (layers, hidden) = state_shape(1)?;
        if state_shape(2)? != (layers, hidden) {
            return Err(iface("h_in and c_in have different shapes".into()));
        }
        let inference = onnx
            .model_for_proto_model(&proto)
            .map_err(graph_err(name))?;
        let inference = Arc::new(inference);
        let step_plan = Self::plan(&inference, 1, meta.frontend.n_mels, layers, hidden)
            .map_err(graph_err(name))?;
        let n_classes = {
            let out = step_plan.model().output_fact(0).map_err(graph_err(name))?;
            match out.shape.as_concrete() {
                Some(&[1, 1, c]) => c,
                other => {
                    return Err(iface(format!(
                        "scores has shape {other:?}, expected [1, T, classes]"
                    )));
                }
            }
        };
        if n_classes != meta.classes.len() {
            return Err(ModelError::Metadata {
                name: name.to_string(),
                key: keys::CLASSES,
                problem: format!(
                    "{} classes named, the graph scores {n_classes}",
                    meta.classes.len()
                ),
            });
        }
        let mut model = Self {
            name: name.to_string(),
            meta,
            layers,
            hidden,
            n_classes,
            inference,
            step_plan,
            native: None,
            native_problem: None,
            engine: Engine::Tract,
        };
        match NativePlan::build(graph, model.meta.frontend.n_mels, layers, hidden)
            .and_then(|plan| model.probe(&plan).map(|()| plan))
        {
            Ok(plan) => model.native = Some(Arc::new(plan)),
            Err(reason) => model.native_problem = Some(reason),
        }
        model.select(choice)?;
        Ok(model)
    }

    /// Steps with the engine `choice` asks for from now on (streams made before keep theirs).
    pub fn select(&mut self, choice: EngineChoice) -> Result<(), ModelError> {
        self.engine = match (choice, &self.native) {
            (EngineChoice::Tract, _) | (EngineChoice::Auto, None) => Engine::Tract,
            (EngineChoice::Auto | EngineChoice::Native, Some(_)) => Engine::Native,
            (EngineChoice::Native, None) => {
                return Err(ModelError::Engine {
                    name: self.name.clone(),
                    reason: self.native_problem.clone().unwrap_or_default(),
                });
            }
        };
        Ok(())
    }

    /// Runs [`PROBE_HOPS`] hops of pseudo-random frames through tract and `plan` from a zero
    /// state; `Err` says where they first differ by more than [`PROBE_TOLERANCE`].
    fn probe(&self, plan: &NativePlan) -> Result<(), String> {
        let n_mels = self.meta.frontend.n_mels;
        let mut tract = self
            .tract_stream()
            .map_err(|e| format!("probe: tract: {e}"))?;
        let mut native = plan.state();
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut frame = vec![0.0f32; n_mels];
        for v in frame.iter_mut() {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            *v = ((rng >> 40) as f32 / (1u64 << 24) as f32) * 12.0 - 9.0;
        }
        for hop in 0..PROBE_HOPS {
            // Log-mel-like frames: a random walk in about [-14, 8] with a jump now and then.
            for v in frame.iter_mut() {
                rng = rng
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (rng >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                *v = if hop % 50 == 25 {
                    u * 20.0 - 3.0
                } else {
                    *v * 0.9 + u * 3.0
                }
                .clamp(-14.0, 8.0);
            }
            let want = tract
                .step(&frame)
                .map_err(|e| format!("probe: tract: {e}"))?
                .to_vec();
            plan.step(&mut native, &frame);
            let (h, c) = tract
                .state_values()
                .map_err(|e| format!("probe: tract: {e}"))?;
            let (nh, nc) = plan.state_values(&native);
            for (what, a, b) in [
                ("scores", &want[..], plan.scores(&native)),
                ("h_out", &h[..], nh),
                ("c_out", &c[..], nc),
            ] {
                if a.len() != b.len() {
                    return Err(format!(
                        "probe: {what} has {} values natively, {} with tract",
                        b.len(),
                        a.len()
                    ));
                }
                // Absolute below magnitude 1 (scores, h), relative above: the cell state
                // integrates over hops (forget gate near 1) and grows, and with it the f32
                // rounding by which two correct implementations differ.
                let mut worst = (0.0f32, 0.0f32);
                for (x, y) in a.iter().zip(b) {
                    let d = if x.is_nan() && y.is_nan() {
                        0.0
                    } else if x.is_nan() || y.is_nan() {
                        f32::INFINITY
                    } else {
                        (x - y).abs() / x.abs().max(1.0)
                    };
                    if d > worst.0 {
                        worst = (d, *x);
                    }
                }
                if worst.0 > PROBE_TOLERANCE {
                    return Err(format!(
                        "probe: {what} differs from tract's by {:.2e} (relative to max(1, |{:.3}|)) at hop {hop} (tolerance {PROBE_TOLERANCE:.0e})",
                        worst.0, worst.1
                    ));
                }
            }
        }
        Ok(())
    }

    fn plan(
        inference: &InferenceModel,
        frames: usize,
        n_mels: usize,
        layers: usize,
        hidden: usize,
    ) -> TractResult<Arc<TypedRunnableModel>> {
        (*inference)
            .clone()
            .with_input_fact(0, f32::fact([1, frames, n_mels]).into())?
            .with_input_fact(1, f32::fact([layers, 1, hidden]).into())?
            .with_input_fact(2, f32::fact([layers, 1, hidden]).into())?
            .into_optimized()?
            .into_runnable()
    }

    /// The model's name (its path, for messages).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its metadata.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.meta
    }

    /// LSTM layers and hidden units (the state's shape).
    pub fn state_shape(&self) -> (usize, usize) {
        (self.layers, self.hidden)
    }

    /// Number of output classes.
    pub fn n_classes(&self) -> usize {
        self.n_classes
    }

    /// The engine new streams step with.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Why the native engine cannot serve this model (`None` when it can).
    pub fn native_problem(&self) -> Option<&str> {
        self.native_problem.as_deref()
    }

    /// One line about the native plan (`None` when there is none).
    pub fn native_summary(&self) -> Option<&str> {
        self.native.as_deref().map(NativePlan::summary)
    }

    /// A new stream with the state zeroed, stepped by [`Model::engine`].
    pub fn stream(&self) -> Result<ModelStream, ModelError> {
        let n_mels = self.meta.frontend.n_mels;
        let inner = match (&self.native, self.engine) {
            (Some(plan), Engine::Native) => Inner::Native {
                state: plan.state(),
                plan: plan.clone(),
            },
            _ => Inner::Tract(Box::new(self.tract_stream()?)),
        };
        Ok(ModelStream { inner, n_mels })
    }

    fn tract_stream(&self) -> Result<TractStream, ModelError> {
        let run = |e: TractError| ModelError::Run(format!("{e:#}"));
        let state = self.step_plan.spawn().map_err(run)?;
        let zeros = || Tensor::zero::<f32>(&[self.layers, 1, self.hidden]).map_err(run);
        let n_mels = self.meta.frontend.n_mels;
        Ok(TractStream {
            state,
            x: Arc::new(Tensor::zero::<f32>(&[1, 1, n_mels]).map_err(run)?),
            h: Some(zeros()?.into_tvalue()),
            c: Some(zeros()?.into_tvalue()),
            state_shape: (self.layers, self.hidden),
            n_mels,
            scores: vec![0.0; self.n_classes],
        })
    }

    /// Runs a whole sequence of `frames.len() / n_mels` frames in one call from a zero state;
    /// returns the scores, row-major `[T, n_classes]`. Builds a plan for that length.
    pub fn run_sequence(&self, frames: &[f32]) -> Result<Vec<f32>, ModelError> {
        let n_mels = self.meta.frontend.n_mels;
        if frames.is_empty() || !frames.len().is_multiple_of(n_mels) {
            return Err(ModelError::Input {
                expected: n_mels,
                got: frames.len(),
            });
        }
        let t = frames.len() / n_mels;
        let run = |e: TractError| ModelError::Run(format!("{e:#}"));
        let plan = Self::plan(&self.inference, t, n_mels, self.layers, self.hidden).map_err(run)?;
        let x = Tensor::from_shape(&[1, t, n_mels], frames).map_err(run)?;
        let z = Tensor::zero::<f32>(&[self.layers, 1, self.hidden]).map_err(run)?;
        let out = plan
            .run(tvec![x.into(), z.clone().into(), z.into()])
            .map_err(run)?;
        out[0]
            .try_as_plain_ram()
            .and_then(|v| v.as_slice::<f32>().map(<[f32]>::to_vec))
            .map_err(run)
    }
}

/// One stream: the LSTM's h and c carried from hop to hop, in the engine of its model.
pub struct ModelStream {
    inner: Inner,
    n_mels: usize,
}

enum Inner {
    Native {
        plan: Arc<NativePlan>,
        state: NativeState,
    },
    Tract(Box<TractStream>),
}

impl std::fmt::Debug for ModelStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelStream")
            .field("engine", &self.engine())
            .finish_non_exhaustive()
    }
}

impl ModelStream {
    /// Feeds one frame of features; returns the class scores for it. With the native
    /// engine this allocates nothing.
    pub fn step(&mut self, frame: &[f32]) -> Result<&[f32], ModelError> {
        if frame.len() != self.n_mels {
            return Err(ModelError::Input {
                expected: self.n_mels,
                got: frame.len(),
            });
        }
        match &mut self.inner {
            Inner::Native { plan, state } => {
                plan.step(state, frame);
                Ok(plan.scores(state))
            }
            Inner::Tract(t) => t.step(frame),
        }
    }

    /// Zeroes the LSTM state (a new, unrelated stream begins).
    pub fn reset(&mut self) {
        match &mut self.inner {
            Inner::Native { plan, state } => plan.reset(state),
            Inner::Tract(t) => t.reset(),
        }
    }

    /// The engine of this stream.
    pub fn engine(&self) -> Engine {
        match self.inner {
            Inner::Native { .. } => Engine::Native,
            Inner::Tract(_) => Engine::Tract,
        }
    }
}

/// One tract stream: tract's own state and the LSTM's h and c.
///
/// A step hands tract the same input tensor every hop (its `Arc` is shared with tract for
/// the run and written in place between runs) and passes the `h_out`/`c_out` values of one
/// hop straight back as the next hop's `h_in`/`c_in`, so the stream itself allocates
/// nothing per hop. tract does: every node of the plan returns freshly allocated output
/// tensors (see `runtime/tests/model_alloc.rs` for the count and the reasons).
struct TractStream {
    state: TypedSimpleState,
    /// The `features` input, `[1, 1, n_mels]`, reused.
    x: Arc<Tensor>,
    /// `h_in` of the next hop (`None` only during a step).
    h: Option<TValue>,
    /// `c_in` of the next hop.
    c: Option<TValue>,
    state_shape: (usize, usize),
    n_mels: usize,
    scores: Vec<f32>,
}

impl TractStream {
    /// The state carried to the next hop, `(h, c)` (copies; for the probe).
    fn state_values(&self) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
        let run = |e: TractError| ModelError::Run(format!("{e:#}"));
        let read = |v: &Option<TValue>| -> Result<Vec<f32>, ModelError> {
            let v = v
                .as_ref()
                .ok_or_else(|| ModelError::Run("no state after a failed step".into()))?;
            v.try_as_plain_ram()
                .and_then(|r| r.as_slice::<f32>().map(<[f32]>::to_vec))
                .map_err(run)
        };
        Ok((read(&self.h)?, read(&self.c)?))
    }

    /// Feeds one frame of features (`n_mels` values, checked by the caller); returns the
    /// class scores for it.
    fn step(&mut self, frame: &[f32]) -> Result<&[f32], ModelError> {
        let run = |e: TractError| ModelError::Run(format!("{e:#}"));
        // tract released its references at the end of the last run: the tensor is ours to
        // write. (Should anything still hold it, a new one is made rather than failing.)
        match Arc::get_mut(&mut self.x) {
            Some(x) => x
                .try_as_plain_ram_mut()
                .and_then(|mut v| {
                    v.as_slice_mut::<f32>()?.copy_from_slice(frame);
                    Ok(())
                })
                .map_err(run)?,
            None => {
                self.x = Arc::new(Tensor::from_shape(&[1, 1, self.n_mels], frame).map_err(run)?)
            }
        }
        let (h, c) = match (self.h.take(), self.c.take()) {
            (Some(h), Some(c)) => (h, c),
            // A previous step failed midway: start again from a zero state.
            _ => {
                let (layers, hidden) = self.state_shape;
                let z = || {
                    Tensor::zero::<f32>(&[layers, 1, hidden])
                        .map(IntoTValue::into_tvalue)
                        .map_err(run)
                };
                (z()?, z()?)
            }
        };
        let mut out = self
            .state
            .run(tvec![TValue::from_const(self.x.clone()), h, c])
            .map_err(run)?;
        self.c = out.pop();
        self.h = out.pop();
        let scores = out.pop().expect("three outputs");
        let view = scores.try_as_plain_ram().map_err(run)?;
        self.scores
            .copy_from_slice(view.as_slice::<f32>().map_err(run)?);
        Ok(&self.scores)
    }

    /// Zeroes the LSTM state (a new, unrelated stream begins); the next step allocates the
    /// zero state.
    fn reset(&mut self) {
        self.h = None;
        self.c = None;
    }
}
