//! The cluster's messages on Redis, as bytes: a pure codec (no socket, no Redis), byte-exact and
//! fuzzed like the protocol codecs.
//!
//! Every message on the bus channel is `<epoch>:<seq>|<body>`: the header is written by the
//! publish script (decimal ASCII, so Lua can build it), `seq` is 0 for what is not kept in the
//! history (volatile broadcasts, ack requests, other namespaces' room emits). Replies to one node
//! go on that node's channel with no header. A body is one kind byte and its fields: integers
//! little-endian, strings as a `u32` length and UTF-8 bytes.

use serde_json::Value;

use crate::engine::session_log::{EmitEntry, RoomSpan, SessionRecord};
use crate::engine::{
    AckOutcome, AckResult, Handoff, HandoffAnswer, Identity, Reach, SocketId, Target, Transports,
};

/// The first byte of this format's bodies is one of these kinds; anything else is foreign.
const BROADCAST: u8 = b'B';
const JOIN: u8 = b'J';
const LEAVE: u8 = b'L';
const ACK_REQUEST: u8 = b'A';
const NSP_ROOM: u8 = b'N';
const CLAIM: u8 = b'C';
const ACK_REPLY: u8 = b'a';
const REACH_REPLY: u8 = b'r';
const HANDOFF_REPLY: u8 = b'h';
/// Not on a channel: a socket's record and its emits, in Redis keys (see `session_log`).
const RECORD: u8 = b'S';
const EMIT: u8 = b'E';

/// Broadcast flags.
const FLAG_VOLATILE: u8 = 1;
const FLAG_COUNTED: u8 = 2;
/// The SSE data is the Socket.IO arguments (a plain broadcast): sent once.
const FLAG_SAME_DATA: u8 = 4;

/// The most outcomes one ack reply may carry (a user's sockets on one node are far fewer).
const MAX_OUTCOMES: u32 = 1 << 20;
/// The most rooms, packets or attachments a handoff may carry (each is bounded by the input's
/// length too; this keeps a hostile count from reserving memory).
const MAX_ITEMS: u32 = 1 << 20;

/// A message of the bus channel, after its header.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Bus {
    /// A unified broadcast (`to_user`, `to_room`, `Socket::to_room` in `/`…).
    Broadcast(BroadcastMsg),
    /// A user joined (`true`) or left a room; the script already changed the stored membership.
    Room {
        user: Identity,
        room: String,
        joined: bool,
    },
    /// `to_user_with_ack`: every node asks its sockets of the user and replies to `origin`.
    AckRequest {
        origin: u64,
        request: u64,
        timeout_ms: u64,
        user: Identity,
        event: String,
        /// The JSON text of the data.
        data: String,
    },
    /// A client presented the `pid` of a socket that may wait on another node: the node that
    /// keeps it (for that identity) hands it over to `origin`.
    Claim {
        origin: u64,
        request: u64,
        pid: String,
        offset: Option<String>,
        user: Option<Identity>,
    },
    /// `Socket::to_room` in a namespace other than `/`: that namespace's sockets in the room.
    NspRoom {
        nsp: String,
        room: String,
        event: String,
        /// The JSON array of the arguments.
        args: String,
        volatile: bool,
    },
}

/// A unified broadcast on the wire.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BroadcastMsg {
    pub(crate) target: Target,
    pub(crate) transports: Transports,
    pub(crate) volatile: bool,
    pub(crate) event: String,
    /// The Socket.IO arguments after the event name (JSON values joined with commas).
    pub(crate) sio_args: String,
    /// The SSE `data` (JSON text).
    pub(crate) sse_data: String,
    /// `send_counted`: every node replies its reach to `(origin, request)`.
    pub(crate) counted: Option<(u64, u64)>,
}

/// A message on one node's reply channel.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reply {
    /// One node's outcomes of an ack request.
    Acks {
        request: u64,
        results: Vec<AckResult>,
    },
    /// One node's reach of a counted broadcast.
    Reach { request: u64, reach: Reach },
    /// One node's answer to a claim.
    Handoff { request: u64, answer: HandoffAnswer },
}

