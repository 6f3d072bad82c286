//! Support for reelflow's end-to-end tests: real PostgreSQL, a real S3-protocol server, and a
//! fixture zip of our own that holds every trap of the dataset.

pub mod fixture;
pub mod http;
pub mod pg;
pub mod s3;
pub mod tcp;
pub mod webdriver;
