//! hark: real-time detection of rare sound events.
//!
//! The library holds everything the `hark` binary runs and the trainer reuses: audio decoding
//! and resampling ([`audio`], [`resample`]) and the one log-mel frontend ([`frontend`]).

pub mod audio;
pub mod capture;
pub mod frontend;
pub mod model;
pub mod resample;
