//! ONNX export of the streaming step graph (see `hark::model` for the contract).
//!
//! burn cannot export an LSTM, so the graph is written here with tract-onnx's protobuf types:
//!
//! ```text
//! features [1,T,M] ─Transpose→ [T,1,M] ─LSTM₀(h_in[0], c_in[0])→ Y [T,1,1,H] ─Squeeze→ [T,1,H]
//!   ─ … LSTM_{L-1} … ─Transpose→ [1,T,H] ─(MatMul + Add + activation)*→ ─Softmax|Sigmoid→ scores
//! h_out = Concat(Y_h of every layer), c_out = Concat(Y_c of every layer)      [L,1,H]
//! ```
//!
//! The LSTM is the standard ONNX `LSTM` op (opset 17, gate order i, o, f, c, forward
//! direction, `layout = 0`), so tract fuses it into one step per hop and onnxruntime runs the
//! same file. [`StreamingNet::forward_reference`] computes the same function in plain Rust;
//! the parity tests hold burn, this reference, tract and onnxruntime together.
//!
//! Two variants keep the same inputs and outputs: an ensemble of such networks merged into
//! one ([`StreamingNet::merge`], block-diagonal weights, [`OutputActivation::MeanSoftmax`]),
//! and the causal CNN's step graph ([`CnnStepNet`]), whose `h_in`/`h_out` carry the past
//! frames of every convolution.

use prost::Message;
use tract_onnx::pb;

use hark::model::ModelMetadata;

use crate::model::{LinearWeights, LstmWeights};

/// The opset the exporter writes.
pub const OPSET: i64 = 17;

/// Activation after a dense layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None.
    Identity,
    /// max(0, x).
    Relu,
    /// tanh.
    Tanh,
}

/// The scores' activation over the classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputActivation {
    /// Mutually exclusive classes (one of them the background).
    Softmax,
    /// Independent per-class probabilities.
    Sigmoid,
    /// An ensemble of `members` softmax classifiers side by side (see
    /// [`StreamingNet::merge`]): the last dense layer gives `members × classes` logits,
    /// member-major; each member's logits go through a softmax over the classes and the
    /// scores are the mean over the members (`Reshape [1,T,M,C] → Softmax → ReduceMean`).
    MeanSoftmax {
        /// Members `M`.
        members: usize,
    },
}

/// A dense layer and the activation after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// Weights, ONNX layout.
    pub weights: LinearWeights,
    /// Activation.
    pub activation: Activation,
}

/// Multiply-adds of dense layers on one frame (the LSTM's and the CNN's step graphs).
fn dense_multiply_adds(dense: &[Dense]) -> usize {
    dense.iter().map(|d| d.weights.d_in * d.weights.d_out).sum()
}

/// Everything the step graph computes, as plain arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamingNet {
    /// Feature dimension.
    pub n_mels: usize,
    /// The LSTM stack (all layers of one hidden size).
    pub lstm: Vec<LstmWeights>,
    /// Dense layers after the LSTM (embedding projection, classifier...).
    pub dense: Vec<Dense>,
    /// Output activation.
    pub output: OutputActivation,
}

/// Why a network cannot be exported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot export: {0}")]
pub struct ExportError(pub String);

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

fn softmax_in_place(v: &mut [f32]) {
    let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let s: f32 = v.iter().map(|x| (x - m).exp()).sum();
    v.iter_mut().for_each(|x| *x = (*x - m).exp() / s);
}

/// The metadata of a step graph agrees with the network: valid, the network's mel bands, one
/// name per scored class.
fn check_metadata(
    meta: &ModelMetadata,
    n_mels: usize,
    n_classes: usize,
) -> Result<(), ExportError> {
    meta.validate("export")
        .map_err(|e| ExportError(e.to_string()))?;
    if meta.frontend.n_mels != n_mels {
        return Err(ExportError(format!(
            "the frontend has {} mel bands, the network takes {n_mels}",
            meta.frontend.n_mels
        )));
    }
    if meta.classes.len() != n_classes {
        return Err(ExportError(format!(
            "{} classes named, the network scores {n_classes}",
            meta.classes.len()
        )));
    }
    Ok(())
}

