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

use std::hash::Hash;
use std::time::Duration;

/// Why a policy cannot decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    #[error("the scheme needs {needed} distinct peers, but only {found} were found")]
    NotEnoughPeers { needed: usize, found: usize },
}

/// A candidate peer for placement, with the failure domain it announced, if any, the
/// network its address is in (see [`site_of`]), if known, and whether the placing node
/// first saw it only recently (identities are free: many new ones at once may be one
/// stranger's, who can drop what they hold together).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<P> {
    pub peer: P,
    pub zone: Option<String>,
    pub site: Option<String>,
    pub new: bool,
}

/// The network an IP address is in, for placement: its /24 (IPv4) or /48 (IPv6), as
/// Storj places at most one piece of a file per /24, so that many identities at one
/// address, or in one subnet, hold one piece of a file, not most of them. A loopback
/// address is its own site (every peer of a test network on one machine shares 127/8).
pub fn site_of(ip: std::net::IpAddr) -> String {
    use std::net::IpAddr;
    match ip {
        IpAddr::V4(v4) if v4.is_loopback() => v4.to_string(),
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v6) if v6.is_loopback() => v6.to_string(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => site_of(IpAddr::V4(v4)),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}::/48", s[0], s[1], s[2])
            }
        },
    }
}

/// Chooses a distinct peer for each of `slots` slots. Each slot takes the candidate whose
/// site holds the fewest pieces so far, then whose zone does (peers without a site or a
/// zone each count as their own), then the earliest: pieces spread over networks first
/// (strangers cannot choose their address as freely as their zone), then over failure
/// domains, and the caller's preference order is kept within that. Duplicates count once.
/// The first `slots` of a longer placement are this placement, so the rest are spares in
/// the order that keeps the spread.
pub fn place<P: Copy + Eq + Hash>(slots: usize, candidates: &[Candidate<P>]) -> Result<Vec<P>, PolicyError> {
    place_within(slots, candidates, usize::MAX)
}

/// [`place`], giving new peers ([`Candidate::new`]) at most `max_new` pieces while peers
/// known longer can take them (a file whose pieces on new peers are at most what its scheme
/// tolerates losing survives their leaving together); past that, new peers come last, not
/// never ([`newcomers_over`] says how many were needed).
pub fn place_within<P: Copy + Eq + Hash>(
    slots: usize,
    candidates: &[Candidate<P>],
    max_new: usize,
) -> Result<Vec<P>, PolicyError> {
    use std::collections::{HashMap, HashSet};
    let mut seen = HashSet::new();
    let distinct: Vec<&Candidate<P>> = candidates.iter().filter(|c| seen.insert(c.peer)).collect();
    if distinct.len() < slots {
        return Err(PolicyError::NotEnoughPeers { needed: slots, found: distinct.len() });
    }
    // Each candidate's site and zone as small numbers; a missing one is its own.
    fn key<'a>(
        names: &mut HashMap<(u8, &'a str), usize>,
        kind: u8,
        name: Option<&'a str>,
        alone: usize,
    ) -> usize {
        match name {
            Some(n) => {
                // Past every candidate's own number, so a name never meets a lone peer's.
                let next = names.len() + usize::MAX / 2;
                *names.entry((kind, n)).or_insert(next)
            }
            None => alone,
        }
    }
    let mut names: HashMap<(u8, &str), usize> = HashMap::new();
    let keys: Vec<(usize, usize)> = distinct
        .iter()
        .enumerate()
        .map(|(i, c)| (key(&mut names, 0, c.site.as_deref(), i), key(&mut names, 1, c.zone.as_deref(), i)))
        .collect();
    let (mut per_site, mut per_zone) = (HashMap::<usize, usize>::new(), HashMap::<usize, usize>::new());
    let mut taken = vec![false; distinct.len()];
    let mut out = Vec::with_capacity(slots);
    let mut new = 0;
    while out.len() < slots {
        let best = (0..distinct.len()).filter(|&i| !taken[i]).min_by_key(|&i| {
            let (site, zone) = keys[i];
            let over = distinct[i].new && new >= max_new;
            (over, per_site.get(&site).copied().unwrap_or(0), per_zone.get(&zone).copied().unwrap_or(0), i)
        });
        let Some(i) = best else { break };
        taken[i] = true;
        new += usize::from(distinct[i].new);
        *per_site.entry(keys[i].0).or_default() += 1;
        *per_zone.entry(keys[i].1).or_default() += 1;
        out.push(distinct[i].peer);
    }
    Ok(out)
}

