//! The chaos run's private network: a network namespace of its own, so that one node can
//! be cut off without touching the machine's network.
//!
//! ```text
//!   gater-chaos chaos (host namespace, root)
//!     ├─ Netns::create: ip netns add gater-chaos-<pid>-<n>; lo up; 10.77.0.11.. on lo;
//!     │                 local table moved from pref 0 to pref 1000 (rules can precede it)
//!     ├─ ip netns exec <ns> gater-chaos chaos ... --inside-netns <ns>
//!     │     (testbed nodes on 10.77.0.11.., their EPMD, control node, daemon and load on
//!     │      127.0.0.1: everything of the run lives in the namespace)
//!     └─ drop(Netns): kill what is left in it (by pid), ip netns del
//!
//!   cut(ns, a):  ip -n <ns> rule add pref 10 to a/32 blackhole; ... from a/32 blackhole
//!   heal(ns, a): the same two rules deleted
//! ```
//!
//! Network safety: every `ip` command here names the namespace (`ip -n <ns>` / `ip netns
//! ...`), never the host's; the namespace has only `lo`, so no packet can leave it. Only
//! namespaces this harness created (name `gater-chaos-<pid>-<n>`) are ever deleted.

use anyhow::{Context, Result, bail};
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Names of the namespaces this harness creates start with this.
pub const PREFIX: &str = "gater-chaos-";

/// When set to `1`, not being able to create the namespace fails the run instead of
/// skipping the cut-off fault (CI sets it).
pub const REQUIRE_ENV: &str = "EXESDB_GATER_REQUIRE_NETNS";

/// Whether [`REQUIRE_ENV`] is `1`.
pub fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}

/// The address of testbed node `i` inside the namespace: 10.77.0.(11 + i).
pub fn node_addr(i: usize) -> Ipv4Addr {
    let last = u8::try_from(11 + i).unwrap_or(u8::MAX);
    Ipv4Addr::new(10, 77, 0, last)
}

/// `ip -n <ns> args...`: always inside the namespace.
fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .arg("-n")
        .arg(ns)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip`")?;
    if !out.status.success() {
        bail!(
            "`ip -n {ns} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip_netns(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .arg("netns")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip netns`")?;
    if !out.status.success() {
        bail!(
            "`ip netns {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A network namespace of this run; deleted (after killing every process still in it,
/// by pid: only ours can be there) when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
    addrs: Vec<Ipv4Addr>,
}

impl Netns {
    /// Creates `gater-chaos-<pid>-<n>` with `lo` up, `nodes` addresses on it and the
    /// local-table rule moved to pref 1000. Deletes namespaces left by earlier runs that
    /// died without cleaning up (their pid is gone) first.
    pub fn create(nodes: usize) -> Result<Self> {
        if !is_root() {
            bail!("not root: creating a network namespace needs CAP_SYS_ADMIN");
        }
        remove_stale();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        ip_netns(&["add", &name])?;
        // From here on the guard deletes it, also when a step below fails.
        let ns = Netns {
            name,
            addrs: (0..nodes).map(node_addr).collect(),
        };
        ns.configure()?;
        Ok(ns)
    }

    fn configure(&self) -> Result<()> {
        let n = self.name.as_str();
        ip_in(n, &["link", "set", "lo", "up"])?;
        for a in &self.addrs {
            ip_in(n, &["addr", "add", &format!("{a}/32"), "dev", "lo"])?;
        }
        // The local table is looked up at pref 0, before any rule we could add: move it.
        ip_in(n, &["rule", "add", "pref", "1000", "table", "local"])?;
        ip_in(n, &["rule", "del", "pref", "0"])?;
        let links = ip_in(n, &["-o", "link", "show"])?;
        if links.lines().count() != 1 || !links.contains(": lo:") {
            bail!("namespace {n} has other links than lo: {links}");
        }
        Ok(())
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node addresses configured on its `lo`.
    pub fn addrs(&self) -> &[Ipv4Addr] {
        &self.addrs
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        delete(&self.name);
    }
}

/// Kills what is left in namespace `name` (only processes of this harness can be there)
/// and deletes it.
fn delete(name: &str) {
    if let Ok(pids) = ip_netns(&["pids", name]) {
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
    if let Err(e) = ip_netns(&["del", name]) {
        eprintln!("gater-chaos: deleting network namespace {name}: {e:#}");
    }
}

/// Deletes `gater-chaos-<pid>-<n>` namespaces whose creator (`pid`) is gone.
fn remove_stale() {
    let Ok(list) = ip_netns(&["list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("gater-chaos: removing stale network namespace {name}");
            delete(name);
        }
    }
}

/// Cuts `addr` off inside namespace `ns`: packets to or from it are dropped (new
/// connections fail, established ones go silent).
pub fn cut(ns: &str, addr: Ipv4Addr) -> Result<()> {
    let a = format!("{addr}/32");
    ip_in(ns, &["rule", "add", "pref", "10", "to", &a, "blackhole"])?;
    ip_in(ns, &["rule", "add", "pref", "10", "from", &a, "blackhole"])?;
    Ok(())
}

/// Undoes [`cut`].
pub fn heal(ns: &str, addr: Ipv4Addr) -> Result<()> {
    let a = format!("{addr}/32");
    let to = ip_in(ns, &["rule", "del", "pref", "10", "to", &a, "blackhole"]);
    let from = ip_in(ns, &["rule", "del", "pref", "10", "from", &a, "blackhole"]);
    to.and(from).map(|_| ())
}

/// Whether this process runs in namespace `ns` (`ip netns identify`).
pub fn inside(ns: &str) -> bool {
    ip_netns(&["identify", &std::process::id().to_string()])
        .is_ok_and(|out| out.split_whitespace().any(|n| n == ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_are_in_the_private_range() {
        assert_eq!(node_addr(0), Ipv4Addr::new(10, 77, 0, 11));
        assert_eq!(node_addr(2), Ipv4Addr::new(10, 77, 0, 13));
        assert!(node_addr(0).is_private());
    }

    /// Needs root and `ip netns`; skipped (passes, saying so) without them unless
    /// EXESDB_GATER_REQUIRE_NETNS=1.
    #[test]
    fn a_namespace_is_configured_cut_healed_and_deleted() {
        let ns = match Netns::create(2) {
            Ok(ns) => ns,
            Err(e) if !required() => {
                eprintln!("skipped: no network namespace ({e:#})");
                return;
            }
            Err(e) => panic!("{REQUIRE_ENV}=1 but: {e:#}"),
        };
        let name = ns.name().to_owned();
        assert!(ip_netns(&["list"]).expect("list").contains(&name));
        let rules = ip_in(&name, &["rule", "list"]).expect("rules");
        assert!(
            rules.contains("1000:") && !rules.starts_with("0:"),
            "{rules}"
        );
        cut(&name, ns.addrs()[1]).expect("cut");
        let rules = ip_in(&name, &["rule", "list"]).expect("rules");
        assert_eq!(rules.matches("blackhole").count(), 2, "{rules}");
        heal(&name, ns.addrs()[1]).expect("heal");
        let rules = ip_in(&name, &["rule", "list"]).expect("rules");
        assert!(!rules.contains("blackhole"), "{rules}");
        assert!(!inside(&name));
        drop(ns);
        assert!(!ip_netns(&["list"]).expect("list").contains(&name));
    }
}
