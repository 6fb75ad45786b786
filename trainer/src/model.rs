//! The embedding network (a unidirectional LSTM stack over log-mel frames, then a linear
//! projection) and the classifier head.
//!
//! # The LSTM, exactly
//!
//! The LSTM is written here ([`LstmLayer`]) rather than taken from `burn::nn::Lstm`, so that
//! one hop can be stepped with the state carried across calls, each frame costs two matrix
//! products (input and recurrent, all four gates at once) instead of eight, and the weights
//! already sit in the layout of the ONNX `LSTM` operator that the exported model uses.
//!
//! For one layer with input size `D` and hidden size `H`, at frame `t`, with `x_t` of shape
//! `[batch, D]` and `h_{t-1}`, `c_{t-1}` of shape `[batch, H]` (zeros at the start):
//!
//! ```text
//! g_t = x_t · Wx + bx + h_{t-1} · Wh              g_t: [batch, 4H]
//! i_t = σ(g_t[:, 0H..1H])                          input gate
//! o_t = σ(g_t[:, 1H..2H])                          output gate
//! f_t = σ(g_t[:, 2H..3H])                          forget gate
//! ĉ_t = tanh(g_t[:, 3H..4H])                       cell candidate
//! c_t = f_t ⊙ c_{t-1} + i_t ⊙ ĉ_t
//! h_t = o_t ⊙ tanh(c_t)
//! ```
//!
//! with σ the logistic sigmoid. No peepholes, no clipping, no coupled input/forget gate.
//!
//! # Weight layout
//!
//! burn's `Linear` stores its weight as `[d_input, d_output]` and computes `y = x · W + b`.
//! So [`LstmLayer::input`] has weight `Wx: [D, 4H]` and bias `bx: [4H]`, and
//! [`LstmLayer::recurrent`] has weight `Wh: [H, 4H]` and no bias. The `4H` columns are in the
//! gate order **i, o, f, c** (the ONNX order), `H` columns per gate.
//!
//! The ONNX `LSTM` operator (one direction) wants `W: [4H, D]`, `R: [4H, H]`, `B: [8H]` =
//! `[Wb, Rb]`, gates in order i, o, f, c, and computes `x_t · Wᵀ + h_{t-1} · Rᵀ + Wb + Rb`.
//! Hence `W = Wxᵀ`, `R = Whᵀ`, `Wb = bx`, `Rb = 0`. [`EmbeddingNet::lstm_weights`] returns
//! exactly these, row-major. (For comparison: `burn::nn::Lstm` keeps one `GateController` per
//! gate, `input_gate`, `forget_gate`, `output_gate`, `cell_gate`, each with an
//! `input_transform: Linear[D, H]` and a `hidden_transform: Linear[H, H]`, both biased; its
//! ONNX `W` would be the four `input_transform` weights transposed and stacked in the order
//! i, o, f, c, and `Wb`/`Rb` the `input_transform`/`hidden_transform` biases.)
//!
//! Linear layers (the projection, the classifier) export as `weight: [d_out, d_in]` row-major
//! (`Wᵀ`) plus `bias: [d_out]`, i.e. ONNX `Gemm` with `transB = 1`, or as `[d_in, d_out]`
//! for `MatMul` by transposing back; see [`LinearWeights`].

