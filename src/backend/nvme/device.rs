//! One NVMe controller brought up for a namespace backend: its registers,
//! its DMA memory, the admin queue, and the I/O queue pairs the reactors
//! take, one each. Shared by the reactors; each one then drives its own
//! queue pair with no lock (see [`super::driver`]).

use super::sim::{SimController, SimMem};
use super::{bring_up, doorbell, DmaArena, DmaMem, Identity, Namespace, QueuePair, Regs, Want};
use crate::backend::{Backend, IoOp, Submitted};
use crate::nvme::Command;
use nvmf_sys::EventFd;
use std::io;
use std::sync::atomic::{
    AtomicBool, AtomicU64, Ordering::AcqRel, Ordering::Acquire, Ordering::Relaxed,
    Ordering::Release,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// DMA memory of a simulated controller (mapped, not touched, until used):
/// queues, and each reactor's bounce and staged buffers.
const SIM_DMA: usize = 512 << 20;
/// Where a device's DMA memory starts in its IOVA space (chosen by us: an
/// emulated IOMMU may have only 39 address bits, too few for our virtual
/// addresses).
const IOVA_BASE: u64 = 1 << 30;

/// DMA memory: a region mapped for the device at `base`.
struct RegionDma {
    region: Arc<nvmf_sys::Region>,
    base: u64,
}

impl DmaMem for RegionDma {
    fn read(&self, iova: u64, dst: &mut [u8]) -> bool {
        iova.checked_sub(self.base)
            .is_some_and(|off| self.region.read(off, dst))
    }
    fn write(&self, iova: u64, src: &[u8]) -> bool {
        iova.checked_sub(self.base)
            .is_some_and(|off| self.region.write(off, src))
    }
    fn load64(&self, iova: u64) -> Option<u64> {
        self.region.load_u64(iova.checked_sub(self.base)?)
    }
    fn region(&self) -> Option<(Arc<nvmf_sys::Region>, u64)> {
        Some((self.region.clone(), self.base))
    }
}

/// A reactor's share of staged DMA buffers: chunks of `chunk` bytes from
/// `iova`, each lent to one transfer at a time ([`NvmeDevice::stage`]).
struct StagePool {
    iova: u64,
    chunk: u64,
    /// Touched by its reactor only (and by drops of its leases, on the same
    /// thread): never contended.
    free: Mutex<Vec<u32>>,
}

/// A chunk lent out; back in its pool when dropped.
struct Lease {
    pool: Arc<StagePool>,
    idx: u32,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.idx);
    }
}

/// DMA memory for staged buffers, per reactor: chunks of the largest
/// transfer, 16 MiB or 64 chunks, whichever is less (at least 4).
fn staging_chunks(chunk: u64) -> u64 {
    ((16 << 20) / chunk.max(1)).clamp(4, 64)
}

/// Bytes of DMA memory the staged buffers of `reactors` reactors take,
/// for transfers of up to `max_io` bytes.
pub fn staging_bytes(max_io: u32, reactors: u16) -> u64 {
    let chunk = (max_io as u64).next_multiple_of(4096);
    chunk * staging_chunks(chunk) * reactors as u64
}

/// A VFIO device's registers.
struct VfioRegs(nvmf_sys::vfio::VfioDevice);

impl Regs for VfioRegs {
    fn read32(&self, off: u32) -> u32 {
        self.0.bar0().read32(off)
    }
    fn write32(&self, off: u32, v: u32) {
        self.0.bar0().write32(off, v)
    }
}

