//! Window analytics benchmarks (placeholder while issue 3 is built).
fn main() {}
