//! An ordered, bounded parallel map: one producer, N workers, one in-order consumer.
//!
//! At most `window` items are in flight (produced but not yet consumed), so memory stays
//! bounded by `window` items whatever the input size. The consumer runs on the calling
//! thread. The first error, from any stage, stops every stage and is returned.

use crate::sync::Locked;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;

/// Runs `produce` → `work` (on `threads` threads) → `consume` (in index order).
///
/// `produce(i)` returns the i-th item, or `None` when there are no more.
pub(crate) fn ordered_map<I, O, E>(
    threads: usize,
    window: usize,
    mut produce: impl FnMut(usize) -> Option<Result<I, E>> + Send,
    work: impl Fn(usize, I) -> Result<O, E> + Sync,
    mut consume: impl FnMut(usize, O) -> Result<(), E>,
) -> Result<(), E>
where
    I: Send,
    O: Send,
    E: Send,
{
    let threads = threads.max(1);
    let window = window.max(threads + 1);
    let stop = AtomicBool::new(false);
    let (job_tx, job_rx) = sync_channel::<(usize, I)>(threads);
    let job_rx = Mutex::new(job_rx);
    let (res_tx, res_rx) = sync_channel::<(usize, Result<O, E>)>(window);
    let (token_tx, token_rx) = sync_channel::<()>(window);
    for _ in 0..window {
        let _ = token_tx.send(());
    }
    std::thread::scope(|scope| {
        let producer_tx = res_tx.clone();
        let stop_ref = &stop;
        scope.spawn(move || {
            let mut i = 0;
            // A token is one place in the window; the consumer hands it back.
            while !stop_ref.load(Ordering::Relaxed) && token_rx.recv().is_ok() {
                match produce(i) {
                    None => break,
                    Some(Ok(item)) => {
                        if job_tx.send((i, item)).is_err() {
                            break;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = producer_tx.send((i, Err(e)));
                        break;
                    }
                }
                i += 1;
            }
        });

        for _ in 0..threads {
            let res_tx = res_tx.clone();
            let job_rx = &job_rx;
            let work = &work;
            let stop = &stop;
            scope.spawn(move || loop {
                let job = job_rx.locked().recv();
                let Ok((i, item)) = job else { break };
                // After a stop, keep draining so the producer is never stuck on a full queue.
                if stop.load(Ordering::Relaxed) {
                    continue;
                }
                if res_tx.send((i, work(i, item))).is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
            });
        }
        drop(res_tx);

        let mut result = Ok(());
        let mut waiting: BTreeMap<usize, Result<O, E>> = BTreeMap::new();
        let mut next = 0usize;
        'outer: for (i, r) in res_rx.iter() {
            waiting.insert(i, r);
            while let Some(r) = waiting.remove(&next) {
                if let Err(e) = r.and_then(|o| consume(next, o)) {
                    result = Err(e);
                    break 'outer;
                }
                next += 1;
                let _ = token_tx.send(());
            }
        }
        stop.store(true, Ordering::Relaxed);
        drop(token_tx);
        drop(res_rx);
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn keeps_order_and_bounds_the_window() {
        let in_flight = AtomicUsize::new(0);
        let max_seen = AtomicUsize::new(0);
        let mut out = Vec::new();
        let r: Result<(), ()> = ordered_map(
            3,
            4,
            |i| {
                (i < 200).then(|| {
                    let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    max_seen.fetch_max(now, Ordering::SeqCst);
                    Ok(i)
                })
            },
            |_, x| Ok(x * 2),
            |_, x| {
                in_flight.fetch_sub(1, Ordering::SeqCst);
                out.push(x);
                Ok(())
            },
        );
        r.unwrap();
        assert_eq!(out, (0..200).map(|x| x * 2).collect::<Vec<_>>());
        assert!(max_seen.load(Ordering::SeqCst) <= 4);
    }

    #[test]
    fn first_error_stops_everything() {
        for fail_at in [0usize, 5, 99] {
            let mut consumed = 0;
            let r = ordered_map(
                2,
                3,
                |i| (i < 1000).then_some(Ok::<usize, String>(i)),
                |i, x| if i == fail_at { Err(format!("work {i}")) } else { Ok(x) },
                |_, _| {
                    consumed += 1;
                    Ok(())
                },
            );
            assert_eq!(r, Err(format!("work {fail_at}")));
            assert_eq!(consumed, fail_at);
        }
        let r = ordered_map(
            2,
            3,
            |i| Some(if i == 7 { Err("read") } else { Ok(i) }),
            |_, x| Ok(x),
            |_, _| Ok(()),
        );
        assert_eq!(r, Err("read"));
        let r = ordered_map(
            2,
            3,
            |i| (i < 50).then_some(Ok(i)),
            |_, x| Ok(x),
            |i, _| if i == 10 { Err("write") } else { Ok(()) },
        );
        assert_eq!(r, Err("write"));
    }
}
