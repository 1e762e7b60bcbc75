//! Gateway worker names as Swarm registers them.

use gater_term::Term;
use gater_term::eetf::{Atom, Pid};
use std::fmt;

/// An ExESDB store, an atom on the wire (`reg_gh`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StoreId(pub String);

impl StoreId {
    /// The store's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StoreId {
    fn from(s: &str) -> Self {
        StoreId(s.to_owned())
    }
}

/// One gateway worker process, as named in Swarm.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GatewayWorker {
    /// The store it serves; `None` for the older `{gateway_worker, Node, N}` names,
    /// which serve every store of their node.
    pub store: Option<StoreId>,
    /// The node it runs on, as named in the worker's Swarm name.
    pub node: String,
    /// The number ExESDB drew for the name (1..10000).
    pub number: i64,
    /// The worker's process id.
    pub pid: Pid,
}

/// Why a Swarm reply could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// `Swarm.registered()` did not return a list of `{Name, Pid}` pairs: the node is
    /// probably not running Swarm (not an ExESDB node) or answered `{badrpc, _}`.
    #[error("Swarm.registered() returned something other than a list of {{Name, Pid}}: {0}")]
    NotARegistry(String),
}

fn atom(term: &Term) -> Option<&str> {
    match term {
        Term::Atom(Atom { name }) => Some(name),
        _ => None,
    }
}

fn integer(term: &Term) -> Option<i64> {
    match term {
        Term::FixInteger(i) => Some(i64::from(i.value)),
        _ => None,
    }
}

/// Reads a Swarm name: `{gateway_worker, Store, Node, N}` or `{gateway_worker, Node, N}`.
/// Every other name (`{gater_api, _}`, `{streams_reader_worker, _, _}`, ...) gives `None`.
pub fn parse_worker_name(name: &Term, pid: &Pid) -> Option<GatewayWorker> {
    let Term::Tuple(tuple) = name else {
        return None;
    };
    let (store, node, number) = match tuple.elements.as_slice() {
        [tag, store, node, n] if atom(tag) == Some("gateway_worker") => (
            Some(StoreId(atom(store)?.to_owned())),
            atom(node)?,
            integer(n)?,
        ),
        [tag, node, n] if atom(tag) == Some("gateway_worker") => (None, atom(node)?, integer(n)?),
        _ => return None,
    };
    Some(GatewayWorker {
        store,
        node: node.to_owned(),
        number,
        pid: pid.clone(),
    })
}

/// Picks the gateway workers out of a `'Elixir.Swarm':registered()` reply.
pub fn parse_registered(reply: &Term) -> Result<Vec<GatewayWorker>, RegistryError> {
    let elements = match reply {
        Term::List(list) => &list.elements,
        Term::ByteList(b) if b.bytes.is_empty() => return Ok(Vec::new()),
        other => return Err(RegistryError::NotARegistry(abbreviate(other))),
    };
    let mut workers = Vec::new();
    for entry in elements {
        let Term::Tuple(pair) = entry else {
            return Err(RegistryError::NotARegistry(abbreviate(entry)));
        };
        match pair.elements.as_slice() {
            [name, Term::Pid(pid)] => workers.extend(parse_worker_name(name, pid)),
            _ => return Err(RegistryError::NotARegistry(abbreviate(entry))),
        }
    }
    Ok(workers)
}

fn abbreviate(term: &Term) -> String {
    let mut s = term.to_string();
    if s.len() > 120 {
        let cut = (0..=120)
            .rev()
            .find(|i| s.is_char_boundary(*i))
            .unwrap_or(0);
        s.truncate(cut);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use gater_term::DecodeLimits;

    fn vector(dir: &str, name: &str) -> Option<Term> {
        let path = gater_testkit::vectors::vectors_subdir(dir)?.join(name);
        let bytes = std::fs::read(&path).expect("vector file readable");
        Some(gater_term::decode(&bytes, &DecodeLimits::default()).expect("vector decodes"))
    }

    #[test]
    fn real_swarm_registry_yields_exactly_the_three_gateway_workers() {
        let Some(reply) = vector("exesdb-real", "00_swarm_registered.etf") else {
            return;
        };
        let mut workers = parse_registered(&reply).expect("a registry");
        workers.sort_by(|a, b| a.node.cmp(&b.node));
        let summary: Vec<_> = workers
            .iter()
            .map(|w| {
                (
                    w.store.as_ref().map(StoreId::as_str),
                    w.node.as_str(),
                    w.number,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Some("reg_gh"), "ex_esdb0@127.0.0.1", 5289),
                (Some("reg_gh"), "ex_esdb1@127.0.0.1", 5122),
                (Some("reg_gh"), "ex_esdb2@127.0.0.1", 8940),
            ]
        );
    }

    #[test]
    fn registry_with_readers_and_snapshot_names_still_yields_only_workers() {
        let Some(reply) = vector("exesdb-real", "36_swarm_registered_after_errors.etf") else {
            return;
        };
        let workers = parse_registered(&reply).expect("a registry");
        assert!(!workers.is_empty());
        assert!(
            workers
                .iter()
                .all(|w| w.store.as_ref().is_some_and(|s| s.as_str() == "reg_gh"))
        );
    }

    #[test]
    fn both_worker_name_shapes_are_accepted_and_gater_api_ignored() {
        let Some(reply) = vector("term", "swarm_registered_reply.etf") else {
            return;
        };
        // The vector is {Ref, Registered}: the reply as a gen_server call receives it.
        let Term::Tuple(t) = &reply else {
            panic!("expected {{Ref, Reply}}, got {reply}");
        };
        let workers = parse_registered(&t.elements[1]).expect("a registry");
        assert_eq!(workers.len(), 2);
        assert_eq!(workers[0].store, Some(StoreId::from("my_store")));
        assert_eq!(workers[0].number, 4711);
        assert_eq!(workers[1].store, None);
        assert_eq!(workers[1].node, "ex_esdb1@127.0.0.1");
    }

    #[test]
    fn a_badrpc_reply_is_a_typed_error() {
        let reply = Term::from(gater_term::eetf::Tuple::from(vec![
            Term::from(Atom::from("badrpc")),
            Term::from(Atom::from("nodedown")),
        ]));
        assert!(matches!(
            parse_registered(&reply),
            Err(RegistryError::NotARegistry(_))
        ));
    }
}