/// Why a message was not ours or not well formed (logged and ignored, never delivered).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct WireError(pub(crate) &'static str);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// `<epoch>:<seq>|` and the body.
pub(crate) fn split_header(msg: &[u8]) -> Result<(u64, u64, &[u8]), WireError> {
    let bar = msg
        .iter()
        .take(48)
        .position(|&b| b == b'|')
        .ok_or(WireError("no header"))?;
    let (head, rest) = msg.split_at(bar);
    let body = rest.get(1..).ok_or(WireError("no body"))?;
    let head = std::str::from_utf8(head).map_err(|_| WireError("header not ASCII"))?;
    let (epoch, seq) = head
        .split_once(':')
        .ok_or(WireError("header without ':'"))?;
    let number = |s: &str| -> Result<u64, WireError> {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(WireError("header number"));
        }
        s.parse().map_err(|_| WireError("header number"))
    };
    Ok((number(epoch)?, number(seq)?, body))
}

/// The header the publish script writes (for tests).
#[cfg(test)]
pub(crate) fn header(epoch: u64, seq: u64) -> String {
    format!("{epoch}:{seq}|")
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn str(&mut self, s: &str) {
        // Every string here is under `max_payload`, far below 4 GiB.
        let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn identity(&mut self, i: &Identity) {
        self.str(&i.tenant);
        self.str(&i.user);
    }
    fn count(&mut self, n: usize) {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.0.extend_from_slice(&n.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.count(b.len());
        self.0.extend_from_slice(b);
    }
    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.0.len() < n {
            return Err(WireError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.bytes(1)?.first().copied().unwrap_or(0))
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        let b = self.bytes(4)?;
        let mut a = [0u8; 4];
        a.copy_from_slice(b);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn str(&mut self) -> Result<String, WireError> {
        let len = self.u32()? as usize;
        let b = self.bytes(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| WireError("string not UTF-8"))
    }
    fn identity(&mut self) -> Result<Identity, WireError> {
        let tenant = self.str()?;
        let user = self.str()?;
        Ok(Identity { tenant, user })
    }
    fn count(&mut self) -> Result<u32, WireError> {
        let n = self.u32()?;
        if n > MAX_ITEMS {
            return Err(WireError("count too large"));
        }
        Ok(n)
    }
    fn byte_string(&mut self) -> Result<Vec<u8>, WireError> {
        let len = self.u32()? as usize;
        Ok(self.bytes(len)?.to_vec())
    }
    fn opt_str(&mut self) -> Result<Option<String>, WireError> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            _ => Err(WireError("bad option flag")),
        }
    }
    fn end(&self) -> Result<(), WireError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(WireError("trailing bytes"))
        }
    }
}

fn transports_byte(t: Transports) -> u8 {
    match t {
        Transports::Sse => 0,
        Transports::SocketIo => 1,
        Transports::Both => 2,
    }
}

fn transports_of(b: u8) -> Result<Transports, WireError> {
    match b {
        0 => Ok(Transports::Sse),
        1 => Ok(Transports::SocketIo),
        2 => Ok(Transports::Both),
        _ => Err(WireError("unknown transports")),
    }
}

