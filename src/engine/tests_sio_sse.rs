//! Socket.IO and SSE engine scenarios on a simulated clock.