/// How many of `placed` share a site with an earlier one (0 when every piece is on a
/// network of its own): placement says so when the network is too small to spread.
/// Loopback sites are not counted: a test network on one machine is meant to share one.
pub fn crowded<P: Copy + Eq + Hash>(placed: &[P], candidates: &[Candidate<P>]) -> usize {
    let mut sites = std::collections::HashSet::new();
    let loopback = |s: &str| s.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    placed
        .iter()
        .filter_map(|p| candidates.iter().find(|c| c.peer == *p))
        .filter_map(|c| c.site.as_deref())
        .filter(|s| !loopback(s) && !sites.insert(s.to_string()))
        .count()
}

/// How many of `placed` went to new peers beyond `max_new` (too few peers known longer).
pub fn newcomers_over<P: Copy + Eq + Hash>(
    placed: &[P],
    candidates: &[Candidate<P>],
    max_new: usize,
) -> usize {
    let new = placed.iter().filter(|p| candidates.iter().any(|c| c.peer == **p && c.new)).count();
    new.saturating_sub(max_new)
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

/// T*, the fastest a get of a k-of-n file can go: the largest T with Σ min(u_i, T/k) ≥ T
/// over the holders' uplinks `uplinks` (bytes per second; each holder sends at most one k-th
/// of every segment, and at most its uplink), at most `downlink` if given. Beats the sum of
/// the k fastest uplinks whenever there are more than k holders.
pub fn t_star(uplinks: &[f64], k: usize, downlink: Option<f64>) -> f64 {
    let k = k.max(1) as f64;
    let sends = |t: f64| uplinks.iter().map(|u| u.max(0.0).min(t / k)).sum::<f64>();
    // sends(t) - t is concave and 0 at 0: the set where it is ≥ 0 is an interval [0, T*].
    let (mut lo, mut hi) = (0.0, uplinks.iter().map(|u| u.max(0.0)).sum::<f64>());
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if sends(mid) >= mid {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    downlink.map_or(lo, |d| lo.min(d))
}

/// What asking a holder for `len` more bytes costs, in seconds: the bytes it was asked for
/// and has not sent yet (`queued`), and `len`, at its measured `rate` (bytes per second), or
/// at `typical` (the others' rate) while it has none. A get asks the holders whose cost is
/// least, so each gets work in proportion to its rate: a fast holder is asked again while
/// a slow one still works on its first request. Without any rate, the least queued.
pub fn queue_cost(queued: u64, len: u64, rate: Option<f64>, typical: Option<f64>) -> f64 {
    let bytes = queued.saturating_add(len) as f64;
    match rate.or(typical) {
        Some(r) if r > 0.0 => bytes / r,
        _ => bytes,
    }
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

    #[test]
    fn t_star_is_where_the_holders_can_no_longer_keep_up() {
        // Five equal holders of 3-of-5, none limited by T/k: all they send, 5 × u.
        assert!((t_star(&[30.0; 5], 3, None) - 150.0).abs() < 1e-6);
        // One fast holder cannot send more than T/k: 100 and four of 10, k = 3: with T/3
        // above 10, T = 100.min(T/3) + 40 → T/3 + 40 = T → T = 60.
        let t = t_star(&[100.0, 10.0, 10.0, 10.0, 10.0], 3, None);
        assert!((t - 60.0).abs() < 1e-6, "{t}");
        // The three fastest alone: the two slow ones send 10 each and the fast one at most
        // T/3, so T = 30: more holders than k go faster.
        assert!((t_star(&[100.0, 10.0, 10.0], 3, None) - 30.0).abs() < 1e-6);
        assert!(t > t_star(&[100.0, 10.0, 10.0], 3, None));
        // The getter's downlink caps it; fewer than k holders give nothing.
        assert_eq!(t_star(&[100.0; 5], 3, Some(20.0)), 20.0);
        assert!(t_star(&[100.0; 2], 3, None) < 1e-6);
    }

    /// Throughput of a simulated get: holders that each send at their own rate (MB/s), first
    /// come first served; segments of k chunks of 1 MB, `in_flight` at once; each segment
    /// asks the k holders `by_queue` picks by [`queue_cost`] (else the k of best rate, as a
    /// get that ranks by speed alone does).
    fn simulate(uplinks: &[f64], k: usize, in_flight: usize, by_queue: bool) -> f64 {
        let (n, chunk, segments) = (uplinks.len(), 1.0f64, 600usize);
        let (mut free_at, mut sent, mut busy) = (vec![0.0f64; n], vec![0.0f64; n], vec![0.0f64; n]);
        let mut done: Vec<f64> = Vec::new();
        let mut now = 0.0f64;
        for seg in 0..segments {
            if seg >= in_flight {
                done.sort_by(f64::total_cmp);
                now = now.max(done[seg - in_flight]);
            }
            let rates: Vec<Option<f64>> =
                (0..n).map(|i| (busy[i] > 0.0).then(|| sent[i] / busy[i])).collect();
            let mut known: Vec<f64> = rates.iter().flatten().copied().collect();
            known.sort_by(f64::total_cmp);
            let typical = known.get(known.len() / 2).copied();
            let mut cost: Vec<(f64, usize)> = (0..n)
                .map(|i| {
                    let queued =
                        if by_queue { ((free_at[i] - now).max(0.0) * uplinks[i] * 1e6) as u64 } else { 0 };
                    (queue_cost(queued, 1_000_000, rates[i], typical), i)
                })
                .collect();
            cost.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut finish = 0.0f64;
            for &(_, i) in cost.iter().take(k) {
                free_at[i] = free_at[i].max(now) + chunk / uplinks[i];
                busy[i] += chunk / uplinks[i];
                sent[i] += chunk;
                finish = finish.max(free_at[i]);
            }
            done.push(finish);
        }
        segments as f64 * k as f64 * chunk / done.iter().copied().fold(0.0, f64::max)
    }

    /// Asking, for each segment, the k holders of least [`queue_cost`] gives each holder
    /// work in proportion to its rate: with enough segments in flight a get reaches most of
    /// T*, and with few it still beats asking the k fastest (which caps a get at what the
    /// k fastest send). Uplinks like the mix: 5/20/50/100/500 Mbit/s, in MB/s.
    #[test]
    fn asking_the_least_queued_holders_reaches_most_of_t_star() {
        let uplinks = [0.625, 2.5, 2.5, 6.25, 12.5, 62.5, 0.625, 2.5];
        let best = t_star(&uplinks, 3, None);
        let deep = simulate(&uplinks, 3, 8, true);
        assert!(deep >= 0.85 * best, "{deep:.2} MB/s of T* {best:.2}, 8 segments in flight");
        let (shallow, fastest) = (simulate(&uplinks, 3, 3, true), simulate(&uplinks, 3, 3, false));
        assert!(shallow > 1.2 * fastest, "3 in flight: {shallow:.2} MB/s, the k fastest {fastest:.2}");
        // Equal holders, more than k: all of them send, so a get goes n/k times as fast as
        // from k of them.
        let equal = simulate(&[2.5; 6], 3, 3, true);
        assert!(equal >= 0.85 * 15.0, "{equal:.2} MB/s of 15 from six holders of 2.5");
    }

    fn c(peer: u32, zone: Option<&str>) -> Candidate<u32> {
        Candidate { peer, zone: zone.map(str::to_string), site: None, new: false }
    }

    fn at(peer: u32, site: &str, zone: Option<&str>) -> Candidate<u32> {
        Candidate { peer, zone: zone.map(str::to_string), site: Some(site.to_string()), new: false }
    }

    #[test]
    fn many_identities_at_one_address_get_one_piece_while_other_networks_have_room() {
        // Thirty identities at one address come first in the caller's order; five honest
        // peers on networks of their own.
        let mut cands: Vec<Candidate<u32>> = (0..30).map(|i| at(i, "10.0.0.0/24", None)).collect();
        cands.extend((100..105).map(|i| at(i, &format!("10.0.{}.0/24", i), None)));
        let placed = place(5, &cands).unwrap();
        assert_eq!(placed.iter().filter(|p| **p < 100).count(), 1, "{placed:?}");
        assert_eq!(crowded(&placed, &cands), 0);
        // Seven slots and six networks: the seventh piece must share, and that is said.
        assert_eq!(crowded(&place(6, &cands).unwrap(), &cands), 0);
        assert_eq!(crowded(&place(7, &cands).unwrap(), &cands), 1);
        // The spares after a placement keep the spread: the honest peers come before the
        // identities that share the attacker's address.
        let all = place(cands.len(), &cands).unwrap();
        assert!(all[..6].iter().filter(|p| **p < 100).count() == 1, "{all:?}");
        // Sites come before zones: a zone claimed by many peers cannot pull pieces to one net.
        let cands = [at(1, "a", Some("z1")), at(2, "a", Some("z2")), at(3, "b", Some("z1"))];
        assert_eq!(place(2, &cands).unwrap(), vec![1, 3]);
    }

    #[test]
    fn new_peers_hold_at_most_what_a_file_tolerates_losing_while_others_can() {
        // Twenty new identities, each on a network of its own, come first; four peers known
        // longer. A 3-of-5 file tolerates losing 2: the new ones get 2 pieces.
        let mut cands: Vec<Candidate<u32>> =
            (0..20).map(|i| Candidate { new: true, ..at(i, &format!("10.{i}.0.0/24"), None) }).collect();
        cands.extend((100..104).map(|i| at(i, &format!("10.{i}.0.0/24"), None)));
        let placed = place_within(5, &cands, 2).unwrap();
        assert_eq!(placed.iter().filter(|p| **p < 100).count(), 2, "{placed:?}");
        assert_eq!(newcomers_over(&placed, &cands, 2), 0);
        // Seven slots and four peers known longer: three new ones must hold a piece, said.
        let placed = place_within(7, &cands, 2).unwrap();
        assert_eq!(newcomers_over(&placed, &cands, 2), 1);
        // Without a bound, the caller's order wins.
        assert!(place(5, &cands).unwrap().iter().all(|p| *p < 100));
        // The spares after a bounded placement keep the bound's order.
        let all = place_within(cands.len(), &cands, 2).unwrap();
        assert_eq!(&all[..5], &place_within(5, &cands, 2).unwrap()[..]);
    }

    #[test]
    fn sites_are_subnets_and_loopback_addresses_are_their_own() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(site_of(ip("203.0.113.7")), site_of(ip("203.0.113.200")));
        assert_ne!(site_of(ip("203.0.113.7")), site_of(ip("203.0.114.7")));
        assert_eq!(site_of(ip("2001:db8:1:2::1")), site_of(ip("2001:db8:1:ffff::9")));
        assert_ne!(site_of(ip("2001:db8:1::1")), site_of(ip("2001:db8:2::1")));
        assert_eq!(site_of(ip("::ffff:203.0.113.7")), site_of(ip("203.0.113.9")));
        assert_ne!(site_of(ip("127.0.0.1")), site_of(ip("127.0.0.2")));
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
