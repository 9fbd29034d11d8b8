//! Polling for a state under a deadline: the replacement for fixed sleeps in tests.

use std::fmt::Debug;
use std::time::Duration;

use tokio::time::Instant;

/// The longest pause between two probes (the first pauses are shorter: 5 ms, doubling).
pub const POLL_MAX: Duration = Duration::from_millis(100);

/// Calls `probe` until it returns `Ok(value)` and returns that value; `Err(state)` means "not
/// yet, this is what I see". Fails the test once `deadline` has passed, with the last state
/// observed in the message, so a failure says where things stood, not only that they stalled.
///
/// ```text
/// let policy = eventually(Duration::from_secs(10), || async {
///     let seen = replica.policy_revision().await;
///     if seen >= 2 { Ok(seen) } else { Err(format!("revision {seen}")) }
/// }).await;
/// ```
#[track_caller]
pub fn eventually<T, S>(deadline: Duration, mut probe: impl AsyncFnMut() -> Result<T, S>) -> impl Future<Output = T>
where
    S: Debug,
{
    // The caller's location, taken before the future starts (async fns cannot track it).
    let caller = std::panic::Location::caller();
    async move {
        let end = Instant::now() + deadline;
        let mut pause = Duration::from_millis(5);
        loop {
            match probe().await {
                Ok(value) => return value,
                Err(state) if Instant::now() >= end => expired(caller, deadline, &state),
                Err(_) => {}
            }
            tokio::time::sleep(pause.min(end.saturating_duration_since(Instant::now()))).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}

/// [`eventually`] for a yes/no condition: waits until `check` is true, failing with `what`
/// (the condition waited for) once `deadline` has passed.
#[track_caller]
pub fn until(deadline: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) -> impl Future<Output = ()> {
    let probe = async move || {
        if check().await {
            Ok(())
        } else {
            Err(format!("not yet: {what}"))
        }
    };
    eventually(deadline, probe)
}

#[allow(clippy::panic)] // The failure of the test that polled.
fn expired(caller: &std::panic::Location<'_>, deadline: Duration, state: &dyn Debug) -> ! {
    panic!("{caller}: not reached within {deadline:?}; last observed state: {state:?}")
}
