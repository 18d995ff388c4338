//! The reader's fast path through an `Events` payload: heap events, clock
//! readings and plain CPU samples, the bulk of a big profile, decoded with
//! a varint reader that takes one- and two-byte values (nearly all of them)
//! without a loop. Anything else (a stack copy, a malformed or oversized
//! value, an unknown tag) makes it give up, and the caller decodes the
//! payload with `lineprof::format::decode_events`, the format's definition,
//! which says what is wrong. For a payload it takes, it gives exactly what
//! `decode_events` gives.

use lineprof::format::{next_addr, tag};

/// Why the fast path gave up: decode the payload the reference way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GiveUp;

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    #[inline(always)]
    fn u8(&mut self) -> Result<u8, GiveUp> {
        let b = *self.data.get(self.pos).ok_or(GiveUp)?;
        self.pos += 1;
        Ok(b)
    }

    #[inline(always)]
    fn varint(&mut self) -> Result<u64, GiveUp> {
        let b0 = self.u8()?;
        if b0 < 0x80 {
            return Ok(b0 as u64);
        }
        let b1 = self.u8()?;
        let mut v = (b0 & 0x7f) as u64 | ((b1 & 0x7f) as u64) << 7;
        if b1 < 0x80 {
            return Ok(v);
        }
        // As `Decoder::varint`: at most ten bytes, the bits past 64 dropped.
        let mut shift = 14;
        loop {
            let b = self.u8()?;
            if shift >= 64 {
                return Err(GiveUp);
            }
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
        }
    }

    #[inline(always)]
    fn u32_varint(&mut self) -> Result<u32, GiveUp> {
        u32::try_from(self.varint()?).map_err(|_| GiveUp)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], GiveUp> {
        let b = self.data.get(self.pos..self.pos + N).ok_or(GiveUp)?;
        self.pos += N;
        Ok(b.try_into().unwrap())
    }
}

/// Decodes `payload`: `heap(is_alloc, seq, stack, size, addr)` for each
/// heap event (an allocation or a free), `cpu(in_lineprof, stack, count)` for each CPU sample, in the
/// payload's order. On `GiveUp` some calls may have been made: the caller
/// undoes them.
#[inline]
pub fn decode(
    payload: &[u8],
    mut heap: impl FnMut(bool, u64, u32, u64, u64),
    mut cpu: impl FnMut(bool, u32, u32),
) -> Result<(), GiveUp> {
    let mut r = Reader {
        data: payload,
        pos: 0,
    };
    let _thread = r.fixed::<4>()?;
    let mut seq = u64::from_le_bytes(r.fixed::<8>()?);
    let (mut addr, mut other) = (0u64, 0u64);
    while r.pos < payload.len() {
        let t = r.u8()?;
        match t {
            tag::ALLOC | tag::FREE | tag::ALLOC_OTHER | tag::FREE_OTHER => {
                seq = seq.wrapping_add(r.varint()?);
                let stack = r.u32_varint()?;
                let size = r.varint()?;
                (addr, other) = next_addr(t, addr, other, r.varint()?);
                heap(t & !tag::OTHER_BASE == tag::ALLOC, seq, stack, size, addr);
            }
            tag::CPU | tag::CPU_LINEPROF => {
                let stack = r.u32_varint()?;
                let count = r.u32_varint()?;
                r.varint()?;
                cpu(t == tag::CPU_LINEPROF, stack, count);
            }
            tag::TIME => {
                r.varint()?;
            }
            _ => return Err(GiveUp),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lineprof::format::{self, Event};

    /// An event as (kind: 0 alloc, 1 free, 2 CPU, 3 lineprof's CPU, 4 a
    /// stack copy; seq, stack, size or count, addr).
    type Decoded = (u8, u64, u64, u64, u64);

    /// What `decode_events` gives, in the fast path's terms.
    fn reference(payload: &[u8]) -> Option<Vec<Decoded>> {
        let mut out = Vec::new();
        format::decode_events(payload, |ev| match ev {
            Event::Alloc {
                seq,
                stack,
                size,
                addr,
            } => out.push((0, seq, stack as u64, size, addr)),
            Event::Free {
                seq,
                stack,
                size,
                addr,
            } => out.push((1, seq, stack as u64, size, addr)),
            Event::Cpu { stack, count, .. } => out.push((2, 0, stack as u64, count as u64, 0)),
            Event::CpuLineprof { stack, count, .. } => {
                out.push((3, 0, stack as u64, count as u64, 0))
            }
            Event::CpuStackCopy { .. } => out.push((4, 0, 0, 0, 0)),
            Event::Time { .. } => {}
        })
        .ok()?;
        Some(out)
    }

    fn fast(payload: &[u8]) -> Option<Vec<Decoded>> {
        let out = std::cell::RefCell::new(Vec::new());
        decode(
            payload,
            |alloc, seq, stack, size, addr| {
                let k = if alloc { 0 } else { 1 };
                out.borrow_mut().push((k, seq, stack as u64, size, addr))
            },
            |own, stack, count| {
                out.borrow_mut()
                    .push((2 + own as u8, 0, stack as u64, count as u64, 0))
            },
        )
        .ok()?;
        Some(out.into_inner())
    }

    /// Payloads of random events, then every prefix and many one-byte
    /// changes of them: wherever the fast path gives an answer it is the
    /// reference's, and it answers every well-formed payload without a
    /// stack copy.
    #[test]
    fn agrees_with_the_reference_decoder() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..300 {
            let mut p = vec![7, 0, 0, 0];
            p.extend_from_slice(&(next() >> (next() % 64)).to_le_bytes());
            let v = |p: &mut Vec<u8>, mut n: u64| {
                while n >= 0x80 {
                    p.push(n as u8 | 0x80);
                    n >>= 7;
                }
                p.push(n as u8);
            };
            for _ in 0..next() % 40 {
                let big = |r: u64| r >> (r % 64);
                match next() % 5 {
                    0 | 1 => {
                        let base = if next() % 3 == 0 { tag::OTHER_BASE } else { 0 };
                        p.push(if next() % 2 == 0 {
                            tag::ALLOC | base
                        } else {
                            tag::FREE | base
                        });
                        for _ in 0..4 {
                            v(&mut p, big(next()));
                        }
                    }
                    2 => {
                        p.push(tag::CPU);
                        for _ in 0..3 {
                            v(&mut p, next() % 70_000);
                        }
                    }
                    3 => {
                        p.push(tag::CPU_LINEPROF);
                        for _ in 0..3 {
                            v(&mut p, big(next()));
                        }
                    }
                    _ => {
                        p.push(tag::TIME);
                        v(&mut p, big(next()));
                    }
                }
            }
            let want = reference(&p);
            let got = fast(&p);
            assert_eq!(got, want);
            for cut in 0..p.len() {
                if let Some(got) = fast(&p[..cut]) {
                    assert_eq!(Some(got), reference(&p[..cut]));
                }
            }
            for _ in 0..20 {
                let mut q = p.clone();
                let i = (next() as usize) % q.len();
                q[i] = next() as u8;
                if let Some(got) = fast(&q) {
                    assert_eq!(Some(got), reference(&q));
                }
            }
        }
        // Eleven-byte varints and unknown tags give up; so the reference
        // says what is wrong.
        let mut p = vec![0; 12];
        p.push(tag::TIME);
        p.extend_from_slice(&[0xff; 10]);
        p.push(1);
        assert_eq!(fast(&p), None);
        assert_eq!(fast(&[0; 13]), None);
    }
}
