//! Feature extraction for training, through the runtime's decoder and frontend.

use std::path::Path;

use hark::audio::{AudioError, read_file};
use hark::frontend::{Frontend, FrontendConfig, FrontendConfigError};

/// The log-mel frames of one clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Mel bands per frame.
    pub n_mels: usize,
    /// Row-major frames, `n_frames * n_mels` values.
    pub data: Vec<f32>,
}

impl Features {
    /// Number of frames.
    pub fn n_frames(&self) -> usize {
        self.data.len() / self.n_mels
    }

    /// One frame.
    pub fn frame(&self, i: usize) -> &[f32] {
        &self.data[i * self.n_mels..(i + 1) * self.n_mels]
    }
}

/// Why features could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// Decoding failed.
    #[error(transparent)]
    Audio(#[from] AudioError),
    /// The frontend configuration is not computable.
    #[error(transparent)]
    Config(#[from] FrontendConfigError),
}

/// Computes features of mono 16 kHz samples with the runtime's frontend.
pub fn features_of_samples(
    cfg: &FrontendConfig,
    samples: &[f32],
) -> Result<Features, FrontendConfigError> {
    let mut fe = Frontend::new(cfg.clone())?;
    let (data, _) = fe.compute(samples);
    Ok(Features {
        n_mels: cfg.n_mels,
        data,
    })
}

/// Decodes a file with the runtime's decoder and computes its features.
pub fn features_of_file(cfg: &FrontendConfig, path: &Path) -> Result<Features, FeatureError> {
    let decoded = read_file(path)?;
    Ok(features_of_samples(cfg, &decoded.samples)?)
}