/// A bus body (without the header).
pub(crate) fn encode_bus(msg: &Bus) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64));
    match msg {
        Bus::Broadcast(b) => {
            w.u8(BROADCAST);
            let same = b.sio_args == b.sse_data;
            let mut flags = 0;
            if b.volatile {
                flags |= FLAG_VOLATILE;
            }
            if b.counted.is_some() {
                flags |= FLAG_COUNTED;
            }
            if same {
                flags |= FLAG_SAME_DATA;
            }
            w.u8(flags);
            w.u8(transports_byte(b.transports));
            match &b.target {
                Target::All => w.u8(0),
                Target::User(i) => {
                    w.u8(1);
                    w.identity(i);
                }
                Target::Tenant(t) => {
                    w.u8(2);
                    w.str(t);
                }
                Target::Room(r) => {
                    w.u8(3);
                    w.str(r);
                }
            }
            w.str(&b.event);
            w.str(&b.sio_args);
            if !same {
                w.str(&b.sse_data);
            }
            if let Some((origin, request)) = b.counted {
                w.u64(origin);
                w.u64(request);
            }
        }
        Bus::Room { user, room, joined } => {
            w.u8(if *joined { JOIN } else { LEAVE });
            w.identity(user);
            w.str(room);
        }
        Bus::AckRequest {
            origin,
            request,
            timeout_ms,
            user,
            event,
            data,
        } => {
            w.u8(ACK_REQUEST);
            w.u64(*origin);
            w.u64(*request);
            w.u64(*timeout_ms);
            w.identity(user);
            w.str(event);
            w.str(data);
        }
        Bus::Claim {
            origin,
            request,
            pid,
            offset,
            user,
        } => {
            w.u8(CLAIM);
            w.u64(*origin);
            w.u64(*request);
            w.str(pid);
            w.opt_str(offset.as_deref());
            match user {
                None => w.u8(0),
                Some(u) => {
                    w.u8(1);
                    w.identity(u);
                }
            }
        }
        Bus::NspRoom {
            nsp,
            room,
            event,
            args,
            volatile,
        } => {
            w.u8(NSP_ROOM);
            w.u8(u8::from(*volatile));
            w.str(nsp);
            w.str(room);
            w.str(event);
            w.str(args);
        }
    }
    w.0
}

/// Decodes a bus body; anything else (another format, garbage) is an error.
pub(crate) fn decode_bus(body: &[u8]) -> Result<Bus, WireError> {
    let mut r = Reader(body);
    let msg = match r.u8()? {
        BROADCAST => {
            let flags = r.u8()?;
            if flags & !(FLAG_VOLATILE | FLAG_COUNTED | FLAG_SAME_DATA) != 0 {
                return Err(WireError("unknown flags"));
            }
            let transports = transports_of(r.u8()?)?;
            let target = match r.u8()? {
                0 => Target::All,
                1 => Target::User(r.identity()?),
                2 => Target::Tenant(r.str()?),
                3 => Target::Room(r.str()?),
                _ => return Err(WireError("unknown target")),
            };
            let event = r.str()?;
            let sio_args = r.str()?;
            let sse_data = if flags & FLAG_SAME_DATA != 0 {
                sio_args.clone()
            } else {
                let d = r.str()?;
                // One wire form per message: equal data is always sent once.
                if d == sio_args {
                    return Err(WireError("equal data sent twice"));
                }
                d
            };
            let counted = if flags & FLAG_COUNTED != 0 {
                Some((r.u64()?, r.u64()?))
            } else {
                None
            };
            Bus::Broadcast(BroadcastMsg {
                target,
                transports,
                volatile: flags & FLAG_VOLATILE != 0,
                event,
                sio_args,
                sse_data,
                counted,
            })
        }
        kind @ (JOIN | LEAVE) => Bus::Room {
            user: r.identity()?,
            room: r.str()?,
            joined: kind == JOIN,
        },
        ACK_REQUEST => Bus::AckRequest {
            origin: r.u64()?,
            request: r.u64()?,
            timeout_ms: r.u64()?,
            user: r.identity()?,
            event: r.str()?,
            data: r.str()?,
        },
        CLAIM => Bus::Claim {
            origin: r.u64()?,
            request: r.u64()?,
            pid: r.str()?,
            offset: r.opt_str()?,
            user: match r.u8()? {
                0 => None,
                1 => Some(r.identity()?),
                _ => return Err(WireError("bad option flag")),
            },
        },
        NSP_ROOM => {
            let volatile = match r.u8()? {
                0 => false,
                1 => true,
                _ => return Err(WireError("bad volatile flag")),
            };
            Bus::NspRoom {
                nsp: r.str()?,
                room: r.str()?,
                event: r.str()?,
                args: r.str()?,
                volatile,
            }
        }
        _ => return Err(WireError("unknown kind")),
    };
    r.end()?;
    Ok(msg)
}

