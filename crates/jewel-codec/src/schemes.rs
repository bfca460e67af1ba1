//! The schemes themselves: copies (hosting, replicate), striped shards, XOR parity,
//! Reed-Solomon jewels, and nesting.
//!
//! Each is a small struct behind [`Scheme`]; [`build`] turns a validated spec into one.
//! Nothing here does I/O or knows what a slot is placed on.

use std::ops::Range;

use reed_solomon_erasure::galois_8::ReedSolomon;

use crate::scheme::{check_chunks, not_enough, push_shard, shard_len, CodecError, Encoded, Scheme};
use crate::spec::{stripe, SchemeSpec, SpecError};

/// Builds the scheme a spec describes, after validating it.
pub fn build(spec: &SchemeSpec) -> Result<Box<dyn Scheme>, SpecError> {
    spec.validate()?;
    Ok(match spec {
        SchemeSpec::Hosting => Box::new(Copies { spec: spec.clone(), copies: 1 }),
        SchemeSpec::Replicate { copies } => Box::new(Copies { spec: spec.clone(), copies: *copies }),
        SchemeSpec::Shard { k, copies, peers } => Box::new(Shard::new(spec.clone(), *k, *copies, *peers)),
        SchemeSpec::Parity { k } => Box::new(Parity { spec: spec.clone(), k: *k }),
        SchemeSpec::Jewels { k, n } => Box::new(Jewels::new(spec.clone(), *k, *n)?),
        SchemeSpec::Nested { outer, inner } => {
            Box::new(Nested { spec: spec.clone(), outer: build(outer)?, inner: build(inner)? })
        }
    })
}

/// `hosting` and `replicate:N`: every slot holds the whole segment.
#[derive(Debug)]
struct Copies {
    spec: SchemeSpec,
    copies: usize,
}

impl Scheme for Copies {
    fn spec(&self) -> &SchemeSpec {
        &self.spec
    }
    fn slots(&self) -> usize {
        self.copies
    }
    fn chunk_len(&self, _slot: usize, len: usize) -> usize {
        len
    }
    fn encode(&self, segment: &[u8], out: &mut Encoded) -> Result<(), CodecError> {
        out.reset(self.copies, segment.len());
        for slot in 0..self.copies {
            out.push_input(slot, 0..segment.len());
        }
        Ok(())
    }
    fn decode(
        &self,
        len: usize,
        chunks: &mut [Option<Vec<u8>>],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        check_chunks(self, len, chunks)?;
        let chunk = chunks.iter_mut().find_map(Option::as_mut).ok_or_else(|| not_enough(self, 0))?;
        out.clear();
        std::mem::swap(out, chunk);
        Ok(())
    }
    fn can_decode(&self, alive: &[bool]) -> bool {
        alive.iter().take(self.copies).any(|a| *a)
    }
    fn select(&self, alive: &[bool]) -> Option<Vec<bool>> {
        let first = alive.iter().take(self.copies).position(|a| *a)?;
        Some((0..self.copies).map(|s| s == first).collect())
    }
    fn min_peers(&self) -> usize {
        1
    }
    fn tolerates(&self) -> usize {
        self.copies - 1
    }
    fn redundancy(&self) -> f64 {
        self.copies as f64
    }
}

/// `shard:KxC@P`: K shards, each on C distinct peers of P, striped by [`stripe`].
#[derive(Debug)]
struct Shard {
    spec: SchemeSpec,
    k: usize,
    copies: usize,
    /// `layout[slot]` = the shards slot holds, ascending.
    layout: Vec<Vec<usize>>,
}

impl Shard {
    fn new(spec: SchemeSpec, k: usize, copies: usize, peers: usize) -> Self {
        Shard { spec, k, copies, layout: stripe(k, copies, peers) }
    }

    /// Bitmask of shards each slot holds (k ≤ 64).
    fn masks(&self) -> Vec<u64> {
        self.layout.iter().map(|shards| shards.iter().fold(0u64, |m, s| m | (1u64 << s))).collect()
    }

    fn all_shards(&self) -> u64 {
        if self.k >= 64 {
            u64::MAX
        } else {
            (1u64 << self.k) - 1
        }
    }