impl StreamingNet {
    /// LSTM layers.
    pub fn layers(&self) -> usize {
        self.lstm.len()
    }

    /// LSTM hidden size.
    pub fn hidden(&self) -> usize {
        self.lstm.first().map_or(0, |l| l.hidden_size)
    }

    /// Output classes.
    pub fn n_classes(&self) -> usize {
        let outputs = self.dense.last().map_or(self.hidden(), |d| d.weights.d_out);
        match self.output {
            OutputActivation::MeanSoftmax { members } => outputs / members.max(1),
            _ => outputs,
        }
    }

    /// Checks that the shapes chain together.
    pub fn validate(&self) -> Result<(), ExportError> {
        let e = |m: String| Err(ExportError(m));
        if self.lstm.is_empty() {
            return e("no LSTM layer".into());
        }
        let h = self.hidden();
        let mut d = self.n_mels;
        for (i, l) in self.lstm.iter().enumerate() {
            if l.input_size != d || l.hidden_size != h {
                return e(format!(
                    "LSTM layer {i} is {}→{}, expected {d}→{h}",
                    l.input_size, l.hidden_size
                ));
            }
            if l.w.len() != 4 * h * d || l.r.len() != 4 * h * h || l.b.len() != 8 * h {
                return e(format!(
                    "LSTM layer {i} has weight arrays of the wrong size"
                ));
            }
            d = h;
        }
        for (i, layer) in self.dense.iter().enumerate() {
            let w = &layer.weights;
            if w.d_in != d || w.weight.len() != w.d_in * w.d_out || w.bias.len() != w.d_out {
                return e(format!("dense layer {i} does not fit its input of {d}"));
            }
            d = w.d_out;
        }
        if let OutputActivation::MeanSoftmax { members } = self.output
            && (members == 0 || !d.is_multiple_of(members))
        {
            return e(format!(
                "{d} outputs do not split into {members} ensemble members"
            ));
        }
        Ok(())
    }

    /// Merges softmax networks of the same shape into one step graph that scores the mean of
    /// their softmax outputs ([`OutputActivation::MeanSoftmax`]): one LSTM stack of
    /// `members × hidden` units whose weights are block-diagonal (member `m` owns units
    /// `m H .. (m + 1) H` of every gate; the first layer's input, the features, is shared),
    /// and block-diagonal dense layers, so each member computes exactly what it computes
    /// alone and the state `[layers, 1, members × hidden]` holds every member's state side
    /// by side.
    pub fn merge(members: &[StreamingNet]) -> Result<StreamingNet, ExportError> {
        let e = |m: String| Err(ExportError(m));
        let Some(first) = members.first() else {
            return e("an ensemble needs at least one member".into());
        };
        for (k, n) in members.iter().enumerate() {
            n.validate()?;
            let same = n.n_mels == first.n_mels
                && n.layers() == first.layers()
                && n.hidden() == first.hidden()
                && n.dense.len() == first.dense.len()
                && n.dense.iter().zip(&first.dense).all(|(a, b)| {
                    a.activation == b.activation
                        && (a.weights.d_in, a.weights.d_out) == (b.weights.d_in, b.weights.d_out)
                });
            if !same {
                return e(format!(
                    "ensemble member {k} differs in shape from member 0"
                ));
            }
            if n.output != OutputActivation::Softmax {
                return e(format!("ensemble member {k} has no softmax output"));
            }
        }
        if first.dense.is_empty() {
            return e("ensemble members need a dense layer after the LSTM".into());
        }
        let m = members.len();
        let h = first.hidden();
        let mh = m * h;
        let lstm = (0..first.layers())
            .map(|l| {
                let shared_input = l == 0;
                let d = if shared_input { first.n_mels } else { mh };
                let (mut w, mut r) = (vec![0.0f32; 4 * mh * d], vec![0.0f32; 4 * mh * mh]);
                let mut b = vec![0.0f32; 8 * mh];
                for (k, n) in members.iter().enumerate() {
                    let src = &n.lstm[l];
                    let d_src = src.input_size;
                    for g in 0..4 {
                        for j in 0..h {
                            let (row, s) = (g * mh + k * h + j, g * h + j);
                            let src_w = &src.w[s * d_src..(s + 1) * d_src];
                            let col0 = if shared_input { 0 } else { k * h };
                            w[row * d + col0..row * d + col0 + d_src].copy_from_slice(src_w);
                            r[row * mh + k * h..row * mh + (k + 1) * h]
                                .copy_from_slice(&src.r[s * h..(s + 1) * h]);
                            b[row] = src.b[s];
                            b[4 * mh + row] = src.b[4 * h + s];
                        }
                    }
                }
                LstmWeights {
                    input_size: d,
                    hidden_size: mh,
                    w,
                    r,
                    b,
                }
            })
            .collect();
        let dense = (0..first.dense.len())
            .map(|i| {
                let (d_in, d_out) = (first.dense[i].weights.d_in, first.dense[i].weights.d_out);
                let (mi, mo) = (m * d_in, m * d_out);
                let mut weight = vec![0.0f32; mo * mi];
                let mut bias = Vec::with_capacity(mo);
                for (k, n) in members.iter().enumerate() {
                    let src = &n.dense[i].weights;
                    for o in 0..d_out {
                        let row = (k * d_out + o) * mi + k * d_in;
                        weight[row..row + d_in]
                            .copy_from_slice(&src.weight[o * d_in..(o + 1) * d_in]);
                    }
                    bias.extend_from_slice(&src.bias);
                }
                Dense {
                    weights: LinearWeights {
                        d_in: mi,
                        d_out: mo,
                        weight,
                        bias,
                    },
                    activation: first.dense[i].activation,
                }
            })
            .collect();
        Ok(StreamingNet {
            n_mels: first.n_mels,
            lstm,
            dense,
            output: OutputActivation::MeanSoftmax { members: m },
        })
    }

