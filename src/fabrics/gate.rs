//! Compare-and-Write atomicity across queues.
//!
//! A fused Compare and Write must be atomic against writes to its namespace
//! from every queue, on every reactor, without putting a lock or a shared
//! counter on the path of ordinary writes. Each namespace has a gate:
//!
//! - Every I/O queue has its own counter of writes it has in flight (its
//!   own cache line, touched only by its reactor), registered with the gate
//!   of each namespace of its subsystem when it connects.
//! - A write (Write, Write Zeroes, Deallocate, or data placed straight into
//!   backend memory) adds itself to its queue's counter, then looks at the
//!   gate's `exclusive` flag: clear, it goes ahead (and leaves the counter
//!   when it completes); set, it leaves the counter again and waits on its
//!   queue until the flag clears.
//! - A Compare and Write sets `exclusive` (one at a time per namespace:
//!   the others wait), then waits until every registered counter is zero,
//!   and only then reads, compares and writes; it clears the flag when it
//!   completes, however it completes.
//!
//! Both sides write their own variable first and read the other's after it
//! with sequentially consistent ordering, so at least one of them sees the
//! other: a write either is counted before the compare starts (and the
//! compare waits for it) or sees the flag (and waits for the compare). In
//! steady state (no Compare and Write) the flag's cache line is only read,
//! so it stays shared in every core's cache.

use std::sync::atomic::{
    fence, AtomicBool, AtomicU32, Ordering::Relaxed, Ordering::Release, Ordering::SeqCst,
};
use std::sync::{Arc, Mutex, Weak};

/// One queue's writes in flight, on a cache line of its own. Only the
/// queue's reactor changes it (plain stores, no locked instruction); a
/// Compare and Write on any reactor reads it.
#[derive(Default, Debug)]
#[repr(align(64))]
pub struct WriterCount(AtomicU32);

impl WriterCount {
    /// Counts a write in if `gate` lets it through now.
    pub fn enter(&self, gate: &Gate) -> bool {
        let n = self.0.load(Relaxed);
        self.0.store(n + 1, Relaxed);
        // The count must be visible before the flag is read (and the Compare
        // and Write sets the flag before it reads the counts): one fence.
        fence(SeqCst);
        if gate.exclusive.load(Relaxed) {
            self.0.store(n, Relaxed);
            return false;
        }
        true
    }

    /// A write counted by [`enter`](Self::enter) completed.
    pub fn leave(&self) {
        let n = self.0.load(Relaxed);
        self.0.store(n.saturating_sub(1), Release);
    }
}

/// A queue's write counters: one per namespace gate it writes through, so
/// that a Compare and Write waits only for writes to its own namespace.
#[derive(Default)]
pub struct Writers(Vec<(Arc<Gate>, Arc<WriterCount>)>);

impl Writers {
    /// The counter for `gate`, registered with it when first asked for.
    pub fn of(&mut self, gate: &Arc<Gate>) -> &Arc<WriterCount> {
        let i = match self.0.iter().position(|(g, _)| Arc::ptr_eq(g, gate)) {
            Some(i) => i,
            None => {
                let w = Arc::new(WriterCount::default());
                gate.register(&w);
                self.0.push((gate.clone(), w));
                self.0.len() - 1
            }
        };
        &self.0[i].1
    }

    /// Counts a write through `gate` in, if it lets it through now.
    pub fn enter(&mut self, gate: &Arc<Gate>) -> bool {
        self.of(gate).enter(gate)
    }

    pub fn leave(&mut self, gate: &Arc<Gate>) {
        self.of(gate).leave();
    }

    /// Forgets gates of namespaces that are gone (nothing is in flight
    /// through them: keeps the list as short as the namespace list).
    pub fn retain(&mut self, live: impl Fn(&Arc<Gate>) -> bool) {
        self.0.retain(|(g, w)| live(g) || w.0.load(Relaxed) != 0);
    }
}

/// A namespace's gate.
#[derive(Default)]
pub struct Gate {
    exclusive: AtomicBool,
    /// The counters of the queues that may write the namespace. Taken only
    /// when a queue connects and by a Compare and Write.
    writers: Mutex<Vec<Weak<WriterCount>>>,
}

impl Gate {
    pub fn register(&self, w: &Arc<WriterCount>) {
        let mut v = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        v.retain(|w| w.strong_count() > 0);
        v.push(Arc::downgrade(w));
    }

    /// Whether a Compare and Write holds the namespace.
    pub fn is_exclusive(&self) -> bool {
        self.exclusive.load(SeqCst)
    }

    /// Takes the namespace for a Compare and Write; false if another one
    /// has it.
    pub fn try_lock(&self) -> bool {
        self.exclusive
            .compare_exchange(false, true, SeqCst, SeqCst)
            .is_ok()
    }

    /// Whether no write counted in is still in flight (call holding the
    /// namespace).
    pub fn drained(&self) -> bool {
        fence(SeqCst);
        let v = self.writers.lock().unwrap_or_else(|e| e.into_inner());
        v.iter()
            .filter_map(Weak::upgrade)
            .all(|w| w.0.load(SeqCst) == 0)
    }

    pub fn unlock(&self) {
        self.exclusive.store(false, SeqCst);
    }
}

/// Data a transport places straight into backend memory: the memory, and
/// the write's place in its queue's count until the guard is dropped (after
/// the write is executed, or when the connection gives up on it).
pub struct Placed {
    pub region: nvmf_sys::RegionSlice,
    /// `Some`: the memory is a device's staged DMA buffer at this address,
    /// and the write still goes to the device ([`Queue::execute_placed`](super::Queue::execute_placed));
    /// `None`: it is the backend's own memory, and the data is written.
    pub iova: Option<u64>,
    /// The namespace whose memory (or device's staged buffer) it is.
    pub(super) ns: Option<std::sync::Arc<crate::subsystem::Namespace>>,
    _guard: WriteGuard,
}

struct WriteGuard(Arc<WriterCount>);

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.0.leave();
    }
}

impl std::ops::Deref for Placed {
    type Target = nvmf_sys::RegionSlice;
    fn deref(&self) -> &nvmf_sys::RegionSlice {
        &self.region
    }
}

impl Placed {
    /// `count` must have been entered for this write.
    pub(super) fn new(
        region: nvmf_sys::RegionSlice,
        iova: Option<u64>,
        count: Arc<WriterCount>,
    ) -> Placed {
        Placed {
            region,
            iova,
            ns: None,
            _guard: WriteGuard(count),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_waits_for_a_compare_and_a_compare_for_the_writes() {
        let g = Gate::default();
        let (a, b) = (
            Arc::new(WriterCount::default()),
            Arc::new(WriterCount::default()),
        );
        g.register(&a);
        g.register(&b);
        assert!(a.enter(&g));
        assert!(g.try_lock());
        assert!(!g.try_lock(), "one Compare and Write at a time");
        assert!(!g.drained(), "a's write is in flight");
        assert!(!b.enter(&g), "new writes wait");
        a.leave();
        assert!(g.drained());
        g.unlock();
        assert!(b.enter(&g));
        b.leave();
        // A queue that is gone does not hold anything up.
        assert!(a.enter(&g));
        drop(a);
        assert!(g.try_lock() && g.drained());
    }
}
