//! Engine scenario tests on a simulated clock.
