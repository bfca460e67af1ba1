//! Placement and fetch policy: pure decisions with no I/O and no clock of their own, so the
//! node and a simulator make the same choices.
//!
//! - [`place`]: which peers hold a file's pieces (distinct peers, spread over zones).
//! - [`rank`]: in which order to ask a file's holders for a segment.
//! - [`hedge_delay`]: how long a request may take before spare holders are asked too.
//! - [`needs_repair`]: whether an audit found so many pieces lost that the file must be
//!   repaired now.
//!
//! Peers are any small copyable id (`P`), so this module knows nothing of the network.

use std::collections::VecDeque;
use std::hash::Hash;
use std::time::Duration;

/// Why a policy cannot decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("the scheme needs {needed} distinct peers, but only {found} were found")]
    NotEnoughPeers { needed: usize, found: usize },
}

/// A candidate peer for placement, with the failure domain it announced, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<P> {
    pub peer: P,
    pub zone: Option<String>,
}

/// Chooses a distinct peer for each of `slots` slots, taking peers from each zone in turn
/// so pieces spread over failure domains (peers without a zone each count as their own);
/// within that, earlier candidates are preferred. Duplicates count once.
pub fn place<P: Copy + Eq + Hash>(slots: usize, candidates: &[Candidate<P>]) -> Result<Vec<P>, PolicyError> {
    #[derive(PartialEq)]
    enum Zone<'a> {
        Named(&'a str),
        Alone(usize),
    }
    // Zones in the order they first appear, so a caller's preference order is kept.
    let mut zones: Vec<(Zone<'_>, VecDeque<P>)> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (i, c) in candidates.iter().enumerate() {
        if !seen.insert(c.peer) {
            continue;
        }
        let zone = c.zone.as_deref().map_or(Zone::Alone(i), Zone::Named);
        match zones.iter_mut().find(|(z, _)| *z == zone) {
            Some((_, q)) => q.push_back(c.peer),
            None => zones.push((zone, VecDeque::from([c.peer]))),
        }
    }
    if seen.len() < slots {
        return Err(PolicyError::NotEnoughPeers { needed: slots, found: seen.len() });
    }
    let mut out = Vec::with_capacity(slots);
    while out.len() < slots {
        for (_, q) in zones.iter_mut() {
            if out.len() == slots {
                break;
            }
            if let Some(p) = q.pop_front() {
                out.push(p);
            }
        }
    }
    Ok(out)
}

/// A holder whose smoothed latency is at most this many times that of the fastest
/// decodable set still counts as fast, and is asked first if its slot needs no decoding.
pub const PREFER_FACTOR: f64 = 1.5;

/// Usable slots, fastest first (`latency` None: not timed yet, counts as the average),
/// except that among holders about as fast as the fastest decodable set (within
/// [`PREFER_FACTOR`] of the n-th fastest, n = the preferred count), the slots `preferred`
/// marks (data shards, whole copies: no decoding needed) come first.
pub fn rank(latency: &[Option<f64>], usable: &[bool], preferred: &[bool]) -> Vec<usize> {
    let timed: Vec<f64> = latency.iter().flatten().copied().collect();
    let typical = if timed.is_empty() { 0.0 } else { timed.iter().sum::<f64>() / timed.len() as f64 };
    let cost = |s: usize| latency.get(s).copied().flatten().unwrap_or(typical);
    let mut slots: Vec<usize> = (0..usable.len()).filter(|&s| usable[s]).collect();
    slots.sort_by(|a, b| cost(*a).total_cmp(&cost(*b)));
    let want = preferred.iter().filter(|p| **p).count().max(1);
    let limit = slots.get(want - 1).map_or(0.0, |s| cost(*s)) * PREFER_FACTOR;
    let later = |s: usize| !(cost(s) <= limit && preferred.get(s).copied().unwrap_or(false));
    slots.sort_by_key(|s| later(*s)); // stable: by latency within each group
    slots
}

/// Before any answer has been timed, extra holders are asked after this long.
pub const FIRST_HEDGE: Duration = Duration::from_millis(300);
/// Bounds of the hedge delay once answers have been timed.
pub const MIN_HEDGE: Duration = Duration::from_millis(20);
pub const MAX_HEDGE: Duration = Duration::from_secs(2);
/// A request is hedged once it takes this many times the typical answer.
pub const HEDGE_FACTOR: f64 = 3.0;

/// How long a request may take before spare holders are asked too: [`HEDGE_FACTOR`] times
/// the median of the holders' smoothed latencies (seconds), within [`MIN_HEDGE`] and
/// [`MAX_HEDGE`]; [`FIRST_HEDGE`] while nothing has been timed.
pub fn hedge_delay(timed: &[f64]) -> Duration {
    if timed.is_empty() {
        return FIRST_HEDGE;
    }
    let mut sorted = timed.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    Duration::try_from_secs_f64(median * HEDGE_FACTOR).unwrap_or(MAX_HEDGE).clamp(MIN_HEDGE, MAX_HEDGE)
}

