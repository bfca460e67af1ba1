//! Availability maths: given a per-peer uptime, how likely is a file to be readable, and
//! which parameters of each scheme family meet a target most cheaply.
//!
//! Owns exact binomial sums, exact enumeration for striped shards (Monte Carlo when the
//! stripe is too wide to enumerate), and the search for the cheapest parameters. Peers are
//! independent and each is online with probability `p`. Failure probabilities are summed
//! directly (never as `1 - availability`) so that many nines stay precise.

use serde::Serialize;

use crate::scheme::Scheme;
use crate::schemes::build;
use crate::spec::SchemeSpec;

/// Striped shard layouts with at most this many peers are enumerated exactly.
pub const MAX_ENUMERATED_PEERS: usize = 20;
/// Samples drawn when a layout is too wide to enumerate.
pub const MONTE_CARLO_SAMPLES: u64 = 400_000;

/// How a figure was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Closed-form binomial sums.
    Exact,
    /// Every subset of peers enumerated.
    Enumerated,
    /// Sampled; the figure carries sampling error.
    MonteCarlo,
}

/// The availability of one scheme at one uptime.
#[derive(Clone, Debug, Serialize)]
pub struct Availability {
    /// Probability that the file can be read.
    pub availability: f64,
    /// Probability that it cannot (computed directly, for precision).
    pub failure: f64,
    pub method: Method,
}

impl Availability {
    /// "Nines": -log10(failure), capped at 16.
    pub fn nines(&self) -> f64 {
        if self.failure <= 0.0 {
            16.0
        } else {
            (-self.failure.log10()).min(16.0)
        }
    }
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    #[error("uptime must be between 0 and 1 (got {0})")]
    Uptime(f64),
    #[error("target availability must be between 0 and 1, exclusive of 1 (got {0})")]
    Target(f64),
    #[error("max peers must be between 1 and {max} (got {got})")]
    MaxPeers { got: usize, max: usize },
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
}

/// The availability of `spec` when each peer is online with probability `p`.
pub fn availability(spec: &SchemeSpec, p: f64) -> Result<Availability, PlanError> {
    check_uptime(p)?;
    let scheme = build(spec)?;
    let (failure, method) = failure_of(scheme.as_ref(), p, 1.0 - p);
    Ok(Availability { availability: 1.0 - failure, failure, method })
}

fn check_uptime(p: f64) -> Result<(), PlanError> {
    if !(0.0..=1.0).contains(&p) || p.is_nan() {
        return Err(PlanError::Uptime(p));
    }
    Ok(())
}

/// Failure probability of a scheme whose slots are each up with probability `p` and down
/// with probability `q` (given separately so that tiny `q` keeps its precision).
fn failure_of(scheme: &dyn Scheme, p: f64, q: f64) -> (f64, Method) {
    match scheme.spec() {
        SchemeSpec::Hosting => (q, Method::Exact),
        SchemeSpec::Replicate { copies } => (q.powi(*copies as i32), Method::Exact),
        SchemeSpec::Parity { k } => (binomial_below(k + 1, *k, p, q), Method::Exact),
        SchemeSpec::Jewels { k, n } => (binomial_below(*n, *k, p, q), Method::Exact),
        SchemeSpec::Nested { outer, inner } => {
            // Each outer slot is up when its own group of inner peers can decode.
            let (Ok(outer), Ok(inner)) = (build(outer), build(inner)) else {
                return (1.0, Method::Exact);
            };
            let (qi, mi) = failure_of(inner.as_ref(), p, q);
            let (f, mo) = failure_of(outer.as_ref(), 1.0 - qi, qi);
            let method = if mi == Method::MonteCarlo || mo == Method::MonteCarlo {
                Method::MonteCarlo
            } else if mi == Method::Enumerated || mo == Method::Enumerated {
                Method::Enumerated
            } else {
                Method::Exact
            };
            (f, method)
        }
        SchemeSpec::Shard { .. } if scheme.slots() <= MAX_ENUMERATED_PEERS => {
            (enumerate_failure(scheme, p, q), Method::Enumerated)
        }
        SchemeSpec::Shard { .. } => {
            (monte_carlo_failure(scheme, p, MONTE_CARLO_SAMPLES, 0x006a_6577_656c), Method::MonteCarlo)
        }
    }
}

/// P(fewer than `k` of `n` up) = Σ_{i<k} C(n,i) p^i q^(n-i).
pub fn binomial_below(n: usize, k: usize, p: f64, q: f64) -> f64 {
    let mut sum = 0.0;
    let mut c = 1.0f64; // C(n, i)
    for i in 0..k.min(n + 1) {
        sum += c * p.powi(i as i32) * q.powi((n - i) as i32);
        c = c * (n - i) as f64 / (i + 1) as f64;
    }
    sum.min(1.0)
}

