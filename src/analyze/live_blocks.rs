//! The table of live heap blocks the replay keeps: address -> (stack, size).
//!
//! A big profile holds tens of millions of live blocks at its peak, and
//! every heap event looks one up, so the table decides the replay's speed
//! and memory. A hash over the whole address sends each lookup to a random
//! place in a table of hundreds of MB (a cache miss per event, ~60 ns here);
//! a hash that keeps neighbouring addresses together clusters badly where
//! small blocks lie dense. So the table has two levels: the 4 KiB page an
//! address lies in (a small map, hit again and again by the allocator's
//! habit of handing out neighbouring blocks one after another), then, per
//! page, a small open-addressing table of the blocks that start in it, at
//! most 4096 slots, which stays in the cache while the page is busy and
//! whose probe runs the page bounds whatever the addresses are.
//!
//! Memory is 12 bytes per slot at a load of 7/16 to 7/8 (about 18 bytes
//! per live block), at least 8 slots and ~60 bytes more per page holding a
//! live block: it follows the live blocks, never the number of events.
//! Sizes of 4 GiB and more go to a side map.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

const PAGE_BITS: u32 = 12;
const OFFSET_MASK: u64 = (1 << PAGE_BITS) - 1;
/// A size that does not fit a slot: the real one is in `big_sizes`.
const BIG: u32 = u32::MAX;

/// A live block's allocating stack and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Block {
    pub stack: u32,
    pub size: u64,
}

#[derive(Clone, Copy, Default)]
struct Slot {
    /// Offset in the page plus one; 0 is an empty slot.
    key: u32,
    stack: u32,
    size: u32,
}

/// One page's blocks: linear probing over a power-of-two number of slots,
/// deletion by shifting the following run back (no tombstones).
struct PageTable {
    slots: Box<[Slot]>,
    len: u32,
}

impl PageTable {
    fn new() -> PageTable {
        PageTable {
            slots: vec![Slot::default(); 8].into_boxed_slice(),
            len: 0,
        }
    }

    #[inline]
    fn home(&self, key: u32) -> usize {
        // Fibonacci hashing of the 12-bit offset: blocks at a regular
        // stride still spread over the slots.
        let bits = self.slots.len().trailing_zeros();
        (key.wrapping_mul(0x9E37_79B9) >> (32 - bits)) as usize
    }