pub struct NvmeDevice {
    /// What the config named it (a PCI address, or "sim").
    pub name: String,
    regs: Box<dyn Regs + Send + Sync>,
    mem: Arc<dyn DmaMem + Send + Sync>,
    arena: Mutex<DmaArena>,
    admin: Mutex<QueuePair>,
    /// I/O queue pairs no reactor has taken yet.
    free: Mutex<Vec<QueuePair>>,
    pub identity: Identity,
    pub ns: Namespace,
    pub dstrd: u32,
    /// The controller reported a fatal status: the namespace is offline
    /// until a reset brings it back.
    failed: AtomicBool,
    /// Bumped by each reset that brought the controller back: a reactor
    /// whose queue pair is of an older generation resets its state.
    generation: AtomicU64,
    /// A reset is under way (in its own thread).
    resetting: AtomicBool,
    /// When the last reset was tried.
    last_reset: Mutex<Option<Instant>>,
    /// Every I/O queue pair as created (for a reset to create them again).
    layout: Vec<QueuePair>,
    ready_timeout: Duration,
    /// Sleeps while waiting for the controller (nothing for the simulator).
    sleep: fn(Duration),
    /// Staged DMA buffers, one pool per reactor (see [`Self::enable_staging`]).
    staging: std::sync::OnceLock<Vec<Arc<StagePool>>>,
    /// Bytes copied through the driver's bounce buffers (transfers that
    /// could not be staged); only that path touches it.
    copied: AtomicU64,
    /// By queue ID: the eventfd the queue's completion interrupt signals
    /// (none for the admin queue, or when interrupts are off).
    irqs: Vec<Option<Arc<EventFd>>>,
    /// Times a reactor went to sleep waiting on a completion interrupt,
    /// and times one woke it.
    irq_waits: AtomicU64,
    irq_wakes: AtomicU64,
    /// The simulated controller, when it is one (`pci = "sim"`).
    sim: Option<Arc<SimController>>,
}

/// What a device this process drives shows of its memory and interrupts
/// (`ctl namespaces`).
#[derive(Debug, Clone, Default)]
pub struct DeviceUse {
    /// Bytes copied through bounce buffers (transfers that could not be
    /// staged).
    pub copied: u64,
    /// Staged DMA buffers free, per reactor.
    pub staged_free: Vec<usize>,
    /// Completion interrupts; `None` when completions are only polled.
    pub irq: Option<IrqUse>,
}

/// A device's completion interrupts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IrqUse {
    /// I/O queues whose completions interrupt.
    pub queues: usize,
    /// Times a reactor went to sleep waiting on one.
    pub waits: u64,
    /// Times one woke a sleeping reactor.
    pub wakes: u64,
}

/// Eventfds for the completion interrupts of I/O queues 1..=`queues`, one
/// per MSI-X vector (vector 0, the admin queue's, signals nothing), as many
/// as the device has vectors for.
fn interrupt_routes(queues: u16, vectors: u32) -> io::Result<Vec<Option<Arc<EventFd>>>> {
    let n = (queues as u32 + 1).min(vectors) as usize;
    if n < 2 {
        return Ok(Vec::new());
    }
    let mut fds = vec![None];
    for _ in 1..n {
        fds.push(Some(Arc::new(EventFd::new()?)));
    }
    Ok(fds)
}

/// How long a reset waits after the failure is seen before it touches the
/// queues, so that every reactor has stopped polling them (they check the
/// failed flag before each poll).
const RESET_GRACE: Duration = Duration::from_millis(200);
/// The shortest time between two resets of a controller.
const RESET_RETRY: Duration = Duration::from_secs(10);

/// A simulated controller's registers, shared with a test that makes it
/// fail.
struct SharedSim(Arc<SimController>);

impl Regs for SharedSim {
    fn read32(&self, off: u32) -> u32 {
        self.0.read32(off)
    }
    fn write32(&self, off: u32, v: u32) {
        self.0.write32(off, v)
    }
}

impl NvmeDevice {
    /// A simulated controller with one namespace of `size` bytes of
    /// `1 << lba_shift`-byte blocks, and `queues` I/O queue pairs (whose
    /// completions interrupt, when `interrupts`).
    pub fn open_sim(
        size: u64,
        lba_shift: u32,
        queues: u16,
        interrupts: bool,
    ) -> io::Result<Arc<NvmeDevice>> {
        Self::open_sim_shared(size, lba_shift, queues, interrupts).map(|(d, _)| d)
    }

