//! Socket.IO v5 on top of Engine.IO sessions: namespaces, the connect handshake (decided by the
//! application's authentication hook, off the io thread), events both ways, acks both ways with an
//! ack table that empties itself, per-socket rooms and disconnects.

use crate::engine::id_map::IdMap;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::eio::{CloseReason, Queued};
use super::index::{Identity, RecipientKind};
use super::timers::TimerKey;
use super::{AppEvent, Engine, RequestInfo};
use crate::proto::eio::Data;
use crate::proto::sio::{self as codec, DecodeLimits, Packet, PacketKind, Reassembler};

/// A Socket.IO socket (one namespace of one client connection). Unique for the life of the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SocketId(pub u64);

/// Why a socket left, with socket.io's names for the reasons.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The server disconnected the socket ("io server disconnect").
    ServerDisconnect,
    /// The client left the namespace ("io client disconnect").
    ClientDisconnect,
    /// The client stopped answering pings ("ping timeout").
    PingTimeout,
    /// The connection was closed ("transport close").
    TransportClose,
    /// The connection failed or could not keep up ("transport error").
    TransportError,
    /// The client sent a malformed packet ("parse error").
    ParseError,
    /// The application closed the whole connection ("forced close").
    ForcedClose,
    /// The server is shutting down ("server shutting down").
    ServerShutdown,
}

impl DisconnectReason {
    fn from_close(reason: CloseReason) -> DisconnectReason {
        match reason {
            CloseReason::ClientClose | CloseReason::TransportClose => {
                DisconnectReason::TransportClose
            }
            CloseReason::PingTimeout => DisconnectReason::PingTimeout,
            CloseReason::ProtocolError => DisconnectReason::ParseError,
            CloseReason::BufferFull => DisconnectReason::TransportError,
            CloseReason::ServerClose => DisconnectReason::ForcedClose,
            CloseReason::ServerShutdown => DisconnectReason::ServerShutdown,
        }
    }
}

impl fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DisconnectReason::ServerDisconnect => "io server disconnect",
            DisconnectReason::ClientDisconnect => "io client disconnect",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ServerShutdown => "server shutting down",
        })
    }
}

/// The application's refusal of a connection: reaches a Socket.IO client as CONNECT_ERROR with
/// this message (and data), an SSE client as `status` (401 or 403).
#[derive(Clone, Debug, PartialEq)]
pub struct Rejection {
    /// The text: `err.message` in the client's `connect_error`, the body of the SSE answer.
    pub message: String,
    /// Extra JSON for Socket.IO clients (`err.data`); SSE clients never see it.
    pub data: Option<Value>,
    /// The HTTP status of an SSE refusal.
    pub status: u16,
}

impl Rejection {
    /// 401 for SSE; `message` for Socket.IO's `connect_error`.
    pub fn unauthorized(message: impl Into<String>) -> Rejection {
        Rejection {
            message: message.into(),
            data: None,
            status: 401,
        }
    }

    /// 403 for SSE; `message` for Socket.IO's `connect_error`.
    pub fn forbidden(message: impl Into<String>) -> Rejection {
        Rejection {
            message: message.into(),
            data: None,
            status: 403,
        }
    }

    /// Adds `err.data` for Socket.IO clients (a reason code, a login URL…).
    pub fn with_data(mut self, data: Value) -> Rejection {
        self.data = Some(data);
        self
    }
}

/// What became of one socket's ack.
#[derive(Clone, Debug, PartialEq)]
pub enum AckOutcome {
    /// The client answered with these arguments (binary attachments, if any, separately).
    Ok {
        /// The arguments of the client's ack callback.
        args: Vec<Value>,
        /// Its binary attachments (`args` hold placeholders for them).
        attachments: Vec<Vec<u8>>,
    },
    /// No answer within the timeout.
    Timeout,
    /// The socket went away before answering.
    Disconnected,
    /// The socket already had the maximum number of pending acks; nothing was sent.
    Overloaded,
}

/// One socket's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct AckResult {
    /// The socket that was asked.
    pub socket: SocketId,
    /// What it answered, or why it did not.
    pub outcome: AckOutcome,
}

/// Where the outcomes of an ack request go.
pub enum AckReply {
    /// Sent from the loop (a send on a channel never blocks).
    Channel(mpsc::Sender<Vec<AckResult>>),
    /// Run on the application's dispatcher thread, never on the io thread.
    Callback(Box<dyn FnOnce(Vec<AckResult>) + Send>),
    /// One loop's part of a request sent to several: the last part in hands every outcome, in
    /// socket order, to the reply they share.
    Merge(Arc<AckMerge>),
}

/// The outcomes of an ack request that several loops answer, gathered for one reply.
pub struct AckMerge {
    state: std::sync::Mutex<MergeState>,
}

struct MergeState {
    parts_left: usize,
    results: Vec<AckResult>,
    reply: Option<AckReply>,
}

impl AckMerge {
    /// A merge of `parts` answers into `reply`.
    pub(crate) fn new(parts: usize, reply: AckReply) -> Arc<AckMerge> {
        Arc::new(AckMerge {
            state: std::sync::Mutex::new(MergeState {
                parts_left: parts,
                results: Vec::new(),
                reply: Some(reply),
            }),
        })
    }

    /// Adds one part; the reply and every outcome once the last part is in.
    fn add(&self, mut results: Vec<AckResult>) -> Option<(AckReply, Vec<AckResult>)> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.results.append(&mut results);
        s.parts_left = s.parts_left.saturating_sub(1);
        if s.parts_left > 0 {
            return None;
        }
        let reply = s.reply.take()?;
        let mut all = std::mem::take(&mut s.results);
        all.sort_by_key(|r| r.socket);
        Some((reply, all))
    }
}

