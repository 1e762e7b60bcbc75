//! `cargo xtask testbed ...`: build, start, stop and test the BEAM testbed in
//! `dev-env/testbed`. (Owned by the testbed work; placeholder until it lands.)

use anyhow::{Result, bail};

/// `cargo xtask testbed <cmd>`.
pub fn main(_args: &[String]) -> Result<()> {
    bail!("the testbed is not built yet")
}

/// Compiles the testbed with erlc.
pub fn build() -> Result<()> {
    Ok(())
}

/// Runs the testbed's own EUnit tests.
pub fn erlang_tests() -> Result<()> {
    Ok(())
}

/// `cargo xtask up`: start the testbed and run the examples against it.
pub fn up_demo(_args: &[String]) -> Result<()> {
    bail!("the testbed is not built yet")
}
