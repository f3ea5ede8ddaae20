//! A PCI device given to this process through VFIO (type-1 IOMMU): its
//! registers (BAR0, mapped), its bus mastering, and DMA mappings of this
//! process's memory at I/O virtual addresses of our choosing.

use crate::mem::Region;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::Arc;

// ioctl numbers: _IO(';', 100 + n).
const VFIO_GET_API_VERSION: libc::c_ulong = 0x3B64;
const VFIO_CHECK_EXTENSION: libc::c_ulong = 0x3B65;
const VFIO_SET_IOMMU: libc::c_ulong = 0x3B66;
const VFIO_GROUP_GET_STATUS: libc::c_ulong = 0x3B67;
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = 0x3B68;
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = 0x3B6A;
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = 0x3B6C;
const VFIO_DEVICE_GET_IRQ_INFO: libc::c_ulong = 0x3B6D;
const VFIO_DEVICE_SET_IRQS: libc::c_ulong = 0x3B6E;
const VFIO_IOMMU_MAP_DMA: libc::c_ulong = 0x3B71;
const VFIO_IOMMU_UNMAP_DMA: libc::c_ulong = 0x3B72;

const VFIO_API_VERSION: libc::c_int = 0;
const VFIO_TYPE1_IOMMU: libc::c_ulong = 1;
const VFIO_TYPE1V2_IOMMU: libc::c_ulong = 3;
const VFIO_GROUP_FLAGS_VIABLE: u32 = 1;
const VFIO_REGION_INFO_FLAG_MMAP: u32 = 1 << 2;
const VFIO_DMA_MAP_FLAG_READ: u32 = 1;
const VFIO_DMA_MAP_FLAG_WRITE: u32 = 2;
/// Region index of the PCI configuration space.
const CONFIG_REGION: u32 = 7;
/// Interrupt index of MSI-X.
const MSIX_IRQ_INDEX: u32 = 2;
const VFIO_IRQ_INFO_EVENTFD: u32 = 1;
const VFIO_IRQ_SET_DATA_NONE: u32 = 1;
const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
/// The most MSI-X vectors a device has (the table's limit).
const MSIX_MAX: usize = 2048;

#[repr(C)]
#[derive(Default)]
struct IrqInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    count: u32,
}

/// `vfio_irq_set` with room for every MSI-X vector's eventfd after it.
#[repr(C)]
struct IrqSet {
    argsz: u32,
    flags: u32,
    index: u32,
    start: u32,
    count: u32,
    fds: [i32; MSIX_MAX],
}

#[repr(C)]
#[derive(Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct RegionInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    cap_offset: u32,
    size: u64,
    offset: u64,
}

#[repr(C)]
#[derive(Default)]
struct DmaMap {
    argsz: u32,
    flags: u32,
    vaddr: u64,
    iova: u64,
    size: u64,
}

#[repr(C)]
#[derive(Default)]
struct DmaUnmap {
    argsz: u32,
    flags: u32,
    iova: u64,
    size: u64,
}

fn ioctl_ptr<T>(fd: &File, req: libc::c_ulong, arg: &mut T) -> io::Result<libc::c_int> {
    // SAFETY: `arg` is a live, exclusively borrowed #[repr(C)] struct of the layout the
    // request expects (VFIO's argsz-prefixed structures); the kernel reads and writes at most
    // `size_of::<T>()` bytes of it.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg as *mut T) };
    if rc < 0 {
        Err(crate::last_error())
    } else {
        Ok(rc)
    }
}

fn ioctl_val(fd: &File, req: libc::c_ulong, arg: libc::c_ulong) -> io::Result<libc::c_int> {
    // SAFETY: requests that take an integer argument; no memory is passed.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if rc < 0 {
        Err(crate::last_error())
    } else {
        Ok(rc)
    }
}

