//! Fault injection, soak and security harness for exesdb-gater.
//!
//! **Owns:** running the real daemon (`exesdb-gater run`) against a private BEAM testbed
//! (`gater_testkit::testbed`), a steady mixed HTTP load with a record of every
//! acknowledged append, faults (kill a node, kill workers, SIGSTOP a node past its
//! net_ticktime, cut a node off the network, slow workers, restart the whole testbed),
//! the private network namespace the chaos run lives in (`netns`), the check of the
//! testbed's logs against the acknowledgements, and the soak's RSS and leak-gauge
//! assertions.
//!
//! **Leaves to others:** the gateway itself; this crate only drives it from outside, as
//! a user would, over real sockets.
//!
//! ```text
//!   Load (reqwest tasks) --HTTP--> exesdb-gater daemon --dist--> testbed nodes (erl)
//!        | acked appends                                            | fsynced logs
//!        v                                                          v
//!   verify::check(acked, stored events of every live node)  <-- Testbed::stored_events
//! ```

pub mod daemon;
pub mod load;
pub mod netns;
pub mod scenario;
pub mod verify;

pub use daemon::Daemon;
pub use load::{Acked, Load, LoadConfig, Outcome};
pub use scenario::{
    ChaosOptions, ChaosReport, FaultReport, GaugeCheck, Network, SoakOptions, SoakReport,
};