use burn::config::Config;
use burn::module::{Initializer, Module, ModuleVisitor, Param};
use burn::nn::conv::{Conv1d, Conv1dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{sigmoid, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

/// Configuration of one [`LstmLayer`].
#[derive(Config, Debug)]
pub struct LstmLayerConfig {
    /// Input size `D` (values per frame).
    pub d_input: usize,
    /// Hidden size `H`.
    pub d_hidden: usize,
    /// Initial value of the forget-gate bias (a positive value makes the cell remember by
    /// default early in training). Default 1.0.
    #[config(default = 1.0)]
    pub forget_bias: f64,
}

/// One unidirectional LSTM layer; gate equations and weight layout in the [module
/// documentation](self).
#[derive(Module, Debug)]
pub struct LstmLayer<B: Backend> {
    /// Input projection: weight `Wx: [D, 4H]`, bias `bx: [4H]`; columns in gate order
    /// i, o, f, c.
    pub input: Linear<B>,
    /// Recurrent projection: weight `Wh: [H, 4H]`, no bias; same column order.
    pub recurrent: Linear<B>,
    /// Hidden size `H`.
    pub d_hidden: usize,
}

impl LstmLayerConfig {
    /// Initialises the layer like PyTorch does: every weight and bias uniform in
    /// `[-1/sqrt(H), 1/sqrt(H)]`, then `forget_bias` added to the forget-gate bias.
    pub fn init<B: Backend>(&self, device: &B::Device) -> LstmLayer<B> {
        let h = self.d_hidden;
        let k = 1.0 / (h as f64).sqrt();
        let init = Initializer::Uniform { min: -k, max: k };
        let mut input = LinearConfig::new(self.d_input, 4 * h)
            .with_initializer(init.clone())
            .init(device);
        let recurrent = LinearConfig::new(h, 4 * h)
            .with_bias(false)
            .with_initializer(init)
            .init(device);
        if self.forget_bias != 0.0 {
            let mut offset = vec![0.0f32; 4 * h];
            offset[2 * h..3 * h].fill(self.forget_bias as f32);
            let offset = Tensor::<B, 1>::from_data(TensorData::new(offset, [4 * h]), device);
            input.bias = input.bias.map(|b| b.map(|t| t + offset));
        }
        LstmLayer {
            input,
            recurrent,
            d_hidden: h,
        }
    }
}

impl<B: Backend> LstmLayer<B> {
    /// Runs the layer over a sequence given frame by frame, from the state `(h0, c0)`.
    ///
    /// Shapes: each `x_t: [batch, D]`, `h0`, `c0: [batch, H]`; returns the hidden state of
    /// every frame (each `[batch, H]`) and the final `(h, c)`.
    ///
    /// The sequence is a list of frames rather than a `[batch, time, D]` tensor on purpose:
    /// slicing frame `t` out of a tensor that needs a gradient costs a full-size zero tensor
    /// in the backward pass (burn's slice backward), i.e. O(time²) for a sequence.
    pub fn forward_frames(
        &self,
        xs: Vec<Tensor<B, 2>>,
        h0: Tensor<B, 2>,
        c0: Tensor<B, 2>,
    ) -> (Vec<Tensor<B, 2>>, Tensor<B, 2>, Tensor<B, 2>) {
        let hd = self.d_hidden;
        let (mut h, mut c) = (h0, c0);
        let mut outputs = Vec::with_capacity(xs.len());
        for x in xs {
            let g = self.input.forward(x) + self.recurrent.forward(h);
            // i, o, f share the sigmoid; the candidate gets tanh.
            let sig = sigmoid(g.clone().narrow(1, 0, 3 * hd));
            let i = sig.clone().narrow(1, 0, hd);
            let o = sig.clone().narrow(1, hd, hd);
            let f = sig.narrow(1, 2 * hd, hd);
            let cand = g.narrow(1, 3 * hd, hd).tanh();
            c = f * c + i * cand;
            h = o * c.clone().tanh();
            outputs.push(h.clone());
        }
        (outputs, h, c)
    }

    /// Runs the layer over `x: [batch, time, D]` from the state `(h0, c0)` (`[batch, H]`
    /// each); returns the hidden states of every frame `[batch, time, H]` and the final
    /// `(h, c)`.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        h0: Tensor<B, 2>,
        c0: Tensor<B, 2>,
    ) -> (Tensor<B, 3>, Tensor<B, 2>, Tensor<B, 2>) {
        let (hs, h, c) = self.forward_frames(split_frames(x), h0, c0);
        (Tensor::stack(hs, 1), h, c)
    }

    /// The weights in ONNX `LSTM` layout (see the [module documentation](self)).
    pub fn onnx_weights(&self) -> LstmWeights {
        let h = self.d_hidden;
        let [d_input, _] = self.input.weight.dims();
        let w = tensor_t(self.input.weight.val());
        let r = tensor_t(self.recurrent.weight.val());
        let mut b = match &self.input.bias {
            Some(bias) => to_vec(bias.val()),
            None => vec![0.0; 4 * h],
        };
        b.extend(std::iter::repeat_n(0.0, 4 * h));
        LstmWeights {
            input_size: d_input,
            hidden_size: h,
            w,
            r,
            b,
        }
    }
}

/// The weights of one LSTM layer in the layout of the ONNX `LSTM` operator (one direction),
/// gate order i, o, f, c, all row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct LstmWeights {
    /// Input size `D`.
    pub input_size: usize,
    /// Hidden size `H`.
    pub hidden_size: usize,
    /// `W: [4H, D]`.
    pub w: Vec<f32>,
    /// `R: [4H, H]`.
    pub r: Vec<f32>,
    /// `B: [8H]`: `Wb` (4H) then `Rb` (4H, zeros here).
    pub b: Vec<f32>,
}

/// The weights of a linear layer `y = x Wᵀ + b` in ONNX (`Gemm`, `transB = 1`) layout.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearWeights {
    /// Input size.
    pub d_in: usize,
    /// Output size.
    pub d_out: usize,
    /// `[d_out, d_in]`, row-major (burn's `[d_in, d_out]` weight transposed).
    pub weight: Vec<f32>,
    /// `[d_out]` (zeros when the layer has no bias).
    pub bias: Vec<f32>,
}

