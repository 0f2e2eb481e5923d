//! Codec throughput (criterion). Filled in by the benches task.
fn main() {}
