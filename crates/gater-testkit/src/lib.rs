//! Test support shared by the exesdb-gater crates (never a dependency of a library's
//! non-test code).
//!
//! - [`vectors`]: where the golden vectors of `../shared/vectors` are, and what a test
//!   does when they are missing.
//! - [`erl`]: a private EPMD and real `erl` nodes, killed by pid when dropped.

pub mod erl;
pub mod testbed;
pub mod vectors;
