//! The dispatcher thread: the application's hooks and handlers run here, in event order, never
//! on the loop thread.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use serde_json::Value;

use crate::engine::id_map::IdHasher;
use crate::engine::{AppEvent, AppEvents, Command, RandomSource, Rejection, RequestInfo, SocketId};
use crate::io::BatchPool;
use crate::server::builder::{AuthRequest, Handlers};
use crate::server::handle::{
    release_held_commands, release_held_commands_older_than, start_holding_commands,
};
use crate::server::route::{HttpRequest, HttpResponse, Responder};
use crate::server::socket::Pending;
use crate::server::{AckResponder, ConnectDecision, EngineIoEvent, Event, Handle, Socket};

/// The application's view of each connected socket, by id (ids made here: a cheap hasher).
type SocketMap = HashMap<SocketId, Socket, BuildHasherDefault<IdHasher>>;

/// The dispatcher thread: runs the application's hooks and handlers, in event order.
pub(super) fn dispatch(
    events: Receiver<AppEvents>,
    batches: Arc<BatchPool>,
    handle: Handle,
    handlers: Handlers,
    raw: Sender<EngineIoEvent>,
    backlog: Arc<AtomicUsize>,
) {
    // One handle for every socket (a `Handle` is 48 bytes; each of 10 000 sockets would hold one).
    let handle = Arc::new(handle);
    let mut sockets: SocketMap = SocketMap::default();
    // What the handlers of a batch send is held and handed to the loops after the batch (or once
    // a command was held for HOLD_MAX): one send and one wake-up per loop per batch, not per
    // command.
    start_holding_commands(handle.loops.clone());
    for mut batch in events {
        for (i, event) in batch.drain(..).enumerate() {
            backlog.fetch_sub(1, Ordering::Relaxed);
            // The clock is read every few handlers, not for each (handlers are short).
            if i % 8 == 7 {
                release_held_commands_older_than(HOLD_MAX);
            }
            // A panicking handler must not take the dispatcher (and with it every other
            // connection's handlers) down: it is caught, and an authentication hook that panics
            // rejects.
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                dispatch_one(event, &handle, &handlers, &raw, &mut sockets)
            }));
            if outcome.is_err() {
                log::error!("an application handler panicked; the dispatcher goes on");
            }
        }
        release_held_commands();
        batches.give_back(batch);
    }
}

/// Longest a held command waits while later handlers of the same batch run.
const HOLD_MAX: std::time::Duration = std::time::Duration::from_micros(200);

