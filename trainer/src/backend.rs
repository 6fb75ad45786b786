//! The burn backends the trainer runs on.
//!
//! [`Cpu`] is burn's pure-Rust `Flex` backend (f32 floats, i32 ints), measured to train the
//! LSTM at useful speed on the development machine; [`CpuAutodiff`] wraps it with reverse-mode
//! automatic differentiation for training. With the `cuda` cargo feature (off by default),
//! [`Cuda`] and [`CudaAutodiff`] are available as well.

/// Pure-Rust CPU backend (burn 0.21 `Flex`), f32 floats.
pub type Cpu = burn::backend::Flex;

/// [`Cpu`] with automatic differentiation, for training.
pub type CpuAutodiff = burn::backend::Autodiff<Cpu>;

/// The device of [`Cpu`].
pub type CpuDevice = burn::backend::flex::FlexDevice;

/// CUDA backend (burn-cuda 0.21), f32 floats. Needs the `cuda` cargo feature.
#[cfg(feature = "cuda")]
pub type Cuda = burn::backend::Cuda;

/// [`Cuda`] with automatic differentiation. Needs the `cuda` cargo feature.
#[cfg(feature = "cuda")]
pub type CudaAutodiff = burn::backend::Autodiff<Cuda>;
