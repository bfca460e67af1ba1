//! One way to ask many peers the same kind of question: how many to ask at first and at
//! most at once, how long one ask may take, when to hedge (ask one more because the ones
//! asked are slow), and when to stop (the caller says, answer by answer). Put (probes, the
//! manifest), renew and release (leases), locate (HAS, the manifest), audit (probes) and
//! the reach of placement candidates all ask through [`fan_out`]; the order of the targets
//! is the caller's (by measured latency where it has one: [`by_latency`]).
//!
//! A get's segment reads keep their own loop (`client::get::NetFetch::segment`): when to
//! stop there is when the chunks in hand decode, and each read has a buffer of its own to
//! fill; both are the pipeline's, not a fan-out's.

use std::future::Future;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};

/// How [`fan_out`] asks.
#[derive(Clone, Copy, Debug)]
pub struct Strategy {
    /// Asks started at once at first.
    pub start: usize,
    /// Asks in flight at most (an answer makes room for the next target).
    pub at_once: usize,
    /// One ask's time limit; an ask over it is answered `None`.
    pub timeout: Option<Duration>,
    /// When no answer came for this long, one more target is asked (within `at_once`).
    pub hedge: Option<Duration>,
}

impl Strategy {
    /// Every target at once (up to `at_once`), each within `timeout`.
    pub fn all(at_once: usize, timeout: Option<Duration>) -> Strategy {
        Strategy { start: at_once, at_once, timeout, hedge: None }
    }

    /// One target at first, one more each time an ask fails or `hedge` passes with no
    /// answer: for a question one answer settles.
    pub fn first(hedge: Duration, at_once: usize) -> Strategy {
        Strategy { start: 1, at_once, timeout: None, hedge: Some(hedge) }
    }
}

/// What the caller says after each answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Ask on (the next target, if any, takes the answered ask's place).
    Go,
    /// Enough: the asks in flight are dropped (cancelled).
    Stop,
}

/// Asks `targets`, in order, as `strategy` says; `each` gets every answer (`None`: the
/// ask ran over the strategy's timeout) as it comes, and says whether to go on. Returns
/// when `each` stops it or every target has answered.
pub async fn fan_out<T, R, Fut>(
    targets: impl IntoIterator<Item = T>,
    strategy: Strategy,
    ask: impl Fn(T) -> Fut,
    mut each: impl FnMut(T, Option<R>) -> Flow,
) where
    T: Clone,
    Fut: Future<Output = R>,
{
    let at_once = strategy.at_once.max(1);
    let mut next = targets.into_iter();
    let mut pending = FuturesUnordered::new();
    let start = |t: T| {
        let asked = ask(t.clone());
        let limit = strategy.timeout;
        async move {
            let answer = match limit {
                Some(limit) => tokio::time::timeout(limit, asked).await.ok(),
                None => Some(asked.await),
            };
            (t, answer)
        }
    };
    pending.extend(next.by_ref().take(strategy.start.clamp(1, at_once)).map(start));
    while !pending.is_empty() {
        let hedge = async {
            match strategy.hedge {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some((target, answer)) = pending.next() => {
                if each(target, answer) == Flow::Stop {
                    return;
                }
                if pending.len() < at_once {
                    pending.extend(next.next().map(start));
                }
            }
            () = hedge => {
                if pending.len() < at_once {
                    pending.extend(next.next().map(start));
                }
            }
        }
    }
}

/// `peers` ordered by their measured round trip (unmeasured ones last, in their order).
pub fn by_latency<P: Copy + PartialEq>(peers: &mut [P], rtt: impl Fn(&P) -> Option<Duration>) {
    peers.sort_by_key(|p| rtt(p).unwrap_or(Duration::MAX));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn all_asks_every_target_at_most_at_once_and_collects_each_answer() {
        let running = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let mut got = Vec::new();
        let ask = |n: u64| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            let running = &running;
            async move {
                tokio::time::sleep(Duration::from_millis(10 * (n % 3 + 1))).await;
                running.fetch_sub(1, Ordering::SeqCst);
                n * 2
            }
        };
        fan_out(0..10u64, Strategy::all(3, None), ask, |t, r| {
            got.push((t, r));
            Flow::Go
        })
        .await;
        got.sort();
        assert_eq!(got, (0..10).map(|n| (n, Some(n * 2))).collect::<Vec<_>>());
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_ask_over_the_timeout_answers_none() {
        let mut got = Vec::new();
        let ask = |n: u64| async move {
            tokio::time::sleep(Duration::from_secs(n)).await;
            n
        };
        fan_out([1u64, 10], Strategy::all(2, Some(Duration::from_secs(5))), ask, |t, r| {
            got.push((t, r));
            Flow::Go
        })
        .await;
        assert_eq!(got, vec![(1, Some(1)), (10, None)]);
    }

    #[tokio::test(start_paused = true)]
    async fn first_hedges_past_a_slow_target_and_stops_at_the_first_good_answer() {
        // Target 0 hangs, 1 fails at once, 2 answers: 0 is asked, then (after the hedge)
        // 1, whose failure starts 2 at once; 3 is never asked.
        let asked = std::sync::Mutex::new(Vec::new());
        let started = tokio::time::Instant::now();
        let ask = |n: u64| {
            asked.lock().unwrap().push(n);
            async move {
                match n {
                    0 => std::future::pending::<Result<u64, ()>>().await,
                    1 => Err(()),
                    _ => Ok(n),
                }
            }
        };
        let mut won = None;
        fan_out(0..4u64, Strategy::first(Duration::from_millis(250), 8), ask, |t, r| match r {
            Some(Ok(_)) => {
                won = Some(t);
                Flow::Stop
            }
            _ => Flow::Go,
        })
        .await;
        assert_eq!(won, Some(2));
        assert_eq!(*asked.lock().unwrap(), vec![0, 1, 2]);
        assert_eq!(started.elapsed(), Duration::from_millis(250), "one hedge, no more waiting");
    }

    #[test]
    fn peers_are_ordered_by_round_trip_with_unmeasured_ones_last() {
        let mut peers = [1u32, 2, 3, 4];
        let rtt = |p: &u32| match p {
            2 => Some(Duration::from_millis(80)),
            3 => Some(Duration::from_millis(5)),
            _ => None,
        };
        by_latency(&mut peers, rtt);
        assert_eq!(peers, [3, 2, 1, 4]);
    }
}