impl LinearWeights {
    /// The weights of a burn `Linear`.
    pub fn of<B: Backend>(linear: &Linear<B>) -> Self {
        let [d_in, d_out] = linear.weight.dims();
        LinearWeights {
            d_in,
            d_out,
            weight: tensor_t(linear.weight.val()),
            bias: match &linear.bias {
                Some(b) => to_vec(b.val()),
                None => vec![0.0; d_out],
            },
        }
    }
}

/// The frames of `x: [batch, time, d]`, each `[batch, d]`.
fn split_frames<B: Backend>(x: Tensor<B, 3>) -> Vec<Tensor<B, 2>> {
    let [batch, _, d] = x.dims();
    x.iter_dim(1).map(|t| t.reshape([batch, d])).collect()
}

/// The transpose of a 2-D tensor, row-major.
fn tensor_t<B: Backend>(t: Tensor<B, 2>) -> Vec<f32> {
    to_vec(t.transpose())
}

/// A tensor's values, row-major, as f32.
fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .expect("f32 tensor data")
}

/// Configuration of the [`CausalCnn`].
#[derive(Config, Debug)]
pub struct CausalCnnConfig {
    /// Values per input frame (mel bands).
    pub d_input: usize,
    /// Channels of every layer. Default 48.
    #[config(default = 48)]
    pub channels: usize,
    /// Kernel size (frames). Default 3.
    #[config(default = 3)]
    pub kernel: usize,
    /// Dilation of each layer, one layer per entry. Default `[1, 2, 4, 8, 16]` (with kernel 3
    /// a receptive field of 63 frames, 0.63 s).
    #[config(default = "vec![1, 2, 4, 8, 16]")]
    pub dilations: Vec<usize>,
}

/// A causal dilated 1-D CNN over frames: layer `l` is a convolution over time with kernel
/// `k` and dilation `d_l`, its input padded on the left with `(k - 1) d_l` zero frames (so the
/// output at frame `t` sees frames `t - (k - 1) d_l ..= t` only), then ReLU; every layer after
/// the first adds its input back (residual). `[batch, time, d_input]` →
/// `[batch, time, channels]`.
#[derive(Module, Debug)]
pub struct CausalCnn<B: Backend> {
    /// The convolutions, first layer first (weights `[channels, d_in, kernel]`).
    pub convs: Vec<Conv1d<B>>,
}

impl CausalCnnConfig {
    /// Initialises the network (burn's default Kaiming-uniform convolutions).
    ///
    /// # Panics
    /// If a size is zero or there are no dilations.
    pub fn init<B: Backend>(&self, device: &B::Device) -> CausalCnn<B> {
        assert!(
            self.d_input > 0
                && self.channels > 0
                && self.kernel > 0
                && !self.dilations.is_empty()
                && self.dilations.iter().all(|&d| d > 0),
            "CausalCnnConfig: sizes and dilations must be positive"
        );
        let convs = self
            .dilations
            .iter()
            .enumerate()
            .map(|(l, &d)| {
                let d_in = if l == 0 { self.d_input } else { self.channels };
                Conv1dConfig::new(d_in, self.channels, self.kernel)
                    .with_dilation(d)
                    .init(device)
            })
            .collect();
        CausalCnn { convs }
    }
}

impl<B: Backend> CausalCnn<B> {
    /// Output channels.
    pub fn channels(&self) -> usize {
        self.convs[0].weight.dims()[0]
    }

    /// Frames of the past each output sees besides its own: `Σ (k - 1) d_l`.
    pub fn receptive_field(&self) -> usize {
        1 + self
            .convs
            .iter()
            .map(|c| (c.kernel_size - 1) * c.dilation)
            .sum::<usize>()
    }

    /// `[batch, time, d_input]` → `[batch, time, channels]`.
    pub fn forward(&self, features: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut x = features.swap_dims(1, 2); // [batch, d_input, time]
        for (l, conv) in self.convs.iter().enumerate() {
            let [batch, d_in, _] = x.dims();
            let ctx = (conv.kernel_size - 1) * conv.dilation;
            let padded = if ctx > 0 {
                let zeros = Tensor::zeros([batch, d_in, ctx], &x.device());
                Tensor::cat(vec![zeros, x.clone()], 2)
            } else {
                x.clone()
            };
            let y = burn::tensor::activation::relu(conv.forward(padded));
            x = if l == 0 { y } else { x + y };
        }
        x.swap_dims(1, 2)
    }
}

