//! A sleep precise to microseconds, for the open-loop schedule.
//!
//! tokio's timer has a resolution of one millisecond: a call due 0.1 ms from now would
//! leave up to a millisecond late, and since open-loop latency counts from the intended
//! start, that lateness would count against the server. A scheduling thread avoids the
//! timer but costs two context switches per call on the generator's one core. So on Linux
//! the schedule waits on a `timerfd` (a high-resolution timer) registered with the runtime's
//! own epoll: the runtime thread sleeps in epoll as usual and wakes when the call is due.
//! Elsewhere, or if the `timerfd` cannot be made, tokio's timer is used.

use std::time::Instant;

/// Sleeps until an instant.
#[derive(Debug)]
pub struct PreciseSleep {
    #[cfg(target_os = "linux")]
    timerfd: Option<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>>,
}

impl PreciseSleep {
    /// A sleeper; must be made inside a tokio runtime with I/O enabled.
    pub fn new() -> PreciseSleep {
        #[cfg(target_os = "linux")]
        {
            use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
            let timerfd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )
            .ok()
            .and_then(|fd| {
                // Sound here: the AsyncFd owns the OwnedFd, so the descriptor stays open and the
                // same for the AsyncFd's whole life (what the deprecation is about). The
                // replacement, `register_with_interest`, is `unsafe`, which the workspace forbids.
                #[allow(deprecated)]
                tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE).ok()
            });
            PreciseSleep { timerfd }
        }
        #[cfg(not(target_os = "linux"))]
        {
            PreciseSleep {}
        }
    }

    /// Whether the high-resolution timer is in use (else tokio's millisecond timer).
    pub fn is_precise(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.timerfd.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Returns at `deadline` (at once when it has passed).
    pub async fn until(&mut self, deadline: Instant) {
        let now = Instant::now();
        if deadline <= now {
            return;
        }
        #[cfg(target_os = "linux")]
        if let Some(timerfd) = &self.timerfd {
            if linux_sleep(timerfd, deadline - now).await.is_ok() {
                return;
            }
            // A failed timerfd: give up on it for good.
            self.timerfd = None;
        }
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
    }
}

impl Default for PreciseSleep {
    fn default() -> PreciseSleep {
        PreciseSleep::new()
    }
}

#[cfg(target_os = "linux")]
async fn linux_sleep(
    timerfd: &tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
    wait: std::time::Duration,
) -> std::io::Result<()> {
    use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    let value = Timespec {
        tv_sec: i64::try_from(wait.as_secs()).unwrap_or(i64::MAX),
        tv_nsec: i64::from(wait.subsec_nanos()).max(1),
    };
    timerfd_settime(
        timerfd.get_ref(),
        TimerfdTimerFlags::empty(),
        &Itimerspec {
            it_interval: zero,
            it_value: value,
        },
    )?;
    loop {
        let mut ready = timerfd.readable().await?;
        let mut expirations = [0_u8; 8];
        match rustix::io::read(ready.get_inner(), &mut expirations) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::AGAIN) => ready.clear_ready(),
            Err(e) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn sleeps_do_not_return_before_their_deadline() {
        let mut sleep = PreciseSleep::new();
        #[cfg(target_os = "linux")]
        assert!(sleep.is_precise());
        for micros in [0, 50, 300, 1500] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            sleep.until(deadline).await;
            assert!(Instant::now() >= deadline);
        }
        // A deadline in the past returns at once, and the timer still works after it.
        sleep.until(Instant::now()).await;
        let deadline = Instant::now() + Duration::from_micros(200);
        sleep.until(deadline).await;
        assert!(Instant::now() >= deadline);
    }
}