    /// Exact minimum set cover of the shards by slots: branch on the holders of the
    /// lowest uncovered shard, pruned by a load bound.
    fn min_cover(&self) -> usize {
        let masks = self.masks();
        let max_load = self.layout.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut best = self.layout.len();
        min_cover_rec(&masks, self.all_shards(), 0, max_load, &mut best);
        best
    }
}

fn min_cover_rec(masks: &[u64], uncovered: u64, depth: usize, max_load: usize, best: &mut usize) {
    if uncovered == 0 {
        *best = (*best).min(depth);
        return;
    }
    let bound = depth + (uncovered.count_ones() as usize).div_ceil(max_load);
    if bound >= *best {
        return;
    }
    let shard = uncovered.trailing_zeros();
    let mut holders: Vec<u64> = masks.iter().copied().filter(|m| m & (1u64 << shard) != 0).collect();
    holders.sort_by_key(|m| std::cmp::Reverse((m & uncovered).count_ones()));
    for m in holders {
        min_cover_rec(masks, uncovered & !m, depth + 1, max_load, best);
    }
}

impl Scheme for Shard {
    fn spec(&self) -> &SchemeSpec {
        &self.spec
    }
    fn slots(&self) -> usize {
        self.layout.len()
    }
    fn chunk_len(&self, slot: usize, len: usize) -> usize {
        self.layout.get(slot).map_or(0, Vec::len) * shard_len(len, self.k)
    }
    fn encode(&self, segment: &[u8], out: &mut Encoded) -> Result<(), CodecError> {
        let l = shard_len(segment.len(), self.k);
        out.reset(self.layout.len(), segment.len());
        for (slot, shards) in self.layout.iter().enumerate() {
            for &i in shards {
                push_shard(out, segment, slot, i, l);
            }
        }
        Ok(())
    }
    fn decode(
        &self,
        len: usize,
        chunks: &mut [Option<Vec<u8>>],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let present = check_chunks(self, len, chunks)?;
        let l = shard_len(len, self.k);
        // Every byte is overwritten below (copied or rebuilt), so a reused buffer is not
        // zeroed first: resize only fills what it grows by.
        out.resize(l * self.k, 0);
        for shard in 0..self.k {
            let source = self.layout.iter().enumerate().find_map(|(slot, shards)| {
                let pos = shards.iter().position(|s| *s == shard)?;
                let chunk = chunks.get(slot)?.as_ref()?;
                chunk.get(pos * l..(pos + 1) * l)
            });
            let source = source.ok_or_else(|| not_enough(self, present))?;
            out[shard * l..(shard + 1) * l].copy_from_slice(source);
        }
        out.truncate(len);
        Ok(())
    }
    fn can_decode(&self, alive: &[bool]) -> bool {
        let covered = self.masks().iter().zip(alive).filter(|(_, a)| **a).fold(0u64, |c, (m, _)| c | m);
        covered == self.all_shards()
    }
    fn select(&self, alive: &[bool]) -> Option<Vec<bool>> {
        let masks = self.masks();
        let mut uncovered = self.all_shards();
        let mut chosen = vec![false; masks.len()];
        while uncovered != 0 {
            let (slot, gain) = masks
                .iter()
                .enumerate()
                .filter(|(s, _)| alive.get(*s).copied().unwrap_or(false) && !chosen[*s])
                .map(|(s, m)| (s, (m & uncovered).count_ones()))
                .max_by_key(|(s, gain)| (*gain, std::cmp::Reverse(*s)))?;
            if gain == 0 {
                return None;
            }
            chosen[slot] = true;
            uncovered &= !masks[slot];
        }
        Some(chosen)
    }
    fn min_peers(&self) -> usize {
        self.min_cover()
    }
    fn tolerates(&self) -> usize {
        // Every shard sits on exactly `copies` distinct peers; losing all of them loses it.
        self.copies - 1
    }
    fn redundancy(&self) -> f64 {
        self.copies as f64
    }
}

/// `parity:K`: K data shards and one XOR parity shard.
#[derive(Debug)]
struct Parity {
    spec: SchemeSpec,
    k: usize,
}

/// Copies the present data shards (slots `0..k`, `l` bytes each) into their places in
/// `out`, sized to `k * l`. Callers overwrite the missing places, so a reused buffer is not
/// zeroed first: `resize` only fills what it grows by.
fn place_data_shards(chunks: &[Option<Vec<u8>>], k: usize, l: usize, out: &mut Vec<u8>) {
    out.resize(l * k, 0);
    for (i, chunk) in chunks.iter().take(k).enumerate() {
        if let Some(chunk) = chunk {
            out[i * l..(i + 1) * l].copy_from_slice(chunk);
        }
    }
}