fn dispatch_one(
    event: AppEvent,
    handle: &Arc<Handle>,
    handlers: &Handlers,
    raw: &Sender<EngineIoEvent>,
    sockets: &mut SocketMap,
) {
    let decide = |namespace: Option<&str>, info: &RequestInfo, auth: Option<&Value>| {
        let hook = handlers.auth.as_ref()?;
        catch_unwind(AssertUnwindSafe(|| {
            hook(&AuthRequest {
                namespace,
                info,
                auth,
            })
        }))
        .ok()
    };
    let refused = || Rejection::unauthorized("authentication is not configured");
    // A deferred hook gets the request now and a decision to answer with later.
    let deferred =
        |pending: Pending, namespace: Option<&str>, info: &RequestInfo, auth: Option<&Value>| {
            let Some(hook) = &handlers.auth_deferred else {
                return false;
            };
            let decision = ConnectDecision {
                pending,
                handle: Some(Handle::clone(handle)),
            };
            // A panic drops the decision, which refuses the connection.
            let _ = catch_unwind(AssertUnwindSafe(|| {
                hook(
                    &AuthRequest {
                        namespace,
                        info,
                        auth,
                    },
                    decision,
                )
            }));
            true
        };
    // Raw Engine.IO events go to the handler, or else to `Server::take_events`.
    let raw_event = |ev: EngineIoEvent| match &handlers.eio {
        Some(h) => h(handle, ev),
        None => {
            let _ = raw.send(ev);
        }
    };
    {
        match event {
            AppEvent::SioConnectRequest {
                request,
                nsp,
                auth,
                info,
            } => {
                if deferred(Pending::SocketIo(request), Some(&nsp), &info, Some(&auth)) {
                    return;
                }
                let decision = match &handlers.auth {
                    None => Err(refused()),
                    Some(_) => decide(Some(&nsp), &info, Some(&auth))
                        .unwrap_or_else(|| Err(Rejection::unauthorized("internal error"))),
                };
                let _ = handle.command(Command::SioConnectDecision { request, decision });
            }
            AppEvent::SseConnectRequest { request, info } => {
                if deferred(Pending::Sse(request), None, &info, None) {
                    return;
                }
                let decision = match &handlers.auth {
                    None => Err(refused()),
                    Some(_) => decide(None, &info, None)
                        .unwrap_or_else(|| Err(Rejection::unauthorized("internal error"))),
                };
                let _ = handle.command(Command::SseDecision { request, decision });
            }
            AppEvent::SioConnected {
                socket,
                nsp,
                identity,
                auth,
                sid,
                recovered,
            } => {
                let s = Socket {
                    id: socket,
                    sid,
                    recovered,
                    volatile: false,
                    nsp: nsp.clone(),
                    identity,
                    handle: handle.clone(),
                };
                if let Some(h) = handlers.connect.get(nsp.as_ref()) {
                    h(&s, &auth);
                }
                sockets.insert(socket, s);
            }
            AppEvent::SioEvent {
                socket,
                nsp,
                event,
                args,
                attachments,
                ack,
            } => {
                handle.counters().event_in();
                let Some(s) = sockets.get(&socket) else {
                    return;
                };
                let h = handlers
                    .events
                    .get(nsp.as_ref())
                    .and_then(|by_name| by_name.get(&event))
                    .or_else(|| handlers.any_event.get(nsp.as_ref()));
                if let Some(h) = h {
                    let ev = Event {
                        name: event,
                        args,
                        attachments,
                        ack: ack.map(|id| AckResponder {
                            socket,
                            id,
                            handle: Arc::clone(handle),
                        }),
                    };
                    h(s, ev);
                }
            }
            AppEvent::SioDisconnected {
                socket,
                nsp,
                reason,
            } => {
                if let Some(s) = sockets.remove(&socket) {
                    if let Some(h) = handlers.disconnect.get(nsp.as_ref()) {
                        h(&s, reason);
                    }
                }
            }
            AppEvent::AckComplete { callback, results } => (callback.0)(results),
            AppEvent::SseOpened { stream, identity } => {
                if let Some(h) = &handlers.sse_open {
                    h(stream, identity.as_ref());
                }
            }
            AppEvent::SseClosed { stream } => {
                if let Some(h) = &handlers.sse_close {
                    h(stream);
                }
            }
            AppEvent::EioOpen {
                session,
                sid,
                remote,
            } => raw_event(EngineIoEvent::Open {
                session,
                sid,
                remote,
            }),
            AppEvent::EioMessage { session, data } => {
                raw_event(EngineIoEvent::Message { session, data })
            }
            AppEvent::EioClose { session, reason } => {
                raw_event(EngineIoEvent::Close { session, reason })
            }
            AppEvent::HttpRequest {
                request,
                prefix,
                head,
                body,
                remote,
            } => {
                handle.counters().route_request();
                let responder = Responder::new(request, Handle::clone(handle));
                match handlers.routes.get(prefix.as_ref()) {
                    // A panicking handler drops the responder: the client gets 500.
                    Some(h) => h(
                        HttpRequest::from_parts(prefix, head, body, remote),
                        responder,
                    ),
                    None => {
                        let _ = responder.send(HttpResponse::error(404, "not_found", "no route"));
                    }
                }
            }
        }
    }
}

/// Session ids come from the operating system's CSPRNG, read in blocks to keep syscalls rare.
pub(super) fn os_random() -> std::io::Result<RandomSource> {
    let mut file = std::fs::File::open("/dev/urandom")?;
    let mut pool = [0u8; 4096];
    file.read_exact(&mut pool)?;
    let mut used = 0usize;
    Ok(Box::new(move |out: &mut [u8]| {
        for b in out.iter_mut() {
            if used >= pool.len() {
                if file.read_exact(&mut pool).is_err() {
                    // /dev/urandom does not fail once opened; if it ever did, refuse to hand out
                    // predictable ids by mixing in the clock (still unique, never reused).
                    let t = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_nanos())
                        .unwrap_or(0);
                    for (i, p) in pool.iter_mut().enumerate() {
                        *p ^= (t >> ((i % 16) * 8)) as u8;
                    }
                }
                used = 0;
            }
            *b = pool.get(used).copied().unwrap_or(0);
            used += 1;
        }
    }))
}