/// Materialises every (lazily initialised) parameter of a module now, so that its values are
/// drawn right after the generator was seeded and clones share them.
pub fn materialize<B: Backend, M: Module<B>>(module: &M) {
    struct Touch;
    impl<B: Backend> ModuleVisitor<B> for Touch {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    module.visit(&mut Touch);
}

/// Configuration of the [`EmbeddingNet`].
#[derive(Config, Debug)]
pub struct EmbeddingNetConfig {
    /// Values per input frame (mel bands). Default 64, the frontend's.
    #[config(default = 64)]
    pub n_mels: usize,
    /// Hidden size of every LSTM layer. Default 64.
    #[config(default = 64)]
    pub hidden: usize,
    /// Number of stacked LSTM layers. Default 1.
    #[config(default = 1)]
    pub layers: usize,
    /// Embedding size. Default 32.
    #[config(default = 32)]
    pub embedding: usize,
    /// Initial forget-gate bias of every LSTM layer. Default 1.0.
    #[config(default = 1.0)]
    pub forget_bias: f64,
    /// A causal CNN in place of the LSTM stack (`hidden`, `layers` and `forget_bias` are then
    /// unused; its `d_input` is replaced by `n_mels`). Default none (LSTM).
    #[config(default = "None")]
    pub cnn: Option<CausalCnnConfig>,
}

/// The LSTM state carried from one call to the next, in the layout of the exported model's
/// `h_in`/`c_in`: `[layers, batch, hidden]` each.
#[derive(Debug, Clone)]
pub struct LstmState<B: Backend> {
    /// Hidden states `h`, `[layers, batch, hidden]`.
    pub hidden: Tensor<B, 3>,
    /// Cell states `c`, `[layers, batch, hidden]`.
    pub cell: Tensor<B, 3>,
}

/// The embedding network: `layers` unidirectional LSTM layers over log-mel frames, then a
/// linear projection of each frame's last-layer hidden state to the embedding. Or, when
/// configured with `cnn`, a [`CausalCnn`] in place of the LSTM stack: the same per-frame
/// shapes, but no state (the stateful methods, [`Self::forward_with_state`] and
/// [`Self::step`], panic).
#[derive(Module, Debug)]
pub struct EmbeddingNet<B: Backend> {
    /// The LSTM stack, first layer first (empty with a CNN).
    pub lstm: Vec<LstmLayer<B>>,
    /// The causal CNN in place of the LSTM stack, if configured.
    pub cnn: Option<CausalCnn<B>>,
    /// Projection `[hidden, embedding]` (burn layout) with bias.
    pub projection: Linear<B>,
}

impl EmbeddingNetConfig {
    /// Initialises the network.
    ///
    /// # Panics
    /// If `layers`, `hidden`, `n_mels` or `embedding` is zero.
    pub fn init<B: Backend>(&self, device: &B::Device) -> EmbeddingNet<B> {
        if let Some(c) = &self.cnn {
            assert!(
                self.n_mels > 0 && self.embedding > 0,
                "EmbeddingNetConfig: n_mels and embedding must be positive"
            );
            let cnn = CausalCnnConfig {
                d_input: self.n_mels,
                ..c.clone()
            }
            .init(device);
            let projection = LinearConfig::new(c.channels, self.embedding).init(device);
            let net = EmbeddingNet {
                lstm: Vec::new(),
                cnn: Some(cnn),
                projection,
            };
            materialize(&net);
            return net;
        }
        assert!(
            self.layers > 0 && self.hidden > 0 && self.n_mels > 0 && self.embedding > 0,
            "EmbeddingNetConfig: layers, hidden, n_mels and embedding must be positive"
        );
        let lstm = (0..self.layers)
            .map(|l| {
                let d_input = if l == 0 { self.n_mels } else { self.hidden };
                LstmLayerConfig::new(d_input, self.hidden)
                    .with_forget_bias(self.forget_bias)
                    .init(device)
            })
            .collect();
        EmbeddingNet {
            lstm,
            cnn: None,
            projection: LinearConfig::new(self.hidden, self.embedding).init(device),
        }
    }
}

impl<B: Backend> EmbeddingNet<B> {
    /// Number of LSTM layers.
    pub fn layers(&self) -> usize {
        self.lstm.len()
    }

    /// Hidden size of the LSTM layers (the channels of a CNN).
    pub fn hidden(&self) -> usize {
        match &self.cnn {
            Some(c) => c.channels(),
            None => self.lstm[0].d_hidden,
        }
    }

    /// Whether this is the CNN variant (no LSTM state; exported as a
    /// [`crate::export::CnnStepNet`]).
    pub fn is_cnn(&self) -> bool {
        self.cnn.is_some()
    }

    fn no_state(&self) {
        assert!(
            self.cnn.is_none(),
            "EmbeddingNet: a CNN embedding carries no state (needs the LSTM)"
        );
    }

    /// Embedding size.
    pub fn embedding(&self) -> usize {
        self.projection.weight.dims()[1]
    }

    /// The all-zero state of a batch (the state at the start of a stream).
    pub fn zero_state(&self, batch: usize, device: &B::Device) -> LstmState<B> {
        let shape = [self.layers(), batch, self.hidden()];
        LstmState {
            hidden: Tensor::zeros(shape, device),
            cell: Tensor::zeros(shape, device),
        }
    }

    /// Runs the LSTM stack; returns the last layer's hidden state of every frame (each
    /// `[batch, hidden]`) and the state after the last frame.
    fn lstm_frames(
        &self,
        features: Tensor<B, 3>,
        state: Option<LstmState<B>>,
    ) -> (Vec<Tensor<B, 2>>, LstmState<B>) {
        self.no_state();
        let [batch, time, _] = features.dims();
        assert!(time > 0, "EmbeddingNet: empty sequence");
        let state = state.unwrap_or_else(|| self.zero_state(batch, &features.device()));
        let mut xs = split_frames(features);
        let mut hs = Vec::with_capacity(self.layers());
        let mut cs = Vec::with_capacity(self.layers());
        for (l, layer) in self.lstm.iter().enumerate() {
            let h0 = state.hidden.clone().narrow(0, l, 1).squeeze_dim::<2>(0);
            let c0 = state.cell.clone().narrow(0, l, 1).squeeze_dim::<2>(0);
            let (out, h, c) = layer.forward_frames(xs, h0, c0);
            xs = out;
            hs.push(h);
            cs.push(c);
        }
        let state = LstmState {
            hidden: Tensor::stack(hs, 0),
            cell: Tensor::stack(cs, 0),
        };
        (xs, state)
    }

    /// Runs the network over `features: [batch, time, n_mels]` from `state` (zeros when
    /// `None`); returns the embedding of every frame `[batch, time, embedding]` and the state
    /// after the last frame.
    ///
    /// # Panics
    /// With a CNN (it has no state).
    pub fn forward_with_state(
        &self,
        features: Tensor<B, 3>,
        state: Option<LstmState<B>>,
    ) -> (Tensor<B, 3>, LstmState<B>) {
        let (hs, state) = self.lstm_frames(features, state);
        (self.projection.forward(Tensor::stack(hs, 1)), state)
    }

    /// The embedding of every frame: `[batch, time, n_mels]` → `[batch, time, embedding]`,
    /// from the zero state.
    pub fn forward_frames(&self, features: Tensor<B, 3>) -> Tensor<B, 3> {
        match &self.cnn {
            Some(cnn) => self.projection.forward(cnn.forward(features)),
            None => self.forward_with_state(features, None).0,
        }
    }

    /// The embedding of each sequence, taken at its last frame:
    /// `[batch, time, n_mels]` → `[batch, embedding]`, from the zero state. Same values as
    /// the last frame of [`Self::forward_frames`], but only that frame is projected.
    pub fn forward(&self, features: Tensor<B, 3>) -> Tensor<B, 2> {
        if let Some(cnn) = &self.cnn {
            let [batch, time, _] = features.dims();
            assert!(time > 0, "EmbeddingNet: empty sequence");
            let last = cnn.forward(features).narrow(1, time - 1, 1);
            let d = last.dims()[2];
            return self.projection.forward(last.reshape([batch, d]));
        }
        let (hs, _) = self.lstm_frames(features, None);
        let last = hs.into_iter().last().expect("non-empty sequence");
        self.projection.forward(last)
    }

    /// One hop: `features: [batch, 1, n_mels]` and the state before it; returns the hop's
    /// embedding `[batch, embedding]` and the state after it.
    ///
    /// # Panics
    /// With a CNN (it has no state).
    pub fn step(
        &self,
        features: Tensor<B, 3>,
        state: LstmState<B>,
    ) -> (Tensor<B, 2>, LstmState<B>) {
        let [batch, time, _] = features.dims();
        assert_eq!(time, 1, "EmbeddingNet::step takes one frame");
        let (hs, state) = self.lstm_frames(features, Some(state));
        let h = hs.into_iter().next().expect("one frame");
        debug_assert_eq!(h.dims()[0], batch);
        (self.projection.forward(h), state)
    }

    /// Every LSTM layer's weights in ONNX `LSTM` layout, first layer first.
    pub fn lstm_weights(&self) -> Vec<LstmWeights> {
        self.lstm.iter().map(LstmLayer::onnx_weights).collect()
    }

    /// The projection's weights in ONNX layout.
    pub fn projection_weights(&self) -> LinearWeights {
        LinearWeights::of(&self.projection)
    }
}

/// Configuration of the [`Classifier`] head.
#[derive(Config, Debug)]
pub struct ClassifierConfig {
    /// Embedding size (input). Default 32.
    #[config(default = 32)]
    pub embedding: usize,
    /// Number of classes (output).
    pub n_classes: usize,
}

/// Classifier head: one linear layer from the embedding to class logits.
#[derive(Module, Debug)]
pub struct Classifier<B: Backend> {
    /// `[embedding, n_classes]` (burn layout) with bias.
    pub linear: Linear<B>,
}

impl ClassifierConfig {
    /// Initialises the head.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Classifier<B> {
        Classifier {
            linear: LinearConfig::new(self.embedding, self.n_classes).init(device),
        }
    }
}

