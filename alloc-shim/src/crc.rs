//! CRC-32C (Castagnoli), the checksum of every profile chunk. Computed
//! inside the profiled program for each 256 KiB chunk it writes, so it uses
//! the CPU's `crc32` instruction where there is one.

/// CRC-32C (Castagnoli) of `data`: x86-64's `crc32` instruction where the
/// CPU has SSE4.2 (nearly every x86-64 CPU since 2008), else a table eight
/// bytes at a time. The writer checksums every chunk inside the profiled
/// program, so this is part of the allocator's amortised cost.
pub fn crc32(data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_sse42() {
            // SAFETY: the CPU supports SSE4.2 (checked above).
            return unsafe { crc32c_hw(data) };
        }
    }
    crc32c_sw(data)
}

#[cfg(target_arch = "x86_64")]
fn has_sse42() -> bool {
    use std::sync::atomic::{AtomicU8, Ordering};
    // 0: not yet asked, 1: no, 2: yes. `is_x86_feature_detected!` itself
    // caches too; this keeps the allocator's path to one load.
    static HAS: AtomicU8 = AtomicU8::new(0);
    match HAS.load(Ordering::Relaxed) {
        0 => {
            let yes = std::arch::is_x86_feature_detected!("sse4.2");
            HAS.store(if yes { 2 } else { 1 }, Ordering::Relaxed);
            yes
        }
        v => v == 2,
    }
}

/// Below this length the three lanes' combination is not worth it.
#[cfg(target_arch = "x86_64")]
const THREE_LANES_MIN: usize = 16 * 1024;

/// The CRC register (not inverted) after `data`, starting from `crc`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_hw_lane(mut crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut chunks = data.chunks_exact(8);
    let mut c64 = crc as u64;
    for c in &mut chunks {
        c64 = _mm_crc32_u64(c64, u64::from_le_bytes(c.try_into().unwrap()));
    }
    crc = c64 as u32;
    for &b in chunks.remainder() {
        crc = _mm_crc32_u8(crc, b);
    }
    crc
}

/// The `crc32` instruction has a latency of three cycles and a throughput
/// of one a cycle: a chunk is checksummed as three lanes in one loop, three
/// independent chains, and the lanes' registers combined with
/// `shift` (polynomial arithmetic, once per call). Three times the speed of
/// one chain on a 256 KiB chunk.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn crc32c_hw(data: &[u8]) -> u32 {
    use std::arch::x86_64::_mm_crc32_u64;
    if data.len() < THREE_LANES_MIN {
        // SAFETY: SSE4.2, as for this function.
        return !unsafe { crc32c_hw_lane(!0, data) };
    }
    let lane = data.len() / 24 * 8;
    let (a, rest) = data.split_at(lane);
    let (b, rest) = rest.split_at(lane);
    let (c, tail) = rest.split_at(lane);
    let (mut ra, mut rb, mut rc) = (!0u32 as u64, 0u64, 0u64);
    let word = |s: &[u8], i: usize| u64::from_le_bytes(s[i..i + 8].try_into().unwrap());
    let mut i = 0;
    while i < lane {
        ra = _mm_crc32_u64(ra, word(a, i));
        rb = _mm_crc32_u64(rb, word(b, i));
        rc = _mm_crc32_u64(rc, word(c, i));
        i += 8;
    }
    let k = shift_operator(lane);
    let crc = mul(k, mul(k, ra as u32) ^ rb as u32) ^ rc as u32;
    // SAFETY: SSE4.2, as for this function.
    !unsafe { crc32c_hw_lane(crc, tail) }
}

/// `a * b` modulo the polynomial, in the reflected representation (bit 31
/// is x^0), as zlib's `multmodp`.
#[cfg(target_arch = "x86_64")]
const fn mul(a: u32, mut b: u32) -> u32 {
    let mut m = 1u32 << 31;
    let mut p = 0;
    while m != 0 {
        if a & m != 0 {
            p ^= b;
        }
        m >>= 1;
        b = if b & 1 != 0 { (b >> 1) ^ POLY } else { b >> 1 };
    }
    p
}

/// `ZEROS[k]` = x^(8 * 2^k) modulo the polynomial: multiplying a CRC
/// register by it is feeding it 2^k zero bytes.
#[cfg(target_arch = "x86_64")]
const ZEROS: [u32; 32] = {
    let mut t = [0u32; 32];
    t[0] = 1 << 23; // x^8
    let mut k = 1;
    while k < 32 {
        t[k] = mul(t[k - 1], t[k - 1]);
        k += 1;
    }
    t
};

/// x^(8 * bytes) modulo the polynomial: multiplying a CRC register by it is
/// feeding it `bytes` zero bytes. One product per set bit of `bytes`.
#[cfg(target_arch = "x86_64")]
fn shift_operator(bytes: usize) -> u32 {
    let mut p = 1u32 << 31; // x^0
    let mut k = 0;
    let mut n = bytes;
    while n != 0 && k < ZEROS.len() {
        if n & 1 != 0 {
            p = mul(ZEROS[k], p);
        }
        n >>= 1;
        k += 1;
    }
    p
}

fn crc32c_sw(data: &[u8]) -> u32 {
    const T: [[u32; 256]; 8] = make_crc_tables();
    let mut crc = !0u32;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let lo = crc ^ u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        crc = T[7][(lo & 0xff) as usize]
            ^ T[6][((lo >> 8) & 0xff) as usize]
            ^ T[5][((lo >> 16) & 0xff) as usize]
            ^ T[4][(lo >> 24) as usize]
            ^ T[3][c[4] as usize]
            ^ T[2][c[5] as usize]
            ^ T[1][c[6] as usize]
            ^ T[0][c[7] as usize];
    }
    for &b in chunks.remainder() {
        crc = T[0][((crc ^ b as u32) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

/// Reflected CRC-32C polynomial.
const POLY: u32 = 0x82F6_3B78;

const fn make_crc_tables() -> [[u32; 256]; 8] {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { POLY ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut k = 1;
        while k < 8 {
            let prev = t[k - 1][i];
            t[k][i] = (prev >> 8) ^ t[0][(prev & 0xff) as usize];
            k += 1;
        }
        i += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_known_value() {
        assert_eq!(crc32(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_sw(b"123456789"), 0xE306_9283);
        // Every length around the 8-byte stride: hardware, table and the
        // bitwise definition agree.
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        for n in 0..data.len() {
            let mut crc = !0u32;
            for &b in &data[..n] {
                crc ^= b as u32;
                for _ in 0..8 {
                    crc = if crc & 1 != 0 {
                        POLY ^ (crc >> 1)
                    } else {
                        crc >> 1
                    };
                }
            }
            assert_eq!(crc32c_sw(&data[..n]), !crc, "length {n}");
            assert_eq!(crc32(&data[..n]), !crc, "length {n}");
        }
    }

    #[test]
    fn three_lanes_give_the_one_chain_result() {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let data: Vec<u8> = (0..300_000)
            .map(|_| {
                x = crate::thread::xorshift(x);
                x as u8
            })
            .collect();
        for n in [
            0, 1, 3071, 3072, 3073, 3080, 4095, 10_007, 65_536, 262_144, 299_999,
        ] {
            assert_eq!(crc32(&data[..n]), crc32c_sw(&data[..n]), "length {n}");
        }
    }
}