impl fmt::Debug for AckReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AckReply::Channel(_) => f.write_str("AckReply::Channel"),
            AckReply::Callback(_) => f.write_str("AckReply::Callback"),
            AckReply::Merge(_) => f.write_str("AckReply::Merge"),
        }
    }
}

#[derive(Debug)]
enum SocketSlot {
    /// CONNECT received, waiting for the application's decision.
    Pending(u64),
    Connected(u64),
}

/// Socket.IO state of one Engine.IO session.
#[derive(Debug)]
pub(crate) struct SioSession {
    info: Arc<RequestInfo>,
    reassembler: Reassembler,
    sockets: Vec<(Arc<str>, SocketSlot)>,
}

#[derive(Debug)]
struct SocketState {
    session: u64,
    nsp: Arc<str>,
    next_ack: u64,
    /// ack id → collector id (a BTreeMap: no room taken while empty, none kept after a burst)
    pending_acks: BTreeMap<u64, u64>,
    rooms: Vec<Arc<str>>,
    /// Connection state recovery is on and this is a socket of the main namespace.
    recovery: Option<Box<super::recovery::SocketRecovery>>,
    /// Its id, kept only on a node of a Node.js socket.io cluster (whose messages name sockets).
    sid: Option<Arc<str>>,
}

#[derive(Debug)]
struct Collector {
    waiting: HashSet<(u64, u64)>,
    results: Vec<AckResult>,
    reply: Option<AckReply>,
    deadline: Instant,
    timer_armed: Option<Instant>,
}

#[derive(Debug)]
struct PendingConnect {
    session: u64,
    nsp: Arc<str>,
    auth: Value,
    /// A parked socket this CONNECT claimed with its `pid`, and the offset it presented.
    claim: Option<super::recovery::Claim>,
}

/// What a Node.js cluster's `fetchSockets` needs of a socket.
pub(super) struct AdapterView<'a> {
    pub(super) sid: Arc<str>,
    pub(super) nsp: Arc<str>,
    pub(super) rooms: &'a [Arc<str>],
    pub(super) info: Arc<RequestInfo>,
}

/// All Socket.IO state.
#[derive(Debug, Default)]
pub(crate) struct Sio {
    sessions: IdMap<SioSession>,
    sockets: IdMap<SocketState>,
    pending_connects: IdMap<PendingConnect>,
    collectors: IdMap<Collector>,
    socket_rooms: HashMap<(Arc<str>, Arc<str>), HashSet<u64>>,
    /// The recovery timer (the parked sockets themselves are in the hub).
    pub(super) recovery_armed: Option<Instant>,
    next_request: u64,
    next_collector: u64,
    /// A node of a Node.js socket.io cluster: sockets by id (see `SocketState::sid`).
    pub(super) by_sid: Option<HashMap<Arc<str>, u64>>,
}

impl Sio {
    /// The sockets of `nsp`.
    pub(super) fn socket_ids_of(&self, nsp: &str) -> Vec<u64> {
        self.sockets
            .iter()
            .filter(|(_, s)| s.nsp.as_ref() == nsp)
            .map(|(id, _)| *id)
            .collect()
    }