/// The repair margin r for a scheme that tolerates `tolerates` lost pieces: `margin` if
/// given (at most `tolerates`), else half the tolerance, (n-k)/2 for jewels.
pub fn repair_margin(tolerates: usize, margin: Option<usize>) -> usize {
    margin.unwrap_or(tolerates / 2).min(tolerates)
}

/// Whether a file with `lost` pieces not usable must be repaired: once more are lost than
/// the scheme tolerates minus the margin, i.e. fewer than k + r pieces are alive.
pub fn needs_repair(tolerates: usize, margin: Option<usize>, lost: usize) -> bool {
    lost > tolerates - repair_margin(tolerates, margin)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Slots 0..3 need no decoding (data shards of a 3-of-5 scheme).
    const DATA: [bool; 5] = [true, true, true, false, false];

    #[test]
    fn equally_fast_holders_are_asked_for_data_shards_first() {
        let latency = [Some(0.011), Some(0.010), Some(0.012), Some(0.009), Some(0.008)];
        assert_eq!(rank(&latency, &[true; 5], &DATA), vec![1, 0, 2, 4, 3]);
        // Not timed yet: the same.
        assert_eq!(rank(&[None; 5], &[true; 5], &DATA), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_slow_data_holder_goes_after_fast_parity_holders() {
        let latency = [Some(0.010), Some(0.100), Some(0.010), Some(0.011), Some(0.012)];
        assert_eq!(rank(&latency, &[true; 5], &DATA), vec![0, 2, 3, 4, 1]);
    }

    #[test]
    fn without_preference_it_is_latency_order_and_unusable_slots_are_left_out() {
        let latency = [Some(0.030), Some(0.010), None, Some(0.020), Some(0.040)];
        // The untimed slot counts as the average (0.025).
        assert_eq!(rank(&latency, &[true; 5], &[]), vec![1, 3, 2, 0, 4]);
        // Slots 1 and 4 are unusable; data slots 2 and 0 are fast enough to go first.
        assert_eq!(rank(&latency, &[true, false, true, true, false], &DATA), vec![2, 0, 3]);
    }

    fn c(peer: u32, zone: Option<&str>) -> Candidate<u32> {
        Candidate { peer, zone: zone.map(str::to_string) }
    }

    #[test]
    fn placement_spreads_over_zones_and_keeps_the_callers_order_within_them() {
        let cands = [c(1, Some("a")), c(2, Some("a")), c(3, Some("b")), c(4, None), c(5, Some("a"))];
        // One from each zone in turn: a, b, the zoneless peer, then a again.
        assert_eq!(place(4, &cands).unwrap(), vec![1, 3, 4, 2]);
        assert_eq!(place(5, &cands).unwrap(), vec![1, 3, 4, 2, 5]);
    }

    #[test]
    fn placement_uses_distinct_peers_or_says_how_many_it_found() {
        let cands = [c(1, None), c(1, None), c(2, None)];
        assert_eq!(place(2, &cands).unwrap(), vec![1, 2]);
        assert_eq!(place(3, &cands), Err(PolicyError::NotEnoughPeers { needed: 3, found: 2 }));
    }

    #[test]
    fn the_hedge_delay_follows_the_median_within_its_bounds() {
        assert_eq!(hedge_delay(&[]), FIRST_HEDGE);
        let d = hedge_delay(&[0.010, 0.050, 0.020]).as_secs_f64();
        assert!((d - 0.060).abs() < 1e-6, "{d}");
        assert_eq!(hedge_delay(&[0.001]), MIN_HEDGE);
        assert_eq!(hedge_delay(&[5.0]), MAX_HEDGE);
        assert_eq!(hedge_delay(&[f64::INFINITY]), MAX_HEDGE);
    }

    #[test]
    fn repair_starts_once_fewer_than_k_plus_r_pieces_are_alive() {
        // jewels:3/5 tolerates 2; the default margin is 1: repair at 2 lost, not at 1.
        assert!(!needs_repair(2, None, 1));
        assert!(needs_repair(2, None, 2));
        // A margin of 0 waits until the file is at k; a margin above the tolerance is capped.
        assert!(!needs_repair(2, Some(0), 2));
        assert!(needs_repair(2, Some(9), 1));
        // hosting tolerates nothing: any loss needs repair.
        assert!(needs_repair(0, None, 1));
        assert!(!needs_repair(0, None, 0));
    }
}