/// A reply body.
pub(crate) fn encode_reply(reply: &Reply) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(32));
    match reply {
        Reply::Acks { request, results } => {
            w.u8(ACK_REPLY);
            w.u64(*request);
            let n = u32::try_from(results.len()).unwrap_or(u32::MAX);
            w.0.extend_from_slice(&n.to_le_bytes());
            for r in results.iter().take(n as usize) {
                w.u64(r.socket.0);
                match &r.outcome {
                    AckOutcome::Ok { args, attachments } => {
                        w.u8(0);
                        w.str(&Value::Array(args.clone()).to_string());
                        let n = u32::try_from(attachments.len()).unwrap_or(u32::MAX);
                        w.0.extend_from_slice(&n.to_le_bytes());
                        for a in attachments.iter().take(n as usize) {
                            let len = u32::try_from(a.len()).unwrap_or(u32::MAX);
                            w.0.extend_from_slice(&len.to_le_bytes());
                            w.0.extend_from_slice(a);
                        }
                    }
                    AckOutcome::Timeout => w.u8(1),
                    AckOutcome::Disconnected => w.u8(2),
                    AckOutcome::Overloaded => w.u8(3),
                }
            }
        }
        Reply::Reach { request, reach } => {
            w.u8(REACH_REPLY);
            w.u64(*request);
            w.u64(reach.sse as u64);
            w.u64(reach.socketio as u64);
        }
        Reply::Handoff { request, answer } => {
            w.u8(HANDOFF_REPLY);
            w.u64(*request);
            match answer {
                HandoffAnswer::NotHere => w.u8(0),
                HandoffAnswer::Expired => w.u8(1),
                HandoffAnswer::Found(h) => {
                    w.u8(2);
                    w.str(&h.sid);
                    w.str(&h.pid);
                    w.u64(h.since_seq);
                    w.u64(h.until);
                    w.count(h.rooms.len());
                    for room in &h.rooms {
                        w.str(room);
                    }
                    w.count(h.packets.len());
                    for (text, attachments) in &h.packets {
                        w.bytes(text);
                        w.count(attachments.len());
                        for a in attachments {
                            w.bytes(a);
                        }
                    }
                }
            }
        }
    }
    w.0
}

/// Decodes a reply body.
pub(crate) fn decode_reply(body: &[u8]) -> Result<Reply, WireError> {
    let mut r = Reader(body);
    let reply = match r.u8()? {
        ACK_REPLY => {
            let request = r.u64()?;
            let n = r.u32()?;
            if n > MAX_OUTCOMES {
                return Err(WireError("too many outcomes"));
            }
            let mut results = Vec::new();
            for _ in 0..n {
                let socket = SocketId(r.u64()?);
                let outcome = match r.u8()? {
                    0 => {
                        let args = match serde_json::from_str::<Value>(&r.str()?) {
                            Ok(Value::Array(a)) => a,
                            _ => return Err(WireError("ack arguments not a JSON array")),
                        };
                        let count = r.u32()?;
                        let mut attachments = Vec::new();
                        for _ in 0..count {
                            let len = r.u32()? as usize;
                            attachments.push(r.bytes(len)?.to_vec());
                        }
                        AckOutcome::Ok { args, attachments }
                    }
                    1 => AckOutcome::Timeout,
                    2 => AckOutcome::Disconnected,
                    3 => AckOutcome::Overloaded,
                    _ => return Err(WireError("unknown ack outcome")),
                };
                results.push(AckResult { socket, outcome });
            }
            Reply::Acks { request, results }
        }
        REACH_REPLY => {
            let request = r.u64()?;
            let sse = usize::try_from(r.u64()?).map_err(|_| WireError("reach"))?;
            let socketio = usize::try_from(r.u64()?).map_err(|_| WireError("reach"))?;
            Reply::Reach {
                request,
                reach: Reach { sse, socketio },
            }
        }
        HANDOFF_REPLY => {
            let request = r.u64()?;
            let answer = match r.u8()? {
                0 => HandoffAnswer::NotHere,
                1 => HandoffAnswer::Expired,
                2 => {
                    let sid = r.str()?;
                    let pid = r.str()?;
                    let since_seq = r.u64()?;
                    let until = r.u64()?;
                    let mut rooms = Vec::new();
                    for _ in 0..r.count()? {
                        rooms.push(r.str()?);
                    }
                    let mut packets = Vec::new();
                    for _ in 0..r.count()? {
                        let text = r.byte_string()?;
                        let mut attachments = Vec::new();
                        for _ in 0..r.count()? {
                            attachments.push(r.byte_string()?);
                        }
                        packets.push((text, attachments));
                    }
                    HandoffAnswer::Found(Box::new(Handoff {
                        sid,
                        pid,
                        since_seq,
                        until,
                        rooms,
                        packets,
                    }))
                }
                _ => return Err(WireError("unknown handoff answer")),
            };
            Reply::Handoff { request, answer }
        }
        _ => return Err(WireError("unknown reply kind")),
    };
    r.end()?;
    Ok(reply)
}