    /// [`open_sim`](Self::open_sim), and the simulated controller.
    pub fn open_sim_shared(
        size: u64,
        lba_shift: u32,
        queues: u16,
        interrupts: bool,
    ) -> io::Result<(Arc<NvmeDevice>, Arc<SimController>)> {
        let mem = SimMem::new(SIM_DMA);
        let sim = Arc::new(SimController::new(
            mem.clone(),
            size >> lba_shift,
            lba_shift,
            5,
            1023,
        ));
        let arena = DmaArena::new(0, SIM_DMA as u64);
        // 4 KiB blocks: a controller that takes SGLs; 512: PRPs only (the
        // tests run both ways).
        if lba_shift >= 12 {
            sim.offer_sgls();
        }
        let irqs = if interrupts {
            interrupt_routes(queues, u32::MAX)?
        } else {
            Vec::new()
        };
        sim.route_interrupts(irqs.clone());
        let mut dev = Self::bring_up(
            "sim".into(),
            Box::new(SharedSim(sim.clone())),
            mem,
            arena,
            (1, queues),
            irqs,
            |_| {},
        )?;
        // (Just made: no other reference yet.)
        if let Some(d) = Arc::get_mut(&mut dev) {
            d.sim = Some(sim.clone());
        }
        Ok((dev, sim))
    }

    /// The controller at PCI address `pci` (bound to vfio-pci), its
    /// namespace `nsid`, with `queues` I/O queue pairs and DMA memory for
    /// transfers of up to `max_io` bytes. With `interrupts`, each I/O
    /// queue's completions signal an MSI-X vector routed to an eventfd (a
    /// sleeping reactor wakes on it; a polling one ignores it).
    pub fn open_vfio(
        pci: &str,
        nsid: u32,
        queues: u16,
        max_io: u32,
        interrupts: bool,
    ) -> io::Result<Arc<NvmeDevice>> {
        let dev = nvmf_sys::vfio::VfioDevice::open(pci)?;
        let irqs = if interrupts {
            let routed = dev.msix_vectors().and_then(|n| {
                let fds = interrupt_routes(queues, n)?;
                if fds.is_empty() {
                    return Err(io::Error::other("the device has no MSI-X vectors for them"));
                }
                let raw: Vec<_> = fds.iter().map(|f| f.as_ref().map(|f| f.fd())).collect();
                dev.set_msix(&raw)?;
                Ok(fds)
            });
            routed.unwrap_or_else(|e| {
                log::warn!(
                    "NVMe controller {pci}: no completion interrupts ({e}); a sleeping reactor \
                     polls its queue every {:?} while commands are in flight",
                    super::driver::POLL_SLEEP
                );
                Vec::new()
            })
        } else {
            Vec::new()
        };
        // Queues and identify data, and each reactor's bounce buffers.
        let chunk = (max_io as usize).next_multiple_of(4096) + 2 * 4096;
        let len = (8 << 20) + queues as usize * 64 * chunk + staging_bytes(max_io, queues) as usize;
        let region = Arc::new(nvmf_sys::Region::new_dma(len.next_multiple_of(2 << 20))?);
        log::info!(
            "NVMe controller {pci}: {} MiB of DMA memory in {} pages, mapped once",
            region.len() >> 20,
            if region.is_hugepage() {
                "2 MiB huge"
            } else {
                "4 KiB (no huge pages free: scripts/nvme-setup.sh hugepages N)"
            }
        );
        dev.map_dma(region.clone(), IOVA_BASE)?;
        let arena = DmaArena::new(IOVA_BASE, region.len() as u64);
        let mem = Arc::new(RegionDma {
            region,
            base: IOVA_BASE,
        });
        Self::bring_up(
            pci.to_string(),
            Box::new(VfioRegs(dev)),
            mem,
            arena,
            (nsid, queues),
            irqs,
            std::thread::sleep,
        )
    }