    #[inline]
    fn find(&self, key: u32) -> Option<usize> {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            let k = self.slots[i].key;
            if k == key {
                return Some(i);
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    /// Puts `slot` in; returns the slot it replaced (same key).
    #[inline]
    fn insert(&mut self, slot: Slot) -> Option<Slot> {
        if (self.len as usize + 1) * 8 > self.slots.len() * 7 {
            self.grow();
        }
        let mask = self.slots.len() - 1;
        let mut i = self.home(slot.key);
        loop {
            let k = self.slots[i].key;
            if k == slot.key {
                return Some(std::mem::replace(&mut self.slots[i], slot));
            }
            if k == 0 {
                self.slots[i] = slot;
                self.len += 1;
                return None;
            }
            i = (i + 1) & mask;
        }
    }

    #[inline]
    fn remove(&mut self, key: u32) -> Option<Slot> {
        let mask = self.slots.len() - 1;
        let i = self.find(key)?;
        let out = self.slots[i];
        // Shift back each following slot of the run that may move to the
        // hole (its home is not in (hole, j]).
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slots[j];
            if s.key == 0 {
                break;
            }
            let home = self.home(s.key);
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        Some(out)
    }

    fn grow(&mut self) {
        let n = self.slots.len() * 2;
        let old = std::mem::replace(&mut self.slots, vec![Slot::default(); n].into_boxed_slice());
        self.len = 0;
        for s in old.iter().filter(|s| s.key != 0) {
            self.insert(*s);
        }
    }
}

/// Multiplicative hash of a page number for the page map.
#[derive(Default, Clone, Copy)]
struct PageHasher(u64);

impl Hasher for PageHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    fn write_u64(&mut self, n: u64) {
        let m = (self.0 ^ n) as u128 * 0x9E37_79B9_7F4A_7C15u128;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

/// Live blocks by address.
#[derive(Default)]
pub struct LiveBlocks {
    /// Page number -> index in `tables`.
    pages: HashMap<u64, u32, BuildHasherDefault<PageHasher>>,
    tables: Vec<PageTable>,
    /// Indices in `tables` of pages emptied, for reuse.
    spare: Vec<u32>,
    /// The last page looked up and its table.
    last: Option<(u64, u32)>,
    big_sizes: HashMap<u64, u64, BuildHasherDefault<PageHasher>>,
    len: usize,
}

impl LiveBlocks {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn table_of(&mut self, page: u64) -> Option<u32> {
        if let Some((p, t)) = self.last {
            if p == page {
                return Some(t);
            }
        }
        let t = *self.pages.get(&page)?;
        self.last = Some((page, t));
        Some(t)
    }

    /// Records a block allocated at `addr`; returns the block that was
    /// live there (its free was lost).
    #[inline]
    pub fn insert(&mut self, addr: u64, block: Block) -> Option<Block> {
        let page = addr >> PAGE_BITS;
        let t = match self.table_of(page) {
            Some(t) => t,
            None => {
                let t = match self.spare.pop() {
                    Some(t) => t,
                    None => {
                        self.tables.push(PageTable::new());
                        self.tables.len() as u32 - 1
                    }
                };
                self.pages.insert(page, t);
                self.last = Some((page, t));
                t
            }
        };
        let (size, old_big) = if block.size >= BIG as u64 {
            (BIG, self.big_sizes.insert(addr, block.size))
        } else {
            (block.size as u32, None)
        };
        let slot = Slot {
            key: (addr & OFFSET_MASK) as u32 + 1,
            stack: block.stack,
            size,
        };
        let old = self.tables[t as usize].insert(slot);
        let Some(old) = old else {
            self.len += 1;
            return None;
        };
        let size = match (old.size == BIG, size == BIG) {
            (false, _) => old.size as u64,
            (true, true) => old_big.unwrap_or(BIG as u64),
            (true, false) => self.big_sizes.remove(&addr).unwrap_or(BIG as u64),
        };
        Some(Block {
            stack: old.stack,
            size,
        })
    }

    /// Takes the block live at `addr` out, if there is one.
    #[inline]
    pub fn remove(&mut self, addr: u64) -> Option<Block> {
        let page = addr >> PAGE_BITS;
        let t = self.table_of(page)?;
        let table = &mut self.tables[t as usize];
        let slot = table.remove((addr & OFFSET_MASK) as u32 + 1)?;
        if table.len == 0 {
            // Keep the table's slots for the page that reuses it.
            self.pages.remove(&page);
            self.spare.push(t);
            self.last = None;
        }
        self.len -= 1;
        let size = if slot.size == BIG {
            self.big_sizes.remove(&addr).unwrap_or(BIG as u64)
        } else {
            slot.size as u64
        };
        Some(Block {
            stack: slot.stack,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against a plain map, with dense, strided, colliding, huge and
    /// repeated addresses and sizes of 4 GiB and more.
    #[test]
    fn agrees_with_a_hash_map() {
        let mut live = LiveBlocks::default();
        let mut model: HashMap<u64, Block> = HashMap::new();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        for i in 0..200_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let addr = match x % 5 {
                0 => 0x5555_0000 + (x >> 8) % 5000 * 16,
                1 => 0x7f00_0000_0000 + (x >> 8) % 300 * 4096,
                2 => (x >> 8) % 64,
                3 => u64::MAX - (x >> 8) % 7,
                _ => 0x1000 + (x >> 8) % 20_000,
            };
            let size = if x.is_multiple_of(97) {
                1 << 33
            } else {
                x % 200
            };
            if x.is_multiple_of(3) {
                assert_eq!(live.remove(addr), model.remove(&addr), "event {i}");
            } else {
                let b = Block {
                    stack: (x >> 40) as u32,
                    size,
                };
                assert_eq!(live.insert(addr, b), model.insert(addr, b), "event {i}");
            }
            assert_eq!(live.len(), model.len());
        }
        for (addr, b) in model {
            assert_eq!(live.remove(addr), Some(b));
        }
        assert!(live.is_empty());
        assert!(live.big_sizes.is_empty());
    }
}