    /// Multiply-adds per hop (one frame), the figure of the model card.
    pub fn multiply_adds_per_hop(&self) -> usize {
        let lstm: usize = self
            .lstm
            .iter()
            .map(|l| 4 * l.hidden_size * (l.input_size + l.hidden_size) + 3 * l.hidden_size)
            .sum();
        lstm + dense_multiply_adds(&self.dense)
    }

    /// The graph's function in plain Rust: runs `frames` (`T * n_mels`) from the state `h`,
    /// `c` (`layers * hidden` each, updated in place); returns scores `T * n_classes`.
    pub fn forward_reference(&self, frames: &[f32], h: &mut [f32], c: &mut [f32]) -> Vec<f32> {
        let hs = self.hidden();
        let mut scores = Vec::new();
        let mut gates = vec![0.0f32; 4 * hs];
        for x in frames.chunks_exact(self.n_mels) {
            let mut input = x.to_vec();
            for (l, w) in self.lstm.iter().enumerate() {
                let (hl, cl) = (&mut h[l * hs..(l + 1) * hs], &mut c[l * hs..(l + 1) * hs]);
                for (g, gate) in gates.iter_mut().enumerate() {
                    let mut acc = w.b[g] + w.b[4 * hs + g];
                    let wrow = &w.w[g * w.input_size..(g + 1) * w.input_size];
                    acc += wrow.iter().zip(&input).map(|(a, b)| a * b).sum::<f32>();
                    let rrow = &w.r[g * hs..(g + 1) * hs];
                    acc += rrow.iter().zip(hl.iter()).map(|(a, b)| a * b).sum::<f32>();
                    *gate = acc;
                }
                // ONNX gate order: i, o, f, c.
                for k in 0..hs {
                    let i = sigmoid(gates[k]);
                    let o = sigmoid(gates[hs + k]);
                    let f = sigmoid(gates[2 * hs + k]);
                    let g = gates[3 * hs + k].tanh();
                    cl[k] = f * cl[k] + i * g;
                    hl[k] = o * cl[k].tanh();
                }
                input = hl.to_vec();
            }
            for d in &self.dense {
                let w = &d.weights;
                input = (0..w.d_out)
                    .map(|o| {
                        let v = w.bias[o]
                            + w.weight[o * w.d_in..(o + 1) * w.d_in]
                                .iter()
                                .zip(&input)
                                .map(|(a, b)| a * b)
                                .sum::<f32>();
                        match d.activation {
                            Activation::Identity => v,
                            Activation::Relu => v.max(0.0),
                            Activation::Tanh => v.tanh(),
                        }
                    })
                    .collect();
            }
            match self.output {
                OutputActivation::Sigmoid => input.iter_mut().for_each(|v| *v = sigmoid(*v)),
                OutputActivation::Softmax => softmax_in_place(&mut input),
                OutputActivation::MeanSoftmax { members } => {
                    let c = input.len() / members;
                    let mut mean = vec![0.0f32; c];
                    for member in input.chunks_exact_mut(c) {
                        softmax_in_place(member);
                        mean.iter_mut()
                            .zip(member.iter())
                            .for_each(|(m, v)| *m += v / members as f32);
                    }
                    input = mean;
                }
            }
            scores.extend_from_slice(&input);
        }
        scores
    }