    /// Brings the controller up over `regs` and `mem` (DMA memory whose
    /// IOVA space `arena` hands out), namespace `nsid` with `queues` I/O
    /// queue pairs; `irqs` are the interrupt vectors routed, by vector
    /// (empty: interrupts off).
    pub fn bring_up(
        name: String,
        regs: Box<dyn Regs + Send + Sync>,
        mem: Arc<dyn DmaMem + Send + Sync>,
        mut arena: DmaArena,
        (nsid, queues): (u32, u16),
        mut irqs: Vec<Option<Arc<EventFd>>>,
        sleep: fn(Duration),
    ) -> io::Result<Arc<NvmeDevice>> {
        let want = Want {
            nsid,
            queues,
            depth: 128,
            vectors: irqs.len().min(u16::MAX as usize) as u16,
        };
        let up = match bring_up(&*regs, &*mem, &mut arena, want, &mut |d| sleep(d)) {
            // A controller that will not take the interrupt vectors is
            // still driven, polled (brought up again from the start).
            Err(e) if want.vectors > 0 => {
                log::warn!(
                    "NVMe controller {name}: bring-up with completion interrupts failed ({e}); \
                     trying again without them"
                );
                irqs.clear();
                let want = Want { vectors: 0, ..want };
                bring_up(&*regs, &*mem, &mut arena, want, &mut |d| sleep(d))
            }
            r => r,
        }
        .map_err(|e| io::Error::other(format!("NVMe controller {name}: {e}")))?;
        let interrupting = up.io.iter().filter(|q| q.vector.is_some()).count();
        log::info!(
            "NVMe controller {name} ({} {}): namespace {} of {} blocks of {} bytes, {} I/O \
             queue pairs of {} entries, data pointers {}, largest transfer {}, {}",
            up.identity.model.trim(),
            up.identity.serial.trim(),
            nsid,
            up.ns.blocks,
            1u64 << up.ns.lba_shift,
            up.io.len(),
            up.io.first().map_or(0, |q| q.entries()),
            if up.identity.takes_sgls() {
                "SGL"
            } else {
                "PRP"
            },
            match up.identity.max_transfer {
                0 => "unlimited".to_string(),
                n => format!("{} KiB", n >> 10),
            },
            match interrupting {
                0 => "completions polled (no interrupts)".to_string(),
                n => format!(
                    "completions polled; interrupts on {n} queue(s) wake a sleeping reactor"
                ),
            }
        );
        Ok(Arc::new(NvmeDevice {
            name,
            regs,
            mem,
            arena: Mutex::new(arena),
            admin: Mutex::new(up.admin),
            layout: up.io.clone(),
            free: Mutex::new(up.io),
            identity: up.identity,
            ns: up.ns,
            dstrd: up.dstrd,
            failed: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            resetting: AtomicBool::new(false),
            last_reset: Mutex::new(None),
            ready_timeout: up.ready_timeout,
            sleep,
            staging: std::sync::OnceLock::new(),
            copied: AtomicU64::new(0),
            irqs,
            irq_waits: AtomicU64::new(0),
            irq_wakes: AtomicU64::new(0),
            sim: None,
        }))
    }

    /// The simulated controller behind this device, when it is one (for
    /// tests that make it hold completions or fail).
    pub fn simulator(&self) -> Option<&Arc<SimController>> {
        self.sim.as_ref()
    }

    /// The eventfd queue `qid`'s completion interrupt signals, if it has
    /// one.
    pub fn irq(&self, qid: u16) -> Option<&EventFd> {
        self.irqs.get(qid as usize)?.as_deref()
    }

    /// A reactor goes to sleep waiting on a completion interrupt.
    pub fn count_irq_wait(&self) {
        self.irq_waits.fetch_add(1, Relaxed);
    }

    /// A sleeping reactor was woken by a completion interrupt.
    pub fn count_irq_wake(&self) {
        self.irq_wakes.fetch_add(1, Relaxed);
    }

    pub fn mem(&self) -> &dyn DmaMem {
        &*self.mem
    }

    /// Sets aside DMA memory for `reactors` reactors' staged buffers of up
    /// to `max_io` bytes (once; false when its memory is not one region,
    /// or too small: transfers then go through the driver's bounce
    /// buffers, with a copy).
    pub fn enable_staging(&self, max_io: u32, reactors: u16) -> bool {
        if self.mem.region().is_none() || self.staging.get().is_some() {
            return self.staging.get().is_some();
        }
        let chunk = (max_io as u64).next_multiple_of(4096);
        let count = staging_chunks(chunk);
        let mut pools = Vec::new();
        for _ in 0..reactors.max(1) {
            let Some(iova) = self.alloc(chunk * count) else {
                log::warn!(
                    "NVMe controller {}: no DMA memory for staged buffers; transfers are copied",
                    self.name
                );
                return false;
            };
            pools.push(Arc::new(StagePool {
                iova,
                chunk,
                free: Mutex::new((0..count as u32).rev().collect()),
            }));
        }
        self.staging.set(pools).is_ok()
    }

