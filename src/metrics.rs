//! Running totals for monitoring, shared by the loop, the engine, the dispatcher and the handle:
//! atomics that only grow (`Relaxed` is enough: each is read on its own).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::engine::Reach;

/// The counters behind [`Metrics`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    slow_consumer_closes: AtomicU64,
    events_in: AtomicU64,
    delivered_sse: AtomicU64,
    delivered_socketio: AtomicU64,
    connections_accepted: AtomicU64,
    route_requests: AtomicU64,
    cluster_published: AtomicU64,
    cluster_dropped: AtomicU64,
    cluster_reconnects: AtomicU64,
    cluster_foreign: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    if n > 0 {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

impl Counters {
    pub(crate) fn bytes_in(&self, n: u64) {
        add(&self.bytes_in, n);
    }

    pub(crate) fn bytes_out(&self, n: u64) {
        add(&self.bytes_out, n);
    }

    pub(crate) fn slow_consumer_closed(&self) {
        add(&self.slow_consumer_closes, 1);
    }

    pub(crate) fn event_in(&self) {
        add(&self.events_in, 1);
    }

    pub(crate) fn delivered(&self, reach: Reach) {
        add(&self.delivered_sse, reach.sse as u64);
        add(&self.delivered_socketio, reach.socketio as u64);
    }

    pub(crate) fn accepted(&self) {
        add(&self.connections_accepted, 1);
    }

    pub(crate) fn route_request(&self) {
        add(&self.route_requests, 1);
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_published(&self) {
        add(&self.cluster_published, 1);
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_dropped(&self) {
        add(&self.cluster_dropped, 1);
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_reconnected(&self) {
        add(&self.cluster_reconnects, 1);
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn cluster_foreign(&self) {
        add(&self.cluster_foreign, 1);
    }

    pub(crate) fn snapshot(&self, dispatcher_backlog: usize) -> Metrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Metrics {
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
            slow_consumer_closes: get(&self.slow_consumer_closes),
            events_in: get(&self.events_in),
            delivered_sse: get(&self.delivered_sse),
            delivered_socketio: get(&self.delivered_socketio),
            connections_accepted: get(&self.connections_accepted),
            route_requests: get(&self.route_requests),
            cluster_published: get(&self.cluster_published),
            cluster_dropped: get(&self.cluster_dropped),
            cluster_reconnects: get(&self.cluster_reconnects),
            cluster_foreign: get(&self.cluster_foreign),
            dispatcher_backlog,
        }
    }
}

/// Totals since the server started, read without a round trip to the loop
/// ([`crate::Handle::metrics`]); [`crate::Handle::stats`] has the current sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metrics {
    /// Bytes read from client connections.
    pub bytes_in: u64,
    /// Bytes written to client connections.
    pub bytes_out: u64,
    /// Connections closed because their outbound queue passed `max_outbound_bytes`.
    pub slow_consumer_closes: u64,
    /// Socket.IO events received from clients (every namespace).
    pub events_in: u64,
    /// Broadcast events written to SSE streams (one per stream reached).
    pub delivered_sse: u64,
    /// Broadcast events sent to Socket.IO sockets (one per socket reached).
    pub delivered_socketio: u64,
    /// TCP connections accepted.
    pub connections_accepted: u64,
    /// Requests handed to application routes.
    pub route_requests: u64,
    /// Cluster only: messages Redis took (broadcasts, room changes, requests).
    pub cluster_published: u64,
    /// Cluster only: sends accepted, then given up because Redis stayed unreachable past
    /// `ClusterConfig::retry_for`.
    pub cluster_dropped: u64,
    /// Cluster only: links to Redis made again after they broke.
    pub cluster_reconnects: u64,
    /// Cluster only: messages on the cluster's channels that were not ours (ignored).
    pub cluster_foreign: u64,
    /// Application events waiting for the dispatcher thread (now, not a total).
    pub dispatcher_backlog: usize,
}