    /// Serialises the step graph with `meta` as `metadata_props`.
    pub fn to_onnx(&self, meta: &ModelMetadata) -> Result<Vec<u8>, ExportError> {
        self.validate()?;
        check_metadata(meta, self.n_mels, self.n_classes())?;
        Ok(self.model_proto(meta).encode_to_vec())
    }

    fn model_proto(&self, meta: &ModelMetadata) -> pb::ModelProto {
        let (layers, hs) = (self.layers(), self.hidden());
        let mut g = GraphBuilder::default();
        g.init_i64("axes_0", &[1], &[0]);
        g.init_i64("axes_1", &[1], &[1]);
        g.node(
            "Transpose",
            &["features"],
            &["x_0"],
            vec![ints("perm", &[1, 0, 2])],
        );
        let (mut hs_out, mut cs_out) = (Vec::new(), Vec::new());
        for (l, w) in self.lstm.iter().enumerate() {
            let p = |s: &str| format!("lstm{l}_{s}");
            g.init_i64(&p("start"), &[1], &[l as i64]);
            g.init_i64(&p("end"), &[1], &[l as i64 + 1]);
            g.node(
                "Slice",
                &["h_in", &p("start"), &p("end"), "axes_0"],
                &[&p("h0")],
                vec![],
            );
            g.node(
                "Slice",
                &["c_in", &p("start"), &p("end"), "axes_0"],
                &[&p("c0")],
                vec![],
            );
            g.init_f32(&p("W"), &[1, 4 * hs as i64, w.input_size as i64], &w.w);
            g.init_f32(&p("R"), &[1, 4 * hs as i64, hs as i64], &w.r);
            g.init_f32(&p("B"), &[1, 8 * hs as i64], &w.b);
            g.node(
                "LSTM",
                &[
                    &format!("x_{l}"),
                    &p("W"),
                    &p("R"),
                    &p("B"),
                    "",
                    &p("h0"),
                    &p("c0"),
                ],
                &[&p("Y"), &p("Yh"), &p("Yc")],
                vec![int("hidden_size", hs as i64)],
            );
            g.node(
                "Squeeze",
                &[&p("Y"), "axes_1"],
                &[&format!("x_{}", l + 1)],
                vec![],
            );
            hs_out.push(p("Yh"));
            cs_out.push(p("Yc"));
        }
        let h_refs: Vec<&str> = hs_out.iter().map(String::as_str).collect();
        let c_refs: Vec<&str> = cs_out.iter().map(String::as_str).collect();
        g.node("Concat", &h_refs, &["h_out"], vec![int("axis", 0)]);
        g.node("Concat", &c_refs, &["c_out"], vec![int("axis", 0)]);
        g.node(
            "Transpose",
            &[&format!("x_{layers}")],
            &["z_0"],
            vec![ints("perm", &[1, 0, 2])],
        );
        let z = dense_nodes(&mut g, &self.dense, "z_0");
        match self.output {
            OutputActivation::Softmax => {
                g.node("Softmax", &[&z], &["scores"], vec![int("axis", -1)])
            }
            OutputActivation::Sigmoid => g.node("Sigmoid", &[&z], &["scores"], vec![]),
            OutputActivation::MeanSoftmax { members } => {
                let c = self.n_classes() as i64;
                g.init_i64("ensemble_shape", &[4], &[1, -1, members as i64, c]);
                g.node(
                    "Reshape",
                    &[&z, "ensemble_shape"],
                    &["member_logits"],
                    vec![],
                );
                g.node(
                    "Softmax",
                    &["member_logits"],
                    &["member_scores"],
                    vec![int("axis", -1)],
                );
                // Opset 17: ReduceMean takes its axes as an attribute.
                g.node(
                    "ReduceMean",
                    &["member_scores"],
                    &["scores"],
                    vec![ints("axes", &[2]), int("keepdims", 0)],
                );
            }
        }
        let t = Dim::Param("T");
        let (l, h) = (Dim::Value(layers as i64), Dim::Value(hs as i64));
        let one = Dim::Value(1);
        let graph = pb::GraphProto {
            name: "hark_step".into(),
            node: g.nodes,
            initializer: g.inits,
            input: vec![
                value_info("features", &[one, t, Dim::Value(self.n_mels as i64)]),
                value_info("h_in", &[l, one, h]),
                value_info("c_in", &[l, one, h]),
            ],
            output: vec![
                value_info("scores", &[one, t, Dim::Value(self.n_classes() as i64)]),
                value_info("h_out", &[l, one, h]),
                value_info("c_out", &[l, one, h]),
            ],
            ..Default::default()
        };
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "hark-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: "hark streaming step graph: features, h_in, c_in -> scores, h_out, c_out"
                .into(),
            graph: Some(graph),
            metadata_props: meta
                .to_props()
                .into_iter()
                .map(|(key, value)| pb::StringStringEntryProto { key, value })
                .collect(),
            ..Default::default()
        }
    }
}

