//! Which loop (or loops) an application command goes to, and what the sender does before it
//! hands it over: a broadcast is made ready once on the hub (sequence number, history, bytes)
//! and the same `Arc` goes to every loop; a user's room membership is written into the hub
//! (with its limits) before the loops hear of it; a command for one socket, stream, session or
//! request goes to the loop its id names (or where a recovered socket lives now).
//!
//! Sans-IO like the engine: `send(loop, command)` is whatever the caller does with it (the
//! server's handle puts it on the loop's channel; tests on a queue per simulated loop). Whatever
//! must be seen in the same order by every loop is sent while the hub is locked.

use std::sync::Arc;
use std::time::Instant;

use super::hub::Hub;
use super::sio::{AckMerge, AckReply};
use super::{audience_of, room_args, Command, Payload, Target, Transports};
use crate::config::Config;

/// What `route` did with a command, for the caller's replies.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Routed {
    /// Sent to this many loops (a broadcast's reach and stats have one answer per loop).
    Loops(usize),
    /// Answered by the hub itself (`UserRooms`, a refused `JoinRoomReply`).
    Answered,
}

/// Routes `cmd` (see the module docs). `now` stamps the history entries of broadcasts (read only
/// for them: an ack or a send to one socket needs no clock).
pub(crate) fn route(
    hub: &Hub,
    cfg: &Config,
    now: &dyn Fn() -> Instant,
    cmd: Command,
    send: &mut dyn FnMut(usize, Command),
) -> Routed {
    let loops = hub.loops;
    let recovery = cfg.connection_state_recovery.is_some();
    let one = |send: &mut dyn FnMut(usize, Command), to: usize, cmd: Command| {
        send(to, cmd);
        Routed::Loops(1)
    };
    match cmd {
        Command::EioSend { session, .. } | Command::EioClose { session } if loops > 1 => {
            let to = hub.loop_of_id(session.0);
            one(send, to, cmd)
        }
        Command::SioConnectDecision { request, .. }
        | Command::SioConnectHandoff { request, .. }
        | Command::SseDecision { request, .. }
        | Command::HttpRespond { request, .. }
            if loops > 1 =>
        {
            let to = hub.loop_of_id(request);
            one(send, to, cmd)
        }
        Command::SseSend { stream, .. } | Command::SseClose { stream } if loops > 1 => {
            let to = hub.loop_of_id(stream.0);
            one(send, to, cmd)
        }
        Command::SioEmit {
            socket,
            event,
            args,
            attachments,
            ack,
            volatile,
            seq: _,
        } => {
            // Recovery on: a plain emit may be replayed, so it takes its sequence number here,
            // in the same order as the broadcasts every loop sees.
            let numbered = recovery && !volatile && ack.is_none();
            let mut state = numbered.then(|| hub.lock());
            let seq = state.as_mut().and_then(|s| hub.next_local_seq(s));
            let to = match &state {
                Some(s) => hub.loop_of_socket_in(s, socket.0),
                None => hub.loop_of_socket(socket.0),
            };
            let cmd = Command::SioEmit {
                socket,
                event,
                args,
                attachments,
                ack,
                volatile,
                seq,
            };
            one(send, to, cmd)
        }
        Command::SioJoin {
            socket,
            room,
            in_main,
            hub_added: _,
        } => {
            let (to, hub_added) = if recovery && in_main {
                // Written now, so a broadcast sent after this call freezes an audience with the
                // socket in it, whenever the loop gets to the join.
                let mut state = hub.lock();
                let added = state.join_socket_room(socket.0, Arc::from(room.as_str()));
                (hub.loop_of_socket_in(&state, socket.0), added)
            } else {
                (hub.loop_of_socket(socket.0), false)
            };
            let cmd = Command::SioJoin {
                socket,
                room,
                in_main,
                hub_added,
            };
            one(send, to, cmd)
        }
        Command::SioLeave {
            ref socket,
            ref room,
            in_main,
        } => {
            let to = if recovery && in_main {
                let mut state = hub.lock();
                state.leave_socket_room(socket.0, room);
                hub.loop_of_socket_in(&state, socket.0)
            } else {
                hub.loop_of_socket(socket.0)
            };
            one(send, to, cmd)
        }
        Command::SioAck { socket, .. }
        | Command::SioDisconnect { socket }
        | Command::SioCloseConnection { socket }
            if loops > 1 =>
        {
            let to = hub.loop_of_socket(socket.0);
            one(send, to, cmd)
        }
        Command::Broadcast {
            target,
            transports,
            event,
            data,
            volatile,
            reply,
        } => {
            let payload = Payload {
                event: &event,
                sse_data: &data,
                sio_args: &data,
            };
            broadcast(
                hub,
                cfg,
                now(),
                &target,
                transports,
                payload,
                volatile,
                None,
                reply,
                send,
            )
        }
        Command::SioEmitToRoom {
            nsp,
            room,
            event,
            args,
            volatile,
        } if nsp == "/" => {
            // A unified room broadcast.
            let (sio_args, sse_data) = room_args(&args);
            let payload = Payload {
                event: &event,
                sse_data: &sse_data,
                sio_args: &sio_args,
            };
            let target = Target::Room(room);
            broadcast(
                hub,
                cfg,
                now(),
                &target,
                Transports::Both,
                payload,
                volatile,
                None,
                None,
                send,
            )
        }
        Command::UserAck {
            user,
            event,
            data,
            timeout,
            reply,
        } if loops > 1 => {
            let merge = AckMerge::new(loops, reply);
            for to in 0..loops {
                send(
                    to,
                    Command::UserAck {
                        user: user.clone(),
                        event: event.clone(),
                        data: data.clone(),
                        timeout,
                        reply: AckReply::Merge(merge.clone()),
                    },
                );
            }
            Routed::Loops(loops)
        }
        Command::JoinRoomReply { user, room, reply } => {
            let mut state = hub.lock();
            let joined = state.rooms.join(
                &user,
                &room,
                cfg.max_rooms_per_user,
                cfg.max_room_memberships,
            );
            let routed = match joined {
                Ok(true) => {
                    for to in 0..loops {
                        send(
                            to,
                            Command::RoomCopy {
                                user: user.clone(),
                                room: room.clone(),
                                joined: true,
                            },
                        );
                    }
                    Routed::Loops(loops)
                }
                Ok(false) | Err(_) => Routed::Answered,
            };
            drop(state);
            let _ = reply.send(joined.map(|_| ()));
            routed
        }
        Command::LeaveRoom { user, room } => {
            let mut state = hub.lock();
            if !state.rooms.leave(&user, &room) {
                return Routed::Answered;
            }
            for to in 0..loops {
                send(
                    to,
                    Command::RoomCopy {
                        user: user.clone(),
                        room: room.clone(),
                        joined: false,
                    },
                );
            }
            Routed::Loops(loops)
        }
        Command::UserRooms { user, reply } => {
            // The hub has every join that returned: read-your-writes without a loop round trip.
            let _ = reply.send(hub.lock().rooms.rooms_of(&user));
            Routed::Answered
        }
        Command::Stats { reply } if loops > 1 => {
            for to in 0..loops {
                send(
                    to,
                    Command::Stats {
                        reply: reply.clone(),
                    },
                );
            }
            Routed::Loops(loops)
        }
        Command::SioEmitToRoom {
            nsp,
            room,
            event,
            args,
            volatile,
        } if loops > 1 => {
            // Another namespace's room: its sockets may be on any loop.
            for to in 0..loops {
                send(
                    to,
                    Command::SioEmitToRoom {
                        nsp: nsp.clone(),
                        room: room.clone(),
                        event: event.clone(),
                        args: args.clone(),
                        volatile,
                    },
                );
            }
            Routed::Loops(loops)
        }
        // One loop: everything else goes to it as it is.
        cmd => one(send, 0, cmd),
    }
}

