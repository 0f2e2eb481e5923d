//! Pure codecs: bytes in, values out, and back. No clock, no sockets. Every decoder returns a typed
//! error on bad input and never panics.
//!
//! These modules are public so that benchmarks and fuzz targets can drive the codecs directly.
//! They are not a stable API: applications should use the crate root, and anything here may
//! change in any release.

pub mod eio;
pub mod http;
pub mod sio;
pub mod sse;
pub mod ws;
