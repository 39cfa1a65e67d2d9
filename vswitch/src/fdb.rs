//! The forwarding database: the MAC learning table that PMD threads consult on every packet.
//!
//! The hot path ([`Fdb::learn`], [`Fdb::lookup`]) allocates nothing, takes no lock and makes
//! no system call: the table is a fixed array of atomics allocated once in [`Fdb::new`].
//!
//! Layout: 128-byte buckets (two adjacent cache lines, which the spatial prefetcher fetches as
//! a pair) holding a sequence word, 7 keys and 7 values. A key lives only in the bucket its
//! hash names, so a lookup touches one bucket and needs no tombstones.
//!
//! Consistency: a key and its value are two separate 64-bit words (the 108 bits of VLAN, MAC,
//! port and timestamp do not fit one), so a reader could otherwise pair a key with a value
//! written for another key that reused the slot. Each bucket therefore carries a 64-bit
//! sequence number, odd while a writer is inside: readers retry when it moves (a seqlock), and
//! writers enter only by a compare-exchange from the exact even value they read their
//! snapshot under. A PMD that loses that race does not wait: it skips learning for this
//! packet ([`LearnOutcome::Contended`]) and the next packet from the MAC learns it. Only the
//! control thread ([`Fdb::expire`], [`Fdb::flush_port`]) waits for a bucket. The worst a race
//! gives is a miss (one flooded packet) or the port a MAC had a moment ago; never a value that
//! belonged to another key, never a half-written entry.
//!
//! Writes happen only when something changes, and a timestamp at most once per second per
//! MAC, so in steady state learning is read-only and the buckets stay shared in every core's
//! cache instead of bouncing between them.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{fence, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Slots per bucket: 7 keys + the sequence word fill the first cache line.
const SLOTS: usize = 7;
const VALID: u64 = 1 << 63;
const MAC_MASK: u64 = (1 << 48) - 1;
const VLAN_SHIFT: u32 = 48;
const PORT_SHIFT: u32 = 32;
/// A reader that keeps seeing a writer inside gives up and reports a miss rather than spin:
/// writers hold a bucket for a few stores, so this only trips if one was preempted there.
const READ_RETRIES: usize = 8;

/// What [`Fdb::learn`] did with a source address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LearnOutcome {
    /// A new entry (or an expired one revived).
    New,
    /// The MAC was known on another port; it now points to this one.
    Moved,
    /// Known on this port; its timestamp advanced.
    Refreshed,
    /// Known on this port and already stamped this second: nothing written.
    Unchanged,
    /// The bucket has no free or expired slot; counted in [`FdbCounters::full`].
    Full,
    /// Another writer was inside the bucket; nothing written, the next packet retries.
    Contended,
    /// Multicast, broadcast or all-zero source address, or a VLAN id above 4095: never learned.
    Refused,
}

/// One live entry, as shown by `vswitchctl fdb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbEntry {
    /// 0 for the untagged domain.
    pub vlan: u16,
    #[serde(with = "mac_text")]
    pub mac: [u8; 6],
    pub port: u16,
    pub age_secs: u32,
}

/// Event counters, cumulative since the table was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbCounters {
    pub learned: u64,
    pub moved: u64,
    pub full: u64,
    pub contended: u64,
    pub expired: u64,
    pub flushed: u64,
}

#[derive(Default)]
#[repr(C, align(128))]
struct Bucket {
    seq: AtomicU64,
    keys: [AtomicU64; SLOTS],
    values: [AtomicU64; SLOTS],
}

/// Every PMD may bump these, so each sits on its own cache line; they only move on rare
/// events (new, moved, full), never on a steady-state hit.
#[derive(Default)]
#[repr(align(64))]
struct Counter(AtomicU64);

