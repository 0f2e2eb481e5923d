//! The request framing of an HTTP/1.1 connection, without the socket: bytes in, complete
//! requests (head and a body of exactly Content-Length bytes) or a refusal out. `Conn` feeds it
//! what it reads; the engine fuzz target and the unit tests feed it bytes directly.

use crate::proto::http::{self, HeadLimits, HeadScanner, RequestHead};

enum State {
    ReadingHead,
    ReadingBody {
        head: RequestHead,
        need: usize,
    },
    /// A request was handed on; its response (maybe a parked long-poll) is pending.
    AwaitingResponse,
}

/// What the reader can say after new bytes.
#[derive(Debug)]
pub(crate) enum Step {
    /// More bytes are needed. `send_continue`: the client sent `Expect: 100-continue` and waits
    /// for `100 Continue` before its body (said once per request).
    NeedMore { send_continue: bool },
    /// A complete request.
    Request { head: RequestHead, body: Vec<u8> },
    /// The head cannot be served: answer `status` and close.
    Refuse(u16),
    /// The declared body is over the limit for this head: answer 413 and close.
    TooLarge(RequestHead),
}

/// One connection's request framing (see the module docs).
pub(crate) struct RequestReader {
    inbuf: Vec<u8>,
    scanner: HeadScanner,
    state: State,
}

impl RequestReader {
    pub(crate) fn new() -> RequestReader {
        RequestReader {
            inbuf: Vec::new(),
            scanner: HeadScanner::new(),
            state: State::ReadingHead,
        }
    }

    /// Appends bytes read from the connection.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.inbuf.extend_from_slice(bytes);
    }

    /// Bytes held (pipelined ones behind a pending request included).
    pub(crate) fn buffered(&self) -> usize {
        self.inbuf.len()
    }

    /// Waiting for the engine's response to the last request.
    pub(crate) fn awaiting_response(&self) -> bool {
        matches!(self.state, State::AwaitingResponse)
    }

    /// Nothing of a new request has arrived yet.
    pub(crate) fn is_idle(&self) -> bool {
        self.inbuf.is_empty() && matches!(self.state, State::ReadingHead)
    }

    /// A request is partly received (a timeout then deserves a 408).
    pub(crate) fn is_mid_request(&self) -> bool {
        match self.state {
            State::ReadingHead => !self.inbuf.is_empty(),
            State::ReadingBody { .. } => true,
            State::AwaitingResponse => false,
        }
    }

    /// The response to the last request is complete: read the next one.
    pub(crate) fn response_done(&mut self) {
        self.state = State::ReadingHead;
        if self.inbuf.is_empty() {
            // Give the memory of a large request back: an idle connection should cost little.
            self.inbuf = Vec::new();
        }
    }

    /// The bytes after the request head (the connection now speaks WebSocket).
    pub(crate) fn take_leftover(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.inbuf)
    }

    /// Frames what is buffered. `max_body` is the body limit for a head (it depends on where
    /// the request goes).
    pub(crate) fn next(
        &mut self,
        limits: &HeadLimits,
        max_body: impl Fn(&RequestHead) -> usize,
    ) -> Step {
        let mut send_continue = false;
        if matches!(self.state, State::ReadingHead) {
            if self.inbuf.is_empty() {
                return Step::NeedMore {
                    send_continue: false,
                };
            }
            // The scanner resumes where it stopped: a head trickled byte by byte costs linear work.
            let end = match self.scanner.find_head_end(&self.inbuf, limits) {
                Ok(Some(end)) => end,
                Ok(None) => {
                    return Step::NeedMore {
                        send_continue: false,
                    }
                }
                Err(e) => return Step::Refuse(e.status()),
            };
            let head = match http::parse_request_head(self.inbuf.get(..end).unwrap_or(&[]), limits)
            {
                Ok((head, _)) => head,
                Err(e) => return Step::Refuse(e.status()),
            };
            self.inbuf.drain(..end);
            self.scanner.reset();
            let need = match head.content_length() {
                Ok(n) => n.unwrap_or(0),
                Err(e) => return Step::Refuse(e.status()),
            };
            if need > max_body(&head) as u64 {
                return Step::TooLarge(head);
            }
            let need = need as usize;
            // `Expect: 100-continue` (curl sends it for bodies over 1 KiB): the body is within
            // the limit, so say so instead of letting the client wait.
            send_continue = need > 0
                && self.inbuf.len() < need
                && head.minor_version >= 1
                && head
                    .header("expect")
                    .is_some_and(|e| e.eq_ignore_ascii_case("100-continue"));
            self.state = State::ReadingBody { head, need };
        }
        let State::ReadingBody { need, .. } = &self.state else {
            return Step::NeedMore {
                send_continue: false,
            };
        };
        if self.inbuf.len() < *need {
            return Step::NeedMore { send_continue };
        }
        let body: Vec<u8> = self.inbuf.drain(..*need).collect();
        match std::mem::replace(&mut self.state, State::AwaitingResponse) {
            State::ReadingBody { head, .. } => Step::Request { head, body },
            // Unreachable: the state was checked above.
            other => {
                self.state = other;
                Step::NeedMore {
                    send_continue: false,
                }
            }
        }
    }
}

