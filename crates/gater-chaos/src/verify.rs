//! Acknowledged appends against what the testbed's replicas stored.

use crate::load::Acked;
use gater_testkit::testbed::StoredEvent;
use std::collections::HashMap;

/// What one replica's log says about the acknowledged appends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Acknowledged appends checked.
    pub acked: usize,
    /// Acknowledged but absent.
    pub missing: Vec<String>,
    /// Present more than once.
    pub duplicated: Vec<String>,
    /// Stored at another number than the version the daemon acknowledged.
    pub misnumbered: Vec<String>,
    /// Acknowledged later but stored earlier than another of its stream.
    pub out_of_order: Vec<String>,
    /// Events in the checked streams that were never acknowledged (a failed request
    /// that was written after all: allowed, reported).
    pub unacknowledged_present: usize,
    /// The first few missing ones and the first few unacknowledged ones present, as
    /// `stream#number id` (for the report).
    pub details: Vec<String>,
}

impl Verdict {
    /// No acknowledged append lost, duplicated, renumbered or reordered.
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.duplicated.is_empty()
            && self.misnumbered.is_empty()
            && self.out_of_order.is_empty()
    }
}

/// Checks `acked` (in acknowledgement order per stream) against one replica's events.
pub fn check(acked: &[Acked], stored: &[StoredEvent]) -> Verdict {
    let streams: std::collections::HashSet<&str> =
        acked.iter().map(|a| a.stream.as_str()).collect();
    let mut by_id: HashMap<(&str, &str), Vec<i64>> = HashMap::new();
    let mut in_streams = 0usize;
    for e in stored
        .iter()
        .filter(|e| streams.contains(e.stream.as_str()))
    {
        in_streams += 1;
        by_id
            .entry((e.stream.as_str(), e.event_id.as_str()))
            .or_default()
            .push(e.number);
    }
    let mut v = Verdict {
        acked: acked.len(),
        ..Verdict::default()
    };
    let mut last: HashMap<&str, i64> = HashMap::new();
    for a in acked {
        match by_id.get(&(a.stream.as_str(), a.event_id.as_str())) {
            None => v.missing.push(a.event_id.clone()),
            Some(ns) if ns.len() > 1 => v.duplicated.push(a.event_id.clone()),
            Some(ns) => {
                let n = ns[0];
                if n != a.version {
                    v.misnumbered
                        .push(format!("{} stored {n}, acked {}", a.event_id, a.version));
                }
                if let Some(prev) = last.insert(a.stream.as_str(), n)
                    && n <= prev
                {
                    v.out_of_order.push(a.event_id.clone());
                }
            }
        }
    }
    v.unacknowledged_present = in_streams.saturating_sub(acked.len() - v.missing.len());
    let acked_ids: std::collections::HashSet<(&str, &str)> = acked
        .iter()
        .map(|a| (a.stream.as_str(), a.event_id.as_str()))
        .collect();
    for a in acked
        .iter()
        .filter(|a| v.missing.contains(&a.event_id))
        .take(5)
    {
        v.details
            .push(format!("missing {}#{} {}", a.stream, a.version, a.event_id));
    }
    for e in stored
        .iter()
        .filter(|e| streams.contains(e.stream.as_str()))
        .filter(|e| !acked_ids.contains(&(e.stream.as_str(), e.event_id.as_str())))
        .take(5)
    {
        v.details.push(format!(
            "unacknowledged {}#{} {}",
            e.stream, e.number, e.event_id
        ));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(s: &str, id: &str, v: i64) -> Acked {
        Acked {
            stream: s.into(),
            event_id: id.into(),
            version: v,
        }
    }
    fn ev(s: &str, n: i64, id: &str) -> StoredEvent {
        StoredEvent {
            stream: s.into(),
            number: n,
            event_id: id.into(),
        }
    }

    #[test]
    fn finds_each_kind_of_violation() {
        let acked = [
            ack("a", "1", 0),
            ack("a", "2", 1),
            ack("a", "3", 2),
            ack("a", "4", 4),
        ];
        let stored = [
            ev("a", 0, "1"),
            ev("a", 1, "3"),
            ev("a", 2, "2"),
            ev("a", 3, "x"),
            ev("a", 5, "4"),
            ev("a", 6, "4"),
            ev("other", 0, "zz"),
        ];
        let v = check(&acked, &stored);
        assert!(!v.ok());
        assert_eq!(v.duplicated, ["4"]);
        assert_eq!(v.out_of_order, ["3"]);
        assert_eq!(v.misnumbered.len(), 2);
        assert!(v.missing.is_empty());
        let v = check(&acked[..1], &stored[..1]);
        assert!(v.ok());
        let v = check(&[ack("b", "9", 0)], &stored);
        assert_eq!(v.missing, ["9"]);
    }
}