/// A socket's record as a node keeps it in Redis for another node to restore the socket.
pub(crate) fn encode_record(rec: &SessionRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + rec.spans.len() * 24));
    w.u8(RECORD);
    w.str(&rec.sid);
    w.str(&rec.pid);
    match &rec.identity {
        None => w.u8(0),
        Some(i) => {
            w.u8(1);
            w.identity(i);
        }
    }
    w.u64(rec.since_seq);
    w.u64(rec.complete_after);
    w.count(rec.spans.len());
    for s in &rec.spans {
        w.str(&s.room);
        w.u64(s.joined);
        match s.left {
            None => w.u8(0),
            Some(l) => {
                w.u8(1);
                w.u64(l);
            }
        }
    }
    w.0
}

pub(crate) fn decode_record(body: &[u8]) -> Result<SessionRecord, WireError> {
    let mut r = Reader(body);
    if r.u8()? != RECORD {
        return Err(WireError("not a session record"));
    }
    let sid = r.str()?;
    let pid = r.str()?;
    let identity = match r.u8()? {
        0 => None,
        1 => Some(r.identity()?),
        _ => return Err(WireError("bad option flag")),
    };
    let since_seq = r.u64()?;
    let complete_after = r.u64()?;
    let n = r.count()?;
    let mut spans = Vec::new();
    for _ in 0..n {
        let room = r.str()?;
        let joined = r.u64()?;
        let left = match r.u8()? {
            0 => None,
            1 => Some(r.u64()?),
            _ => return Err(WireError("bad option flag")),
        };
        spans.push(RoomSpan { room, joined, left });
    }
    r.end()?;
    Ok(SessionRecord {
        sid,
        pid,
        identity,
        since_seq,
        spans,
        complete_after,
    })
}

/// One event emitted to a socket alone, as its node keeps it for the socket's recovery.
pub(crate) fn encode_emit(seq: u64, text: &[u8], attachments: &[Vec<u8>]) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(16 + text.len()));
    w.u8(EMIT);
    w.u64(seq);
    w.bytes(text);
    w.count(attachments.len());
    for a in attachments {
        w.bytes(a);
    }
    w.0
}

pub(crate) fn decode_emit(body: &[u8]) -> Result<EmitEntry, WireError> {
    let mut r = Reader(body);
    if r.u8()? != EMIT {
        return Err(WireError("not an emit entry"));
    }
    let seq = r.u64()?;
    let text = r.byte_string()?;
    let n = r.count()?;
    let mut attachments = Vec::new();
    for _ in 0..n {
        attachments.push(r.byte_string()?);
    }
    r.end()?;
    Ok((seq, text, attachments))
}

