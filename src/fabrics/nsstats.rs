//! Per-namespace I/O statistics: counters and latency histograms that each
//! queue keeps for itself (one writer, plain loads and stores, no shared
//! cache line touched per command), summed only when the control plane
//! reads them.
//!
//! A namespace holds a [`Registry`] of the per-queue [`QueueNsStats`] of the
//! queues that used it. A queue that closes marks its entry closed; a read
//! folds closed entries into per-reactor totals, so counters never go back
//! and the registry does not grow with connection churn.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Latency histogram buckets: upper bounds of 1, 2, 4, ... 2^24 µs
/// (16.8 s), and one for anything slower.
pub const BUCKETS: usize = 26;

/// The upper bound of bucket `i` in seconds (`f64::INFINITY` for the last).
pub fn bucket_bound(i: usize) -> f64 {
    if i + 1 >= BUCKETS {
        f64::INFINITY
    } else {
        (1u64 << i) as f64 * 1e-6
    }
}

/// The bucket of a latency of `ns` nanoseconds.
pub fn bucket_of(ns: u64) -> usize {
    let us = ns.div_ceil(1000);
    if us <= 1 {
        return 0;
    }
    ((64 - (us - 1).leading_zeros()) as usize).min(BUCKETS - 1)
}

/// Adds to a counter only this thread writes (see
/// [`super::controller::IoStats`]).
fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

/// One direction's counters.
#[derive(Default)]
pub struct DirStats {
    pub commands: AtomicU64,
    pub bytes: AtomicU64,
    pub errors: AtomicU64,
    /// Sum of latencies, in nanoseconds.
    pub latency_ns: AtomicU64,
    pub hist: [AtomicU64; BUCKETS],
}

impl DirStats {
    fn add(&self, ok: bool, bytes: u64, latency_ns: u64) {
        if ok {
            bump(&self.commands, 1);
            bump(&self.bytes, bytes);
        } else {
            bump(&self.errors, 1);
        }
        bump(&self.latency_ns, latency_ns);
        bump(&self.hist[bucket_of(latency_ns)], 1);
    }

    fn read(&self) -> DirTotals {
        let mut t = DirTotals {
            commands: self.commands.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            errors: self.errors.load(Relaxed),
            latency_ns: self.latency_ns.load(Relaxed),
            hist: [0; BUCKETS],
        };
        for (h, a) in t.hist.iter_mut().zip(&self.hist) {
            *h = a.load(Relaxed);
        }
        t
    }
}

/// What one queue did with one namespace.
pub struct QueueNsStats {
    pub cntlid: u16,
    pub qid: u16,
    pub reactor: u16,
    pub read: DirStats,
    pub write: DirStats,
    /// Every other command on the namespace (Flush, Write Zeroes, DSM,
    /// Compare, ...).
    pub other: DirStats,
    closed: AtomicBool,
}

/// Which counters a command goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Read,
    Write,
    Other,
}

impl QueueNsStats {
    pub fn add(&self, dir: Dir, ok: bool, bytes: u64, latency_ns: u64) {
        let d = match dir {
            Dir::Read => &self.read,
            Dir::Write => &self.write,
            Dir::Other => &self.other,
        };
        d.add(ok, bytes, latency_ns);
    }

