#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod config;
pub mod db;
pub mod export;
pub mod http;
mod init;
pub mod logging;
pub mod metrics;
pub mod propagation;
pub mod sampling;

pub use config::{LogFormat, OtlpProtocol, TelemetryConfig};
pub use init::{InitError, ShutdownError, TelemetryGuard, init, init_with_writer};
pub use metrics::MetricsHandle;