impl Counter {
    fn bump(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The MAC learning table. Share it as `Arc<Fdb>` between PMD threads and the control thread.
pub struct Fdb {
    buckets: Box<[Bucket]>,
    mask: usize,
    aging_secs: u32,
    /// Per-table random key for the bucket hash, so that a guest cannot pick source MACs
    /// that all land in one bucket of every switch (a cheap, not cryptographic, defence).
    seed: u64,
    learned: Counter,
    moved: Counter,
    full: Counter,
    contended: Counter,
    expired: Counter,
    flushed: Counter,
}

/// A bucket snapshot taken under one even sequence number.
struct Snapshot {
    keys: [u64; SLOTS],
    values: [u64; SLOTS],
}

fn make_key(vlan: u16, mac: [u8; 6]) -> u64 {
    let [a, b, c, d, e, f] = mac;
    VALID | (u64::from(vlan) << VLAN_SHIFT) | u64::from_be_bytes([0, 0, a, b, c, d, e, f])
}

fn key_vlan(key: u64) -> u16 {
    u16::try_from((key >> VLAN_SHIFT) & 0xfff).unwrap_or(0)
}

fn key_mac(key: u64) -> [u8; 6] {
    let b = (key & MAC_MASK).to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

fn make_value(port: u16, seen: u32) -> u64 {
    (u64::from(port) << PORT_SHIFT) | u64::from(seen)
}

fn value_port(value: u64) -> u16 {
    u16::try_from((value >> PORT_SHIFT) & 0xffff).unwrap_or(0)
}

fn value_seen(value: u64) -> u32 {
    u32::try_from(value & 0xffff_ffff).unwrap_or(0)
}

/// Seconds since `seen`, clamped at 0: PMD threads keep their own clocks and one may stamp
/// an entry a second ahead of another's `now`, which must read as fresh, not as ancient.
fn age(now: u32, seen: u32) -> u32 {
    let d = now.wrapping_sub(seen);
    if d > u32::MAX / 2 {
        0
    } else {
        d
    }
}

/// Group bit set (multicast, broadcast) or all zero: not a station address.
fn is_learnable(mac: [u8; 6]) -> bool {
    mac[0] & 1 == 0 && mac != [0; 6]
}

impl Fdb {
    /// A table for at least `capacity` entries: the bucket count is rounded up to a power of
    /// two, 7 entries per bucket, so [`Fdb::capacity`] may be larger. Entries not seen for
    /// `aging_secs` seconds are misses and [`Fdb::expire`] reclaims them.
    pub fn new(capacity: usize, aging_secs: u32) -> Fdb {
        let buckets = capacity.div_ceil(SLOTS).max(1).next_power_of_two();
        let mut h = RandomState::new().build_hasher();
        h.write_usize(buckets);
        Fdb {
            buckets: (0..buckets).map(|_| Bucket::default()).collect(),
            mask: buckets - 1,
            aging_secs: aging_secs.max(1),
            seed: h.finish(),
            learned: Counter::default(),
            moved: Counter::default(),
            full: Counter::default(),
            contended: Counter::default(),
            expired: Counter::default(),
            flushed: Counter::default(),
        }
    }

    /// Entries the table can hold (all buckets full).
    pub fn capacity(&self) -> usize {
        self.buckets.len() * SLOTS
    }

    pub fn aging_secs(&self) -> u32 {
        self.aging_secs
    }

    pub fn counters(&self) -> FdbCounters {
        FdbCounters {
            learned: self.learned.get(),
            moved: self.moved.get(),
            full: self.full.get(),
            contended: self.contended.get(),
            expired: self.expired.get(),
            flushed: self.flushed.get(),
        }
    }

    fn bucket(&self, key: u64) -> &Bucket {
        // A multiply-xorshift mix: a few cycles, and every key bit reaches the high bits.
        let mut x = key ^ self.seed;
        x = (x ^ (x >> 31)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x ^= x >> 29;
        // Only the low bits (below the mask, < 2^usize::BITS) are kept, so the cast is exact.
        let i = usize::try_from(x & (self.mask as u64)).unwrap_or(0);
        &self.buckets[i]
    }

    /// The clock ticks once a second, so an age of `aging_secs` may mean anything from
    /// `aging_secs` to `aging_secs + 1` seconds of silence: an entry lives through it rather
    /// than die up to a second early (a MAC heard every 300 ms must never be forgotten with a
    /// one-second aging).
    fn live(&self, value: u64, now: u32) -> bool {
        age(now, value_seen(value)) <= self.aging_secs
    }

    /// A consistent copy of the bucket, or `None` if writers kept it busy.
    fn snapshot(bucket: &Bucket, retries: usize) -> Option<Snapshot> {
        for _ in 0..retries {
            let seq = bucket.seq.load(Ordering::Acquire);
            if seq & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let keys = std::array::from_fn(|i| bucket.keys[i].load(Ordering::Relaxed));
            let values = std::array::from_fn(|i| bucket.values[i].load(Ordering::Relaxed));
            // Orders the data loads before the re-check (the seqlock reader's half).
            fence(Ordering::Acquire);
            if bucket.seq.load(Ordering::Relaxed) == seq {
                return Some(Snapshot { keys, values });
            }
        }
        None
    }

    /// Enters the bucket only if nothing changed since `seq` was read, so the caller's
    /// snapshot is still the truth and needs no re-check.
    fn try_enter(bucket: &Bucket, seq: u64) -> bool {
        let entered = bucket
            .seq
            .compare_exchange(seq, seq + 1, Ordering::Acquire, Ordering::Relaxed)
            .is_ok();
        if entered {
            // Keeps the slot stores below from becoming visible before the odd sequence.
            fence(Ordering::Release);
        }
        entered
    }

    fn leave(bucket: &Bucket, seq: u64) {
        bucket.seq.store(seq + 2, Ordering::Release);
    }

    /// Control-thread entry: waits for PMD writers, which hold a bucket for a few stores.
    fn enter_waiting(bucket: &Bucket) -> u64 {
        let mut spins = 0u32;
        loop {
            let seq = bucket.seq.load(Ordering::Relaxed);
            if seq & 1 == 0 && Fdb::try_enter(bucket, seq) {
                return seq;
            }
            spins += 1;
            if spins & 63 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }

    /// Records that `mac` in `vlan` was seen as a source on `port` at `now_secs`.
    pub fn learn(&self, vlan: u16, mac: [u8; 6], port: u16, now_secs: u32) -> LearnOutcome {
        if !is_learnable(mac) || vlan > 0xfff {
            return LearnOutcome::Refused;
        }
        let key = make_key(vlan, mac);
        let bucket = self.bucket(key);
        // Plan under one sequence number, reading only what the decision needs: in the
        // common case the keys' cache line and one value.
        let seq = bucket.seq.load(Ordering::Acquire);
        if seq & 1 == 1 {
            self.contended.bump(1);
            return LearnOutcome::Contended;
        }
        let mut found = None;
        let mut empty = None;
        for (i, k) in bucket.keys.iter().enumerate() {
            let k = k.load(Ordering::Relaxed);
            if k == key {
                found = Some(i);
                break;
            }
            if empty.is_none() && k & VALID == 0 {
                empty = Some(i);
            }
        }
        let plan = match (found, empty) {
            (Some(i), _) => {
                let v = bucket.values[i].load(Ordering::Relaxed);
                if !self.live(v, now_secs) {
                    Some((i, LearnOutcome::New))
                } else if value_port(v) != port {
                    Some((i, LearnOutcome::Moved))
                } else if age(now_secs, value_seen(v)) == 0 {
                    Some((i, LearnOutcome::Unchanged))
                } else {
                    Some((i, LearnOutcome::Refreshed))
                }
            }
            (None, Some(i)) => Some((i, LearnOutcome::New)),
            // An expired slot is as good as an empty one; `expire` may not have run yet.
            (None, None) => (0..SLOTS)
                .find(|&i| !self.live(bucket.values[i].load(Ordering::Relaxed), now_secs))
                .map(|i| (i, LearnOutcome::New)),
        };
        fence(Ordering::Acquire);
        if bucket.seq.load(Ordering::Relaxed) != seq {
            self.contended.bump(1);
            return LearnOutcome::Contended;
        }
        let (slot, outcome) = match plan {
            Some((_, LearnOutcome::Unchanged)) => return LearnOutcome::Unchanged,
            Some(p) => p,
            None => {
                self.full.bump(1);
                return LearnOutcome::Full;
            }
        };

        if !Fdb::try_enter(bucket, seq) {
            self.contended.bump(1);
            return LearnOutcome::Contended;
        }
        bucket.values[slot].store(make_value(port, now_secs), Ordering::Relaxed);
        if found.is_none() {
            bucket.keys[slot].store(key, Ordering::Relaxed);
        }
        Fdb::leave(bucket, seq);

        match outcome {
            LearnOutcome::New => self.learned.bump(1),
            LearnOutcome::Moved => self.moved.bump(1),
            _ => {}
        }
        outcome
    }

    /// The port `mac` in `vlan` was last seen on, if that was less than the aging time ago.
    pub fn lookup(&self, vlan: u16, mac: [u8; 6], now_secs: u32) -> Option<u16> {
        if vlan > 0xfff {
            return None;
        }
        let key = make_key(vlan, mac);
        let bucket = self.bucket(key);
        for _ in 0..READ_RETRIES {
            let seq = bucket.seq.load(Ordering::Acquire);
            if seq & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            // Only the matching slot's value is read: cheaper than a full snapshot, and the
            // sequence re-check still proves key and value were there together.
            let slot = bucket
                .keys
                .iter()
                .position(|k| k.load(Ordering::Relaxed) == key);
            let value = slot.map(|i| bucket.values[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if bucket.seq.load(Ordering::Relaxed) != seq {
                continue;
            }
            return value.filter(|&v| self.live(v, now_secs)).map(value_port);
        }
        None
    }

    /// Removes every entry pointing at `port` (the port went away or changed VLAN).
    /// Returns how many were removed.
    pub fn flush_port(&self, port: u16) -> usize {
        self.remove_where(|_, v| value_port(v) == port, &self.flushed)
    }

    /// Moves a live entry of `mac` in `vlan` onto `port` (a control plane chose it there) and
    /// returns the port it left; `None` when there is no live entry or it is on `port` already.
    /// Waits for PMD writers as `remove` does, so the move is never lost to contention.
    pub fn move_live(&self, vlan: u16, mac: [u8; 6], port: u16, now_secs: u32) -> Option<u16> {
        if vlan > 0xfff {
            return None;
        }
        let key = make_key(vlan, mac);
        let bucket = self.bucket(key);
        let seq = Fdb::enter_waiting(bucket);
        let old = (0..SLOTS)
            .find(|&i| bucket.keys[i].load(Ordering::Relaxed) == key)
            .and_then(|i| {
                let v = bucket.values[i].load(Ordering::Relaxed);
                let old = value_port(v);
                (self.live(v, now_secs) && old != port).then(|| {
                    bucket.values[i].store(make_value(port, now_secs), Ordering::Relaxed);
                    old
                })
            });
        Fdb::leave(bucket, seq);
        if old.is_some() {
            self.moved.bump(1);
        }
        old
    }

    /// Removes `mac` in `vlan` (a control plane withdrew it); whether it was there.
    pub fn remove(&self, vlan: u16, mac: [u8; 6]) -> bool {
        if vlan > 0xfff {
            return false;
        }
        let key = make_key(vlan, mac);
        let bucket = self.bucket(key);
        let seq = Fdb::enter_waiting(bucket);
        let slot = (0..SLOTS).find(|&i| bucket.keys[i].load(Ordering::Relaxed) == key);
        if let Some(i) = slot {
            bucket.keys[i].store(0, Ordering::Relaxed);
        }
        Fdb::leave(bucket, seq);
        if slot.is_some() {
            self.flushed.bump(1);
        }
        slot.is_some()
    }

    /// Removes every entry.
    pub fn flush_all(&self) -> usize {
        self.remove_where(|_, _| true, &self.flushed)
    }

    /// Reclaims entries older than the aging time. Lookups already treat them as misses;
    /// this frees their slots and keeps `entries` short. Returns how many were removed.
    pub fn expire(&self, now_secs: u32) -> usize {
        self.remove_where(|_, v| !self.live(v, now_secs), &self.expired)
    }

    fn remove_where(&self, doomed: impl Fn(u64, u64) -> bool, counter: &Counter) -> usize {
        let mut removed = 0;
        for bucket in self.buckets.iter() {
            // Look before entering: most buckets have nothing to remove, and entering one
            // would make concurrent PMD learns and lookups of it retry for nothing.
            let any = match Fdb::snapshot(bucket, READ_RETRIES) {
                Some(s) => {
                    (0..SLOTS).any(|i| s.keys[i] & VALID != 0 && doomed(s.keys[i], s.values[i]))
                }
                None => true,
            };
            if !any {
                continue;
            }
            let seq = Fdb::enter_waiting(bucket);
            let mut here = 0usize;
            for i in 0..SLOTS {
                let k = bucket.keys[i].load(Ordering::Relaxed);
                if k & VALID != 0 && doomed(k, bucket.values[i].load(Ordering::Relaxed)) {
                    bucket.keys[i].store(0, Ordering::Relaxed);
                    here += 1;
                }
            }
            Fdb::leave(bucket, seq);
            // Counted bucket by bucket, not after the whole scan: a reader never sees an entry
            // gone that the counter does not account for yet.
            counter.bump(u64::try_from(here).unwrap_or(u64::MAX));
            removed += here;
        }
        removed
    }

    /// Live entries, sorted by VLAN then MAC, for the control socket.
    pub fn entries(&self, now_secs: u32) -> Vec<FdbEntry> {
        let mut out = Vec::new();
        for bucket in self.buckets.iter() {
            let snap = match Fdb::snapshot(bucket, READ_RETRIES) {
                Some(s) => s,
                None => {
                    // Writers kept moving; enter to get a stable view (control thread: may wait).
                    let seq = Fdb::enter_waiting(bucket);
                    let s = Snapshot {
                        keys: std::array::from_fn(|i| bucket.keys[i].load(Ordering::Relaxed)),
                        values: std::array::from_fn(|i| bucket.values[i].load(Ordering::Relaxed)),
                    };
                    Fdb::leave(bucket, seq);
                    s
                }
            };
            for i in 0..SLOTS {
                let (k, v) = (snap.keys[i], snap.values[i]);
                if k & VALID != 0 && self.live(v, now_secs) {
                    out.push(FdbEntry {
                        vlan: key_vlan(k),
                        mac: key_mac(k),
                        port: value_port(v),
                        age_secs: age(now_secs, value_seen(v)),
                    });
                }
            }
        }
        out.sort_by_key(|e| (e.vlan, e.mac));
        out
    }
}

impl std::fmt::Debug for Fdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fdb")
            .field("capacity", &self.capacity())
            .field("aging_secs", &self.aging_secs)
            .field("counters", &self.counters())
            .finish()
    }
}

/// Formats a MAC as `52:54:00:12:34:56`.
pub fn format_mac(mac: [u8; 6]) -> String {
    let [a, b, c, d, e, f] = mac;
    format!("{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{f:02x}")
}

/// Parses `52:54:00:12:34:56` (or with `-` separators).
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split([':', '-']);
    for byte in &mut mac {
        let part = parts.next()?;
        // Two hex digits exactly: `from_str_radix` alone would take a sign (`+0`).
        if part.len() != 2 || !part.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// MACs travel as text in the control protocol: readable in `--json` output and scripts.
mod mac_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mac: &[u8; 6], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_mac(*mac))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 6], D::Error> {
        let text = String::deserialize(d)?;
        super::parse_mac(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a MAC address")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

    #[test]
    fn test_parse_mac_sign_in_a_field() {
        assert_eq!(parse_mac("52:54:+0:00:00:01"), None);
        assert_eq!(parse_mac("52-54-00-00-00-+1"), None);
        assert_eq!(parse_mac("52:54:00:00:00:01"), Some(A));
        assert_eq!(parse_mac("52-54-00-00-00-02"), Some(B));
    }

    #[test]
    fn test_fdb_bucket_is_two_cache_lines() {
        assert_eq!(std::mem::size_of::<Bucket>(), 128);
        assert_eq!(std::mem::align_of::<Bucket>(), 128);
    }

    #[test]
    fn test_fdb_capacity_rounds_up() {
        assert_eq!(Fdb::new(1, 300).capacity(), 7);
        assert_eq!(Fdb::new(8, 300).capacity(), 14);
        assert!(Fdb::new(65536, 300).capacity() >= 65536);
        assert_eq!(Fdb::new(0, 300).capacity(), 7);
    }

    #[test]
    fn test_fdb_learn_then_lookup() {
        let fdb = Fdb::new(1024, 300);
        assert_eq!(fdb.lookup(0, A, 10), None);
        assert_eq!(fdb.learn(0, A, 3, 10), LearnOutcome::New);
        assert_eq!(fdb.lookup(0, A, 10), Some(3));
        assert_eq!(fdb.lookup(0, B, 10), None);
        assert_eq!(fdb.counters().learned, 1);
    }

    #[test]
    fn test_fdb_vlans_are_separate() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(10, A, 1, 0);
        fdb.learn(20, A, 2, 0);
        assert_eq!(fdb.lookup(10, A, 0), Some(1));
        assert_eq!(fdb.lookup(20, A, 0), Some(2));
        assert_eq!(fdb.lookup(0, A, 0), None);
        assert_eq!(fdb.lookup(4095, A, 0), None);
        assert_eq!(fdb.lookup(4096, A, 0), None);
    }

    #[test]
    fn test_fdb_refresh_at_most_once_per_second() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(0, A, 1, 100);
        let seq = |f: &Fdb| f.bucket(make_key(0, A)).seq.load(Ordering::Relaxed);
        let before = seq(&fdb);
        assert_eq!(fdb.learn(0, A, 1, 100), LearnOutcome::Unchanged);
        assert_eq!(seq(&fdb), before, "a same-second hit must not write");
        assert_eq!(fdb.learn(0, A, 1, 101), LearnOutcome::Refreshed);
        assert_ne!(seq(&fdb), before);
        assert_eq!(fdb.entries(101)[0].age_secs, 0);
    }

    #[test]
    fn test_fdb_stamp_from_a_clock_ahead_is_fresh() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(0, A, 1, 101);
        assert_eq!(fdb.learn(0, A, 1, 100), LearnOutcome::Unchanged);
        assert_eq!(fdb.lookup(0, A, 100), Some(1));
        assert_eq!(fdb.entries(100)[0].age_secs, 0);
    }

    #[test]
    fn test_fdb_writer_inside_bucket() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(0, A, 1, 0);
        let bucket = fdb.bucket(make_key(0, A));
        // As if a PMD were preempted between entering and leaving this bucket.
        let seq = bucket.seq.fetch_add(1, Ordering::Relaxed);
        assert_eq!(fdb.learn(0, A, 2, 5), LearnOutcome::Contended);
        assert_eq!(fdb.lookup(0, A, 5), None, "a busy bucket reads as a miss");
        assert_eq!(fdb.counters().contended, 1);
        bucket.seq.store(seq + 2, Ordering::Relaxed);
        assert_eq!(fdb.lookup(0, A, 5), Some(1));
        assert_eq!(fdb.learn(0, A, 2, 5), LearnOutcome::Moved);
    }

    #[test]
    fn test_fdb_move() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(0, A, 1, 0);
        assert_eq!(fdb.learn(0, A, 2, 0), LearnOutcome::Moved);
        assert_eq!(fdb.lookup(0, A, 0), Some(2));
        assert_eq!(fdb.counters().moved, 1);
        assert_eq!(fdb.counters().learned, 1);
    }