/// The dense layers as `MatMul` + `Add` (+ activation) nodes after `input`; returns the name
/// of the last output.
fn dense_nodes(g: &mut GraphBuilder, dense: &[Dense], input: &str) -> String {
    let mut z = input.to_string();
    for (k, d) in dense.iter().enumerate() {
        let w = &d.weights;
        // MatMul takes [in, out]: the [out, in] weights transposed.
        let mut wt = vec![0.0; w.d_in * w.d_out];
        for o in 0..w.d_out {
            for i in 0..w.d_in {
                wt[i * w.d_out + o] = w.weight[o * w.d_in + i];
            }
        }
        let p = |s: &str| format!("dense{k}_{s}");
        g.init_f32(&p("W"), &[w.d_in as i64, w.d_out as i64], &wt);
        g.init_f32(&p("b"), &[w.d_out as i64], &w.bias);
        g.node("MatMul", &[&z, &p("W")], &[&p("mm")], vec![]);
        g.node("Add", &[&p("mm"), &p("b")], &[&p("lin")], vec![]);
        z = match d.activation {
            Activation::Identity => p("lin"),
            Activation::Relu => {
                g.node("Relu", &[&p("lin")], &[&p("act")], vec![]);
                p("act")
            }
            Activation::Tanh => {
                g.node("Tanh", &[&p("lin")], &[&p("act")], vec![]);
                p("act")
            }
        };
    }
    z
}

