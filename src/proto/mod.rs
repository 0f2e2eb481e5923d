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

/// Appends `n` in decimal ASCII, as `{n}` formats it, without a formatter or an allocation (the
/// Socket.IO head's ids and counts, SSE's `retry`).
pub(crate) fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    // u64::MAX has 20 digits.
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
        start -= 1;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(digits.get(start..).unwrap_or_default());
}