    #[test]
    fn test_fdb_multicast_source_refused() {
        let fdb = Fdb::new(1024, 300);
        for mac in [
            [0xff; 6],
            [0x01, 0x00, 0x5e, 0, 0, 1],
            [0x33, 0x33, 0, 0, 0, 1],
            [0; 6],
        ] {
            assert_eq!(fdb.learn(0, mac, 1, 0), LearnOutcome::Refused);
            assert_eq!(fdb.lookup(0, mac, 0), None);
        }
        assert_eq!(fdb.learn(4096, A, 1, 0), LearnOutcome::Refused);
        assert!(fdb.entries(0).is_empty());
    }

    #[test]
    fn test_fdb_expired_entry_is_miss_and_reclaimed() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(0, A, 1, 1000);
        fdb.learn(0, B, 1, 1200);
        assert_eq!(
            fdb.lookup(0, A, 1300),
            Some(1),
            "alive at exactly aging_secs"
        );
        assert_eq!(
            fdb.lookup(0, A, 1301),
            None,
            "aged out one tick after aging_secs"
        );
        assert_eq!(fdb.entries(1301).len(), 1);
        assert_eq!(fdb.expire(1301), 1);
        assert_eq!(fdb.counters().expired, 1);
        assert_eq!(fdb.lookup(0, B, 1301), Some(1));
        assert_eq!(fdb.learn(0, A, 1, 1301), LearnOutcome::New);
    }

    #[test]
    fn test_fdb_timestamps_wrap() {
        let fdb = Fdb::new(1024, 300);
        let t = u32::MAX - 10;
        fdb.learn(0, A, 1, t);
        assert_eq!(fdb.lookup(0, A, t.wrapping_add(100)), Some(1));
        assert_eq!(fdb.lookup(0, A, t.wrapping_add(300)), Some(1));
        assert_eq!(fdb.lookup(0, A, t.wrapping_add(301)), None);
    }

    #[test]
    fn test_fdb_flush_port() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(0, A, 1, 0);
        fdb.learn(0, B, 2, 0);
        fdb.learn(7, B, 1, 0);
        assert_eq!(fdb.flush_port(1), 2);
        assert_eq!(fdb.lookup(0, A, 0), None);
        assert_eq!(fdb.lookup(7, B, 0), None);
        assert_eq!(fdb.lookup(0, B, 0), Some(2));
        assert_eq!(fdb.flush_all(), 1);
        assert!(fdb.entries(0).is_empty());
        assert_eq!(fdb.counters().flushed, 3);
    }

    #[test]
    fn test_fdb_remove_one() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(0, A, 1, 0);
        fdb.learn(0, B, 1, 0);
        assert!(fdb.remove(0, A));
        assert!(!fdb.remove(0, A), "already gone");
        assert!(!fdb.remove(4096, B));
        assert_eq!(fdb.lookup(0, A, 0), None);
        assert_eq!(fdb.lookup(0, B, 0), Some(1));
        assert_eq!(fdb.counters().flushed, 1);
    }

    #[test]
    fn test_fdb_table_full() {
        // One bucket: the 8th distinct MAC finds no slot.
        let fdb = Fdb::new(SLOTS, 300);
        for i in 0..SLOTS {
            let mac = [2, 0, 0, 0, 0, u8::try_from(i).unwrap()];
            assert_eq!(fdb.learn(0, mac, 1, 0), LearnOutcome::New);
        }
        assert_eq!(fdb.learn(0, [2, 0, 0, 0, 1, 0], 1, 0), LearnOutcome::Full);
        assert_eq!(fdb.counters().full, 1);
        assert_eq!(fdb.lookup(0, [2, 0, 0, 0, 1, 0], 0), None);
        // An expired slot is reused without waiting for `expire`.
        assert_eq!(fdb.learn(0, [2, 0, 0, 0, 1, 0], 1, 301), LearnOutcome::New);
        assert_eq!(fdb.lookup(0, [2, 0, 0, 0, 1, 0], 301), Some(1));
        assert_eq!(fdb.entries(301).len(), 1);
    }

    #[test]
    fn test_fdb_entries_report_key_and_age() {
        let fdb = Fdb::new(1024, 300);
        fdb.learn(5, B, 9, 10);
        fdb.learn(5, A, 8, 12);
        let e = fdb.entries(15);
        assert_eq!(
            e,
            vec![
                FdbEntry {
                    vlan: 5,
                    mac: A,
                    port: 8,
                    age_secs: 3
                },
                FdbEntry {
                    vlan: 5,
                    mac: B,
                    port: 9,
                    age_secs: 5
                },
            ]
        );
    }

    #[test]
    fn test_fdb_entry_json_has_mac_text() {
        let e = FdbEntry {
            vlan: 1,
            mac: [0x52, 0x54, 0, 0xab, 0xcd, 0xef],
            port: 2,
            age_secs: 3,
        };
        let json = serde_json::to_string(&e).unwrap();
        assert!(json.contains("\"52:54:00:ab:cd:ef\""), "{json}");
        assert_eq!(serde_json::from_str::<FdbEntry>(&json).unwrap(), e);
        assert!(serde_json::from_str::<FdbEntry>(
            r#"{"vlan":1,"mac":"52:54:00","port":2,"age_secs":3}"#
        )
        .is_err());
        assert_eq!(parse_mac("52-54-00-AB-CD-EF"), Some(e.mac));
        assert_eq!(parse_mac("52:54:00:ab:cd:ef:00"), None);
    }

    /// Every writer maps a MAC to the same port (a function of the MAC), so any lookup that
    /// answers anything else has paired a key with another key's value: a wrong-key answer.
    /// A small table and a control thread that keeps expiring and flushing force slot reuse.
    #[test]
    fn test_fdb_concurrent_no_wrong_key_answers() {
        fn mac_of(i: u32) -> [u8; 6] {
            let b = i.to_be_bytes();
            [0x02, 0x11, b[0], b[1], b[2], b[3]]
        }
        fn port_of(mac: [u8; 6]) -> u16 {
            u16::from(mac[5] ^ mac[4]) % 61
        }
        const MACS: u32 = 2000;
        let fdb = Arc::new(Fdb::new(256, 2));
        let stop = Arc::new(AtomicBool::new(false));
        let now = Arc::new(AtomicU64::new(0));
        let pmds: Vec<_> = (0..2u32)
            .map(|t| {
                let (fdb, stop, now) = (fdb.clone(), stop.clone(), now.clone());
                std::thread::spawn(move || {
                    let (mut hits, mut wrong, mut learned) = (0u64, 0u64, 0u64);
                    let mut i = t * 7;
                    while !stop.load(Ordering::Relaxed) {
                        let t_now = u32::try_from(now.load(Ordering::Relaxed)).unwrap();
                        let mac = mac_of(i % MACS);
                        if fdb.learn(0, mac, port_of(mac), t_now) == LearnOutcome::New {
                            learned += 1;
                        }
                        for j in 0..4 {
                            let probe = mac_of((i.wrapping_mul(31) + j) % MACS);
                            if let Some(p) = fdb.lookup(0, probe, t_now) {
                                hits += 1;
                                if p != port_of(probe) {
                                    wrong += 1;
                                }
                            }
                        }
                        i = i.wrapping_add(1);
                    }
                    (hits, wrong, learned)
                })
            })
            .collect();
        let control = {
            let (fdb, stop, now) = (fdb.clone(), stop.clone(), now.clone());
            std::thread::spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t_now = now.fetch_add(1, Ordering::Relaxed) + 1;
                    let t_now = u32::try_from(t_now).unwrap();
                    fdb.expire(t_now);
                    fdb.flush_port(u16::try_from(round % 61).unwrap());
                    for e in fdb.entries(t_now) {
                        assert_eq!(e.port, port_of(e.mac), "torn entry {e:?}");
                    }
                    round += 1;
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                round
            })
        };
        std::thread::sleep(std::time::Duration::from_millis(1500));
        stop.store(true, Ordering::Relaxed);
        let mut total_hits = 0;
        for pmd in pmds {
            let (hits, wrong, learned) = pmd.join().unwrap();
            assert_eq!(wrong, 0, "wrong-key answers");
            assert!(learned > 0);
            total_hits += hits;
        }
        let rounds = control.join().unwrap();
        assert!(
            total_hits > 1000,
            "the test must exercise hits: {total_hits}"
        );
        assert!(rounds > 10, "the control thread must interleave: {rounds}");
        let c = fdb.counters();
        assert!(
            c.full > 0,
            "the table must overflow to force slot reuse: {c:?}"
        );
        assert!(c.expired + c.flushed > 0, "{c:?}");
    }
}
