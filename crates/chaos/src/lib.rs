//! Faultline's fault injector.
//!
//! - [`kind`]: the catalogue — every [`FaultKind`], the parameters it takes, what it does;
//! - [`spec`]: a [`FaultSpec`] (the JSON of `PUT /admin/faults`) and its validation;
//! - [`registry`]: [`Faults`], one service's runtime registry with expiry, and the lookups
//!   ([`Faults::roll`], [`Faults::find`], [`Faults::affects`]) hooks call where a fault acts;
//! - [`admin`]: the `/admin/faults` routes, token-protected;
//! - [`http`]: the inbound middleware (HTTP and runtime faults);
//! - [`client`]: the outbound tower layer (dependency faults, dropped trace context);
//! - [`runtime`]: CPU burn, blocking calls, a lock held across an await, a bounded leak.
//!
//! Database and queue faults act inside the services that own the database and the queue
//! (`orders`, `fulfillment`), through the same registry. A fault is invisible in the telemetry
//! except through its effects, unless it was set with `reveal` (teaching mode): then
//! [`Hit::acted`] adds a `faultline.fault` span event and [`FAULTS_ACTIVE`] counts it.
//!
//! ```
//! use chaos::{FaultKind, FaultSpec, Faults};
//!
//! let faults = Faults::new("orders", &[FaultKind::DbSlowQuery]);
//! let spec: FaultSpec = serde_json::from_str(r#"{"kind":"db.slow_query","ms":800}"#).unwrap();
//! let fault = faults.set(&spec).unwrap();
//! assert_eq!(fault.spec.ttl_seconds, 600);
//! // Where statements run:
//! if let Some(hit) = faults.roll(FaultKind::DbSlowQuery, |s| chaos::target_matches(s, &["inventory"])) {
//!     hit.acted();
//!     assert_eq!(hit.spec().duration().as_millis(), 800);
//! }
//! ```

#![warn(missing_docs)]

pub mod admin;
pub mod client;
pub mod http;
pub mod kind;
pub mod registry;
pub mod runtime;
pub mod spec;

pub use kind::{FaultKind, UnknownKind};
pub use registry::{FAULTS_ACTIVE, Fault, Faults, Hit, route_matches, target_matches};
pub use spec::{FaultSpec, SpecError, ValidSpec};