/// The connection-level fuzz target: any bytes, in any chunking, framed with small limits.
/// Panics when two chunkings disagree or a request is framed wrongly.
pub fn fuzz_request_reader(data: &[u8]) {
    let limits = HeadLimits {
        max_head_bytes: 512,
        max_headers: 16,
    };
    let max_body = |head: &RequestHead| {
        if head.path.starts_with("/big") {
            4096
        } else {
            256
        }
    };
    // The input's first byte picks a chunk size; the rest is the stream.
    let (chunk, stream) = match data.split_first() {
        Some((c, rest)) => (usize::from(*c % 32) + 1, rest),
        None => (1, data),
    };
    let run = |chunk: usize| -> Vec<String> {
        let mut reader = RequestReader::new();
        let mut seen = Vec::new();
        let mut fed = 0usize;
        let mut consumed_bodies = 0usize;
        'feed: for piece in stream.chunks(chunk) {
            reader.push(piece);
            fed += piece.len();
            // Bounded: each framed request consumes at least one byte of the head.
            for _ in 0..=fed {
                match reader.next(&limits, max_body) {
                    Step::NeedMore { .. } => break,
                    Step::Request { head, body } => {
                        let declared = head.content_length().ok().flatten().unwrap_or(0);
                        assert_eq!(body.len() as u64, declared, "body of the declared length");
                        consumed_bodies += body.len();
                        assert!(consumed_bodies <= fed, "more body than bytes fed");
                        seen.push(format!("{} {} {}", head.path, head.query, body.len()));
                        reader.response_done();
                    }
                    Step::Refuse(status) => {
                        assert!((400..600).contains(&status), "refused with {status}");
                        seen.push(format!("refuse {status}"));
                        break 'feed;
                    }
                    Step::TooLarge(head) => {
                        seen.push(format!("too large {}", head.path));
                        break 'feed;
                    }
                }
            }
        }
        assert!(reader.buffered() <= stream.len());
        seen
    };
    // A request's framing does not depend on how its bytes arrive.
    assert_eq!(
        run(stream.len().max(1)),
        run(chunk),
        "chunking changed the framing"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    fn limits() -> HeadLimits {
        HeadLimits {
            max_head_bytes: 512,
            max_headers: 16,
        }
    }

    #[test]
    fn pipelined_requests_with_bodies_in_any_chunking() {
        let stream = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /b HTTP/1.1\r\n\r\n";
        for chunk in 1..stream.len() {
            let mut r = RequestReader::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                r.push(piece);
                loop {
                    match r.next(&limits(), |_| 100) {
                        Step::Request { head, body } => {
                            got.push((head.path.clone(), body));
                            r.response_done();
                        }
                        Step::NeedMore { .. } => break,
                        other => panic!("{other:?}"),
                    }
                }
            }
            assert_eq!(
                got,
                vec![
                    ("/a".to_string(), b"abc".to_vec()),
                    ("/b".to_string(), vec![])
                ],
                "chunk {chunk}"
            );
            assert!(r.is_idle());
        }
    }

    #[test]
    fn limits_and_expect_continue() {
        let mut r = RequestReader::new();
        r.push(b"POST /a HTTP/1.1\r\nContent-Length: 101\r\n\r\n");
        assert!(matches!(r.next(&limits(), |_| 100), Step::TooLarge(_)));
        let mut r = RequestReader::new();
        r.push(b"POST /a HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
        assert!(matches!(
            r.next(&limits(), |_| 100),
            Step::NeedMore {
                send_continue: true
            }
        ));
        assert!(r.is_mid_request());
        assert!(matches!(
            r.next(&limits(), |_| 100),
            Step::NeedMore {
                send_continue: false
            }
        ));
        r.push(b"hello");
        assert!(matches!(r.next(&limits(), |_| 100), Step::Request { .. }));
        assert!(r.awaiting_response());
        let mut r = RequestReader::new();
        r.push(b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n");
        assert!(matches!(r.next(&limits(), |_| 100), Step::Refuse(400)));
        let mut r = RequestReader::new();
        r.push(&[b'a'; 600]);
        assert!(matches!(r.next(&limits(), |_| 100), Step::Refuse(_)));
    }

    #[test]
    fn the_fuzz_target_accepts_odd_inputs() {
        for data in [
            &b""[..],
            b"\x05GET / HTTP/1.1\r\n\r\n",
            b"\x00POST /big HTTP/1.1\r\nContent-Length: 4000\r\n\r\nxx",
            b"\x1fGET /\r\n\r\n\r\n\r\n",
        ] {
            fuzz_request_reader(data);
        }
    }
}