/// The fuzz target's check (`fuzzing::cluster_wire`): whatever the bytes, decoding never
/// panics, and what decodes encodes back to the same bytes (so no two messages share a wire form
/// and nothing is lost on the way through a node); a message built from the bytes round-trips.
pub(crate) fn fuzz_check(data: &[u8]) {
    if let Ok((_, _, body)) = split_header(data) {
        check_bus(body);
    }
    check_bus(data);
    if let Ok(rec) = decode_record(data) {
        assert_eq!(
            encode_record(&rec),
            data,
            "a record's wire form is not unique"
        );
    }
    if let Ok((seq, text, attachments)) = decode_emit(data) {
        assert_eq!(
            encode_emit(seq, &text, &attachments),
            data,
            "an emit's wire form is not unique"
        );
    }
    if let Ok(reply) = decode_reply(data) {
        // Ack arguments are JSON, re-serialised: the same value, maybe other bytes.
        assert_eq!(
            decode_reply(&encode_reply(&reply)),
            Ok(reply),
            "a reply did not round-trip"
        );
    }
    // Structured: strings cut from the input, in every kind of message.
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{1}').map(str::to_string);
    let mut next = || parts.next().unwrap_or_default();
    let flags = data.first().copied().unwrap_or(0);
    let user = Identity::new(next(), next());
    let target = match flags % 4 {
        0 => Target::All,
        1 => Target::User(user.clone()),
        2 => Target::Tenant(next()),
        _ => Target::Room(next()),
    };
    let transports = match flags / 4 % 3 {
        0 => Transports::Sse,
        1 => Transports::SocketIo,
        _ => Transports::Both,
    };
    let event = next();
    let sio_args = next();
    let sse_data = if flags & 0x40 != 0 {
        sio_args.clone()
    } else {
        next()
    };
    let msgs = [
        Bus::Broadcast(BroadcastMsg {
            target,
            transports,
            volatile: flags & 0x80 != 0,
            event: event.clone(),
            sio_args,
            sse_data,
            counted: (flags & 0x20 != 0).then_some((u64::from(flags), data.len() as u64)),
        }),
        Bus::Room {
            user: user.clone(),
            room: next(),
            joined: flags & 1 != 0,
        },
        Bus::AckRequest {
            origin: data.len() as u64,
            request: u64::from(flags),
            timeout_ms: 1,
            user,
            event: event.clone(),
            data: next(),
        },
        Bus::NspRoom {
            nsp: next(),
            room: next(),
            event,
            args: next(),
            volatile: flags & 2 != 0,
        },
    ];
    for m in msgs {
        let bytes = encode_bus(&m);
        assert_eq!(decode_bus(&bytes).as_ref(), Ok(&m), "round trip of {m:?}");
    }
}

