//! hark: real-time detection of rare sound events.
//!
//! The library holds everything the `hark` binary runs and the trainer reuses: audio decoding
//! and resampling ([`audio`], [`resample`]), the one log-mel frontend ([`frontend`]), the
//! model ([`model`]) and its allocation-free step engine ([`native`]), live capture ([`capture`]), the per-stream chain ([`pipeline`]), post-processing of scores into events ([`postprocess`]), the sound
//! level ([`level`]), the daemon's configuration ([`config`]) and the event sinks (MQTT,
//! webhook, command: [`sinks`]).

pub mod audio;
pub mod capture;
pub mod config;
pub mod frontend;
pub mod level;
pub mod model;
pub mod native;
pub mod pipeline;
pub mod postprocess;
pub mod resample;
pub mod sinks;