    /// A staged DMA buffer of `len` bytes from reactor `reactor`'s pool,
    /// and its IOVA (see [`Backend::stage`]).
    pub fn stage(&self, reactor: u16, len: usize) -> Option<(nvmf_sys::RegionSlice, u64)> {
        let pools = self.staging.get()?;
        let pool = pools.get(reactor as usize % pools.len().max(1))?;
        if len == 0 || len as u64 > pool.chunk {
            return None;
        }
        let idx = pool.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        // Made first: whatever fails below gives the chunk back.
        let lease = Arc::new(Lease {
            pool: pool.clone(),
            idx,
        });
        let iova = pool.iova + idx as u64 * pool.chunk;
        let (region, base) = self.mem.region()?;
        let slice = nvmf_sys::RegionSlice::new(region, iova.checked_sub(base)?, len)?;
        Some((slice.with_lease(lease), iova))
    }

    /// Counts `len` bytes copied through a bounce buffer.
    pub fn count_copy(&self, len: usize) {
        self.copied.fetch_add(len as u64, Relaxed);
    }

    /// Bytes copied through bounce buffers so far, the staged buffers
    /// free in each reactor's pool, and the completion interrupts' use.
    pub fn dma_use(&self) -> DeviceUse {
        let staged_free = self.staging.get().map_or(Vec::new(), |pools| {
            pools
                .iter()
                .map(|p| p.free.lock().unwrap_or_else(|e| e.into_inner()).len())
                .collect()
        });
        let queues = self.layout.iter().filter(|q| q.vector.is_some()).count();
        DeviceUse {
            copied: self.copied.load(Relaxed),
            staged_free,
            irq: (queues > 0).then(|| IrqUse {
                queues,
                waits: self.irq_waits.load(Relaxed),
                wakes: self.irq_wakes.load(Relaxed),
            }),
        }
    }

    /// An I/O queue pair of its own for a reactor (`None` when the
    /// controller granted fewer than there are reactors).
    pub fn take_queue(&self) -> Option<QueuePair> {
        self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// `len` bytes of DMA memory (page-aligned IOVA), for the life of the
    /// controller.
    pub fn alloc(&self, len: u64) -> Option<u64> {
        self.arena
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .alloc(len)
    }

    pub fn ring_sq(&self, qid: u16, tail: u16) {
        self.regs
            .write32(doorbell(qid, false, self.dstrd), tail as u32);
    }

    pub fn ring_cq(&self, qid: u16, head: u16) {
        self.regs
            .write32(doorbell(qid, true, self.dstrd), head as u32);
    }

    /// Whether the controller reports a fatal status (CSTS.CFS); once it
    /// has, the device stays failed.
    pub fn check_failed(&self) -> bool {
        if self.failed.load(Relaxed) {
            return true;
        }
        let csts = self.regs.read32(super::reg::CSTS);
        // All ones: the device is gone from the bus.
        if csts & super::reg::CSTS_CFS != 0 || csts == u32::MAX {
            if !self.failed.swap(true, Relaxed) {
                log::error!(
                    "NVMe controller {}: fatal status (CSTS {csts:#x}); its namespace is offline",
                    self.name
                );
            }
            return true;
        }
        false
    }

    /// Whether the controller is offline. Seen false, the generation read
    /// after it is the one its queues were last created in.
    pub fn is_failed(&self) -> bool {
        self.failed.load(Acquire)
    }

    /// How many resets have brought the controller back.
    pub fn generation(&self) -> u64 {
        self.generation.load(Acquire)
    }

    /// The controller failed: reset it in a thread of its own (not more
    /// than once per [`RESET_RETRY`]), unless that is under way.
    pub fn recover(self: &Arc<Self>) {
        if !self.is_failed() {
            return;
        }
        {
            let mut last = self.last_reset.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < RESET_RETRY) {
                return;
            }
            if self.resetting.swap(true, AcqRel) {
                return;
            }
            *last = Some(Instant::now());
        }
        let dev = self.clone();
        let spawned = std::thread::Builder::new()
            .name("nvme-reset".into())
            .spawn(move || {
                (dev.sleep)(RESET_GRACE);
                if let Err(e) = dev.reset() {
                    log::error!(
                        "NVMe controller {}: reset failed: {e}; trying again in {RESET_RETRY:?}",
                        dev.name
                    );
                }
                dev.resetting.store(false, Release);
            });
        if let Err(e) = spawned {
            log::error!("NVMe controller {}: no thread for a reset: {e}", self.name);
            self.resetting.store(false, Release);
        }
    }

