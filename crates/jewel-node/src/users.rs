//! Users first: the puts and gets a user is waiting for, counted, so that background work
//! (audits, renewals, repairs) waits for them to end before it takes the network. A wait is
//! bounded ([`UserWork::wait_idle`]'s `at_most`): a user who never stops putting still gets
//! their files audited and repaired, only later.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long background work waits for users' transfers before each file, at most.
pub const MAX_YIELD: Duration = Duration::from_secs(30);

/// The users' transfers running now.
#[derive(Debug, Default)]
pub struct UserWork {
    active: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One user transfer; it ends when this is dropped, however the transfer ends.
#[derive(Debug)]
pub struct UserTurn<'a>(&'a UserWork);

impl UserWork {
    /// Counts a user transfer until the returned turn is dropped.
    pub fn begin(&self) -> UserTurn<'_> {
        self.active.fetch_add(1, Ordering::SeqCst);
        UserTurn(self)
    }

    /// User transfers running now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    /// Returns once no user transfer runs, or after `at_most`; whether it waited at all.
    pub async fn wait_idle(&self, at_most: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + at_most;
        let mut waited = false;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the count is read: a turn that ends in between wakes it.
            notified.as_mut().enable();
            if self.active() == 0 {
                return waited;
            }
            waited = true;
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return waited;
            }
        }
    }
}

impl Drop for UserTurn<'_> {
    fn drop(&mut self) {
        if self.0.active.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn background_work_waits_for_the_last_user_transfer_and_no_longer_than_its_bound() {
        let users = std::sync::Arc::new(UserWork::default());
        assert!(!users.wait_idle(MAX_YIELD).await, "nothing running: no wait");
        let (a, b) = (users.begin(), users.begin());
        let waiter = {
            let users = users.clone();
            tokio::spawn(async move {
                let t = tokio::time::Instant::now();
                let waited = users.wait_idle(MAX_YIELD).await;
                (waited, t.elapsed())
            })
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(a);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!waiter.is_finished(), "one transfer still runs");
        drop(b);
        let (waited, took) = waiter.await.unwrap();
        assert!(waited);
        assert_eq!(took, Duration::from_secs(5), "it went on when the last transfer ended");
        // A user who never stops: the wait ends at its bound.
        let _busy = users.begin();
        let t = tokio::time::Instant::now();
        assert!(users.wait_idle(MAX_YIELD).await);
        assert_eq!(t.elapsed(), MAX_YIELD);
    }
}
