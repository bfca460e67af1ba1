//! The WAN lab's delay line: round-trip times and loss between lab hosts, in user space
//! (this kernel has no `netem`).
//!
//! Every packet that crosses the lab's internet bridge goes through the bridge namespace's
//! netfilter (`br_netfilter`), where an `NFQUEUE` rule hands it to a thread of the test
//! process; the thread holds it for the one-way delays of its source and its destination
//! (each lab address has one, as the length of its line to the core of the internet) and
//! then lets it go on, or drops it with the addresses' loss rates. Only the packet's first
//! 40 bytes come up to user space; the verdict lets the kernel's copy go on. Order is kept
//! between any two hosts (packets with one delay leave first in, first out).
//!
//! Rates are `tbf`'s ([`crate::Wan::shape`]), on the host's side, before the delay: a
//! packet waits for its uplink, then travels.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The queue number the lab's rule sends packets to.
const QUEUE: u16 = 0;

/// Packets the kernel holds for the line at most (its default, 1 024, is 12 ms of a gigabit).
const QUEUE_MAX: u32 = 1 << 17;

/// How one lab address's line to the core behaves.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Line {
    /// Added to every packet from or to the address, one way: a round trip between two
    /// addresses takes twice the sum of their delays.
    pub delay: Duration,
    /// The share of packets from or to the address that are lost (0 to 1).
    pub loss: f64,
}

/// A running delay line (see the module's doc); stopped when dropped, letting every packet
/// it holds go.
pub struct DelayLine {
    lines: Arc<Mutex<HashMap<Ipv4Addr, Line>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
}

impl DelayLine {
    /// Starts the line in namespace `ns` (the lab's internet, whose bridge the rule
    /// watches). The rule itself is the caller's (see [`crate::Wan::delays`]).
    pub fn start(ns: &str) -> Result<DelayLine, String> {
        let lines: Arc<Mutex<HashMap<Ipv4Addr, Line>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = {
            let (lines, stop) = (lines.clone(), stop.clone());
            crate::wan::in_netns(ns, move || run(&lines, &stop, &ready_tx))
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(DelayLine { lines, stop, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(match thread.join() {
                Ok(Err(e)) => e,
                _ => "the delay line's thread ended".to_string(),
            }),
        }
    }

    /// Sets address `addr`'s line (replacing what it had).
    pub fn set(&self, addr: Ipv4Addr, line: Line) {
        self.lines.lock().unwrap_or_else(|p| p.into_inner()).insert(addr, line);
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A small xorshift generator: loss needs no more, and a fixed seed repeats a run.
struct Rng(u64);

impl Rng {
    fn chance(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The source and destination of an IPv4 packet, from its header.
fn ends(packet: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let at = |i: usize| Ipv4Addr::new(packet[i], packet[i + 1], packet[i + 2], packet[i + 3]);
    Some((at(12), at(16)))
}

/// The line's loop, on a thread in the internet's namespace: takes packets, holds each for
/// its delay, lets it go (or drops it), until `stop`.
fn run(
    lines: &Mutex<HashMap<Ipv4Addr, Line>>,
    stop: &AtomicBool,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) -> Result<(), String> {
    let open = || -> std::io::Result<nfq::Queue> {
        let mut q = nfq::Queue::open()?;
        q.bind(QUEUE)?;
        q.set_copy_range(QUEUE, 40)?;
        q.set_queue_max_len(QUEUE, QUEUE_MAX)?;
        // Large packets (GSO) whole: the kernel need not cut them up for the line.
        q.set_recv_gso(QUEUE, true)?;
        q.set_nonblocking(true);
        Ok(q)
    };
    let mut q = match open() {
        Ok(q) => q,
        Err(e) => {
            let why = format!("the delay line's queue: {e}");
            let _ = ready.send(Err(why.clone()));
            return Err(why);
        }
    };
    let _ = ready.send(Ok(()));
    // Held packets, by their delay: each queue is in arrival order, so in release order.
    let mut held: BTreeMap<Duration, VecDeque<(Instant, nfq::Message)>> = BTreeMap::new();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let give = |q: &mut nfq::Queue, mut m: nfq::Message, v: nfq::Verdict| {
        m.set_verdict(v);
        q.verdict(m).map_err(|e| format!("the delay line's verdict: {e}"))
    };
    while !stop.load(Ordering::Relaxed) {
        // Take what has come.
        loop {
            let m = match q.recv() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("the delay line's queue: {e}")),
            };
            let (delay, loss) = {
                let lines = lines.lock().unwrap_or_else(|p| p.into_inner());
                match ends(m.get_payload()) {
                    Some((from, to)) => {
                        let (a, b) = (lines.get(&from).copied(), lines.get(&to).copied());
                        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
                        (a.delay + b.delay, 1.0 - (1.0 - a.loss) * (1.0 - b.loss))
                    }
                    None => (Duration::ZERO, 0.0),
                }
            };
            if loss > 0.0 && rng.chance() < loss {
                give(&mut q, m, nfq::Verdict::Drop)?;
            } else if delay.is_zero() {
                give(&mut q, m, nfq::Verdict::Accept)?;
            } else {
                held.entry(delay).or_default().push_back((Instant::now() + delay, m));
            }
        }
        // Let go what is due.
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for queue in held.values_mut() {
            while queue.front().is_some_and(|(due, _)| *due <= now) {
                if let Some((_, m)) = queue.pop_front() {
                    give(&mut q, m, nfq::Verdict::Accept)?;
                }
            }
            if let Some((due, _)) = queue.front() {
                next = Some(next.map_or(*due, |n| n.min(*due)));
            }
        }
        held.retain(|_, queue| !queue.is_empty());
        // Wait a little: for the next packet due, or for new ones (at most 200 µs late).
        let wait = next.map_or(Duration::from_micros(200), |n| n.saturating_duration_since(now));
        std::thread::sleep(wait.min(Duration::from_micros(200)));
    }
    for (_, queue) in std::mem::take(&mut held) {
        for (_, m) in queue {
            give(&mut q, m, nfq::Verdict::Accept)?;
        }
    }
    let _ = q.unbind(QUEUE);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packets_ends_come_from_its_ipv4_header() {
        let mut p = vec![0u8; 40];
        p[0] = 0x45;
        p[12..16].copy_from_slice(&[11, 0, 1, 1]);
        p[16..20].copy_from_slice(&[11, 1, 3, 1]);
        assert_eq!(ends(&p), Some((Ipv4Addr::new(11, 0, 1, 1), Ipv4Addr::new(11, 1, 3, 1))));
        p[0] = 0x60;
        assert_eq!(ends(&p), None, "not IPv4");
        assert_eq!(ends(&p[..10]), None, "too short");
    }

    #[test]
    fn the_loss_draws_are_uniform_enough() {
        let mut r = Rng(1);
        let n = 100_000;
        let lost = (0..n).filter(|_| r.chance() < 0.1).count();
        assert!((9_000..11_000).contains(&lost), "{lost} of {n} at 10%");
    }
}
