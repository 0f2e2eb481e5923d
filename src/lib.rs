//! tidings: one broadcast API over Server-Sent Events and Socket.IO.
#![forbid(unsafe_code)]

pub mod proto;
