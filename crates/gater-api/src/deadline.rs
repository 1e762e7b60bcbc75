//! A deadline for every operation run inside a scope, so that a caller with its own
//! time-out (an HTTP request) gets [`crate::GaterError::NoWorkers`] rather than its own
//! time-out when no worker appears in time.
//!
//! The deadline is task-local: it covers the awaited future and what it awaits, not
//! tasks it spawns.

use std::future::Future;
use std::time::{Duration, Instant};

tokio::task_local! {
    static DEADLINE: Instant;
}

/// Runs `f` with a deadline: the no-workers back-off inside it stops waiting before
/// `deadline` (keeping [`crate::NoWorkersBackoff::DEADLINE_MARGIN`] for the answer) and
/// ends with [`crate::GaterError::NoWorkers`]. An outer, earlier deadline still applies.
///
/// ```no_run
/// # async fn demo(gater: gater_api::Gater) {
/// use std::time::{Duration, Instant};
/// let deadline = Instant::now() + Duration::from_secs(2);
/// let v = gater_api::with_deadline(deadline, gater.get_version("reg_gh", "s")).await;
/// # let _ = v;
/// # }
/// ```
pub async fn with_deadline<F: Future>(deadline: Instant, f: F) -> F::Output {
    let deadline = current().map_or(deadline, |outer| outer.min(deadline));
    DEADLINE.scope(deadline, f).await
}

/// The deadline of the current scope, if any.
pub(crate) fn current() -> Option<Instant> {
    DEADLINE.try_with(|d| *d).ok()
}

/// Time left before the current scope's deadline (`None`: no deadline).
pub(crate) fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn inner_scope_cannot_extend_an_outer_deadline() {
        let near = Instant::now() + Duration::from_secs(1);
        let far = near + Duration::from_secs(60);
        assert_eq!(current(), None);
        let seen = with_deadline(near, async {
            with_deadline(far, async { current() }).await
        })
        .await;
        assert_eq!(seen, Some(near));
        let seen = with_deadline(far, async {
            with_deadline(near, async { current() }).await
        })
        .await;
        assert_eq!(seen, Some(near));
        assert!(with_deadline(near, async { remaining() }).await <= Some(Duration::from_secs(1)));
    }
}