fn xor_into(acc: &mut [u8], src: &[u8]) {
    for (a, b) in acc.iter_mut().zip(src) {
        *a ^= b;
    }
}

impl Scheme for Parity {
    fn spec(&self) -> &SchemeSpec {
        &self.spec
    }
    fn slots(&self) -> usize {
        self.k + 1
    }
    fn chunk_len(&self, _slot: usize, len: usize) -> usize {
        shard_len(len, self.k)
    }
    fn encode(&self, segment: &[u8], out: &mut Encoded) -> Result<(), CodecError> {
        let l = shard_len(segment.len(), self.k);
        out.reset(self.k + 1, segment.len());
        for i in 0..self.k {
            push_shard(out, segment, i, i, l);
        }
        let parity = out.alloc(l);
        for i in 0..self.k {
            let start = (i * l).min(segment.len());
            let end = ((i + 1) * l).min(segment.len());
            let src = segment.get(start..end).unwrap_or_default();
            if let Some(p) = out.buffers_mut().get_mut(parity) {
                xor_into(p, src);
            }
        }
        out.push_buf(self.k, parity, 0..l);
        Ok(())
    }
    fn decode(
        &self,
        len: usize,
        chunks: &mut [Option<Vec<u8>>],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let present = check_chunks(self, len, chunks)?;
        if present < self.k {
            return Err(not_enough(self, present));
        }
        let l = shard_len(len, self.k);
        let missing = (0..self.k).find(|i| chunks[*i].is_none());
        place_data_shards(chunks, self.k, l, out);
        if let Some(m) = missing {
            let mut rebuilt = chunks[self.k].take().ok_or_else(|| not_enough(self, present))?;
            for (i, chunk) in chunks.iter().take(self.k).enumerate() {
                if let (true, Some(chunk)) = (i != m, chunk) {
                    xor_into(&mut rebuilt, chunk);
                }
            }
            out[m * l..(m + 1) * l].copy_from_slice(&rebuilt);
        }
        out.truncate(len);
        Ok(())
    }
    fn can_decode(&self, alive: &[bool]) -> bool {
        alive.iter().take(self.k + 1).filter(|a| **a).count() >= self.k
    }
    fn select(&self, alive: &[bool]) -> Option<Vec<bool>> {
        threshold_select(alive, self.k, self.k + 1)
    }
    fn min_peers(&self) -> usize {
        self.k
    }
    fn tolerates(&self) -> usize {
        1
    }
    fn redundancy(&self) -> f64 {
        (self.k + 1) as f64 / self.k as f64
    }
}

/// Picks the first `k` alive slots of `n`, data slots (the lowest indices) first.
fn threshold_select(alive: &[bool], k: usize, n: usize) -> Option<Vec<bool>> {
    let mut chosen = vec![false; n];
    let mut count = 0;
    for (slot, a) in alive.iter().take(n).enumerate() {
        if *a && count < k {
            chosen[slot] = true;
            count += 1;
        }
    }
    (count == k).then_some(chosen)
}

/// `jewels:K/N`: systematic Reed-Solomon over GF(2^8). Slots 0..K hold the data shards,
/// K..N the parity shards; chunk i of a segment is shard i, so jewel i (the piece) is
/// shard i of every segment.
#[derive(Debug)]
struct Jewels {
    spec: SchemeSpec,
    k: usize,
    n: usize,
    /// `None` when n == k: plain striping, nothing to compute.
    rs: Option<ReedSolomon>,
}

impl Jewels {
    fn new(spec: SchemeSpec, k: usize, n: usize) -> Result<Self, SpecError> {
        let rs = if n > k {
            Some(ReedSolomon::new(k, n - k).map_err(|_| SpecError::TooManySlots {
                spec: spec.to_string(),
                slots: n,
                max: crate::spec::MAX_SLOTS,
            })?)
        } else {
            None
        };
        Ok(Jewels { spec, k, n, rs })
    }
}