impl<B: Backend> Classifier<B> {
    /// Logits: `[..., embedding]` → `[..., n_classes]`.
    pub fn forward<const D: usize>(&self, embeddings: Tensor<B, D>) -> Tensor<B, D> {
        self.linear.forward(embeddings)
    }

    /// Class probabilities (softmax of the logits over the last dimension):
    /// `[..., embedding]` → `[..., n_classes]`.
    pub fn probabilities<const D: usize>(&self, embeddings: Tensor<B, D>) -> Tensor<B, D> {
        softmax(self.forward(embeddings), D - 1)
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.linear.weight.dims()[1]
    }

    /// The weights in ONNX layout.
    pub fn weights(&self) -> LinearWeights {
        LinearWeights::of(&self.linear)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Cpu, CpuAutodiff};
    use burn::tensor::Distribution;

    type B = Cpu;

    fn small_net(layers: usize) -> EmbeddingNet<B> {
        EmbeddingNetConfig::new()
            .with_n_mels(5)
            .with_hidden(6)
            .with_layers(layers)
            .with_embedding(3)
            .init(&Default::default())
    }

    fn random(shape: [usize; 3], seed: u64) -> Tensor<B, 3> {
        B::seed(&Default::default(), seed);
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        to_vec(t)
    }

    fn assert_close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (k, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "index {k}: {x} vs {y}");
        }
    }

    #[test]
    fn shapes_of_default_config() {
        let net = EmbeddingNetConfig::new().init::<B>(&Default::default());
        assert_eq!((net.layers(), net.hidden(), net.embedding()), (1, 64, 32));
        let x = random([2, 7, 64], 1);
        assert_eq!(net.forward_frames(x.clone()).dims(), [2, 7, 32]);
        assert_eq!(net.forward(x).dims(), [2, 32]);
    }

    #[test]
    fn last_frame_embedding_is_last_of_frames() {
        let net = small_net(2);
        let x = random([3, 4, 5], 2);
        let frames = values(net.forward_frames(x.clone()).narrow(1, 3, 1));
        let last = values(net.forward(x));
        assert_close(&frames, &last, 1e-6);
    }

    #[test]
    fn stepping_frame_by_frame_matches_whole_sequence() {
        for layers in [1, 2] {
            let net = small_net(layers);
            let (batch, time) = (2, 9);
            let x = random([batch, time, 5], 3);
            let whole = net.forward_frames(x.clone());
            let mut state = net.zero_state(batch, &Default::default());
            for t in 0..time {
                let (e, s) = net.step(x.clone().narrow(1, t, 1), state);
                state = s;
                let expect = values(whole.clone().narrow(1, t, 1).reshape([batch, 3]));
                assert_close(&values(e), &expect, 1e-5);
            }
            // The final state equals the whole-sequence final state too.
            let (_, whole_state) = net.forward_with_state(x, None);
            assert_close(&values(state.hidden), &values(whole_state.hidden), 1e-5);
            assert_close(&values(state.cell), &values(whole_state.cell), 1e-5);
        }
    }

    #[test]
    fn forget_bias_is_added_to_the_forget_gate_only() {
        let cfg = LstmLayerConfig::new(2, 50).with_forget_bias(10.0);
        let layer = cfg.init::<B>(&Default::default());
        let b = values(layer.input.bias.as_ref().unwrap().val());
        let k = 1.0 / 50f32.sqrt();
        for (j, v) in b.iter().enumerate() {
            if (100..150).contains(&j) {
                assert!((v - 10.0).abs() <= k, "forget bias {j}: {v}");
            } else {
                assert!(v.abs() <= k, "bias {j}: {v}");
            }
        }
    }

    /// A plain-Rust ONNX `LSTM` (gate order i, o, f, c; `W x + R h + Wb + Rb`) run on the
    /// exported weights reproduces the burn network: this pins the layout the export relies on.
    #[test]
    fn onnx_layout_weights_reproduce_the_network() {
        let net = small_net(2);
        let (batch, time, d) = (2, 5, 5);
        let x = random([batch, time, d], 4);
        let expect = values(net.forward_frames(x.clone()));
        let xs = values(x);
        let lw = net.lstm_weights();
        let pw = net.projection_weights();
        assert_eq!(
            (lw[0].w.len(), lw[0].r.len(), lw[0].b.len()),
            (24 * 5, 24 * 6, 48)
        );
        assert_eq!((lw[1].input_size, lw[1].hidden_size), (6, 6));
        assert_eq!((pw.d_in, pw.d_out, pw.weight.len()), (6, 3, 18));

        let sig = |v: f32| 1.0 / (1.0 + (-v).exp());
        for bi in 0..batch {
            let mut seq: Vec<Vec<f32>> = (0..time)
                .map(|t| xs[(bi * time + t) * d..(bi * time + t + 1) * d].to_vec())
                .collect();
            for w in &lw {
                let hsz = w.hidden_size;
                let (mut h, mut c) = (vec![0.0f32; hsz], vec![0.0f32; hsz]);
                let mut out = Vec::new();
                for xt in &seq {
                    let g: Vec<f32> = (0..4 * hsz)
                        .map(|row| {
                            let wx: f32 = (0..w.input_size)
                                .map(|k| w.w[row * w.input_size + k] * xt[k])
                                .sum();
                            let rh: f32 = (0..hsz).map(|k| w.r[row * hsz + k] * h[k]).sum();
                            wx + rh + w.b[row] + w.b[4 * hsz + row]
                        })
                        .collect();
                    for j in 0..hsz {
                        let (i, o) = (sig(g[j]), sig(g[hsz + j]));
                        let (f, cc) = (sig(g[2 * hsz + j]), g[3 * hsz + j].tanh());
                        c[j] = f * c[j] + i * cc;
                        h[j] = o * c[j].tanh();
                    }
                    out.push(h.clone());
                }
                seq = out;
            }
            for (t, ht) in seq.iter().enumerate() {
                for o in 0..pw.d_out {
                    let y: f32 = pw.bias[o]
                        + (0..pw.d_in)
                            .map(|k| pw.weight[o * pw.d_in + k] * ht[k])
                            .sum::<f32>();
                    let e = expect[(bi * time + t) * pw.d_out + o];
                    assert!(
                        (y - e).abs() < 1e-5,
                        "batch {bi} frame {t} dim {o}: {y} vs {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn classifier_probabilities_sum_to_one() {
        let head = ClassifierConfig::new(4)
            .with_embedding(3)
            .init::<B>(&Default::default());
        assert_eq!(head.n_classes(), 4);
        let emb = random([2, 5, 3], 5);
        let p = head.probabilities(emb.clone());
        assert_eq!(p.dims(), [2, 5, 4]);
        let sums = values(p.clone().sum_dim(2));
        assert_close(&sums, &[1.0; 10], 1e-5);
        assert!(values(p).iter().all(|&v| v > 0.0 && v < 1.0));
        // 2-D input works the same way.
        let p2 = head.probabilities(emb.narrow(1, 0, 1).reshape([2, 3]));
        assert_eq!(p2.dims(), [2, 4]);
        let w = head.weights();
        assert_eq!(
            (w.d_in, w.d_out, w.weight.len(), w.bias.len()),
            (3, 4, 12, 4)
        );
    }

    #[test]
    fn gradients_reach_every_lstm_weight() {
        type A = CpuAutodiff;
        let net = EmbeddingNetConfig::new()
            .with_n_mels(4)
            .with_hidden(3)
            .with_layers(2)
            .with_embedding(2)
            .init::<A>(&Default::default());
        let x = Tensor::<A, 3>::random([2, 3, 4], Distribution::Default, &Default::default());
        let grads = net.forward(x).powi_scalar(2).sum().backward();
        for layer in &net.lstm {
            let g = layer.input.weight.grad(&grads).expect("input weight grad");
            assert!(g.abs().sum().into_scalar() > 0.0);
            let g = layer
                .recurrent
                .weight
                .grad(&grads)
                .expect("recurrent weight grad");
            assert!(g.abs().sum().into_scalar() > 0.0);
        }
    }

    fn small_cnn() -> EmbeddingNet<B> {
        B::seed(&Default::default(), 9);
        EmbeddingNetConfig::new()
            .with_n_mels(5)
            .with_embedding(3)
            .with_cnn(Some(
                CausalCnnConfig::new(0)
                    .with_channels(6)
                    .with_dilations(vec![1, 2, 4]),
            ))
            .init(&Default::default())
    }

    #[test]
    fn cnn_is_causal() {
        let net = small_cnn();
        assert!(net.is_cnn());
        assert_eq!((net.layers(), net.hidden(), net.embedding()), (0, 6, 3));
        assert_eq!(net.cnn.as_ref().unwrap().receptive_field(), 15);
        let (batch, time) = (2, 30);
        let x = random([batch, time, 5], 6);
        let y = values(net.forward_frames(x.clone()));
        for t0 in [0, 7, 20, 28] {
            // Frames after t0 replaced by something else entirely.
            let later = random([batch, time - t0 - 1, 5], 7 + t0 as u64).mul_scalar(5.0);
            let x2 = Tensor::cat(vec![x.clone().narrow(1, 0, t0 + 1), later], 1);
            let y2 = values(net.forward_frames(x2));
            for b in 0..batch {
                let r = (b * time) * 3..(b * time + t0 + 1) * 3;
                assert_close(&y[r.clone()], &y2[r.clone()], 1e-6);
                // ... and the frame after t0 does change.
                let next = (b * time + t0 + 1) * 3;
                if t0 + 1 < time {
                    assert!((0..3).any(|k| (y[next + k] - y2[next + k]).abs() > 1e-4));
                }
            }
        }
        // The frames before t depend on the past only: the last frame of `forward` is the
        // last of `forward_frames`, and a prefix gives the prefix's embeddings.
        let last = values(net.forward(x.clone()));
        let frames = values(net.forward_frames(x.clone()).narrow(1, time - 1, 1));
        assert_close(&last, &frames, 1e-6);
        let prefix = values(net.forward_frames(x.clone().narrow(1, 0, 10)));
        let whole = values(net.forward_frames(x).narrow(1, 0, 10));
        assert_close(&prefix, &whole, 1e-6);
    }

    #[test]
    #[should_panic(expected = "carries no state")]
    fn cnn_has_no_state() {
        let net = small_cnn();
        let _ = net.forward_with_state(random([1, 3, 5], 1), None);
    }

    /// The CNN with a classifier learns a task decided by a band's level over the recent
    /// frames.
    #[test]
    fn cnn_learns_a_tiny_separable_task() {
        use burn::optim::{AdamConfig, GradientsParams, Optimizer};
        type A = CpuAutodiff;
        let device = Default::default();
        A::seed(&device, 3);
        let net = EmbeddingNetConfig::new()
            .with_n_mels(4)
            .with_embedding(4)
            .with_cnn(Some(
                CausalCnnConfig::new(0)
                    .with_channels(8)
                    .with_dilations(vec![1, 2]),
            ))
            .init::<A>(&device);
        let clf = ClassifierConfig::new(2)
            .with_embedding(4)
            .init::<A>(&device);
        materialize(&clf);
        let mut rng = crate::kmeans::SplitMix64::new(1);
        let mut data = |n: usize| {
            let (t, m) = (12, 4);
            let mut x = Vec::with_capacity(n * t * m);
            let mut y = Vec::with_capacity(n);
            for _ in 0..n {
                let label = (rng.next_f64() < 0.5) as usize;
                y.push(label);
                for _ in 0..t {
                    for k in 0..m {
                        let noise = rng.next_f64() as f32 - 0.5;
                        let shift = if k == 2 { label as f32 - 0.5 } else { 0.0 };
                        x.push(noise + shift);
                    }
                }
            }
            (TensorData::new(x, [n, t, m]), y)
        };
        let (mut net, mut clf) = (net, clf);
        let mut optim_net = AdamConfig::new().init::<A, EmbeddingNet<A>>();
        let mut optim_clf = AdamConfig::new().init::<A, Classifier<A>>();
        for _ in 0..60 {
            let (x, y) = data(32);
            let x = Tensor::<A, 3>::from_data(x, &device);
            let logits = clf.forward(net.forward(x));
            let loss = crate::train::weighted_cross_entropy(logits, &y, &[1.0, 1.0]);
            let mut grads = loss.backward();
            let g = GradientsParams::from_module(&mut grads, &clf);
            clf = optim_clf.step(1e-2, clf, g);
            let g = GradientsParams::from_module(&mut grads, &net);
            net = optim_net.step(1e-2, net, g);
        }
        let (x, y) = data(200);
        let x = Tensor::<A, 3>::from_data(x, &device);
        let pred = clf
            .forward(net.forward(x))
            .argmax(1)
            .into_data()
            .convert::<i64>();
        let pred = pred.to_vec::<i64>().unwrap();
        let right = pred
            .iter()
            .zip(&y)
            .filter(|(p, y)| **p as usize == **y)
            .count();
        assert!(right >= 180, "{right} of 200 right");
    }
}
