//! cfssl's file formats: request JSON, signing config, durations and cfssljson output.

pub mod certinfo;
pub mod config;
pub mod csr;
pub mod duration;
pub mod json;
pub mod output;