    /// Resets the failed controller and creates its queues again over the
    /// same memory; on success the namespace is back online in a new
    /// generation. The reactors must not be polling the queues (they are
    /// not while the controller is failed).
    pub fn reset(&self) -> Result<(), String> {
        let mut admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        super::reenable(
            &*self.regs,
            &*self.mem,
            &mut admin,
            &self.layout,
            self.dstrd,
            self.ready_timeout,
            &mut |d| (self.sleep)(d),
        )?;
        self.generation.fetch_add(1, AcqRel);
        self.failed.store(false, Release);
        log::info!(
            "NVMe controller {}: reset and enabled again (generation {}); its namespace is \
             back online",
            self.name,
            self.generation()
        );
        Ok(())
    }

    /// Asks the controller to abort command `cid` of queue `sqid` (best
    /// effort: the command may complete first).
    pub fn abort(&self, sqid: u16, cid: u16) {
        let mut q = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        let cmd = Command {
            opcode: super::admin::ABORT,
            cdw10: sqid as u32 | (cid as u32) << 16,
            ..Default::default()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        if q.submit(&*self.mem, cmd, 0, deadline).is_ok() {
            if let Some(tail) = q.sq_doorbell() {
                self.ring_sq(0, tail);
            }
        }
        // Take whatever admin completions are there (this one may come
        // later; it is taken by the next abort).
        let mut done = Vec::new();
        if let Some(head) = q.poll(&*self.mem, &mut done) {
            self.ring_cq(0, head);
        }
    }
}

impl Drop for NvmeDevice {
    /// A normal shutdown (CC.SHN): the controller writes back its cache.
    fn drop(&mut self) {
        if self.is_failed() {
            return;
        }
        let cc = self.regs.read32(super::reg::CC);
        self.regs
            .write32(super::reg::CC, (cc & !(3 << 14)) | (1 << 14));
        for _ in 0..2000 {
            if (self.regs.read32(super::reg::CSTS) >> 2) & 3 == 2 {
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        log::warn!(
            "NVMe controller {}: shutdown not complete after 2 s",
            self.name
        );
    }
}

/// A namespace backend on an NVMe controller driven by this process.
pub struct NvmeBackend {
    pub dev: Arc<NvmeDevice>,
}

impl Backend for NvmeBackend {
    fn kind(&self) -> &'static str {
        "nvme"
    }
    fn size(&self) -> u64 {
        self.dev.ns.blocks << self.dev.ns.lba_shift
    }
    fn block_size(&self) -> Option<u32> {
        Some(1 << self.dev.ns.lba_shift)
    }
    fn volatile_write_cache(&self) -> bool {
        self.dev.identity.vwc
    }
    /// NVMe Compare goes to the device when it has it (ONCS bit 0).
    fn compares(&self) -> bool {
        self.dev.identity.oncs & 1 != 0
    }
    fn submit(&self, op: IoOp) -> Submitted {
        Submitted::Device(crate::backend::DeviceRequest {
            dev: crate::backend::DeviceRef::Pci(self.dev.clone()),
            op,
        })
    }
    fn stage(&self, reactor: u16, len: usize) -> Option<(nvmf_sys::RegionSlice, u64)> {
        self.dev.stage(reactor, len)
    }
    fn nvme(&self) -> Option<&Arc<NvmeDevice>> {
        Some(&self.dev)
    }
}