/// Exact failure probability by enumerating every subset of up peers.
pub fn enumerate_failure(scheme: &dyn Scheme, p: f64, q: f64) -> f64 {
    let n = scheme.slots();
    let mut alive = vec![false; n];
    let mut failure = 0.0;
    for mask in 0u64..(1u64 << n) {
        for (i, a) in alive.iter_mut().enumerate() {
            *a = mask & (1 << i) != 0;
        }
        if !scheme.can_decode(&alive) {
            let up = mask.count_ones() as i32;
            failure += p.powi(up) * q.powi(n as i32 - up);
        }
    }
    failure
}

/// Failure probability estimated from `samples` random draws (deterministic for a seed).
pub fn monte_carlo_failure(scheme: &dyn Scheme, p: f64, samples: u64, seed: u64) -> f64 {
    let mut rng = SplitMix64(seed);
    let mut alive = vec![false; scheme.slots()];
    let mut failures = 0u64;
    for _ in 0..samples {
        for a in alive.iter_mut() {
            *a = rng.next_f64() < p;
        }
        if !scheme.can_decode(&alive) {
            failures += 1;
        }
    }
    failures as f64 / samples.max(1) as f64
}

/// A small, deterministic PRNG (SplitMix64): good enough for sampling, no dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One scheme's figures: what `jewel plan` prints per row.
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub spec: String,
    /// N: peers used.
    pub peers: usize,
    /// D: bytes stored ÷ file bytes.
    pub redundancy: f64,
    /// M: the fewest peers that can be enough.
    pub min_peers: usize,
    /// Any this many peers may be lost.
    pub tolerates: usize,
    pub availability: f64,
    pub failure: f64,
    pub nines: f64,
    pub method: Method,
}

/// Computes the figures of one spec at uptime `p`.
pub fn figures(spec: &SchemeSpec, p: f64) -> Result<Figures, PlanError> {
    let scheme = build(spec)?;
    let a = availability(spec, p)?;
    Ok(Figures {
        spec: spec.to_string(),
        peers: scheme.slots(),
        redundancy: scheme.redundancy(),
        min_peers: scheme.min_peers(),
        tolerates: scheme.tolerates(),
        availability: a.availability,
        failure: a.failure,
        nines: a.nines(),
        method: a.method,
    })
}

/// Per family: the cheapest parameters meeting the target, if any do within the peers.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyPlan {
    pub family: &'static str,
    /// The cheapest spec that meets the target (lowest D, then fewest peers).
    pub best: Option<Figures>,
    /// What was searched, in words.
    pub searched: String,
}