impl Scheme for Jewels {
    fn spec(&self) -> &SchemeSpec {
        &self.spec
    }
    fn slots(&self) -> usize {
        self.n
    }
    fn chunk_len(&self, _slot: usize, len: usize) -> usize {
        shard_len(len, self.k)
    }
    fn encode(&self, segment: &[u8], out: &mut Encoded) -> Result<(), CodecError> {
        let l = shard_len(segment.len(), self.k);
        out.reset(self.n, segment.len());
        for i in 0..self.k {
            push_shard(out, segment, i, i, l);
        }
        let first_parity = out.buffers_mut().len();
        // Parity is written whole by `encode_sep` (its first data shard sets, not adds).
        for p in self.k..self.n {
            let buf = out.alloc_overwritten(l);
            out.push_buf(p, buf, 0..l);
        }
        let (Some(rs), true) = (&self.rs, l > 0) else {
            return Ok(());
        };
        // Data shards are borrowed from the segment except a padded tail, which lives in
        // an owned buffer before the parity buffers.
        let padded: Vec<Vec<u8>> = (0..self.k)
            .filter(|i| (i + 1) * l > segment.len())
            .map(|i| {
                let mut b = vec![0u8; l];
                let tail = segment.get((i * l).min(segment.len())..).unwrap_or_default();
                b[..tail.len()].copy_from_slice(tail);
                b
            })
            .collect();
        let full = self.k - padded.len();
        let data: Vec<&[u8]> =
            (0..full).map(|i| &segment[i * l..(i + 1) * l]).chain(padded.iter().map(Vec::as_slice)).collect();
        let parity = &mut out.buffers_mut()[first_parity..];
        rs.encode_sep(&data, parity)?;
        Ok(())
    }
    fn decode(
        &self,
        len: usize,
        chunks: &mut [Option<Vec<u8>>],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        self.decode_placed(len, chunks, &[], out)
    }
    fn placed_range(&self, slot: usize, len: usize) -> Option<Range<usize>> {
        let l = shard_len(len, self.k);
        (slot < self.k).then(|| slot * l..(slot + 1) * l)
    }
    fn decode_placed(
        &self,
        len: usize,
        chunks: &mut [Option<Vec<u8>>],
        placed: &[bool],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let is_placed = |slot: usize| slot < self.k && placed.get(slot).copied().unwrap_or(false);
        // A placed slot's chunk is in `out`; a copy passed in as well is not used.
        for (slot, chunk) in chunks.iter_mut().enumerate() {
            if is_placed(slot) {
                *chunk = None;
            }
        }
        let present = check_chunks(self, len, chunks)? + (0..self.k).filter(|s| is_placed(*s)).count();
        if present < self.k {
            return Err(not_enough(self, present));
        }
        let l = shard_len(len, self.k);
        // Sized first so missing shards can be rebuilt in place; not zeroed (see
        // `place_data_shards`). Placed shards lie inside `l * k` and are kept.
        out.resize(l * self.k, 0);
        let missing_data = (0..self.k).filter(|s| !is_placed(*s) && chunks[*s].is_none()).count();
        if missing_data > 0 && l > 0 {
            let rs = self.rs.as_ref().ok_or_else(|| not_enough(self, present))?;
            // Missing data shards are rebuilt straight into `out`; present ones are read
            // in place, and only as many parity shards as needed take part.
            let mut parity_wanted = missing_data;
            let mut shards: Vec<(&mut [u8], bool)> = Vec::with_capacity(self.n);
            let (data_chunks, parity_chunks) = chunks.split_at_mut(self.k);
            for (i, (slot, target)) in data_chunks.iter_mut().zip(out.chunks_mut(l)).enumerate() {
                match slot {
                    _ if is_placed(i) => shards.push((target, true)),
                    Some(chunk) => shards.push((chunk.as_mut_slice(), true)),
                    None => shards.push((target, false)),
                }
            }
            for slot in parity_chunks.iter_mut() {
                match slot {
                    Some(chunk) if parity_wanted > 0 => {
                        parity_wanted -= 1;
                        shards.push((chunk.as_mut_slice(), true));
                    }
                    _ => shards.push((&mut [][..], false)),
                }
            }
            rs.reconstruct_data(&mut shards)?;
        }
        place_data_shards(chunks, self.k, l, out);
        out.truncate(len);
        Ok(())
    }
    fn can_decode(&self, alive: &[bool]) -> bool {
        alive.iter().take(self.n).filter(|a| **a).count() >= self.k
    }
    fn select(&self, alive: &[bool]) -> Option<Vec<bool>> {
        threshold_select(alive, self.k, self.n)
    }
    fn min_peers(&self) -> usize {
        self.k
    }
    fn tolerates(&self) -> usize {
        self.n - self.k
    }
    fn redundancy(&self) -> f64 {
        self.n as f64 / self.k as f64
    }
}