#[derive(Clone, Copy)]
enum Dim {
    Value(i64),
    Param(&'static str),
}

fn value_info(name: &str, dims: &[Dim]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{Dimension, dimension::Value as D};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|d| Dimension {
                            value: Some(match d {
                                Dim::Value(v) => D::DimValue(*v),
                                Dim::Param(p) => D::DimParam((*p).into()),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn int(name: &str, v: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: v,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.into(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: v.to_vec(),
        ..Default::default()
    }
}

#[derive(Default)]
struct GraphBuilder {
    nodes: Vec<pb::NodeProto>,
    inits: Vec<pb::TensorProto>,
}

impl GraphBuilder {
    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attribute: Vec<pb::AttributeProto>,
    ) {
        self.nodes.push(pb::NodeProto {
            name: format!("{}_{}", op.to_lowercase(), self.nodes.len()),
            op_type: op.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            attribute,
            ..Default::default()
        });
    }

    fn init_f32(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        self.inits.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Float as i32,
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
    }

    fn init_i64(&mut self, name: &str, dims: &[i64], data: &[i64]) {
        self.inits.push(pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: pb::tensor_proto::DataType::Int64 as i32,
            int64_data: data.to_vec(),
            ..Default::default()
        });
    }
}

impl StreamingNet {
    /// The step graph of a trained embedding network and its classifier: LSTM stack, the
    /// embedding projection, the classifier, softmax over the classes.
    pub fn from_models<B: burn::prelude::Backend>(
        net: &crate::model::EmbeddingNet<B>,
        classifier: &crate::model::Classifier<B>,
    ) -> Self {
        let lstm = net.lstm_weights();
        Self {
            n_mels: lstm[0].input_size,
            lstm,
            dense: vec![
                Dense {
                    weights: net.projection_weights(),
                    activation: Activation::Identity,
                },
                Dense {
                    weights: classifier.weights(),
                    activation: Activation::Identity,
                },
            ],
            output: OutputActivation::Softmax,
        }
    }
}

/// One causal convolution of a [`CnnStepNet`] (ONNX `Conv` layout).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvWeights {
    /// Input channels.
    pub c_in: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel size.
    pub kernel: usize,
    /// Dilation.
    pub dilation: usize,
    /// `[c_out, c_in, kernel]`, row-major (burn's `Conv1d` layout, which is ONNX's).
    pub weight: Vec<f32>,
    /// `[c_out]`.
    pub bias: Vec<f32>,
}

impl ConvWeights {
    /// Past frames the layer needs besides the current one: `(kernel - 1) dilation`.
    pub fn context(&self) -> usize {
        (self.kernel - 1) * self.dilation
    }
}

/// The streaming step graph of a causal CNN embedding network
/// ([`crate::model::CausalCnn`]) and its dense layers, in the runtime's contract: the state
/// that the contract calls `h` holds, for every layer, its last `(kernel - 1) dilation` input
/// frames, so that a hop computes exactly what the whole sequence computes at that frame.
///
/// ```text
/// features [1,T,M] ─(x - mean) / std─Transpose→ x₀ [1,M,T]
/// layer l: Concat(state_l [1,C_l,ctx_l] from h_in, x_l) ─Conv(dilation d_l)─Relu→ (+ x_l if l > 0)
///          new state_l = the last ctx_l frames of the Concat
/// ─Transpose→ [1,T,C] ─dense─Softmax→ scores
/// h_in/h_out: [1, 1, S], S = Σ_l C_l ctx_l, layer by layer, each [C_l, ctx_l] row-major;
/// c_in/c_out: the same shape, passed through unchanged (unused).
/// ```
///
/// The normalisation stays an explicit `Sub`/`Mul` at the input (folding it into the first
/// convolution would change what the zero state, i.e. the training's zero padding, means).
#[derive(Debug, Clone, PartialEq)]
pub struct CnnStepNet {
    /// Feature dimension.
    pub n_mels: usize,
    /// Per-band mean subtracted first.
    pub mean: Vec<f32>,
    /// Per-band standard deviation divided by next.
    pub std: Vec<f32>,
    /// The convolutions, first first.
    pub convs: Vec<ConvWeights>,
    /// Dense layers (projection, classifier).
    pub dense: Vec<Dense>,
}

impl CnnStepNet {
    /// The step graph of a trained CNN embedding network and classifier with the training
    /// set's normalisation. `None` when `net` is not a CNN.
    pub fn from_models<B: burn::prelude::Backend>(
        net: &crate::model::EmbeddingNet<B>,
        classifier: &crate::model::Classifier<B>,
        mean: &[f32],
        std: &[f32],
    ) -> Option<Self> {
        let cnn = net.cnn.as_ref()?;
        let convs = cnn
            .convs
            .iter()
            .map(|c| {
                let [c_out, c_in, kernel] = c.weight.dims();
                let vals = |t: burn::tensor::Tensor<B, 1>| {
                    t.into_data()
                        .convert::<f32>()
                        .to_vec::<f32>()
                        .expect("f32 tensor data")
                };
                ConvWeights {
                    c_in,
                    c_out,
                    kernel,
                    dilation: c.dilation,
                    weight: vals(c.weight.val().reshape([c_out * c_in * kernel])),
                    bias: match &c.bias {
                        Some(b) => vals(b.val()),
                        None => vec![0.0; c_out],
                    },
                }
            })
            .collect();
        Some(Self {
            n_mels: mean.len(),
            mean: mean.to_vec(),
            std: std.to_vec(),
            convs,
            dense: vec![
                Dense {
                    weights: net.projection_weights(),
                    activation: Activation::Identity,
                },
                Dense {
                    weights: classifier.weights(),
                    activation: Activation::Identity,
                },
            ],
        })
    }

    /// Multiply-adds of one hop: every convolution's taps of its one new frame, the dense
    /// layers (the normalisation's per-band `Sub`/`Mul`, ReLUs and softmax not counted).
    pub fn multiply_adds_per_hop(&self) -> usize {
        let convs: usize = self.convs.iter().map(|c| c.c_out * c.c_in * c.kernel).sum();
        convs + dense_multiply_adds(&self.dense)
    }

    /// Frames one output sees: `1 + Σ (kernel - 1) dilation`.
    pub fn receptive_field(&self) -> usize {
        1 + self.convs.iter().map(ConvWeights::context).sum::<usize>()
    }

    /// Values of the state (`h_in`'s last dimension).
    pub fn state_size(&self) -> usize {
        self.convs.iter().map(|c| c.c_in * c.context()).sum()
    }

    /// Output classes.
    pub fn n_classes(&self) -> usize {
        self.dense.last().map_or(0, |d| d.weights.d_out)
    }

    /// Checks that the shapes chain together and that there is a state to carry.
    pub fn validate(&self) -> Result<(), ExportError> {
        let e = |m: String| Err(ExportError(m));
        if self.convs.is_empty() || self.dense.is_empty() {
            return e("a CNN step graph needs convolutions and dense layers".into());
        }
        if self.mean.len() != self.n_mels || self.std.len() != self.n_mels {
            return e("the normalisation does not fit the features".into());
        }
        let mut d = self.n_mels;
        for (i, c) in self.convs.iter().enumerate() {
            if c.c_in != d
                || c.kernel == 0
                || c.weight.len() != c.c_out * c.c_in * c.kernel
                || c.bias.len() != c.c_out
                || (i > 0 && c.c_out != c.c_in)
            {
                return e(format!("convolution {i} does not fit its input of {d}"));
            }
            d = c.c_out;
        }
        for (i, layer) in self.dense.iter().enumerate() {
            let w = &layer.weights;
            if w.d_in != d || w.weight.len() != w.d_in * w.d_out || w.bias.len() != w.d_out {
                return e(format!("dense layer {i} does not fit its input of {d}"));
            }
            d = w.d_out;
        }
        if self.state_size() == 0 {
            return e("kernel 1 everywhere: no state to carry".into());
        }
        Ok(())
    }

    /// Serialises the step graph with `meta` as `metadata_props`.
    pub fn to_onnx(&self, meta: &ModelMetadata) -> Result<Vec<u8>, ExportError> {
        self.validate()?;
        check_metadata(meta, self.n_mels, self.n_classes())?;
        let mut g = GraphBuilder::default();
        let m = self.n_mels as i64;
        let inv_std: Vec<f32> = self.std.iter().map(|s| 1.0 / s).collect();
        g.init_f32("norm_mean", &[m], &self.mean);
        g.init_f32("norm_inv_std", &[m], &inv_std);
        g.init_i64("axes_2", &[1], &[2]);
        g.init_i64("last_end", &[1], &[i64::MAX]);
        g.node("Sub", &["features", "norm_mean"], &["centred"], vec![]);
        g.node("Mul", &["centred", "norm_inv_std"], &["normed"], vec![]);
        g.node(
            "Transpose",
            &["normed"],
            &["x_0"],
            vec![ints("perm", &[0, 2, 1])],
        );
        let mut offset = 0i64;
        let mut states = Vec::new();
        for (l, c) in self.convs.iter().enumerate() {
            let p = |s: &str| format!("conv{l}_{s}");
            let (ctx, size) = (c.context() as i64, (c.c_in * c.context()) as i64);
            let x = format!("x_{l}");
            let cat = if ctx > 0 {
                g.init_i64(&p("start"), &[1], &[offset]);
                g.init_i64(&p("end"), &[1], &[offset + size]);
                g.init_i64(&p("state_shape"), &[3], &[1, c.c_in as i64, ctx]);
                g.init_i64(&p("flat_shape"), &[3], &[1, 1, size]);
                g.init_i64(&p("keep"), &[1], &[-ctx]);
                g.node(
                    "Slice",
                    &["h_in", &p("start"), &p("end"), "axes_2"],
                    &[&p("state_flat")],
                    vec![],
                );
                g.node(
                    "Reshape",
                    &[&p("state_flat"), &p("state_shape")],
                    &[&p("state")],
                    vec![],
                );
                g.node(
                    "Concat",
                    &[&p("state"), &x],
                    &[&p("cat")],
                    vec![int("axis", 2)],
                );
                g.node(
                    "Slice",
                    &[&p("cat"), &p("keep"), "last_end", "axes_2"],
                    &[&p("next")],
                    vec![],
                );
                g.node(
                    "Reshape",
                    &[&p("next"), &p("flat_shape")],
                    &[&p("next_flat")],
                    vec![],
                );
                states.push(p("next_flat"));
                offset += size;
                p("cat")
            } else {
                x.clone()
            };
            g.init_f32(
                &p("W"),
                &[c.c_out as i64, c.c_in as i64, c.kernel as i64],
                &c.weight,
            );
            g.init_f32(&p("B"), &[c.c_out as i64], &c.bias);
            g.node(
                "Conv",
                &[&cat, &p("W"), &p("B")],
                &[&p("y")],
                vec![
                    ints("dilations", &[c.dilation as i64]),
                    ints("kernel_shape", &[c.kernel as i64]),
                    ints("pads", &[0, 0]),
                    ints("strides", &[1]),
                ],
            );
            g.node("Relu", &[&p("y")], &[&p("act")], vec![]);
            if l == 0 {
                g.node("Identity", &[&p("act")], &["x_1"], vec![]);
            } else {
                g.node("Add", &[&x, &p("act")], &[&format!("x_{}", l + 1)], vec![]);
            }
        }
        let refs: Vec<&str> = states.iter().map(String::as_str).collect();
        g.node("Concat", &refs, &["h_out"], vec![int("axis", 2)]);
        g.node("Identity", &["c_in"], &["c_out"], vec![]);
        g.node(
            "Transpose",
            &[&format!("x_{}", self.convs.len())],
            &["z_0"],
            vec![ints("perm", &[0, 2, 1])],
        );
        let z = dense_nodes(&mut g, &self.dense, "z_0");
        g.node("Softmax", &[&z], &["scores"], vec![int("axis", -1)]);
        let t = Dim::Param("T");
        let (one, s) = (Dim::Value(1), Dim::Value(self.state_size() as i64));
        let graph = pb::GraphProto {
            name: "hark_cnn_step".into(),
            node: g.nodes,
            initializer: g.inits,
            input: vec![
                value_info("features", &[one, t, Dim::Value(m)]),
                value_info("h_in", &[one, one, s]),
                value_info("c_in", &[one, one, s]),
            ],
            output: vec![
                value_info("scores", &[one, t, Dim::Value(self.n_classes() as i64)]),
                value_info("h_out", &[one, one, s]),
                value_info("c_out", &[one, one, s]),
            ],
            ..Default::default()
        };
        let proto = pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            producer_name: "hark-train".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: "hark streaming step graph of a causal CNN: features, h_in (past frames \
                         of every layer), c_in (unused) -> scores, h_out, c_out"
                .into(),
            graph: Some(graph),
            metadata_props: meta
                .to_props()
                .into_iter()
                .map(|(key, value)| pb::StringStringEntryProto { key, value })
                .collect(),
            ..Default::default()
        };
        Ok(proto.encode_to_vec())
    }
}