    /// The connected sockets of Engine.IO session `key` (one per namespace).
    pub(super) fn sockets_of_session(&self, key: u64) -> Vec<u64> {
        self.sessions
            .get(&key)
            .map(|s| {
                s.sockets
                    .iter()
                    .filter_map(|(_, slot)| match slot {
                        SocketSlot::Connected(id) => Some(*id),
                        SocketSlot::Pending(_) => None,
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The socket of `nsp` whose id is `sid` (a node of a Node.js cluster only).
    pub(super) fn socket_by_sid(&self, nsp: &str, sid: &str) -> Option<u64> {
        let id = *self.by_sid.as_ref()?.get(sid)?;
        (self.sockets.get(&id)?.nsp.as_ref() == nsp).then_some(id)
    }

    /// The sockets in `room` of a namespace other than `/`.
    pub(super) fn socket_room_members(&self, nsp: &str, room: &str) -> Vec<u64> {
        let k: (Arc<str>, Arc<str>) = (Arc::from(nsp), Arc::from(room));
        self.socket_rooms
            .get(&k)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// A socket's id, namespace, rooms and opening request.
    pub(super) fn adapter_view(&self, socket: u64) -> Option<AdapterView<'_>> {
        let s = self.sockets.get(&socket)?;
        let info = self.sessions.get(&s.session)?.info.clone();
        Some(AdapterView {
            sid: s.sid.clone()?,
            nsp: s.nsp.clone(),
            rooms: &s.rooms,
            info,
        })
    }

    /// A new sequence (a cluster's new epoch): no socket holds back what comes next.
    pub(crate) fn reset_floors(&mut self) {
        for s in self.sockets.values_mut() {
            if let Some(r) = s.recovery.as_mut() {
                r.floor = 0;
                r.since_seq = 0;
            }
        }
    }

    pub(crate) fn socket_count(&self) -> usize {
        self.sockets.len()
    }

    /// Pending acks over all sockets (the ack table is empty when nothing is pending).
    pub(crate) fn pending_ack_count(&self) -> usize {
        self.sockets
            .values()
            .map(|s| s.pending_acks.len())
            .sum::<usize>()
            + self.collectors.len()
    }

    pub(crate) fn session_of(&self, socket: u64) -> Option<u64> {
        self.sockets.get(&socket).map(|s| s.session)
    }

    /// Where a broadcast to `socket` goes, and the sequence number up to which the socket
    /// already has everything (it recovered past it).
    pub(crate) fn target_of(&self, socket: u64) -> Option<(u64, u64)> {
        self.sockets.get(&socket).map(|s| {
            let floor = s.recovery.as_ref().map_or(0, |r| r.floor);
            (s.session, floor)
        })
    }
}

/// How an emit to one socket is delivered.
pub(crate) enum EmitKind {
    /// Queued (and, with recovery on, stamped and kept for a replay: with the sequence number
    /// the sender took, or a fresh one).
    Plain(Option<u64>),
    /// Dropped first under back-pressure, never kept.
    Volatile,
    /// Asking the client for an ack (never stamped, never kept: an ack cannot be replayed).
    WithAck(Duration, AckReply),
}

/// The WebSocket frame of a packet without attachments for one recipient, header and text in
/// one allocation (one chunk to queue): the shared form ([`EncodedPacket`]) would cost a second
/// allocation and a copy for nobody else's benefit. `scratch` is where the text is encoded; it is
/// kept for the next packet unless it grew past `ENCODE_SCRATCH_KEPT`.
fn frame_for_one(packet: &Packet, scratch: &mut Vec<u8>) -> Vec<u8> {
    frame_text(scratch, |text| codec::encode_text_to(packet, text))
}

/// The WebSocket text frame of the Engine.IO message (`4…`) that `encode` writes (see
/// [`frame_for_one`]).
fn frame_text(scratch: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut text = std::mem::take(scratch);
    text.clear();
    text.push(b'4');
    encode(&mut text);
    let frame = crate::proto::ws::frame(crate::proto::ws::OPCODE_TEXT, &text);
    if text.capacity() <= super::ENCODE_SCRATCH_KEPT {
        *scratch = text;
    }
    frame
}

/// The packets of one emit, encoded once: a text part and its binary attachments.
#[derive(Clone, Debug)]
pub(crate) struct EncodedPacket {
    text: Queued,
    attachments: Vec<Arc<[u8]>>,
}

impl EncodedPacket {
    pub(crate) fn new(packet: &Packet) -> EncodedPacket {
        let mut text = Vec::with_capacity(64);
        text.push(b'4');
        codec::encode_text_to(packet, &mut text);
        let attachments = if packet.attachments.is_empty()
            || !matches!(
                packet.kind,
                PacketKind::Event
                    | PacketKind::Ack
                    | PacketKind::BinaryEvent
                    | PacketKind::BinaryAck
            ) {
            Vec::new()
        } else {
            packet
                .attachments
                .iter()
                .map(|a| Arc::from(a.as_slice()))
                .collect()
        };
        EncodedPacket {
            text: Queued::Text(Arc::from(text)),
            attachments,
        }
    }

    /// Builds the WebSocket frame of the text part once, for a packet with many recipients.
    pub(crate) fn shared(mut self) -> EncodedPacket {
        if let Queued::Text(t) = &self.text {
            self.text = Queued::framed(t.clone());
        }
        self
    }

    /// Bytes held (text and attachments), as the history counts them.
    pub(crate) fn byte_len(&self) -> usize {
        self.text.len() + self.attachments.iter().map(|a| a.len()).sum::<usize>()
    }

    /// The bytes, for another cluster node: the text message (`42[...]`) and each attachment.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn to_parts(&self) -> (Vec<u8>, Vec<Vec<u8>>) {
        let text = match &self.text {
            Queued::Text(b) | Queued::Binary(b) | Queued::Framed { text: b, .. } => b.to_vec(),
        };
        let attachments = self.attachments.iter().map(|a| a.to_vec()).collect();
        (text, attachments)
    }

    /// The inverse of `to_parts`; `None` unless the text is an Engine.IO message (`4…`) in UTF-8.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_parts(text: Vec<u8>, attachments: Vec<Vec<u8>>) -> Option<EncodedPacket> {
        if text.first() != Some(&b'4') || std::str::from_utf8(&text).is_err() {
            return None;
        }
        Some(EncodedPacket {
            text: Queued::Text(Arc::from(text)),
            attachments: attachments.into_iter().map(Arc::from).collect(),
        })
    }

    /// An already-encoded Engine.IO text message (`42[...]`) without attachments.
    pub(crate) fn from_text(text: Arc<[u8]>) -> EncodedPacket {
        EncodedPacket {
            text: Queued::Text(text),
            attachments: Vec::new(),
        }
    }
}

/// Builds `[event, ...args]`.
fn event_array(event: &str, args: Vec<Value>) -> Value {
    let mut a = Vec::with_capacity(args.len() + 1);
    a.push(Value::String(event.to_string()));
    a.extend(args);
    Value::Array(a)
}

impl Engine {
    fn sio_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_attachments: 10,
            max_nsp_len: 256,
        }
    }

    fn nsp_known(&self, nsp: &str) -> bool {
        nsp == "/" || self.cfg.namespaces.iter().any(|n| n == nsp)
    }

    /// An Engine.IO session on the Socket.IO path opened.
    pub(super) fn sio_open(&mut self, key: u64, info: Arc<RequestInfo>) {
        let limits = self.sio_limits();
        self.sio.sessions.insert(
            key,
            SioSession {
                info,
                reassembler: Reassembler::new(limits),
                // Room for one: most sessions connect to one namespace (a `Vec::new()` would
                // take room for four at the first push).
                sockets: Vec::with_capacity(1),
            },
        );
    }

    /// Sends one encoded packet (text then attachments) on a session.
    pub(crate) fn sio_send(&mut self, now: Instant, session: u64, p: &EncodedPacket) {
        self.eio_send(now, session, p.text.clone());
        for a in &p.attachments {
            self.eio_send(now, session, Queued::Binary(a.clone()));
        }
    }

    /// A volatile packet: dropped when the session's queue is past the low-water mark. A packet
    /// with binary attachments goes out as a normal one (dropping its text part alone would
    /// orphan them).
    pub(crate) fn sio_send_volatile(&mut self, now: Instant, session: u64, p: &EncodedPacket) {
        if p.attachments.is_empty() {
            self.eio_send_volatile(now, session, p.text.clone());
        } else {
            self.sio_send(now, session, p);
        }
    }

    fn sio_send_packet(&mut self, now: Instant, session: u64, packet: &Packet) {
        if packet.attachments.is_empty() {
            if let Some(conn) = self.eio_websocket_of(session) {
                return self.ws_write_one(conn, packet);
            }
        }
        let p = EncodedPacket::new(packet);
        self.sio_send(now, session, &p);
    }

    /// A packet for one WebSocket (an ack, a connect answer, an emit to one socket): see
    /// [`frame_for_one`].
    fn ws_write_one(&mut self, conn: super::ConnId, packet: &Packet) {
        let frame = frame_for_one(packet, &mut self.encode_scratch);
        self.push(super::Output::Write {
            conn,
            chunk: crate::buf::Chunk::Owned(frame),
        });
    }

    /// An Engine.IO message on a Socket.IO session.
    pub(super) fn sio_message(&mut self, now: Instant, key: u64, data: Data) {
        let Some(s) = self.sio.sessions.get_mut(&key) else {
            return;
        };
        let result = match data {
            Data::Text(t) => s.reassembler.push_text(&t),
            Data::Binary(b) => s.reassembler.push_binary(b),
        };
        self.sio_reassembled(now, key, result);
    }

    /// An Engine.IO text message on a Socket.IO session, borrowed from the frame it came in.
    pub(super) fn sio_text(&mut self, now: Instant, key: u64, text: &str) {
        let Some(s) = self.sio.sessions.get_mut(&key) else {
            return;
        };
        let result = s.reassembler.push_text(text);
        self.sio_reassembled(now, key, result);
    }

    fn sio_reassembled(
        &mut self,
        now: Instant,
        key: u64,
        result: Result<Option<Packet>, crate::proto::sio::DecodeError>,
    ) {
        match result {
            Ok(Some(packet)) => self.sio_packet(now, key, packet),
            Ok(None) => {
                // maxPayload bounds a whole packet, attachments included, so a client cannot park
                // ten full-size attachments per connection.
                let held = self
                    .sio
                    .sessions
                    .get(&key)
                    .map_or(0, |s| s.reassembler.buffered_bytes());
                if held > self.cfg.max_payload {
                    self.eio_close(now, key, CloseReason::ProtocolError);
                }
            }
            // "the connection is closed upon invalid format" (conformance suite): a typed decode
            // error closes the offending connection and nothing else.
            Err(_) => self.eio_close(now, key, CloseReason::ProtocolError),
        }
    }

    fn socket_in(&self, key: u64, nsp: &str) -> Option<&SocketSlot> {
        self.sio
            .sessions
            .get(&key)?
            .sockets
            .iter()
            .find(|(n, _)| n.as_ref() == nsp)
            .map(|(_, s)| s)
    }

    fn connected_socket(&self, key: u64, nsp: &str) -> Option<u64> {
        match self.socket_in(key, nsp) {
            Some(SocketSlot::Connected(id)) => Some(*id),
            _ => None,
        }
    }

    fn sio_packet(&mut self, now: Instant, key: u64, packet: Packet) {
        match packet.kind {
            PacketKind::Connect => self.sio_connect(now, key, packet),
            PacketKind::Disconnect => {
                if let Some(id) = self.connected_socket(key, &packet.nsp) {
                    self.sio_remove_socket(now, id, DisconnectReason::ClientDisconnect);
                } else if let Some(s) = self.sio.sessions.get_mut(&key) {
                    // Leaving a namespace whose connect is still being decided.
                    s.sockets.retain(|(n, _)| n.as_ref() != packet.nsp);
                }
            }
            PacketKind::Event | PacketKind::BinaryEvent => {
                // The namespace name the session holds, shared, rather than a new one per event.
                let connected = self.sio.sessions.get(&key).and_then(|s| {
                    match s.sockets.iter().find(|(n, _)| n.as_ref() == packet.nsp)? {
                        (n, SocketSlot::Connected(id)) => Some((*id, n.clone())),
                        _ => None,
                    }
                });
                let Some((socket, nsp)) = connected else {
                    return; // not connected to that namespace: ignored, as the reference does
                };
                let Some(Value::Array(mut items)) = packet.data else {
                    return;
                };
                if items.is_empty() {
                    return;
                }
                let Value::String(event) = items.remove(0) else {
                    return;
                };
                self.push(super::Output::App(AppEvent::SioEvent {
                    socket: SocketId(socket),
                    nsp,
                    event,
                    args: items,
                    attachments: packet.attachments,
                    ack: packet.id,
                }));
            }
            PacketKind::Ack | PacketKind::BinaryAck => {
                let Some(socket) = self.connected_socket(key, &packet.nsp) else {
                    return;
                };
                let Some(id) = packet.id else {
                    return;
                };
                let args = match packet.data {
                    Some(Value::Array(a)) => a,
                    _ => Vec::new(),
                };
                // An ack for an unknown or already answered id is ignored.
                let collector = self
                    .sio
                    .sockets
                    .get_mut(&socket)
                    .and_then(|s| s.pending_acks.remove(&id));
                if let Some(c) = collector {
                    self.ack_result(
                        c,
                        socket,
                        id,
                        AckOutcome::Ok {
                            args,
                            attachments: packet.attachments,
                        },
                    );
                }
            }
            // A client never sends CONNECT_ERROR.
            PacketKind::ConnectError => self.eio_close(now, key, CloseReason::ProtocolError),
        }
    }

    fn sio_connect(&mut self, now: Instant, key: u64, packet: Packet) {
        let nsp = packet.nsp.clone();
        if !self.nsp_known(&nsp) {
            let err = Packet::connect_error(nsp.as_str(), "Invalid namespace");
            return self.sio_send_packet(now, key, &err);
        }
        if self.socket_in(key, &nsp).is_some() {
            return; // already connected (or connecting) to this namespace
        }
        let request = Self::take_id(&mut self.sio.next_request, self.hub.loops, self.loop_index);
        let Some(s) = self.sio.sessions.get_mut(&key) else {
            return;
        };
        let nsp: Arc<str> = Arc::from(nsp.as_str());
        s.sockets.push((nsp.clone(), SocketSlot::Pending(request)));
        let info = s.info.clone();
        let auth = packet.data.unwrap_or(Value::Object(Default::default()));
        let claim = self.sio_claim(now, &nsp, &auth);
        if claim.is_none() && self.hub.is_cluster() {
            self.note_remote_claim(request, &nsp, &auth);
        }
        let skip_auth = self
            .cfg
            .connection_state_recovery
            .as_ref()
            .is_some_and(|r| r.skip_authentication);
        if skip_auth {
            if let Some(claim) = claim {
                // Restored on the `pid` alone, as the configuration asks; when the gap cannot be
                // filled, a fresh socket for the same identity.
                let identity = claim.identity();
                if let Err(auth) = self.sio_restore(now, key, claim, auth) {
                    self.sio_accept(now, key, nsp, identity, auth);
                }
                return;
            }
        }
        self.sio.pending_connects.insert(
            request,
            PendingConnect {
                session: key,
                nsp: nsp.clone(),
                auth: auth.clone(),
                claim,
            },
        );
        self.push(super::Output::App(AppEvent::SioConnectRequest {
            request,
            nsp,
            auth,
            info,
        }));
    }

    /// The application decided on a CONNECT (`handoff`: the socket another cluster node kept
    /// for the `pid` it presented).
    pub(super) fn sio_connect_decision(
        &mut self,
        now: Instant,
        request: u64,
        decision: Result<Option<Identity>, Rejection>,
        handoff: Option<Box<super::recovery::Handoff>>,
        recorded: Option<Box<super::session_log::RecordedSession>>,
    ) {
        // Claimed by the handle before this decision came; only the engine alone (its tests)
        // gets here with it still noted.
        let _ = self.hub.take_remote_claim(request);
        let Some(pending) = self.sio.pending_connects.remove(&request) else {
            return;
        };
        let key = pending.session;
        let still_pending = matches!(self.socket_in(key, &pending.nsp), Some(SocketSlot::Pending(r)) if *r == request);
        if !still_pending {
            // The session closed or left the namespace meanwhile.
            if let Some(claim) = pending.claim {
                self.sio_unclaim(now, claim);
            }
            return;
        }
        match decision {
            Err(rejection) => {
                if let Some(claim) = pending.claim {
                    self.sio_unclaim(now, claim);
                }
                if let Some(s) = self.sio.sessions.get_mut(&key) {
                    s.sockets
                        .retain(|(n, _)| n.as_ref() != pending.nsp.as_ref());
                }
                let mut data = serde_json::Map::new();
                data.insert("message".into(), Value::String(rejection.message));
                if let Some(d) = rejection.data {
                    data.insert("data".into(), d);
                }
                let mut p = Packet::new(PacketKind::ConnectError, pending.nsp.as_ref());
                p.data = Some(Value::Object(data));
                self.sio_send_packet(now, key, &p);
            }
            Ok(identity) => {
                let mut auth = pending.auth;
                if let (None, Some(handoff)) = (&pending.claim, handoff) {
                    match self.sio_restore_remote(now, key, *handoff, identity.clone(), auth) {
                        Ok(()) => return,
                        Err(a) => auth = a,
                    }
                }
                if let (None, Some(recorded)) = (&pending.claim, recorded) {
                    match self.sio_restore_recorded(now, key, *recorded, identity.clone(), auth) {
                        Ok(()) => return,
                        Err(a) => auth = a,
                    }
                }
                if let Some(claim) = pending.claim {
                    // A session id never opens someone else's session: the hook must say the
                    // very identity the parked socket had.
                    if claim.identity() == identity {
                        match self.sio_restore(now, key, claim, auth) {
                            Ok(()) => return,
                            Err(a) => auth = a,
                        }
                    } else {
                        self.sio_unclaim(now, claim);
                    }
                }
                self.sio_accept(now, key, pending.nsp, identity, auth);
            }
        }
    }

    /// Puts socket `id` in the `nsp` slot of session `key` (replacing the pending CONNECT).
    pub(super) fn sio_attach_socket(
        &mut self,
        key: u64,
        nsp: &str,
        id: u64,
        sid: &str,
        rooms: Vec<Arc<str>>,
        recovery: Option<Box<super::recovery::SocketRecovery>>,
    ) {
        let Some(s) = self.sio.sessions.get_mut(&key) else {
            return;
        };
        let nsp: Arc<str> = match s.sockets.iter_mut().find(|(n, _)| n.as_ref() == nsp) {
            Some((n, slot)) => {
                *slot = SocketSlot::Connected(id);
                n.clone()
            }
            None => {
                let n: Arc<str> = Arc::from(nsp);
                s.sockets.push((n.clone(), SocketSlot::Connected(id)));
                n
            }
        };
        self.eio_clear_attach_deadline(key);
        let sid = self.sio.by_sid.as_mut().map(|by_sid| {
            let sid: Arc<str> = Arc::from(sid);
            by_sid.insert(sid.clone(), id);
            sid
        });
        self.sio.sockets.insert(
            id,
            SocketState {
                session: key,
                nsp,
                next_ack: 0,
                pending_acks: BTreeMap::new(),
                rooms,
                recovery,
                sid,
            },
        );
    }

    /// A fresh socket for an accepted CONNECT.
    fn sio_accept(
        &mut self,
        now: Instant,
        key: u64,
        nsp: Arc<str>,
        identity: Option<Identity>,
        auth: Value,
    ) {
        let id = self.new_recipient_id();
        let sid = codec_sid(&self.random_bytes::<15>());
        let recovery = self.new_socket_recovery(&nsp, &sid);
        let mut ok = serde_json::Map::new();
        ok.insert("sid".into(), Value::String(sid.clone()));
        if let Some(r) = &recovery {
            ok.insert("pid".into(), Value::String(r.pid.to_string()));
            self.record_session(id, r, identity.as_ref(), &[]);
        }
        self.sio_attach_socket(key, &nsp, id, &sid, Vec::new(), recovery);
        if nsp.as_ref() == "/" {
            self.index_add(id, RecipientKind::SocketIo, identity.as_ref());
        }
        let p = Packet::connect(nsp.as_ref(), Some(Value::Object(ok)));
        self.sio_send_packet(now, key, &p);
        self.push(super::Output::App(AppEvent::SioConnected {
            socket: SocketId(id),
            nsp,
            sid: Arc::from(sid.as_str()),
            identity,
            auth,
            recovered: false,
        }));
    }

    /// Emits an event to one socket, optionally asking for an ack.
    pub(super) fn sio_emit(
        &mut self,
        now: Instant,
        socket: u64,
        event: &str,
        args: Vec<Value>,
        attachments: Vec<Vec<u8>>,
        kind: EmitKind,
    ) {
        let Some(s) = self.sio.sockets.get(&socket) else {
            if let EmitKind::WithAck(_, reply) = kind {
                self.deliver_ack_reply(
                    reply,
                    vec![AckResult {
                        socket: SocketId(socket),
                        outcome: AckOutcome::Disconnected,
                    }],
                );
            }
            return;
        };
        let nsp = s.nsp.clone();
        let session = s.session;
        let recoverable = s.recovery.is_some();
        let mut packet = Packet::new(PacketKind::Event, nsp.as_ref());
        packet.data = Some(event_array(event, args));
        packet.attachments = attachments;
        match kind {
            EmitKind::Volatile => {
                let p = EncodedPacket::new(&packet).shared();
                self.sio_send_volatile(now, session, &p);
            }
            // Recovery on: the emit takes a sequence number, carries it as its offset, and is
            // kept for a replay to this socket.
            EmitKind::Plain(given) if recoverable => {
                let hub = self.hub.clone();
                let mut state = hub.lock();
                let Some(seq) = given.or_else(|| hub.next_local_seq(&mut state)) else {
                    drop(state);
                    self.sio_send_packet(now, session, &packet);
                    return;
                };
                if let Some(Value::Array(a)) = packet.data.as_mut() {
                    a.push(Value::String(hub.event_id(seq)));
                }
                let p = EncodedPacket::new(&packet);
                let limits = self.history_limits();
                let audience = super::history::HistoryAudience::Socket(socket);
                state
                    .history
                    .push(now, limits, seq, audience, None, Some(p.clone()));
                state.sessions.emitted(socket, seq, &p);
                drop(state);
                // Every broadcast numbered before it came through this loop's queue first.
                self.delivered_seq = self.delivered_seq.max(seq);
                self.sio_send(now, session, &p);
            }
            EmitKind::Plain(_) => self.sio_send_packet(now, session, &packet),
            EmitKind::WithAck(timeout, reply) => {
                let collector = self.new_collector(now + timeout, reply);
                self.emit_with_ack_to(now, socket, &mut packet, collector);
                self.finish_collector_if_done(collector);
            }
        }
    }

    /// Creates an ack collector that completes at `deadline` at the latest.
    pub(super) fn new_collector(&mut self, deadline: Instant, reply: AckReply) -> u64 {
        let id = self.sio.next_collector;
        self.sio.next_collector += 1;
        let mut c = Collector {
            waiting: HashSet::new(),
            results: Vec::new(),
            reply: Some(reply),
            deadline,
            timer_armed: None,
        };
        self.timers
            .schedule(TimerKey::Ack(id), Some(deadline), &mut c.timer_armed);
        self.sio.collectors.insert(id, c);
        id
    }

    /// Sends `packet` to one socket with a fresh ack id registered under `collector`.
    pub(super) fn emit_with_ack_to(
        &mut self,
        now: Instant,
        socket: u64,
        packet: &mut Packet,
        collector: u64,
    ) {
        let cap = self.cfg.max_pending_acks;
        let Some(s) = self.sio.sockets.get_mut(&socket) else {
            self.push_result(collector, socket, AckOutcome::Disconnected);
            return;
        };
        if s.pending_acks.len() >= cap {
            self.push_result(collector, socket, AckOutcome::Overloaded);
            return;
        }
        let ack_id = s.next_ack;
        s.next_ack = s.next_ack.wrapping_add(1);
        s.pending_acks.insert(ack_id, collector);
        let session = s.session;
        packet.id = Some(ack_id);
        if let Some(c) = self.sio.collectors.get_mut(&collector) {
            c.waiting.insert((socket, ack_id));
        }
        self.sio_send_packet(now, session, packet);
    }

    fn push_result(&mut self, collector: u64, socket: u64, outcome: AckOutcome) {
        if let Some(c) = self.sio.collectors.get_mut(&collector) {
            c.results.push(AckResult {
                socket: SocketId(socket),
                outcome,
            });
        }
    }

    fn ack_result(&mut self, collector: u64, socket: u64, ack_id: u64, outcome: AckOutcome) {
        if let Some(c) = self.sio.collectors.get_mut(&collector) {
            if c.waiting.remove(&(socket, ack_id)) {
                c.results.push(AckResult {
                    socket: SocketId(socket),
                    outcome,
                });
            }
        }
        self.finish_collector_if_done(collector);
    }

    pub(super) fn finish_collector_if_done(&mut self, collector: u64) {
        let done = self
            .sio
            .collectors
            .get(&collector)
            .is_some_and(|c| c.waiting.is_empty());
        if !done {
            return;
        }
        if let Some(mut c) = self.sio.collectors.remove(&collector) {
            if let Some(reply) = c.reply.take() {
                let mut results = std::mem::take(&mut c.results);
                results.sort_by_key(|r| r.socket);
                self.deliver_ack_reply(reply, results);
            }
        }
    }

    pub(super) fn deliver_ack_reply(&mut self, reply: AckReply, results: Vec<AckResult>) {
        match reply {
            AckReply::Channel(tx) => {
                let _ = tx.send(results);
            }
            AckReply::Callback(cb) => self.push(super::Output::App(AppEvent::AckComplete {
                callback: AckCallback(cb),
                results,
            })),
            AckReply::Merge(merge) => {
                if let Some((reply, all)) = merge.add(results) {
                    self.deliver_ack_reply(reply, all);
                }
            }
        }
    }

    /// An ack collector's deadline passed: every socket still silent times out.
    pub(super) fn ack_timer(&mut self, now: Instant, collector: u64, at: Instant) {
        let Some(c) = self.sio.collectors.get_mut(&collector) else {
            return;
        };
        if c.timer_armed != Some(at) {
            return;
        }
        c.timer_armed = None;
        if c.deadline > now {
            let d = c.deadline;
            self.timers
                .schedule(TimerKey::Ack(collector), Some(d), &mut c.timer_armed);
            return;
        }
        let waiting: Vec<(u64, u64)> = c.waiting.drain().collect();
        for (socket, ack_id) in waiting {
            if let Some(s) = self.sio.sockets.get_mut(&socket) {
                s.pending_acks.remove(&ack_id);
            }
            self.push_result(collector, socket, AckOutcome::Timeout);
        }
        self.finish_collector_if_done(collector);
    }

    /// Answers a client's ack request.
    pub(super) fn sio_ack(
        &mut self,
        now: Instant,
        socket: u64,
        ack_id: u64,
        args: Vec<Value>,
        attachments: Vec<Vec<u8>>,
    ) {
        let Some(s) = self.sio.sockets.get(&socket) else {
            return;
        };
        if attachments.is_empty() {
            if let Some(conn) = self.eio_websocket_of(s.session) {
                // The commonest answer: framed from its parts, no packet built.
                let nsp = s.nsp.clone();
                let frame = frame_text(&mut self.encode_scratch, |text| {
                    codec::encode_ack_into(&nsp, ack_id, &args, text)
                });
                return self.push(super::Output::Write {
                    conn,
                    chunk: crate::buf::Chunk::Owned(frame),
                });
            }
        }
        let mut p = Packet::ack(s.nsp.as_ref(), ack_id, args);
        p.attachments = attachments;
        let session = s.session;
        self.sio_send_packet(now, session, &p);
    }

    /// The server disconnects one socket (the client's other namespaces stay).
    pub(super) fn sio_disconnect(&mut self, now: Instant, socket: u64) {
        let Some(s) = self.sio.sockets.get(&socket) else {
            return;
        };
        let session = s.session;
        let p = Packet::disconnect(s.nsp.as_ref());
        self.sio_send_packet(now, session, &p);
        self.sio_remove_socket(now, socket, DisconnectReason::ServerDisconnect);
    }

    /// Forgets a socket: index, rooms, pending acks (→ Disconnected), and tells the application.
    fn sio_remove_socket(&mut self, now: Instant, socket: u64, reason: DisconnectReason) {
        let Some(mut s) = self.sio.sockets.remove(&socket) else {
            return;
        };
        if let (Some(by_sid), Some(sid)) = (self.sio.by_sid.as_mut(), s.sid.as_ref()) {
            by_sid.remove(sid);
        }
        if let Some(sess) = self.sio.sessions.get_mut(&s.session) {
            sess.sockets
                .retain(|(_, slot)| !matches!(slot, SocketSlot::Connected(id) if *id == socket));
        }
        let recoverable = s.recovery.is_some();
        // A parked socket's rooms stay in the hub (a replay addresses it by them); this loop's
        // index forgets it either way: the client may come back through another loop.
        let parked = self.sio_park(now, socket, s.recovery.take(), &s.rooms, reason);
        if recoverable && !parked {
            let hub = self.hub.clone();
            let mut state = hub.lock();
            for room in &s.rooms {
                state.rooms.socket_leave(socket, room);
            }
            hub.forget_socket(&mut state, socket);
        }
        for room in s.rooms.iter() {
            if s.nsp.as_ref() == "/" {
                self.index.socket_leave(socket, room);
                continue;
            }
            let k = (s.nsp.clone(), room.clone());
            if let Some(set) = self.sio.socket_rooms.get_mut(&k) {
                set.remove(&socket);
                if set.is_empty() {
                    self.sio.socket_rooms.remove(&k);
                }
            }
        }
        self.index_remove(socket);
        for (ack_id, collector) in s.pending_acks {
            self.ack_result(collector, socket, ack_id, AckOutcome::Disconnected);
        }
        self.push(super::Output::App(AppEvent::SioDisconnected {
            socket: SocketId(socket),
            nsp: s.nsp,
            reason,
        }));
    }

    /// The Engine.IO session under a Socket.IO client closed.
    pub(super) fn sio_session_closed(&mut self, now: Instant, key: u64, reason: CloseReason) {
        let Some(s) = self.sio.sessions.remove(&key) else {
            return;
        };
        let reason = DisconnectReason::from_close(reason);
        for (_, slot) in s.sockets {
            match slot {
                SocketSlot::Connected(id) => self.sio_remove_socket(now, id, reason),
                SocketSlot::Pending(request) => {
                    if let Some(claim) = self
                        .sio
                        .pending_connects
                        .remove(&request)
                        .and_then(|p| p.claim)
                    {
                        self.sio_unclaim(now, claim);
                    }
                }
            }
        }
    }

    /// `Socket::join`. In the main namespace the membership goes into the unified index, so a
    /// room has one audience there (its users' connections plus its sockets); other namespaces
    /// keep rooms of their own sockets only.
    pub(super) fn sio_join(&mut self, socket: u64, room: &str, hub_added: bool) {
        if !self.sio_join_local(socket, room) && hub_added {
            // The sender wrote it into the hub ahead (so a broadcast it sends next has the
            // socket in its frozen audience); refused here, it comes out again.
            self.hub.lock().leave_socket_room(socket, room);
        }
    }

    /// Whether the socket is in the room now.
    fn sio_join_local(&mut self, socket: u64, room: &str) -> bool {
        let Some(s) = self.sio.sockets.get(&socket) else {
            return false;
        };
        if s.rooms.iter().any(|r| r.as_ref() == room) {
            return true;
        }
        let held = s.rooms.len();
        let nsp = s.nsp.clone();
        let recoverable = s.recovery.is_some();
        let room: Arc<str> = if nsp.as_ref() == "/" {
            let room = self.index.intern_room(room);
            if let Err(limit) = self.index.socket_join(
                socket,
                room.clone(),
                held,
                self.cfg.max_rooms_per_user,
                self.cfg.max_room_memberships,
            ) {
                log::warn!("Socket::join refused: {limit:?}");
                return false;
            }
            if recoverable {
                self.hub.lock().join_socket_room(socket, room.clone());
            }
            room
        } else {
            if held >= self.cfg.max_rooms_per_user {
                log::warn!("Socket::join refused: the socket is in {held} rooms already");
                return false;
            }
            let room: Arc<str> = Arc::from(room);
            self.sio
                .socket_rooms
                .entry((nsp, room.clone()))
                .or_default()
                .insert(socket);
            room
        };
        if let Some(s) = self.sio.sockets.get_mut(&socket) {
            s.rooms.push(room);
        }
        true
    }

    /// `Socket::leave` (a room the socket did not join is left alone).
    pub(super) fn sio_leave(&mut self, socket: u64, room: &str) {
        let Some(s) = self.sio.sockets.get_mut(&socket) else {
            return;
        };
        let before = s.rooms.len();
        s.rooms.retain(|r| r.as_ref() != room);
        if s.rooms.len() == before {
            return;
        }
        if s.nsp.as_ref() == "/" {
            if s.recovery.is_some() {
                self.hub.lock().leave_socket_room(socket, room);
            }
            self.index.socket_leave(socket, room);
            return;
        }
        let k: (Arc<str>, Arc<str>) = (s.nsp.clone(), Arc::from(room));
        if let Some(set) = self.sio.socket_rooms.get_mut(&k) {
            set.remove(&socket);
            if set.is_empty() {
                self.sio.socket_rooms.remove(&k);
            }
        }
    }

    /// `Socket::to_room` outside the main namespace: every socket of the namespace's room,
    /// encoded once. (In the main namespace it is a unified room broadcast.)
    pub(super) fn sio_emit_to_socket_room(
        &mut self,
        now: Instant,
        nsp: &str,
        room: &str,
        event: &str,
        args: Vec<Value>,
        volatile: bool,
    ) -> usize {
        let k: (Arc<str>, Arc<str>) = (Arc::from(nsp), Arc::from(room));
        let Some(members) = self.sio.socket_rooms.get(&k) else {
            return 0;
        };
        let sessions: Vec<u64> = members
            .iter()
            .filter_map(|m| self.sio.session_of(*m))
            .collect();
        let mut packet = Packet::new(PacketKind::Event, nsp);
        packet.data = Some(event_array(event, args));
        let encoded = EncodedPacket::new(&packet).shared();
        for session in &sessions {
            if volatile {
                self.sio_send_volatile(now, *session, &encoded);
            } else {
                self.sio_send(now, *session, &encoded);
            }
        }
        sessions.len()
    }
}

/// A socket.io socket id: 20 url-safe characters from 15 random bytes.
fn codec_sid(bytes: &[u8; 15]) -> String {
    crate::proto::eio::sid_from_random(bytes)
}

/// An ack callback, run by the dispatcher.
pub struct AckCallback(pub Box<dyn FnOnce(Vec<AckResult>) + Send>);

impl fmt::Debug for AckCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AckCallback")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    /// The frame built for one recipient is byte for byte the shared form's header and text.
    #[test]
    fn a_frame_for_one_recipient_is_the_shared_frame_in_one_piece() {
        let long = "é".repeat(100); // 200 bytes of UTF-8: a 16-bit length in the header
        let huge = "x".repeat(70_000); // a 64-bit length
        let packets = [
            Packet::ack("/", 0, vec![]),
            Packet::ack(
                "/admin",
                18_446_744_073_709_551_615,
                vec![json!("ok"), json!({"n": 1})],
            ),
            Packet::ack("/", 7, vec![json!(long)]),
            Packet::disconnect("/chat"),
            Packet::event("/chat", "news", vec![json!(huge), json!(null)], Some(3)),
        ];
        let mut scratch = Vec::new();
        for p in &packets {
            let (first, second) = EncodedPacket::new(p).text.ws_chunks();
            let mut shared = first.as_slice().to_vec();
            shared.extend_from_slice(second.as_ref().map_or(&[][..], |c| c.as_slice()));
            assert_eq!(frame_for_one(p, &mut scratch), shared, "{p:?}");
        }
        // The 70 000-byte text (last) grew the scratch past what is kept; a small one keeps it.
        assert_eq!(scratch.capacity(), 0);
        let _ = frame_for_one(&packets[1], &mut scratch);
        assert!(scratch.capacity() > 0 && scratch.capacity() <= crate::engine::ENCODE_SCRATCH_KEPT);
    }
}