    /// The queue is gone: its last counts are published with the flag.
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Sums of [`DirStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirTotals {
    pub commands: u64,
    pub bytes: u64,
    pub errors: u64,
    pub latency_ns: u64,
    pub hist: [u64; BUCKETS],
}

impl Default for DirTotals {
    fn default() -> Self {
        DirTotals {
            commands: 0,
            bytes: 0,
            errors: 0,
            latency_ns: 0,
            hist: [0; BUCKETS],
        }
    }
}

impl DirTotals {
    pub fn add(&mut self, o: &DirTotals) {
        self.commands += o.commands;
        self.bytes += o.bytes;
        self.errors += o.errors;
        self.latency_ns += o.latency_ns;
        for (a, b) in self.hist.iter_mut().zip(&o.hist) {
            *a += b;
        }
    }

    /// Commands counted in the histogram (successful and failed).
    pub fn observed(&self) -> u64 {
        self.hist.iter().sum()
    }

    /// The latency below which a fraction `q` (0 to 1) of the commands
    /// finished, in seconds, interpolated inside its bucket; `None` with no
    /// commands.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.observed();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).max(1.0);
        let mut seen = 0u64;
        for (i, &c) in self.hist.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if (seen + c) as f64 >= rank {
                let lo = if i == 0 { 0.0 } else { bucket_bound(i - 1) };
                let hi = if i + 1 >= BUCKETS {
                    // Beyond the last bound: say the bound.
                    return Some(bucket_bound(BUCKETS - 2));
                } else {
                    bucket_bound(i)
                };
                let within = (rank - seen as f64) / c as f64;
                return Some(lo + (hi - lo) * within);
            }
            seen += c;
        }
        Some(bucket_bound(BUCKETS - 2))
    }
}

/// Read, write and other totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub read: DirTotals,
    pub write: DirTotals,
    pub other: DirTotals,
}

impl Totals {
    pub fn add(&mut self, o: &Totals) {
        self.read.add(&o.read);
        self.write.add(&o.write);
        self.other.add(&o.other);
    }

    /// Every command's latency in one histogram.
    pub fn all(&self) -> DirTotals {
        let mut t = self.read;
        t.add(&self.write);
        t.add(&self.other);
        t
    }

    fn of(s: &QueueNsStats) -> Totals {
        Totals {
            read: s.read.read(),
            write: s.write.read(),
            other: s.other.read(),
        }
    }
}

/// One queue's statistics, per namespace it has used (a few entries,
/// scanned per command).
#[derive(Default)]
pub struct QueueStatsList(Vec<(u32, Arc<Registry>, Arc<QueueNsStats>)>);

impl QueueStatsList {
    /// The entry for namespace `nsid` with registry `reg`, registered there
    /// at the queue's first command on it.
    pub fn get(
        &mut self,
        nsid: u32,
        reg: &Arc<Registry>,
        cntlid: u16,
        qid: u16,
        reactor: u16,
    ) -> &QueueNsStats {
        let i = match self
            .0
            .iter()
            .position(|(n, r, _)| *n == nsid && Arc::ptr_eq(r, reg))
        {
            Some(i) => i,
            None => {
                let s = reg.register(cntlid, qid, reactor);
                self.0.push((nsid, reg.clone(), s));
                self.0.len() - 1
            }
        };
        &self.0[i].2
    }

    /// The queue is gone.
    pub fn close_all(&self) {
        for (_, _, s) in &self.0 {
            s.close();
        }
    }
}

/// A live queue's totals for one namespace.
#[derive(Debug, Clone, Copy)]
pub struct QueueTotals {
    pub cntlid: u16,
    pub qid: u16,
    pub reactor: u16,
    pub totals: Totals,
}

/// The per-queue statistics of one namespace (shared by its versions over
/// the same storage: a resize keeps it).
#[derive(Default)]
pub struct Registry {
    inner: Mutex<RegistryInner>,
}

#[derive(Default)]
struct RegistryInner {
    live: Vec<Arc<QueueNsStats>>,
    /// Closed queues' totals, by reactor.
    retired: Vec<Totals>,
}

impl RegistryInner {
    fn fold_closed(&mut self) {
        let mut i = 0;
        while i < self.live.len() {
            if self.live[i]
                .closed
                .load(std::sync::atomic::Ordering::Acquire)
            {
                let s = self.live.swap_remove(i);
                let r = s.reactor as usize;
                if self.retired.len() <= r {
                    self.retired.resize(r + 1, Totals::default());
                }
                self.retired[r].add(&Totals::of(&s));
            } else {
                i += 1;
            }
        }
    }
}

impl Registry {
    /// Statistics for a queue that starts using the namespace (once per
    /// queue and namespace; not per command).
    pub fn register(&self, cntlid: u16, qid: u16, reactor: u16) -> Arc<QueueNsStats> {
        let s = Arc::new(QueueNsStats {
            cntlid,
            qid,
            reactor,
            read: DirStats::default(),
            write: DirStats::default(),
            other: DirStats::default(),
            closed: AtomicBool::new(false),
        });
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if g.live.len() >= 64 && g.live.len().is_power_of_two() {
            g.fold_closed();
        }
        g.live.push(s.clone());
        s
    }

    /// Totals by reactor (closed queues included), and the live queues'.
    pub fn read(&self) -> (Vec<Totals>, Vec<QueueTotals>) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.fold_closed();
        let mut by_reactor = g.retired.clone();
        let mut queues = Vec::new();
        for s in &g.live {
            let t = Totals::of(s);
            let r = s.reactor as usize;
            if by_reactor.len() <= r {
                by_reactor.resize(r + 1, Totals::default());
            }
            by_reactor[r].add(&t);
            queues.push(QueueTotals {
                cntlid: s.cntlid,
                qid: s.qid,
                reactor: s.reactor,
                totals: t,
            });
        }
        queues.sort_by_key(|q| (q.cntlid, q.qid));
        (by_reactor, queues)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two_microseconds() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(1000), 0);
        assert_eq!(bucket_of(1001), 1);
        assert_eq!(bucket_of(2000), 1);
        assert_eq!(bucket_of(3000), 2);
        assert_eq!(bucket_of(4000), 2);
        assert_eq!(bucket_of(4001), 3);
        assert_eq!(bucket_of(1 << 40), BUCKETS - 1);
        for i in 0..BUCKETS - 1 {
            let ns = (bucket_bound(i) * 1e9).round() as u64;
            assert_eq!(bucket_of(ns), i, "the bound of bucket {i} is in it");
            assert_eq!(bucket_of(ns + 1000), i + 1);
        }
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let mut t = DirTotals::default();
        assert_eq!(t.quantile(0.5), None);
        // 100 commands of 3 µs (bucket (2, 4] µs), one of 1 ms.
        t.hist[2] = 100;
        t.hist[bucket_of(1_000_000)] = 1;
        let p50 = t.quantile(0.5).unwrap();
        assert!(p50 > 2e-6 && p50 <= 4e-6, "{p50}");
        let p999 = t.quantile(0.999).unwrap();
        assert!(p999 > 512e-6 && p999 <= 1024e-6, "{p999}");
        assert_eq!(t.quantile(0.0).unwrap(), t.quantile(0.001).unwrap());
    }

    #[test]
    fn closed_queues_fold_into_reactor_totals_and_counts_never_go_back() {
        let r = Registry::default();
        let a = r.register(1, 1, 0);
        let b = r.register(1, 2, 1);
        a.add(Dir::Read, true, 4096, 5_000);
        a.add(Dir::Write, false, 0, 9_000);
        b.add(Dir::Write, true, 512, 1_000);
        let (by_r, qs) = r.read();
        assert_eq!(qs.len(), 2);
        assert_eq!(by_r[0].read.commands, 1);
        assert_eq!(by_r[0].write.errors, 1);
        assert_eq!(by_r[1].write.bytes, 512);
        b.close();
        drop(b);
        let (by_r2, qs) = r.read();
        assert_eq!(qs.len(), 1, "the closed queue is no longer listed");
        assert_eq!(by_r2, by_r, "its counts stay");
        // Churn does not grow the registry.
        for i in 0..1000 {
            let s = r.register(2, i, 0);
            s.add(Dir::Other, true, 0, 100);
            s.close();
        }
        assert!(r.inner.lock().unwrap().live.len() < 200);
        assert_eq!(r.read().0[0].other.commands, 1000);
    }
}
