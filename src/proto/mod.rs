//! Pure codecs: bytes in, values out, and back. No clock, no sockets.
