//! The dispatcher thread: the application's hooks and handlers run here, in event order, never
//! on the loop thread.

use std::collections::HashMap;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::Arc;

use serde_json::Value;

use crate::engine::{AppEvent, Command, RandomSource, Rejection, RequestInfo, SocketId};
use crate::server::builder::{AuthRequest, Handlers};
use crate::server::{AckResponder, EngineIoEvent, Event, Handle, Socket};

/// The dispatcher thread: runs the application's hooks and handlers, in event order.
pub(super) fn dispatch(
    events: Receiver<AppEvent>,
    handle: Handle,
    handlers: Handlers,
    raw: Sender<EngineIoEvent>,
    backlog: Arc<AtomicUsize>,
) {
    let mut sockets: HashMap<SocketId, Socket> = HashMap::new();
    for event in events {
        backlog.fetch_sub(1, Ordering::Relaxed);
        // A panicking handler must not take the dispatcher (and with it every other connection's
        // handlers) down: it is caught, and an authentication hook that panics rejects.
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            dispatch_one(event, &handle, &handlers, &raw, &mut sockets)
        }));
        if outcome.is_err() {
            log::error!("an application handler panicked; the dispatcher goes on");
        }
    }
}

fn dispatch_one(
    event: AppEvent,
    handle: &Handle,
    handlers: &Handlers,
    raw: &Sender<EngineIoEvent>,
    sockets: &mut HashMap<SocketId, Socket>,
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
                let decision = match &handlers.auth {
                    None => Err(refused()),
                    Some(_) => decide(Some(&nsp), &info, Some(&auth))
                        .unwrap_or_else(|| Err(Rejection::unauthorized("internal error"))),
                };
                let _ = handle.command(Command::SioConnectDecision { request, decision });
            }
            AppEvent::SseConnectRequest { request, info } => {
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
                let Some(s) = sockets.get(&socket) else {
                    return;
                };
                let key = (nsp.to_string(), event);
                if let Some(h) = handlers.events.get(&key) {
                    let ev = Event {
                        name: key.1.clone(),
                        args,
                        attachments,
                        ack: ack.map(|id| AckResponder {
                            socket,
                            id,
                            handle: handle.clone(),
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