fn rdwr(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

/// A mapped register BAR, read and written 32 bits at a time.
#[derive(Debug)]
pub struct Bar {
    ptr: NonNull<u32>,
    len: usize,
}

// SAFETY: MMIO registers may be accessed from any thread; every access is a single volatile
// 32-bit load or store, which the device serializes.
unsafe impl Send for Bar {}
// SAFETY: as above.
unsafe impl Sync for Bar {}

impl Bar {
    fn word(&self, off: u32) -> Option<*mut u32> {
        let off = off as usize;
        if !off.is_multiple_of(4) || off + 4 > self.len {
            return None;
        }
        // SAFETY: `off + 4 <= len`, inside the mapping, and 4-byte aligned (the mapping is
        // page-aligned).
        Some(unsafe { self.ptr.as_ptr().add(off / 4) })
    }

    /// The register at byte offset `off` (all ones when out of range, as a
    /// device that is gone reads).
    pub fn read32(&self, off: u32) -> u32 {
        match self.word(off) {
            // SAFETY: a valid, aligned address of the live mapping; volatile, as MMIO must be.
            Some(p) => unsafe { std::ptr::read_volatile(p) },
            None => u32::MAX,
        }
    }

    /// Writes the register at byte offset `off` (ignored when out of range).
    pub fn write32(&self, off: u32, v: u32) {
        if let Some(p) = self.word(off) {
            // SAFETY: as in `read32`.
            unsafe { std::ptr::write_volatile(p, v) };
        }
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Never true for a mapped BAR.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping made in `VfioDevice::open`; no reference into it outlives
        // the `Bar`.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// A device opened through VFIO.
#[derive(Debug)]
pub struct VfioDevice {
    /// Its PCI address.
    pub pci: String,
    container: File,
    _group: File,
    device: File,
    /// Where the PCI configuration space is in the device file.
    config: u64,
    bar0: Bar,
    /// Mappings made, unmapped on drop (iova, size), with their memory.
    dma: std::sync::Mutex<Vec<(u64, u64, Arc<Region>)>>,
}

/// The IOMMU group of PCI device `pci`, from sysfs.
fn iommu_group(pci: &str) -> io::Result<String> {
    let link = Path::new("/sys/bus/pci/devices")
        .join(pci)
        .join("iommu_group");
    let target = std::fs::read_link(&link).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "{pci} has no IOMMU group ({e}): is the device there, and is the IOMMU on \
                 (intel_iommu=on or amd_iommu=on on the kernel command line)?"
            ),
        )
    })?;
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| io::Error::other(format!("{} is not a group link", link.display())))
}

impl VfioDevice {
    /// Opens PCI device `pci` (bound to vfio-pci), in a container of its own with a type-1
    /// IOMMU, maps BAR0 and turns bus mastering on.
    pub fn open(pci: &str) -> io::Result<VfioDevice> {
        let ctx =
            |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{pci}: {what}: {e}"));
        let driver = std::fs::read_link(Path::new("/sys/bus/pci/devices").join(pci).join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        if driver.as_deref() != Some("vfio-pci") {
            return Err(io::Error::other(format!(
                "{pci} is bound to {}, not vfio-pci (scripts/nvme-setup.sh bind {pci})",
                driver.as_deref().unwrap_or("no driver")
            )));
        }
        let group_no = iommu_group(pci)?;
        let container = rdwr(Path::new("/dev/vfio/vfio")).map_err(|e| ctx("/dev/vfio/vfio", e))?;
        if ioctl_val(&container, VFIO_GET_API_VERSION, 0)? != VFIO_API_VERSION {
            return Err(io::Error::other("unknown VFIO API version"));
        }
        let iommu = [VFIO_TYPE1V2_IOMMU, VFIO_TYPE1_IOMMU]
            .into_iter()
            .find(|&t| ioctl_val(&container, VFIO_CHECK_EXTENSION, t).unwrap_or(0) > 0)
            .ok_or_else(|| {
                io::Error::other(
                    "VFIO has no type-1 IOMMU: is the IOMMU on, and vfio_iommu_type1 loaded \
                     (scripts/nvme-setup.sh bind loads it)?",
                )
            })?;
        let group_path = format!("/dev/vfio/{group_no}");
        let group = rdwr(Path::new(&group_path)).map_err(|e| ctx(&group_path, e))?;
        let mut st = GroupStatus {
            argsz: std::mem::size_of::<GroupStatus>() as u32,
            flags: 0,
        };
        ioctl_ptr(&group, VFIO_GROUP_GET_STATUS, &mut st)?;
        if st.flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(io::Error::other(format!(
                "IOMMU group {group_no} is not viable: every device in it must be bound to \
                 vfio-pci (see /sys/kernel/iommu_groups/{group_no}/devices)"
            )));
        }
        let mut cfd: libc::c_int = container.as_raw_fd();
        ioctl_ptr(&group, VFIO_GROUP_SET_CONTAINER, &mut cfd)
            .map_err(|e| ctx("VFIO_GROUP_SET_CONTAINER", e))?;
        ioctl_val(&container, VFIO_SET_IOMMU, iommu).map_err(|e| ctx("VFIO_SET_IOMMU", e))?;
        let name = CString::new(pci).map_err(|_| io::Error::other("bad PCI address"))?;
        // SAFETY: the request takes a NUL-terminated device name, live for the call.
        let dfd =
            unsafe { libc::ioctl(group.as_raw_fd(), VFIO_GROUP_GET_DEVICE_FD, name.as_ptr()) };
        if dfd < 0 {
            return Err(ctx("VFIO_GROUP_GET_DEVICE_FD", crate::last_error()));
        }
        // SAFETY: a new descriptor the kernel just gave us; nothing else owns it.
        let device = unsafe { File::from_raw_fd(dfd) };
        let region = |index: u32| -> io::Result<RegionInfo> {
            let mut ri = RegionInfo {
                argsz: std::mem::size_of::<RegionInfo>() as u32,
                index,
                ..Default::default()
            };
            ioctl_ptr(&device, VFIO_DEVICE_GET_REGION_INFO, &mut ri)?;
            Ok(ri)
        };
        let bar = region(0).map_err(|e| ctx("BAR0", e))?;
        if bar.flags & VFIO_REGION_INFO_FLAG_MMAP == 0 || bar.size == 0 {
            return Err(io::Error::other(format!("{pci}: BAR0 cannot be mapped")));
        }
        // SAFETY: maps the device's BAR0 region at an address of the kernel's choice; it does
        // not alias any Rust object and is only reached through `Bar`'s volatile accesses.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bar.size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                device.as_raw_fd(),
                bar.offset as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(ctx("mmap of BAR0", crate::last_error()));
        }
        let bar0 = Bar {
            ptr: NonNull::new(p.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?,
            len: bar.size as usize,
        };
        // Memory space and bus mastering on (PCI command register, offset 4).
        let cfg = region(CONFIG_REGION).map_err(|e| ctx("config space", e))?;
        let mut cmd = [0u8; 2];
        device.read_exact_at(&mut cmd, cfg.offset + 4)?;
        let v = u16::from_le_bytes(cmd) | (1 << 1) | (1 << 2);
        device.write_all_at(&v.to_le_bytes(), cfg.offset + 4)?;
        Ok(VfioDevice {
            pci: pci.to_string(),
            container,
            _group: group,
            device,
            config: cfg.offset,
            bar0,
            dma: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The controller's registers.
    pub fn bar0(&self) -> &Bar {
        &self.bar0
    }

    /// Maps all of `region` at `iova` for the device to read and write. The region stays
    /// alive (and mapped) as long as the device.
    pub fn map_dma(&self, region: Arc<Region>, iova: u64) -> io::Result<()> {
        let mut m = DmaMap {
            argsz: std::mem::size_of::<DmaMap>() as u32,
            flags: VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
            vaddr: region.addr(),
            iova,
            size: region.len() as u64,
        };
        ioctl_ptr(&self.container, VFIO_IOMMU_MAP_DMA, &mut m).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: VFIO_IOMMU_MAP_DMA of {} MiB at IOVA {iova:#x}: {e}",
                    self.pci,
                    region.len() >> 20
                ),
            )
        })?;
        // The device now holds these pages: they must stay where they are.
        region.set_pinned();
        let len = region.len() as u64;
        self.dma
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((iova, len, region));
        Ok(())
    }

