//! Pure codecs: bytes in, values out, and back. No clock, no sockets. Every decoder returns a typed
//! error on bad input and never panics.

pub mod eio;
pub mod http;
pub mod sio;
pub mod sse;
pub mod ws;
