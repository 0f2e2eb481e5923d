//! Two cluster nodes on the simulated clock, without Redis: each engine has a hub of its own
//! (a cluster node's: sequence numbers shifted, room of the node's own between them), the test
//! plays the bus by handing every broadcast to both nodes with the same cluster number, in an
//! order it picks, and plays the claim by calling `hand_off` on the keeping node. A socket that
//! waits on node A recovers on node B with everything addressed to it after its offset, once,
//! whether A or B had seen more of the bus at the moment of the handoff.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use super::fanout;
use super::test_support::{test_config, H, SIO_WS};
use super::*;
use crate::config::Recovery;
use serde_json::json;

const EPOCH: u64 = 77;

fn config() -> Config {
    Config {
        connection_state_recovery: Some(Recovery::default()),
        ..test_config()
    }
}

fn alice() -> Identity {
    Identity::new("acme", "alice")
}

/// The cluster's broadcast number `n` delivered on one node, as its subscriber does.
fn apply(h: &mut H, n: u64, target: Target, data: &str) {
    apply_counted(h, n, target, data);
}

/// The data (first argument) and offset (last) of each event written since the last read.
fn events(h: &mut H, conn: ConnId) -> Vec<(Value, String)> {
    h.texts(conn)
        .iter()
        .map(|t| {
            let v: Value = serde_json::from_str(t.strip_prefix("42").unwrap()).unwrap();
            let a = v.as_array().unwrap();
            (
                a[1].clone(),
                a.last().unwrap().as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Connects to `/` with `payload` on a fresh WebSocket; returns the conn and the request.
fn connect_request(h: &mut H, payload: &str) -> (ConnId, u64) {
    let (conn, _) = h.ws_open(SIO_WS);
    h.app.clear();
    h.send(conn, &format!("40{payload}"));
    match h.expect_app() {
        AppEvent::SioConnectRequest { request, .. } => (conn, request),
        other => panic!("expected SioConnectRequest, got {other:?}"),
    }
}

/// Alice connects to `/` on `h` with `payload` and the hook accepts her: the conn and the
/// CONNECT reply's data (sid, pid).
fn alice_connects(h: &mut H, payload: &str) -> (ConnId, Value) {
    let (conn, request) = connect_request(h, payload);
    h.cmd(Command::SioConnectDecision {
        request,
        decision: Ok(Some(alice())),
    });
    let hello: Value = serde_json::from_str(h.next_text(conn).strip_prefix("40").unwrap()).unwrap();
    (conn, hello)
}

/// The id of the socket the application heard connect last.
fn connected_socket(h: &mut H) -> SocketId {
    loop {
        if let AppEvent::SioConnected { socket, .. } = h.expect_app() {
            break socket;
        }
    }
}

/// A socket of alice on node `a`, in socket room "desk", that saw broadcast 1 and then lost its
/// connection; returns its sid, pid and the offset it keeps.
fn parked_on(a: &mut H) -> (String, String, String) {
    let (conn, hello) = alice_connects(a, "{}");
    let socket = connected_socket(a);
    a.cmd(Command::SioJoin {
        socket,
        room: "desk".into(),
        in_main: true,
        hub_added: false,
    });
    apply(a, 1, Target::User(alice()), "1");
    let seen = events(a, conn);
    assert_eq!(seen.len(), 1);
    a.close(conn);
    assert_eq!(a.e.hub.lock().parked.len(), 1, "parked on a");
    (
        hello["sid"].as_str().unwrap().to_string(),
        hello["pid"].as_str().unwrap().to_string(),
        seen[0].1.clone(),
    )
}

/// The client comes back on node `b`: `b` asks, `a` hands over, `b` restores.
fn recover_on(b: &mut H, a: &H, sid: &str, pid: &str, offset: &str) -> ConnId {
    let (conn, request) = connect_request(b, &json!({"pid": pid, "offset": offset}).to_string());
    let claimed = b.e.hub.take_remote_claim(request);
    assert_eq!(
        claimed,
        Some((pid.to_string(), Some(offset.to_string()))),
        "b noted the claim"
    );
    let answer = hand_off(
        &a.e.hub,
        &a.e.cfg,
        a.now(),
        pid,
        Some(offset),
        Some(&alice()),
    );
    let HandoffAnswer::Found(handoff) = answer else {
        panic!("a did not hand it over: {answer:?}");
    };
    assert_eq!(a.e.hub.lock().parked.len(), 0, "a gave it up");
    b.cmd(Command::SioConnectHandoff {
        request,
        decision: Ok(Some(alice())),
        handoff: Some(handoff),
        recorded: None,
    });
    let hello: Value = serde_json::from_str(b.next_text(conn).strip_prefix("40").unwrap()).unwrap();
    assert_eq!(hello, json!({"sid": sid, "pid": pid}));
    let recovered = loop {
        if let AppEvent::SioConnected { recovered, .. } = b.expect_app() {
            break recovered;
        }
    };
    assert!(recovered);
    conn
}

fn data(evs: &[(Value, String)]) -> Vec<Value> {
    evs.iter().map(|(d, _)| d.clone()).collect()
}

#[test]
fn a_waiting_socket_moves_to_another_node_when_both_saw_the_same() {
    let (mut a, mut b) = (
        H::cluster_node(config(), EPOCH),
        H::cluster_node(config(), EPOCH),
    );
    apply(&mut b, 1, Target::User(alice()), "1");
    let (sid, pid, offset) = parked_on(&mut a);
    for (n, target, d) in [
        (2, Target::User(alice()), "2"),
        (3, Target::Room("desk".into()), "3"),
        (4, Target::Room("elsewhere".into()), "99"),
        (5, Target::All, "5"),
    ] {
        apply(&mut a, n, target.clone(), d);
        apply(&mut b, n, target, d);
    }
    let conn = recover_on(&mut b, &a, &sid, &pid, &offset);
    let got = events(&mut b, conn);
    assert_eq!(data(&got), vec![json!(2), json!(3), json!(5)]);
    // The offsets are the cluster's: the same on both nodes.
    assert_eq!(got[0].1, format!("{EPOCH}:{}", 2u64 << 24));
    // It lives on b now, with its room, once.
    apply(&mut b, 6, Target::Room("desk".into()), "6");
    assert_eq!(data(&events(&mut b, conn)), vec![json!(6)]);
    apply(&mut a, 6, Target::Room("desk".into()), "6");
    assert_eq!(a.e.hub.lock().rooms.room_snapshot("desk", true).1.len(), 0);
}

#[test]
fn the_node_behind_replays_its_own_part_and_the_node_ahead_is_not_repeated() {
    // b is behind: a handed over 2 and 3 that b has not delivered yet; when b gets to them, the
    // socket does not hear them again.
    let (mut a, mut b) = (
        H::cluster_node(config(), EPOCH),
        H::cluster_node(config(), EPOCH),
    );
    apply(&mut b, 1, Target::User(alice()), "1");
    let (sid, pid, offset) = parked_on(&mut a);
    apply(&mut a, 2, Target::User(alice()), "2");
    apply(&mut a, 3, Target::Room("desk".into()), "3");
    let conn = recover_on(&mut b, &a, &sid, &pid, &offset);
    assert_eq!(data(&events(&mut b, conn)), vec![json!(2), json!(3)]);
    apply(&mut b, 2, Target::User(alice()), "2");
    apply(&mut b, 3, Target::Room("desk".into()), "3");
    apply(&mut b, 4, Target::Room("desk".into()), "4");
    assert_eq!(data(&events(&mut b, conn)), vec![json!(4)]);

    // a is behind: b already delivered 2 (to the user) and 3 (to the socket's room, which b knew
    // only by name) when a hands over; b replays them after a's part.
    let (mut a, mut b) = (
        H::cluster_node(config(), EPOCH),
        H::cluster_node(config(), EPOCH),
    );
    apply(&mut b, 1, Target::User(alice()), "1");
    let (sid, pid, offset) = parked_on(&mut a);
    apply(&mut b, 2, Target::User(alice()), "2");
    apply(&mut b, 3, Target::Room("desk".into()), "3");
    apply(&mut b, 4, Target::Room("elsewhere".into()), "99");
    let conn = recover_on(&mut b, &a, &sid, &pid, &offset);
    assert_eq!(data(&events(&mut b, conn)), vec![json!(2), json!(3)]);
    apply(&mut b, 5, Target::All, "5");
    assert_eq!(data(&events(&mut b, conn)), vec![json!(5)]);
}

#[test]
fn a_claim_for_another_identity_or_an_unknown_pid_finds_nothing() {
    let mut a = H::cluster_node(config(), EPOCH);
    let (_, pid, offset) = parked_on(&mut a);
    let mallory = Identity::new("acme", "mallory");
    let cfg = a.e.cfg.clone();
    assert_eq!(
        hand_off(&a.e.hub, &cfg, a.now(), &pid, Some(&offset), Some(&mallory)),
        HandoffAnswer::NotHere
    );
    assert_eq!(
        hand_off(
            &a.e.hub,
            &cfg,
            a.now(),
            "nope",
            Some(&offset),
            Some(&alice())
        ),
        HandoffAnswer::NotHere
    );
    assert_eq!(a.e.hub.lock().parked.len(), 1, "still waiting for alice");
    // An offset of another epoch cannot be filled: the socket is gone, the client starts afresh.
    assert_eq!(
        hand_off(&a.e.hub, &cfg, a.now(), &pid, Some("1:5"), Some(&alice())),
        HandoffAnswer::Expired
    );
    assert_eq!(a.e.hub.lock().parked.len(), 0);
}

#[test]
fn without_an_answer_the_node_gives_a_fresh_session() {
    let mut b = H::cluster_node(config(), EPOCH);
    let (conn, request) = connect_request(
        &mut b,
        &json!({"pid": "gone", "offset": "77:1"}).to_string(),
    );
    b.cmd(Command::SioConnectHandoff {
        request,
        decision: Ok(Some(alice())),
        handoff: None,
        recorded: None,
    });
    let hello: Value = serde_json::from_str(b.next_text(conn).strip_prefix("40").unwrap()).unwrap();
    assert_ne!(hello["pid"], json!("gone"));
    assert_eq!(b.e.hub.take_remote_claim(request), None);
}

/// `apply`, returning how many commands reached the loop (none when nobody here is in the
/// audience).
fn apply_counted(h: &mut H, n: u64, target: Target, data: &str) -> usize {
    let hub = h.e.hub.clone();
    let mut cmds = Vec::new();
    let payload = Payload {
        event: "m",
        sse_data: data,
        sio_args: data,
    };
    fanout::broadcast(
        &hub,
        &h.e.cfg.clone(),
        h.now(),
        &target,
        Transports::Both,
        payload,
        false,
        Some(hub.cluster_seq(n)),
        None,
        &mut |_, c| cmds.push(c),
    );
    let count = cmds.len();
    for c in cmds {
        h.cmd(c);
    }
    count
}

#[test]
fn a_broadcast_to_nobody_here_wakes_no_loop_and_is_still_replayed_here() {
    let sse = Config {
        sse_path: Some("/events".into()),
        ..config()
    };
    let mut h = H::cluster_node(sse, EPOCH);
    let bob = Identity::new("acme", "bob");
    let (conn, _) = h.sse_open(Some(bob.clone()), None);
    assert_eq!(apply_counted(&mut h, 1, Target::User(bob.clone()), "1"), 1);
    let first = h.sse_events(conn);
    assert_eq!(first.len(), 1);
    let id = first[0].last_event_id.clone();
    h.close(conn);
    // Bob has no connection here: kept, not handed to the loop (nor are the tenant's).
    assert_eq!(apply_counted(&mut h, 2, Target::User(bob.clone()), "2"), 0);
    assert_eq!(
        apply_counted(&mut h, 3, Target::Tenant("acme".into()), "3"),
        0
    );
    assert_eq!(apply_counted(&mut h, 4, Target::User(alice()), "x"), 0);
    // Bob comes back here with his last id: what this node kept without handing it to the loop
    // comes too (the loop itself has delivered nothing since 1).
    let (conn, _) = h.sse_open(Some(bob.clone()), Some(&id));
    let got: Vec<String> = h.sse_events(conn).into_iter().map(|e| e.data).collect();
    assert_eq!(got, vec!["2", "3"]);
    // Present again: delivered live, once; everyone's always goes to the loop.
    assert_eq!(apply_counted(&mut h, 5, Target::User(bob), "5"), 1);
    assert_eq!(apply_counted(&mut h, 6, Target::All, "6"), 1);
    let got: Vec<String> = h.sse_events(conn).into_iter().map(|e| e.data).collect();
    assert_eq!(got, vec!["5", "6"]);
}

/// What a node wrote of its sockets, as Redis would hold it: the record and the emits of `pid`.
#[derive(Default)]
struct Records {
    writes: Vec<session_log::SessionWrite>,
}

impl Records {
    /// Plays the writes into (record, emits) for `pid`, as the keys would hold them now.
    fn of(&self, pid: &str) -> Option<(session_log::SessionRecord, Vec<session_log::EmitEntry>)> {
        use session_log::SessionWrite as W;
        let mut record = None;
        let mut emits = Vec::new();
        for w in &self.writes {
            match w {
                W::Record(r) if r.pid == pid => record = Some(r.clone()),
                W::Emit {
                    pid: p,
                    seq,
                    text,
                    attachments,
                    ..
                } if p == pid => emits.push((*seq, text.clone(), attachments.clone())),
                W::Forget { pid: p, .. } if p == pid => {
                    record = None;
                    emits.clear();
                }
                _ => {}
            }
        }
        record.map(|r| (r, emits))
    }
}

/// A node whose session log writes into a list the test reads.
fn recording_node() -> (H, std::sync::Arc<std::sync::Mutex<Records>>) {
    let h = H::cluster_node(config(), EPOCH);
    let records = std::sync::Arc::new(std::sync::Mutex::new(Records::default()));
    let r = records.clone();
    h.e.hub
        .lock()
        .sessions
        .set_sink(Box::new(move |w| r.lock().unwrap().writes.push(w)));
    (h, records)
}

/// Alice's socket on node `a`: connected, saw broadcast 1, then (its client's connection dead)
/// everything below happened while node `a` and node `b` both followed the bus; returns its
/// sid, pid and offset.
fn busy_socket_on(a: &mut H, b: &mut H) -> (String, String, String) {
    let (conn, hello) = alice_connects(a, "{}");
    let socket = connected_socket(a);
    let both = |a: &mut H, b: &mut H, n: u64, target: Target, d: &str| {
        apply(a, n, target.clone(), d);
        apply(b, n, target, d);
    };
    let join = |a: &mut H, room: &str| {
        a.cmd(Command::SioJoin {
            socket,
            room: room.into(),
            in_main: true,
            hub_added: false,
        })
    };
    both(a, b, 1, Target::User(alice()), "1");
    let seen = events(a, conn);
    both(a, b, 2, Target::Room("desk".into()), "99"); // before it joined
    join(a, "desk");
    join(a, "old");
    both(a, b, 3, Target::Room("old".into()), "3");
    a.cmd(Command::SioLeave {
        socket,
        room: "old".into(),
        in_main: true,
    });
    both(a, b, 4, Target::Room("old".into()), "99"); // after it left
    a.cmd(Command::SioEmit {
        socket,
        event: "m".into(),
        args: vec![json!("e1")],
        attachments: Vec::new(),
        ack: None,
        volatile: false,
        seq: None,
    });
    both(a, b, 5, Target::Room("desk".into()), "5");
    both(a, b, 6, Target::Tenant("acme".into()), "6");
    both(a, b, 7, Target::User(Identity::new("acme", "bob")), "99");
    (
        hello["sid"].as_str().unwrap().to_string(),
        hello["pid"].as_str().unwrap().to_string(),
        seen[0].1.clone(),
    )
}

/// The client of a dead node comes back on `b` with `recorded`, as `who`; the hello and
/// whether it recovered.
fn come_back_with(
    b: &mut H,
    pid: &str,
    offset: &str,
    who: Identity,
    recorded: Option<session_log::RecordedSession>,
) -> (ConnId, Value, bool) {
    let (conn, request) = connect_request(b, &json!({"pid": pid, "offset": offset}).to_string());
    assert!(b.e.hub.take_remote_claim(request).is_some());
    b.cmd(Command::SioConnectHandoff {
        request,
        decision: Ok(Some(who)),
        handoff: None,
        recorded: recorded.map(Box::new),
    });
    let hello: Value = serde_json::from_str(b.next_text(conn).strip_prefix("40").unwrap()).unwrap();
    let recovered = loop {
        if let AppEvent::SioConnected { recovered, .. } = b.expect_app() {
            break recovered;
        }
    };
    (conn, hello, recovered)
}

fn recorded(
    records: &std::sync::Mutex<Records>,
    pid: &str,
    offset: &str,
) -> session_log::RecordedSession {
    let (record, emits) = records.lock().unwrap().of(pid).expect("a record");
    session_log::RecordedSession {
        record,
        emits,
        emits_full: false,
        offset: Some(offset.to_string()),
    }
}

#[test]
fn a_dead_nodes_socket_recovers_from_its_record_with_everything_it_missed_in_order() {
    let (mut a, records) = recording_node();
    let mut b = H::cluster_node(config(), EPOCH);
    let (sid, pid, offset) = busy_socket_on(&mut a, &mut b);
    // Node a dies here: nothing more of it but what it wrote.
    let rec = recorded(&records, &pid, &offset);
    assert_eq!(rec.record.rooms().collect::<Vec<_>>(), vec!["desk"]);
    let (conn, hello, recovered) = come_back_with(&mut b, &pid, &offset, alice(), Some(rec));
    assert_eq!(hello, json!({"sid": sid, "pid": pid}));
    assert!(recovered);
    let got = events(&mut b, conn);
    // The room it had left and the room event of before its join are not there; its own emit
    // is where node a sent it (after 3 and 4, before 5).
    assert_eq!(data(&got), vec![json!(3), json!("e1"), json!(5), json!(6)]);
    assert_eq!(got[1].1, format!("{EPOCH}:{}", (4u64 << 24) + 1));
    // It lives on b now, in its room, once.
    apply(&mut b, 8, Target::Room("desk".into()), "8");
    apply(&mut b, 9, Target::Room("old".into()), "99");
    assert_eq!(data(&events(&mut b, conn)), vec![json!(8)]);
}

#[test]
fn a_record_restores_nothing_it_cannot_restore_exactly() {
    let (mut a, records) = recording_node();
    let mut b = H::cluster_node(config(), EPOCH);
    let (_, pid, offset) = busy_socket_on(&mut a, &mut b);
    let fresh = |b: &mut H, who: Identity, rec: session_log::RecordedSession| {
        // (The test nodes draw the same random ids, so a fresh pid may equal the old one here.)
        let (conn, _, recovered) = come_back_with(b, &pid, &offset, who, Some(rec));
        assert!(!recovered);
        assert!(events(b, conn).is_empty(), "nothing replayed");
    };
    // Someone else with alice's record (the claim's field names the user, so Redis would not
    // even hand it over).
    fresh(
        &mut b,
        Identity::new("acme", "mallory"),
        recorded(&records, &pid, &offset),
    );
    // The emits list was full and starts after what the client saw: one may be missing.
    let mut full = recorded(&records, &pid, &offset);
    full.emits_full = true;
    fresh(&mut b, alice(), full);
    // Room spans were dropped after what the client saw.
    let mut trimmed = recorded(&records, &pid, &offset);
    trimmed.record.complete_after = 3 << 24;
    fresh(&mut b, alice(), trimmed);
    // An offset of another epoch.
    let mut other = recorded(&records, &pid, &offset);
    other.offset = Some("1:5".into());
    fresh(&mut b, alice(), other);
    // A replayed packet that is not one of ours.
    let mut garbage = recorded(&records, &pid, &offset);
    garbage.emits[0].1 = b"not a packet".to_vec();
    fresh(&mut b, alice(), garbage);
    // The same, fine: recovered.
    let (_, _, recovered) = come_back_with(
        &mut b,
        &pid,
        &offset,
        alice(),
        Some(recorded(&records, &pid, &offset)),
    );
    assert!(recovered);
}

#[test]
fn a_record_lives_while_its_socket_may_come_back_and_goes_with_it() {
    let (mut a, records) = recording_node();
    let (conn, hello) = alice_connects(&mut a, "{}");
    let pid = hello["pid"].as_str().unwrap().to_string();
    assert!(
        records.lock().unwrap().of(&pid).is_some(),
        "written at connect"
    );
    // Its connection drops: it waits for its client, and so does its record.
    a.close(conn);
    assert_eq!(a.e.hub.lock().parked.len(), 1);
    assert!(records.lock().unwrap().of(&pid).is_some());
    // It comes back here and leaves for good (a client disconnect): the record goes.
    let (conn, again) = alice_connects(&mut a, &json!({"pid": pid}).to_string());
    assert_eq!(again["pid"], json!(pid.clone()), "recovered here");
    assert!(records.lock().unwrap().of(&pid).is_some());
    a.send(conn, "41");
    assert!(
        records.lock().unwrap().of(&pid).is_none(),
        "gone with its socket"
    );
    // A node without a sink (no cluster, or recovery off) writes nothing and keeps nothing.
    let mut plain = H::cluster_node(config(), EPOCH);
    let _ = alice_connects(&mut plain, "{}");
    assert!(!plain.e.hub.lock().sessions.is_on());
}