    /// How many MSI-X vectors the device has that can signal an eventfd (0: none).
    pub fn msix_vectors(&self) -> io::Result<u32> {
        let mut info = IrqInfo {
            argsz: std::mem::size_of::<IrqInfo>() as u32,
            index: MSIX_IRQ_INDEX,
            ..Default::default()
        };
        ioctl_ptr(&self.device, VFIO_DEVICE_GET_IRQ_INFO, &mut info)?;
        Ok(if info.flags & VFIO_IRQ_INFO_EVENTFD != 0 {
            info.count
        } else {
            0
        })
    }

    /// Enables MSI-X with `fds.len()` vectors, vector `i` signalling eventfd `fds[i]`
    /// (`None`: the vector is enabled but signals nothing). An empty list disables MSI-X.
    /// The kernel takes its own reference on each eventfd.
    pub fn set_msix(&self, fds: &[Option<std::os::fd::RawFd>]) -> io::Result<()> {
        if fds.len() > MSIX_MAX {
            return Err(io::Error::other(format!(
                "{}: {} MSI-X vectors asked for; a device has at most {MSIX_MAX}",
                self.pci,
                fds.len()
            )));
        }
        let mut set = Box::new(IrqSet {
            argsz: 0,
            flags: if fds.is_empty() {
                VFIO_IRQ_SET_DATA_NONE
            } else {
                VFIO_IRQ_SET_DATA_EVENTFD
            } | VFIO_IRQ_SET_ACTION_TRIGGER,
            index: MSIX_IRQ_INDEX,
            start: 0,
            count: fds.len() as u32,
            fds: [-1; MSIX_MAX],
        });
        for (slot, fd) in set.fds.iter_mut().zip(fds) {
            *slot = fd.unwrap_or(-1);
        }
        // The header and the eventfds given, as the kernel reads them.
        set.argsz = (std::mem::size_of::<IrqSet>() - (MSIX_MAX - fds.len()) * 4) as u32;
        ioctl_ptr(&self.device, VFIO_DEVICE_SET_IRQS, &mut *set).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{}: VFIO_DEVICE_SET_IRQS (MSI-X, {} vectors): {e}",
                    self.pci,
                    fds.len()
                ),
            )
        })?;
        Ok(())
    }
}

impl Drop for VfioDevice {
    fn drop(&mut self) {
        // Bus mastering off first: the device stops touching memory.
        let mut cmd = [0u8; 2];
        if self.device.read_exact_at(&mut cmd, self.config + 4).is_ok() {
            let v = u16::from_le_bytes(cmd) & !(1 << 2);
            let _ = self.device.write_all_at(&v.to_le_bytes(), self.config + 4);
        }
        for (iova, size, _region) in self.dma.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let mut u = DmaUnmap {
                argsz: std::mem::size_of::<DmaUnmap>() as u32,
                flags: 0,
                iova,
                size,
            };
            let _ = ioctl_ptr(&self.container, VFIO_IOMMU_UNMAP_DMA, &mut u);
        }
    }
}