/// `nested:OUTER+INNER`: slot `o * inner.slots() + i` holds chunk i of the inner
/// encoding of outer chunk o.
#[derive(Debug)]
struct Nested {
    spec: SchemeSpec,
    outer: Box<dyn Scheme>,
    inner: Box<dyn Scheme>,
}

impl Nested {
    fn group<'a, T>(&self, slots: &'a [T], o: usize) -> &'a [T] {
        let w = self.inner.slots();
        slots.get(o * w..(o + 1) * w).unwrap_or_default()
    }

    fn outer_alive(&self, alive: &[bool]) -> Vec<bool> {
        (0..self.outer.slots()).map(|o| self.inner.can_decode(self.group(alive, o))).collect()
    }
}

impl Scheme for Nested {
    fn spec(&self) -> &SchemeSpec {
        &self.spec
    }
    fn slots(&self) -> usize {
        self.outer.slots() * self.inner.slots()
    }
    fn chunk_len(&self, slot: usize, len: usize) -> usize {
        let w = self.inner.slots();
        self.inner.chunk_len(slot % w, self.outer.chunk_len(slot / w, len))
    }
    fn encode(&self, segment: &[u8], out: &mut Encoded) -> Result<(), CodecError> {
        let mut outer = Encoded::default();
        let mut inner = Encoded::default();
        self.outer.encode(segment, &mut outer)?;
        out.reset(self.slots(), segment.len());
        for o in 0..self.outer.slots() {
            let piece = outer.to_vec(segment, o)?;
            self.inner.encode(&piece, &mut inner)?;
            let source = out.adopt(piece);
            out.absorb(o * self.inner.slots(), source, &mut inner);
        }
        Ok(())
    }
    fn decode(
        &self,
        len: usize,
        chunks: &mut [Option<Vec<u8>>],
        out: &mut Vec<u8>,
    ) -> Result<(), CodecError> {
        let present = check_chunks(self, len, chunks)?;
        let w = self.inner.slots();
        let mut outer_chunks: Vec<Option<Vec<u8>>> = Vec::with_capacity(self.outer.slots());
        for (o, group) in chunks.chunks_mut(w.max(1)).enumerate() {
            let alive: Vec<bool> = group.iter().map(Option::is_some).collect();
            if self.inner.can_decode(&alive) {
                let mut piece = Vec::new();
                self.inner.decode(self.outer.chunk_len(o, len), group, &mut piece)?;
                outer_chunks.push(Some(piece));
            } else {
                outer_chunks.push(None);
            }
        }
        let alive: Vec<bool> = outer_chunks.iter().map(Option::is_some).collect();
        if !self.outer.can_decode(&alive) {
            return Err(not_enough(self, present));
        }
        self.outer.decode(len, &mut outer_chunks, out)
    }
    fn can_decode(&self, alive: &[bool]) -> bool {
        self.outer.can_decode(&self.outer_alive(alive))
    }
    fn select(&self, alive: &[bool]) -> Option<Vec<bool>> {
        let outer = self.outer.select(&self.outer_alive(alive))?;
        let mut chosen = vec![false; self.slots()];
        let w = self.inner.slots();
        for (o, use_it) in outer.iter().enumerate() {
            if *use_it {
                let inner = self.inner.select(self.group(alive, o))?;
                for (i, c) in inner.into_iter().enumerate() {
                    chosen[o * w + i] = c;
                }
            }
        }
        Some(chosen)
    }
    fn min_peers(&self) -> usize {
        self.outer.min_peers() * self.inner.min_peers()
    }
    fn tolerates(&self) -> usize {
        (self.outer.tolerates() + 1) * (self.inner.tolerates() + 1) - 1
    }
    fn redundancy(&self) -> f64 {
        self.outer.redundancy() * self.inner.redundancy()
    }
}