fn check_bus(body: &[u8]) {
    if let Ok(msg) = decode_bus(body) {
        assert_eq!(
            encode_bus(&msg),
            body,
            "a bus message's wire form is not unique"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::indexing_slicing, clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn a_broadcast_to_a_user_is_these_bytes() {
        let msg = Bus::Broadcast(BroadcastMsg {
            target: Target::User(Identity::new("t", "u")),
            transports: Transports::Both,
            volatile: false,
            event: "e".into(),
            sio_args: "1".into(),
            sse_data: "1".into(),
            counted: None,
        });
        let bytes = encode_bus(&msg);
        let expected: &[u8] = b"B\x04\x02\x01\x01\0\0\0t\x01\0\0\0u\x01\0\0\0e\x01\0\0\x001";
        assert_eq!(bytes, expected);
        assert_eq!(decode_bus(&bytes), Ok(msg));
    }

    #[test]
    fn a_session_record_and_an_emit_round_trip_and_refuse_garbage() {
        let rec = SessionRecord {
            sid: "sid".into(),
            pid: "pid".into(),
            identity: Some(Identity::new("acme", "alice")),
            since_seq: 1 << 24,
            spans: vec![
                RoomSpan {
                    room: "a".into(),
                    joined: 0,
                    left: None,
                },
                RoomSpan {
                    room: "b#c".into(),
                    joined: 5,
                    left: Some(9),
                },
            ],
            complete_after: 3,
        };
        let bytes = encode_record(&rec);
        assert_eq!(decode_record(&bytes), Ok(rec.clone()));
        let anonymous = SessionRecord {
            identity: None,
            spans: Vec::new(),
            ..rec
        };
        let small = encode_record(&anonymous);
        let expected: &[u8] =
            b"S\x03\0\0\0sid\x03\0\0\0pid\0\0\0\0\x01\0\0\0\0\x03\0\0\0\0\0\0\0\0\0\0\0";
        assert_eq!(small, expected);
        assert_eq!(decode_record(&small), Ok(anonymous));
        for cut in 0..bytes.len() {
            assert!(decode_record(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode_record(&longer).is_err());

        let emit = encode_emit(7, b"42[\"x\"]", &[vec![1, 2], vec![]]);
        assert_eq!(
            decode_emit(&emit),
            Ok((7, b"42[\"x\"]".to_vec(), vec![vec![1, 2], vec![]]))
        );
        assert!(decode_emit(&bytes).is_err() && decode_record(&emit).is_err());
        for cut in 0..emit.len() {
            assert!(decode_emit(&emit[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let alice = Identity::new("acme", "alice");
        let msgs = vec![
            Bus::Broadcast(BroadcastMsg {
                target: Target::Room("lobby".into()),
                transports: Transports::Sse,
                volatile: true,
                event: "chat".into(),
                sio_args: "\"a\",\"b\"".into(),
                sse_data: "[\"a\",\"b\"]".into(),
                counted: Some((7, 9)),
            }),
            Bus::Broadcast(BroadcastMsg {
                target: Target::Tenant("acme".into()),
                transports: Transports::SocketIo,
                volatile: false,
                event: "ünïcode".into(),
                sio_args: "{}".into(),
                sse_data: "{}".into(),
                counted: None,
            }),
            Bus::Broadcast(BroadcastMsg {
                target: Target::All,
                transports: Transports::Both,
                volatile: false,
                event: "x".into(),
                sio_args: String::new(),
                sse_data: "[]".into(),
                counted: None,
            }),
            Bus::Room {
                user: alice.clone(),
                room: "r".into(),
                joined: true,
            },
            Bus::Room {
                user: alice.clone(),
                room: "r".into(),
                joined: false,
            },
            Bus::AckRequest {
                origin: u64::MAX,
                request: 1,
                timeout_ms: 5000,
                user: alice,
                event: "ask".into(),
                data: "{\"q\":1}".into(),
            },
            Bus::NspRoom {
                nsp: "/admin".into(),
                room: "ops".into(),
                event: "alert".into(),
                args: "[1,2]".into(),
                volatile: false,
            },
            Bus::Claim {
                origin: 3,
                request: 4,
                pid: "p1".into(),
                offset: Some("1:2".into()),
                user: Some(Identity::new("acme", "bob")),
            },
            Bus::Claim {
                origin: 3,
                request: 5,
                pid: "p2".into(),
                offset: None,
                user: None,
            },
        ];
        for m in msgs {
            let bytes = encode_bus(&m);
            assert_eq!(decode_bus(&bytes), Ok(m.clone()), "{bytes:?}");
            // Every strict prefix is refused, never misread.
            for cut in 0..bytes.len() {
                assert!(decode_bus(&bytes[..cut]).is_err(), "prefix {cut} of {m:?}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(decode_bus(&longer).is_err());
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = vec![
            Reply::Acks {
                request: 3,
                results: vec![
                    AckResult {
                        socket: SocketId(12),
                        outcome: AckOutcome::Ok {
                            args: vec![json!({"ok": true}), json!(2)],
                            attachments: vec![vec![1, 2, 3]],
                        },
                    },
                    AckResult {
                        socket: SocketId(13),
                        outcome: AckOutcome::Timeout,
                    },
                    AckResult {
                        socket: SocketId(14),
                        outcome: AckOutcome::Disconnected,
                    },
                    AckResult {
                        socket: SocketId(15),
                        outcome: AckOutcome::Overloaded,
                    },
                ],
            },
            Reply::Acks {
                request: 4,
                results: Vec::new(),
            },
            Reply::Reach {
                request: 5,
                reach: Reach {
                    sse: 2,
                    socketio: 3,
                },
            },
            Reply::Handoff {
                request: 6,
                answer: HandoffAnswer::NotHere,
            },
            Reply::Handoff {
                request: 7,
                answer: HandoffAnswer::Expired,
            },
            Reply::Handoff {
                request: 8,
                answer: HandoffAnswer::Found(Box::new(Handoff {
                    sid: "s".into(),
                    pid: "p".into(),
                    since_seq: 1 << 24,
                    until: (5 << 24) + 2,
                    rooms: vec!["a".into(), "b".into()],
                    packets: vec![
                        (b"42[\"x\"]".to_vec(), Vec::new()),
                        (b"451-[\"y\"]".to_vec(), vec![vec![1, 2]]),
                    ],
                })),
            },
        ];
        for r in replies {
            let bytes = encode_reply(&r);
            assert_eq!(decode_reply(&bytes), Ok(r.clone()));
            for cut in 0..bytes.len() {
                assert!(decode_reply(&bytes[..cut]).is_err());
            }
        }
    }

    #[test]
    fn headers_are_checked() {
        assert_eq!(split_header(b"12:34|B"), Ok((12, 34, &b"B"[..])));
        assert_eq!(split_header(b"0:0|"), Ok((0, 0, &b""[..])));
        for bad in [
            &b""[..],
            b"12:34",
            b"|B",
            b":1|B",
            b"1:|B",
            b"1:-2|B",
            b"1:2:3|B",
            b"99999999999999999999999:1|B",
            b"a:1|B",
        ] {
            assert!(split_header(bad).is_err(), "{bad:?}");
        }
        assert_eq!(header(5, 6), "5:6|");
    }

    #[test]
    fn the_fuzz_corpus_samples_are_well_formed() {
        // The replay under `cargo test` only checks for panics: these must really decode, so the
        // corpus starts from messages of every kind.
        let with_header: [&[u8]; 4] = [
            include_bytes!("../../fuzz/corpus/cluster_wire/broadcast_user"),
            include_bytes!("../../fuzz/corpus/cluster_wire/join"),
            include_bytes!("../../fuzz/corpus/cluster_wire/ack_request"),
            b"1:1|L\0\0\0\0\x03\0\0\0bob\x03\0\0\0ops",
        ];
        for m in with_header {
            let (_, _, body) = split_header(m).unwrap();
            assert!(decode_bus(body).is_ok(), "{m:?}");
        }
        for m in [
            &include_bytes!("../../fuzz/corpus/cluster_wire/broadcast_room_counted")[..],
            include_bytes!("../../fuzz/corpus/cluster_wire/leave"),
            include_bytes!("../../fuzz/corpus/cluster_wire/nsp_room"),
        ] {
            assert!(decode_bus(m).is_ok(), "{m:?}");
        }
        for m in [
            &include_bytes!("../../fuzz/corpus/cluster_wire/ack_reply")[..],
            include_bytes!("../../fuzz/corpus/cluster_wire/reach_reply"),
        ] {
            assert!(decode_reply(m).is_ok(), "{m:?}");
        }
    }

    #[test]
    fn foreign_messages_are_refused() {
        // Another adapter's msgpack ([uid, packet, opts]) and JSON requests.
        for foreign in [
            &b"\x93\xa6emitter\x83"[..],
            b"{\"type\":2,\"uid\":\"x\"}",
            b"",
            b"B\xff",
            b"Z",
        ] {
            assert!(decode_bus(foreign).is_err(), "{foreign:?}");
            assert!(decode_reply(foreign).is_err(), "{foreign:?}");
        }
    }
}
