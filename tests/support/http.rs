//! HTTP/1.1 over a TCP stream: deadline-bounded reads, response heads and bodies, one-shot
//! requests and a keep-alive client.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{MAX_BODY, WAIT};

/// Why a read ended without data.
#[derive(Debug)]
pub enum ReadErr {
    Timeout,
    /// The peer closed (EOF or reset).
    Closed,
    Io(io::Error),
}

/// A TCP stream with an inbound buffer and deadline-bounded reads.
pub struct Wire {
    pub stream: TcpStream,
    pub buf: Vec<u8>,
}

impl Wire {
    pub fn connect(addr: SocketAddr) -> Wire {
        let stream = TcpStream::connect_timeout(&addr, WAIT).expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        stream.set_write_timeout(Some(WAIT)).expect("write timeout");
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads whatever arrives next (appended to `buf`), waiting at most until `deadline`.
    pub fn read_some(&mut self, deadline: Instant) -> Result<usize, ReadErr> {
        let mut chunk = [0u8; 64 * 1024];
        // Bounded: each pass waits at most 50 ms, and the deadline ends the loop.
        for _ in 0..100_000 {
            let now = Instant::now();
            if now >= deadline {
                return Err(ReadErr::Timeout);
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            self.stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .map_err(ReadErr::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ReadErr::Closed),
                Ok(n) => {
                    if self.buf.len() + n > MAX_BODY {
                        return Err(ReadErr::Io(io::Error::other("client buffer limit")));
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) =>
                {
                    return Err(ReadErr::Closed)
                }
                Err(e) => return Err(ReadErr::Io(e)),
            }
        }
        Err(ReadErr::Timeout)
    }

    /// Makes `buf` hold at least `n` bytes.
    pub fn fill(&mut self, n: usize, deadline: Instant) -> Result<(), ReadErr> {
        while self.buf.len() < n {
            self.read_some(deadline)?;
        }
        Ok(())
    }

    /// Takes the first `n` bytes of `buf` (after `fill`).
    pub fn take(&mut self, n: usize) -> Vec<u8> {
        self.buf.drain(..n).collect()
    }

    /// Reads an HTTP response head; the bytes after it stay in `buf`.
    pub fn read_head(&mut self, deadline: Instant) -> Result<ResponseHead, ReadErr> {
        loop {
            if let Some(end) = head_end(&self.buf) {
                let head = self.take(end);
                return Ok(ResponseHead::parse(&head));
            }
            if self.buf.len() > 64 * 1024 {
                return Err(ReadErr::Io(io::Error::other("response head too long")));
            }
            self.read_some(deadline)?;
        }
    }

    /// Reads until the peer closes (EOF or reset); returns everything read and whether it closed
    /// before the deadline.
    pub fn read_to_close(&mut self, deadline: Instant) -> (Vec<u8>, bool) {
        loop {
            match self.read_some(deadline) {
                Ok(_) => {}
                Err(ReadErr::Closed) => return (std::mem::take(&mut self.buf), true),
                Err(ReadErr::Timeout) => return (std::mem::take(&mut self.buf), false),
                Err(ReadErr::Io(e)) => panic!("read failed: {e}"),
            }
        }
    }

    /// `true` once the peer has closed (EOF or reset) within [`WAIT`]; bytes read are discarded.
    pub fn is_closed(&mut self) -> bool {
        self.wait_eof(Instant::now() + WAIT)
    }

    /// Reads until the peer closes; `true` if it did before the deadline.
    pub fn wait_eof(&mut self, deadline: Instant) -> bool {
        loop {
            match self.read_some(deadline) {
                Ok(_) => {
                    // Keep memory bounded while draining.
                    if self.buf.len() > (1 << 20) {
                        self.buf.clear();
                    }
                }
                Err(ReadErr::Closed) => return true,
                Err(_) => return false,
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Where the response head in `bytes` ends (after its blank line), if it is complete.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    find(bytes, b"\r\n\r\n").map(|p| p + 4)
}

/// A parsed response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl ResponseHead {
    /// Parses a complete response head (panics on anything else).
    pub fn parse(bytes: &[u8]) -> ResponseHead {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let status = resp.parse(bytes).expect("valid response head");
        assert!(status.is_complete(), "incomplete response head");
        ResponseHead {
            status: resp.code.expect("status code"),
            headers: resp
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_ascii_lowercase(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect(),
        }
    }

    /// The first value of a header (name in any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn content_length(&self) -> Option<usize> {
        self.header("content-length").and_then(|v| v.parse().ok())
    }
}

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub head: ResponseHead,
    pub body: Vec<u8>,
    /// The server closed the connection after the response (within the wait).
    pub closed: bool,
}

impl HttpResponse {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.header(name)
    }

    /// The body, lossily decoded (for messages and bodies that may be anything).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body, which must be UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("UTF-8 response body")
    }
}

/// Reads a response with a Content-Length body (or a body up to EOF), then notes whether the
/// server closed the connection.
pub fn read_response(wire: &mut Wire, deadline: Instant) -> Result<HttpResponse, ReadErr> {
    let head = wire.read_head(deadline)?;
    let body = match head.content_length() {
        Some(n) => {
            assert!(n <= MAX_BODY, "response body too large");
            wire.fill(n, deadline)?;
            wire.take(n)
        }
        None => {
            wire.wait_eof(deadline);
            std::mem::take(&mut wire.buf)
        }
    };
    let wants_close = head
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let closed = if wants_close {
        wire.wait_eof(deadline)
    } else {
        false
    };
    Ok(HttpResponse { head, body, closed })
}

/// Sends raw request bytes on a new connection and reads one response.
pub fn http_raw(addr: SocketAddr, request: &[u8]) -> Result<HttpResponse, ReadErr> {
    let mut wire = Wire::connect(addr);
    wire.send(request).map_err(ReadErr::Io)?;
    read_response(&mut wire, Instant::now() + WAIT)
}

/// A `GET target` with extra header lines, on a new connection, `Connection: close`.
pub fn http_get(
    addr: SocketAddr,
    target: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, ReadErr> {
    http_raw(addr, &get_request(target, headers, true))
}

pub fn get_request(target: &str, headers: &[(&str, &str)], close: bool) -> Vec<u8> {
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    if close {
        req.push_str("Connection: close\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// A keep-alive HTTP/1.1 client: requests go one after the other on one connection.
pub struct Http {
    pub wire: Wire,
}

impl Http {
    pub fn new(addr: SocketAddr) -> Http {
        Http {
            wire: Wire::connect(addr),
        }
    }

    /// Writes a request (a POST gets the text/plain type Engine.IO clients use).
    pub fn send(&mut self, method: &str, target: &str, body: &[u8]) {
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        if method == "POST" {
            req.push_str("Content-Type: text/plain;charset=UTF-8\r\n");
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(body);
        self.wire.send(&bytes).expect("send request");
    }

    /// The next response on the connection, which must arrive within [`WAIT`].
    pub fn read_response(&mut self) -> HttpResponse {
        read_response(&mut self.wire, Instant::now() + WAIT)
            .unwrap_or_else(|e| panic!("no response: {e:?}"))
    }

    pub fn request(&mut self, method: &str, target: &str, body: &[u8]) -> HttpResponse {
        self.send(method, target, body);
        self.read_response()
    }

    /// `true` once the server has closed the connection (EOF or reset) within [`WAIT`].
    pub fn is_closed(&mut self) -> bool {
        self.wire.is_closed()
    }
}