/// The whole plan: for each family, the cheapest parameters meeting `target`.
pub fn plan(p: f64, target: f64, max_peers: usize) -> Result<Vec<FamilyPlan>, PlanError> {
    check_uptime(p)?;
    if !(0.0..1.0).contains(&target) || target.is_nan() {
        return Err(PlanError::Target(target));
    }
    if max_peers == 0 || max_peers > crate::spec::MAX_SLOTS {
        return Err(PlanError::MaxPeers { got: max_peers, max: crate::spec::MAX_SLOTS });
    }
    // A relative slack of 1e-9 so that a target like 0.9999 is met by exactly 1e-4.
    let allowed = (1.0 - target) * (1.0 + 1e-9);
    let mut out = Vec::new();
    let candidates: [(&'static str, String, Vec<SchemeSpec>); 6] = [
        ("hosting", "hosting".into(), vec![SchemeSpec::Hosting]),
        (
            "replicate",
            format!("replicate:N, N ≤ {max_peers}"),
            (1..=max_peers).map(|copies| SchemeSpec::Replicate { copies }).collect(),
        ),
        (
            "shard",
            format!("shard:KxC, K ≤ {}", max_peers.min(MAX_ENUMERATED_PEERS)),
            shard_candidates(max_peers),
        ),
        (
            "parity",
            format!("parity:K, K+1 ≤ {max_peers}"),
            (1..max_peers).map(|k| SchemeSpec::Parity { k }).collect(),
        ),
        (
            "jewels",
            format!("jewels:K/N, N ≤ {max_peers}"),
            (1..=max_peers).flat_map(|n| (1..=n).map(move |k| SchemeSpec::Jewels { k, n })).collect(),
        ),
        (
            "nested",
            format!("nested:jewels:K1/N1+jewels:K2/N2, N1·N2 ≤ {max_peers}"),
            nested_candidates(max_peers),
        ),
    ];
    for (family, searched, specs) in candidates {
        let mut best: Option<Figures> = None;
        for spec in specs {
            let Ok(scheme) = build(&spec) else { continue };
            // Cheap pre-filter: skip anything that cannot beat the current best.
            if let Some(b) = &best {
                let d = scheme.redundancy();
                if d > b.redundancy + 1e-12 || (d >= b.redundancy - 1e-12 && scheme.slots() >= b.peers) {
                    continue;
                }
            }
            let f = figures(&spec, p)?;
            if f.failure <= allowed {
                best = Some(f);
            }
        }
        out.push(FamilyPlan { family, best, searched });
    }
    Ok(out)
}

fn shard_candidates(max_peers: usize) -> Vec<SchemeSpec> {
    let kmax = max_peers.min(MAX_ENUMERATED_PEERS);
    (1..=kmax).flat_map(|k| (1..=k).map(move |copies| SchemeSpec::Shard { k, copies, peers: k })).collect()
}

fn nested_candidates(max_peers: usize) -> Vec<SchemeSpec> {
    let mut v = Vec::new();
    for n1 in 2..=max_peers {
        for n2 in 2..=max_peers / n1 {
            for k1 in 1..=n1 {
                for k2 in 1..=n2 {
                    v.push(SchemeSpec::Nested {
                        outer: Box::new(SchemeSpec::Jewels { k: k1, n: n1 }),
                        inner: Box::new(SchemeSpec::Jewels { k: k2, n: n2 }),
                    });
                }
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> SchemeSpec {
        SchemeSpec::parse(s).unwrap()
    }

    /// Exact figures must agree with an independent Monte Carlo run within 5 standard
    /// errors (deterministic seed, so this cannot flake).
    #[test]
    fn exact_figures_match_monte_carlo() {
        let samples = 200_000u64;
        for (text, p) in [
            ("hosting", 0.9),
            ("replicate:3", 0.7),
            ("parity:4", 0.9),
            ("jewels:4/8", 0.6),
            ("jewels:10/16", 0.8),
            ("shard:3x2", 0.7),
            ("shard:6x2@4", 0.8),
            ("shard:5x3", 0.6),
            ("nested:jewels:2/3+parity:2", 0.8),
            ("nested:shard:3x2+jewels:2/3", 0.7),
        ] {
            let s = spec(text);
            let exact = availability(&s, p).unwrap();
            assert_ne!(exact.method, Method::MonteCarlo, "{text}");
            let scheme = build(&s).unwrap();
            let mc = monte_carlo_failure(scheme.as_ref(), p, samples, 42);
            let sigma = (exact.failure * (1.0 - exact.failure) / samples as f64).sqrt();
            assert!(
                (mc - exact.failure).abs() <= 5.0 * sigma + 1e-9,
                "{text}: exact {} vs monte carlo {mc}",
                exact.failure
            );
        }
    }

    #[test]
    fn closed_forms_match_enumeration() {
        for text in ["replicate:4", "parity:3", "jewels:3/7", "jewels:5/5", "hosting"] {
            let s = spec(text);
            let scheme = build(&s).unwrap();
            let (closed, _) = failure_of(scheme.as_ref(), 0.83, 0.17);
            let enumerated = enumerate_failure(scheme.as_ref(), 0.83, 0.17);
            assert!((closed - enumerated).abs() < 1e-12, "{text}: {closed} vs {enumerated}");
        }
    }

    #[test]
    fn known_values() {
        // replicate:3 at p = 0.9 fails only when all three are down: 0.001.
        let a = availability(&spec("replicate:3"), 0.9).unwrap();
        assert!((a.failure - 0.001).abs() < 1e-15);
        // jewels:1/2 is the same as replicate:2.
        let j = availability(&spec("jewels:1/2"), 0.8).unwrap();
        assert!((j.failure - 0.04).abs() < 1e-15);
        // Tiny failure probabilities keep their precision.
        let r = availability(&spec("replicate:8"), 0.99).unwrap();
        assert!((r.failure / 1e-16 - 1.0).abs() < 1e-9, "{}", r.failure);
    }

    #[test]
    fn wide_stripes_use_monte_carlo() {
        let a = availability(&spec("shard:24x3"), 0.9).unwrap();
        assert_eq!(a.method, Method::MonteCarlo);
        assert!(a.failure > 0.0 && a.failure < 0.1);
    }

    #[test]
    fn plan_picks_cheapest_meeting_target() {
        let plans = plan(0.9, 0.9999, 16).unwrap();
        let get = |f: &str| plans.iter().find(|p| p.family == f).unwrap().best.clone();
        assert!(get("hosting").is_none());
        let r = get("replicate").unwrap();
        assert_eq!(r.spec, "replicate:4"); // 1 - 0.1^4 = 0.9999
        let j = get("jewels").unwrap();
        assert!(j.failure <= 1e-4);
        assert!(j.redundancy < r.redundancy);
        // No cheaper jewels spec within 16 peers meets the target.
        for n in 1..=16usize {
            for k in 1..=n {
                let s = SchemeSpec::Jewels { k, n };
                let f = figures(&s, 0.9).unwrap();
                if f.failure <= 1e-4 {
                    assert!(f.redundancy >= j.redundancy - 1e-12, "{s} beats {}", j.spec);
                }
            }
        }
    }

    #[test]
    fn bad_inputs() {
        assert!(matches!(availability(&SchemeSpec::Hosting, 1.5), Err(PlanError::Uptime(_))));
        assert!(matches!(plan(0.9, 1.0, 8), Err(PlanError::Target(_))));
        assert!(matches!(plan(0.9, 0.9, 0), Err(PlanError::MaxPeers { .. })));
    }
}