/// Prepares once, hands the same broadcast to every loop while the hub is locked (so every loop
/// sees the sequence numbers in order). `numbered`: the sequence number a cluster gave it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn broadcast(
    hub: &Hub,
    cfg: &Config,
    now: Instant,
    target: &Target,
    transports: Transports,
    payload: Payload<'_>,
    volatile: bool,
    numbered: Option<u64>,
    reply: Option<super::ReachReply>,
    send: &mut dyn FnMut(usize, Command),
) -> Routed {
    let mut state = hub.lock();
    let prepared = Arc::new(hub.prepare(
        &mut state,
        cfg,
        now,
        audience_of(target),
        transports,
        payload,
        volatile,
        numbered,
    ));
    // A cluster node knows which users and tenants it holds: a broadcast to one it does not
    // hold is kept in the history (a client may resume here) and wakes no loop.
    if hub.is_cluster() && !state.present.may_reach(&prepared.audience) {
        if let Some(seq) = prepared.seq {
            state.quiet_seq = state.quiet_seq.max(seq);
        }
        drop(state);
        if let Some(reply) = reply {
            for _ in 0..hub.loops {
                reply.send(super::Reach::default());
            }
        }
        return Routed::Loops(hub.loops);
    }
    for to in 0..hub.loops {
        send(
            to,
            Command::Deliver {
                prepared: prepared.clone(),
                reply: reply.clone(),
            },
        );
    }
    Routed::Loops(hub.loops)
}
