//! hark-trainer: the host-side trainer. Features come from the runtime's own audio module and
//! frontend (`hark::audio`, `hark::frontend`): there is no second implementation here.

pub mod backend;
pub mod card;
pub mod data;
pub mod ensemble;
pub mod eval;
pub mod examples;
pub mod experiment;
pub mod export;
pub mod features;
pub mod imbalance;
pub mod kmeans;
pub mod loss;
pub mod mixtures;
pub mod model;
pub mod plots;
pub mod synth;
pub mod train;
pub mod tune;
