//! RDMA: rdma-core's verbs (libibverbs) and connection manager (librdmacm), loaded at run
//! time with `dlopen`, so that the target starts and serves TCP on a machine without them.
//!
//! The safe layer keeps three promises:
//! - every object outlives what depends on it (an id holds its event channel, a memory
//!   registration its protection domain and memory, a completion queue its channel);
//! - the device only ever reaches this process's memory through a registration: a
//!   scatter/gather entry names a [`Mr`] and is checked against its bounds, and inline data
//!   is copied when the work request is posted; registered memory is a [`Region`], whose bytes
//!   Rust reaches only through copies, so the device writing it meanwhile is not a data race;
//! - events are acknowledged as soon as they are read (their contents are copied out), so
//!   destroying an id never waits on an unacknowledged event.
//!
//! `ibv_post_send`, `ibv_post_recv`, `ibv_poll_cq` and `ibv_req_notify_cq` are inline functions
//! in rdma-core's headers that call through the device context's operation table; they are
//! called the same way here. Struct layouts are those of rdma-core on 64-bit Linux
//! (checked by `tests/rdma_layout.rs` against the installed headers when they are present).

// Items mirror rdma-core's objects and fields, named as its man pages name them.
#![allow(missing_docs)]

use crate::mem::Region;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::{Arc, OnceLock};

/// The C structures and constants, as rdma-core lays them out on x86_64 / aarch64.
#[allow(non_camel_case_types, missing_docs)]
pub mod ffi {
    use std::ffi::{c_int, c_void};

    #[repr(C)]
    pub struct ibv_context {
        pub device: *mut c_void,
        pub ops: ibv_context_ops,
        pub cmd_fd: c_int,
        pub async_fd: c_int,
        pub num_comp_vectors: c_int,
    }

    pub type PollCq = unsafe extern "C" fn(*mut ibv_cq, c_int, *mut ibv_wc) -> c_int;
    pub type ReqNotifyCq = unsafe extern "C" fn(*mut ibv_cq, c_int) -> c_int;
    pub type PostSend =
        unsafe extern "C" fn(*mut ibv_qp, *mut ibv_send_wr, *mut *mut ibv_send_wr) -> c_int;
    pub type PostRecv =
        unsafe extern "C" fn(*mut ibv_qp, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int;

    /// `struct ibv_context_ops`: 32 function pointers; the four used here by name.
    #[repr(C)]
    pub struct ibv_context_ops {
        pub _before_poll_cq: [*const c_void; 11],
        pub poll_cq: Option<PollCq>,
        pub req_notify_cq: Option<ReqNotifyCq>,
        pub _before_post_send: [*const c_void; 12],
        pub post_send: Option<PostSend>,
        pub post_recv: Option<PostRecv>,
        pub _after: [*const c_void; 5],
    }

    #[repr(C)]
    pub struct ibv_pd {
        pub context: *mut ibv_context,
        pub handle: u32,
    }

    #[repr(C)]
    pub struct ibv_mr {
        pub context: *mut ibv_context,
        pub pd: *mut ibv_pd,
        pub addr: *mut c_void,
        pub length: usize,
        pub handle: u32,
        pub lkey: u32,
        pub rkey: u32,
    }

    #[repr(C)]
    pub struct ibv_comp_channel {
        pub context: *mut ibv_context,
        pub fd: c_int,
        pub refcnt: c_int,
    }

    #[repr(C)]
    pub struct ibv_cq {
        pub context: *mut ibv_context,
    }

    #[repr(C)]
    pub struct ibv_qp {
        pub context: *mut ibv_context,
        pub qp_context: *mut c_void,
        pub pd: *mut ibv_pd,
        pub send_cq: *mut ibv_cq,
        pub recv_cq: *mut ibv_cq,
        pub srq: *mut c_void,
        pub handle: u32,
        pub qp_num: u32,
    }

    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ibv_sge {
        pub addr: u64,
        pub length: u32,
        pub lkey: u32,
    }

    #[repr(C)]
    pub struct ibv_send_wr {
        pub wr_id: u64,
        pub next: *mut ibv_send_wr,
        pub sg_list: *mut ibv_sge,
        pub num_sge: c_int,
        pub opcode: u32,
        pub send_flags: u32,
        /// imm_data or invalidate_rkey.
        pub imm_or_inv: u32,
        /// wr.rdma.remote_addr / rkey (the rest of the 32-byte union follows).
        pub remote_addr: u64,
        pub rkey: u32,
        pub _wr_rest: [u32; 5],
        pub xrc_remote_srqn: u32,
        pub _pad: u32,
        pub _tail: [u64; 6],
    }

    #[repr(C)]
    pub struct ibv_recv_wr {
        pub wr_id: u64,
        pub next: *mut ibv_recv_wr,
        pub sg_list: *mut ibv_sge,
        pub num_sge: c_int,
    }

    /// `struct ibv_wc`: one work completion.
    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ibv_wc {
        pub wr_id: u64,
        pub status: u32,
        pub opcode: u32,
        pub vendor_err: u32,
        pub byte_len: u32,
        /// imm_data or invalidated_rkey.
        pub imm_or_inv: u32,
        pub qp_num: u32,
        pub src_qp: u32,
        pub wc_flags: u32,
        pub pkey_index: u16,
        pub slid: u16,
        pub sl: u8,
        pub dlid_path_bits: u8,
    }

    #[repr(C)]
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ibv_qp_cap {
        pub max_send_wr: u32,
        pub max_recv_wr: u32,
        pub max_send_sge: u32,
        pub max_recv_sge: u32,
        pub max_inline_data: u32,
    }

    #[repr(C)]
    pub struct ibv_qp_init_attr {
        pub qp_context: *mut c_void,
        pub send_cq: *mut ibv_cq,
        pub recv_cq: *mut ibv_cq,
        pub srq: *mut c_void,
        pub cap: ibv_qp_cap,
        pub qp_type: u32,
        pub sq_sig_all: c_int,
    }

    /// Bytes of `struct ibv_device_attr` (232), rounded up; its fields are read by offset.
    pub const DEVICE_ATTR_LEN: usize = 256;
    pub const DEVICE_ATTR_MAX_MR_SIZE: usize = 80;
    pub const DEVICE_ATTR_MAX_QP_WR: usize = 112;
    pub const DEVICE_ATTR_MAX_SGE: usize = 120;
    pub const DEVICE_ATTR_MAX_CQE: usize = 132;
    pub const DEVICE_ATTR_MAX_QP_RD_ATOM: usize = 144;
    pub const DEVICE_ATTR_MAX_QP_INIT_RD_ATOM: usize = 156;

    #[repr(C)]
    pub struct rdma_event_channel {
        pub fd: c_int,
    }

    /// The first fields of `struct rdma_cm_id`; `route.addr.src_addr` is at byte 32 and
    /// `route.addr.dst_addr` at byte 160 (each a 128-byte `sockaddr_storage`).
    #[repr(C)]
    pub struct rdma_cm_id {
        pub verbs: *mut ibv_context,
        pub channel: *mut rdma_event_channel,
        pub context: *mut c_void,
        pub qp: *mut ibv_qp,
        pub src_addr: [u8; 128],
        pub dst_addr: [u8; 128],
    }

    #[repr(C)]
    #[derive(Clone, Copy)]
    pub struct rdma_conn_param {
        pub private_data: *const c_void,
        pub private_data_len: u8,
        pub responder_resources: u8,
        pub initiator_depth: u8,
        pub flow_control: u8,
        pub retry_count: u8,
        pub rnr_retry_count: u8,
        pub srq: u8,
        pub qp_num: u32,
    }

    #[repr(C)]
    pub struct rdma_cm_event {
        pub id: *mut rdma_cm_id,
        pub listen_id: *mut rdma_cm_id,
        pub event: u32,
        pub status: c_int,
        pub conn: rdma_conn_param,
    }

    pub const IBV_WR_RDMA_WRITE: u32 = 0;
    pub const IBV_WR_SEND: u32 = 2;
    pub const IBV_WR_RDMA_READ: u32 = 4;
    pub const IBV_WR_SEND_WITH_INV: u32 = 9;
    pub const IBV_SEND_SIGNALED: u32 = 2;
    pub const IBV_SEND_INLINE: u32 = 8;
    pub const IBV_ACCESS_LOCAL_WRITE: c_int = 1;
    pub const IBV_QPT_RC: u32 = 2;
    pub const RDMA_PS_TCP: c_int = 0x106;
}

use ffi::*;

/// The functions taken from the two libraries.
struct Lib {
    create_event_channel: unsafe extern "C" fn() -> *mut rdma_event_channel,
    destroy_event_channel: unsafe extern "C" fn(*mut rdma_event_channel),
    create_id: unsafe extern "C" fn(
        *mut rdma_event_channel,
        *mut *mut rdma_cm_id,
        *mut c_void,
        c_int,
    ) -> c_int,
    destroy_id: unsafe extern "C" fn(*mut rdma_cm_id) -> c_int,
    bind_addr: unsafe extern "C" fn(*mut rdma_cm_id, *const libc::sockaddr) -> c_int,
    listen: unsafe extern "C" fn(*mut rdma_cm_id, c_int) -> c_int,
    get_cm_event: unsafe extern "C" fn(*mut rdma_event_channel, *mut *mut rdma_cm_event) -> c_int,
    ack_cm_event: unsafe extern "C" fn(*mut rdma_cm_event) -> c_int,
    accept: unsafe extern "C" fn(*mut rdma_cm_id, *const rdma_conn_param) -> c_int,
    reject: unsafe extern "C" fn(*mut rdma_cm_id, *const c_void, u8) -> c_int,
    disconnect: unsafe extern "C" fn(*mut rdma_cm_id) -> c_int,
    create_qp: unsafe extern "C" fn(*mut rdma_cm_id, *mut ibv_pd, *mut ibv_qp_init_attr) -> c_int,
    destroy_qp: unsafe extern "C" fn(*mut rdma_cm_id),
    migrate_id: unsafe extern "C" fn(*mut rdma_cm_id, *mut rdma_event_channel) -> c_int,
    event_str: unsafe extern "C" fn(c_int) -> *const c_char,
    alloc_pd: unsafe extern "C" fn(*mut ibv_context) -> *mut ibv_pd,
    dealloc_pd: unsafe extern "C" fn(*mut ibv_pd) -> c_int,
    reg_mr: unsafe extern "C" fn(*mut ibv_pd, *mut c_void, usize, c_int) -> *mut ibv_mr,
    dereg_mr: unsafe extern "C" fn(*mut ibv_mr) -> c_int,
    create_comp_channel: unsafe extern "C" fn(*mut ibv_context) -> *mut ibv_comp_channel,
    destroy_comp_channel: unsafe extern "C" fn(*mut ibv_comp_channel) -> c_int,
    create_cq: unsafe extern "C" fn(
        *mut ibv_context,
        c_int,
        *mut c_void,
        *mut ibv_comp_channel,
        c_int,
    ) -> *mut ibv_cq,
    destroy_cq: unsafe extern "C" fn(*mut ibv_cq) -> c_int,
    get_cq_event:
        unsafe extern "C" fn(*mut ibv_comp_channel, *mut *mut ibv_cq, *mut *mut c_void) -> c_int,
    ack_cq_events: unsafe extern "C" fn(*mut ibv_cq, c_uint),
    query_device: unsafe extern "C" fn(*mut ibv_context, *mut c_void) -> c_int,
    wc_status_str: unsafe extern "C" fn(c_int) -> *const c_char,
}

/// Opens a shared library, or says why not.
fn open_lib(name: &CStr) -> Result<*mut c_void, String> {
    // SAFETY: dlopen with a valid NUL-terminated name; the handle is kept for the life of the
    // process (never closed), so symbols taken from it stay valid.
    let h = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if h.is_null() {
        // SAFETY: dlerror returns a NUL-terminated string owned by libc (or null).
        let e = unsafe { libc::dlerror() };
        let why = if e.is_null() {
            "not found".to_string()
        } else {
            // SAFETY: non-null, NUL-terminated, valid until the next dl* call on this thread.
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        };
        return Err(why);
    }
    Ok(h)
}

/// Looks up a symbol as a function of type `F` (a function pointer type matching the C
/// declaration).
///
/// # Safety
/// `F` must be an `unsafe extern "C" fn` type whose signature is the symbol's.
unsafe fn sym<F: Copy>(h: *mut c_void, name: &CStr) -> Result<F, String> {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: `h` is a live handle from dlopen and `name` is NUL-terminated.
    let p = unsafe { libc::dlsym(h, name.as_ptr()) };
    if p.is_null() {
        return Err(format!("symbol {} missing", name.to_string_lossy()));
    }
    // SAFETY: a non-null code address of a function with the signature the caller names; a
    // function pointer has the size of a data pointer on the platforms rdma-core supports.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
}

fn load() -> Result<Lib, String> {
    let v = open_lib(c"libibverbs.so.1").map_err(|e| format!("libibverbs.so.1: {e}"))?;
    let c = open_lib(c"librdmacm.so.1").map_err(|e| format!("librdmacm.so.1: {e}"))?;
    // SAFETY: each type below is the C declaration of the symbol named beside it (rdma-core's
    // verbs.h and rdma_cma.h).
    unsafe {
        Ok(Lib {
            create_event_channel: sym(c, c"rdma_create_event_channel")?,
            destroy_event_channel: sym(c, c"rdma_destroy_event_channel")?,
            create_id: sym(c, c"rdma_create_id")?,
            destroy_id: sym(c, c"rdma_destroy_id")?,
            bind_addr: sym(c, c"rdma_bind_addr")?,
            listen: sym(c, c"rdma_listen")?,
            get_cm_event: sym(c, c"rdma_get_cm_event")?,
            ack_cm_event: sym(c, c"rdma_ack_cm_event")?,
            accept: sym(c, c"rdma_accept")?,
            reject: sym(c, c"rdma_reject")?,
            disconnect: sym(c, c"rdma_disconnect")?,
            create_qp: sym(c, c"rdma_create_qp")?,
            destroy_qp: sym(c, c"rdma_destroy_qp")?,
            migrate_id: sym(c, c"rdma_migrate_id")?,
            event_str: sym(c, c"rdma_event_str")?,
            alloc_pd: sym(v, c"ibv_alloc_pd")?,
            dealloc_pd: sym(v, c"ibv_dealloc_pd")?,
            reg_mr: sym(v, c"ibv_reg_mr")?,
            dereg_mr: sym(v, c"ibv_dereg_mr")?,
            create_comp_channel: sym(v, c"ibv_create_comp_channel")?,
            destroy_comp_channel: sym(v, c"ibv_destroy_comp_channel")?,
            create_cq: sym(v, c"ibv_create_cq")?,
            destroy_cq: sym(v, c"ibv_destroy_cq")?,
            get_cq_event: sym(v, c"ibv_get_cq_event")?,
            ack_cq_events: sym(v, c"ibv_ack_cq_events")?,
            query_device: sym(v, c"ibv_query_device")?,
            wc_status_str: sym(v, c"ibv_wc_status_str")?,
        })
    }
}

static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();

fn lib() -> io::Result<&'static Lib> {
    match LIB.get_or_init(load) {
        Ok(l) => Ok(l),
        Err(e) => Err(io::Error::new(io::ErrorKind::Unsupported, e.clone())),
    }
}

/// Whether rdma-core's libraries can be loaded; the reason when not.
pub fn available() -> Result<(), String> {
    lib().map(|_| ()).map_err(|e| e.to_string())
}

fn check(rc: c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// An errno returned as a value (the verbs post functions do that).
fn check_value(rc: c_int, what: &str) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::from_raw_os_error(rc.abs());
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor this module owns through its channel; no memory involved.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Name of a work completion status, for logs.
pub fn wc_status_str(status: u32) -> String {
    let Ok(l) = lib() else {
        return format!("status {status}");
    };
    // SAFETY: the function returns a static NUL-terminated string for any value.
    let p = unsafe { (l.wc_status_str)(status as c_int) };
    if p.is_null() {
        return format!("status {status}");
    }
    // SAFETY: non-null static string from libibverbs.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// An RDMA CM event channel: the events of its ids, read without blocking.
#[derive(Debug)]
pub struct EventChannel {
    ptr: NonNull<rdma_event_channel>,
}

// SAFETY: librdmacm's channels may be used from any thread (its calls take their own locks);
// this value is the only owner of the channel.
unsafe impl Send for EventChannel {}
// SAFETY: as above; reading events through `&self` is what librdmacm allows concurrently.
unsafe impl Sync for EventChannel {}

/// What an event is about (`enum rdma_cm_event_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmEventKind {
    ConnectRequest,
    ConnectError,
    Unreachable,
    Rejected,
    Established,
    Disconnected,
    DeviceRemoval,
    AddrChange,
    TimewaitExit,
    Other(u32),
}

impl CmEventKind {
    fn from_raw(v: u32) -> CmEventKind {
        match v {
            4 => CmEventKind::ConnectRequest,
            6 => CmEventKind::ConnectError,
            7 => CmEventKind::Unreachable,
            8 => CmEventKind::Rejected,
            9 => CmEventKind::Established,
            10 => CmEventKind::Disconnected,
            11 => CmEventKind::DeviceRemoval,
            14 => CmEventKind::AddrChange,
            15 => CmEventKind::TimewaitExit,
            v => CmEventKind::Other(v),
        }
    }
}

/// Names an id in events (compare with [`CmId::key`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdKey(usize);

/// One connection manager event, copied out and acknowledged.
#[derive(Debug)]
pub struct CmEvent {
    pub kind: CmEventKind,
    pub status: i32,
    /// The id the event is for.
    pub id: IdKey,
    /// For a connect request: the listening id it came to.
    pub listen_id: IdKey,
    /// The id's context value (see [`CmId::set_context`]).
    pub context: usize,
    /// A connect request's private data.
    pub private_data: Vec<u8>,
    /// A connect request's responder resources and initiator depth.
    pub responder_resources: u8,
    pub initiator_depth: u8,
    /// A connect request's new id, owned by this event until taken.
    request: Option<CmId>,
}

impl CmEvent {
    /// The new id of a connect request (once; `None` for other events). An id not taken is
    /// destroyed with the event, which refuses the connection.
    pub fn take_request(&mut self) -> Option<CmId> {
        self.request.take()
    }

    /// The event's name as librdmacm spells it.
    pub fn name(&self) -> String {
        let raw = match self.kind {
            CmEventKind::ConnectRequest => 4,
            CmEventKind::ConnectError => 6,
            CmEventKind::Unreachable => 7,
            CmEventKind::Rejected => 8,
            CmEventKind::Established => 9,
            CmEventKind::Disconnected => 10,
            CmEventKind::DeviceRemoval => 11,
            CmEventKind::AddrChange => 14,
            CmEventKind::TimewaitExit => 15,
            CmEventKind::Other(v) => v,
        };
        match lib() {
            // SAFETY: returns a static string for any value.
            Ok(l) => unsafe { CStr::from_ptr((l.event_str)(raw as c_int)) }
                .to_string_lossy()
                .into_owned(),
            Err(_) => format!("event {raw}"),
        }
    }
}

impl EventChannel {
    /// A new channel whose descriptor never blocks.
    pub fn new() -> io::Result<Arc<EventChannel>> {
        let l = lib()?;
        // SAFETY: no arguments; returns an owned channel or null with errno set.
        let p = unsafe { (l.create_event_channel)() };
        let ptr = NonNull::new(p).ok_or_else(|| {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("rdma_create_event_channel: {e}"))
        })?;
        let ch = EventChannel { ptr };
        set_nonblocking(ch.fd())?;
        Ok(Arc::new(ch))
    }

    /// The descriptor to wait on (readable when an event is ready).
    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is alive (owned by self); `fd` is a plain int field.
        unsafe { (*self.ptr.as_ptr()).fd }
    }

    /// The next event, if one is ready.
    pub fn get_event(self: &Arc<Self>) -> io::Result<Option<CmEvent>> {
        let l = lib()?;
        let mut ev: *mut rdma_cm_event = ptr::null_mut();
        // SAFETY: a live channel and a valid out-pointer.
        if unsafe { (l.get_cm_event)(self.ptr.as_ptr(), &mut ev) } != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(None);
            }
            return Err(io::Error::new(e.kind(), format!("rdma_get_cm_event: {e}")));
        }
        // SAFETY: on success `ev` points to an event owned by librdmacm until acknowledged;
        // it is only read here, then acknowledged below.
        let out = unsafe {
            let e = &*ev;
            let kind = CmEventKind::from_raw(e.event);
            let private_data =
                if kind == CmEventKind::ConnectRequest && !e.conn.private_data.is_null() {
                    std::slice::from_raw_parts(
                        e.conn.private_data.cast::<u8>(),
                        e.conn.private_data_len as usize,
                    )
                    .to_vec()
                } else {
                    Vec::new()
                };
            let id = e.id;
            let context = if id.is_null() {
                0
            } else {
                (*id).context as usize
            };
            CmEvent {
                kind,
                status: e.status,
                id: IdKey(id as usize),
                listen_id: IdKey(e.listen_id as usize),
                context,
                private_data,
                responder_resources: e.conn.responder_resources,
                initiator_depth: e.conn.initiator_depth,
                request: match (kind, NonNull::new(id)) {
                    // A connect request's id is a new one, on this channel, owned by us.
                    (CmEventKind::ConnectRequest, Some(p)) => Some(CmId {
                        ptr: p,
                        channel: self.clone(),
                        qp: None,
                    }),
                    _ => None,
                },
            }
        };
        // SAFETY: acknowledges the event read above; it is not touched afterwards.
        unsafe { (l.ack_cm_event)(ev) };
        Ok(Some(out))
    }
}

impl Drop for EventChannel {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: this value owns the channel, and every id on it holds an `Arc` of it, so
            // none is left.
            unsafe { (l.destroy_event_channel)(self.ptr.as_ptr()) };
        }
    }
}

/// A device context (`struct ibv_context`), opened and owned by librdmacm for as long as the
/// process runs; ids name theirs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device(NonNull<ibv_context>);

// SAFETY: verbs device contexts are thread-safe (libibverbs locks where it must); this is a
// non-owning handle.
unsafe impl Send for Device {}
// SAFETY: as above.
unsafe impl Sync for Device {}

/// The limits of a device that matter to a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceAttr {
    pub max_mr_size: u64,
    pub max_qp_wr: u32,
    pub max_sge: u32,
    pub max_cqe: u32,
    /// RDMA READs a queue pair can answer at once (responder resources).
    pub max_qp_rd_atom: u32,
    /// RDMA READs a queue pair can have outstanding (initiator depth).
    pub max_qp_init_rd_atom: u32,
}

impl Device {
    /// The device's limits.
    pub fn query(&self) -> io::Result<DeviceAttr> {
        let l = lib()?;
        let mut buf = [0u64; DEVICE_ATTR_LEN / 8];
        // SAFETY: a live context and a zeroed buffer larger than `struct ibv_device_attr`.
        let rc = unsafe { (l.query_device)(self.0.as_ptr(), buf.as_mut_ptr().cast()) };
        check(rc, "ibv_query_device")?;
        let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
        let u32_at = |o: usize| u32::from_ne_bytes(bytes[o..o + 4].try_into().unwrap_or([0; 4]));
        let u64_at = |o: usize| u64::from_ne_bytes(bytes[o..o + 8].try_into().unwrap_or([0; 8]));
        Ok(DeviceAttr {
            max_mr_size: u64_at(DEVICE_ATTR_MAX_MR_SIZE),
            max_qp_wr: u32_at(DEVICE_ATTR_MAX_QP_WR),
            max_sge: u32_at(DEVICE_ATTR_MAX_SGE),
            max_cqe: u32_at(DEVICE_ATTR_MAX_CQE),
            max_qp_rd_atom: u32_at(DEVICE_ATTR_MAX_QP_RD_ATOM),
            max_qp_init_rd_atom: u32_at(DEVICE_ATTR_MAX_QP_INIT_RD_ATOM),
        })
    }
}

/// A protection domain.
#[derive(Debug)]
pub struct Pd {
    ptr: NonNull<ibv_pd>,
    dev: Device,
}

// SAFETY: protection domains may be used from any thread; this value owns it.
unsafe impl Send for Pd {}
// SAFETY: as above.
unsafe impl Sync for Pd {}

impl Pd {
    pub fn new(dev: Device) -> io::Result<Arc<Pd>> {
        let l = lib()?;
        // SAFETY: a live device context.
        let p = unsafe { (l.alloc_pd)(dev.0.as_ptr()) };
        let ptr = NonNull::new(p).ok_or_else(|| {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("ibv_alloc_pd: {e}"))
        })?;
        Ok(Arc::new(Pd { ptr, dev }))
    }

    pub fn device(&self) -> Device {
        self.dev
    }

    /// Registers all of `region` for local access by the device (its receives and RDMA READs
    /// write it, its sends and RDMA WRITEs read it). This pins its pages.
    pub fn register(self: &Arc<Self>, region: Arc<Region>) -> io::Result<Mr> {
        let l = lib()?;
        // SAFETY: the address range is exactly the region's mapping, kept alive by the `Arc`
        // stored in the returned `Mr` (deregistered before it is released). The device writes
        // it only through work requests that name this registration, and Rust reads and
        // writes the region only through copies, so such writes are not data races.
        let p = unsafe {
            (l.reg_mr)(
                self.ptr.as_ptr(),
                region.addr() as usize as *mut c_void,
                region.len(),
                IBV_ACCESS_LOCAL_WRITE,
            )
        };
        let ptr = NonNull::new(p).ok_or_else(|| {
            let e = io::Error::last_os_error();
            io::Error::new(
                e.kind(),
                format!("ibv_reg_mr of {} bytes: {e}", region.len()),
            )
        })?;
        // Its pages must stay the ones the device was given.
        region.set_pinned();
        // SAFETY: a live registration just returned.
        let lkey = unsafe { (*ptr.as_ptr()).lkey };
        Ok(Mr {
            ptr,
            lkey,
            region,
            _pd: self.clone(),
        })
    }
}

impl Drop for Pd {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: owned; every registration and queue pair on it holds an `Arc` of it.
            unsafe { (l.dealloc_pd)(self.ptr.as_ptr()) };
        }
    }
}

/// A memory registration of a whole [`Region`].
#[derive(Debug)]
pub struct Mr {
    ptr: NonNull<ibv_mr>,
    lkey: u32,
    region: Arc<Region>,
    _pd: Arc<Pd>,
}

// SAFETY: registrations may be used from any thread; this value owns it.
unsafe impl Send for Mr {}
// SAFETY: as above.
unsafe impl Sync for Mr {}

impl Mr {
    pub fn region(&self) -> &Arc<Region> {
        &self.region
    }

    /// A scatter/gather entry for `len` bytes at `offset` of the region, if in bounds.
    pub fn sge(&self, offset: u64, len: u32) -> Option<Sge<'_>> {
        let end = offset.checked_add(len as u64)?;
        (end <= self.region.len() as u64).then_some(Sge {
            mr: self,
            offset,
            len,
        })
    }
}

impl Drop for Mr {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: owned registration.
            unsafe { (l.dereg_mr)(self.ptr.as_ptr()) };
        }
    }
}

/// Bytes of a registered region a work request names.
#[derive(Debug, Clone, Copy)]
pub struct Sge<'a> {
    mr: &'a Mr,
    offset: u64,
    len: u32,
}

impl Sge<'_> {
    fn raw(&self) -> ibv_sge {
        ibv_sge {
            addr: self.mr.region.addr() + self.offset,
            length: self.len,
            lkey: self.mr.lkey,
        }
    }
}

/// A completion channel: a descriptor that becomes readable when an armed completion queue
/// gets a completion.
#[derive(Debug)]
pub struct CompChannel {
    ptr: NonNull<ibv_comp_channel>,
}

// SAFETY: completion channels may be used from any thread; this value owns it.
unsafe impl Send for CompChannel {}
// SAFETY: as above.
unsafe impl Sync for CompChannel {}

impl CompChannel {
    pub fn new(dev: Device) -> io::Result<Arc<CompChannel>> {
        let l = lib()?;
        // SAFETY: a live device context.
        let p = unsafe { (l.create_comp_channel)(dev.0.as_ptr()) };
        let ptr = NonNull::new(p).ok_or_else(|| {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("ibv_create_comp_channel: {e}"))
        })?;
        let ch = CompChannel { ptr };
        set_nonblocking(ch.fd())?;
        Ok(Arc::new(ch))
    }

    pub fn fd(&self) -> RawFd {
        // SAFETY: a live channel; `fd` is a plain int field.
        unsafe { (*self.ptr.as_ptr()).fd }
    }
}

impl Drop for CompChannel {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: owned; every completion queue on it holds an `Arc` of it.
            unsafe { (l.destroy_comp_channel)(self.ptr.as_ptr()) };
        }
    }
}

/// One work completion.
pub type Wc = ibv_wc;

/// A completion queue with its completion channel.
#[derive(Debug)]
pub struct Cq {
    ptr: NonNull<ibv_cq>,
    channel: Arc<CompChannel>,
    poll: PollCq,
    notify: ReqNotifyCq,
    /// Events taken from the channel, acknowledged when the queue is destroyed.
    events: std::cell::Cell<u32>,
}

// SAFETY: completion queues may be used from any thread (polled by one at a time: `Cq` is not
// `Sync`); this value owns it.
unsafe impl Send for Cq {}

impl Cq {
    /// A queue for `entries` completions, signalling `channel` when armed.
    pub fn new(dev: Device, entries: u32, channel: Arc<CompChannel>) -> io::Result<Cq> {
        let l = lib()?;
        // SAFETY: a live context and channel of the same device.
        let p = unsafe {
            (l.create_cq)(
                dev.0.as_ptr(),
                entries.min(i32::MAX as u32) as c_int,
                ptr::null_mut(),
                channel.ptr.as_ptr(),
                0,
            )
        };
        let ptr = NonNull::new(p).ok_or_else(|| {
            let e = io::Error::last_os_error();
            io::Error::new(e.kind(), format!("ibv_create_cq of {entries} entries: {e}"))
        })?;
        // SAFETY: the context of a live queue; its operation table is filled in by the provider.
        let ops = unsafe { &(*(*ptr.as_ptr()).context).ops };
        let (Some(poll), Some(notify)) = (ops.poll_cq, ops.req_notify_cq) else {
            // SAFETY: the queue just created, not used.
            unsafe { (l.destroy_cq)(ptr.as_ptr()) };
            return Err(io::Error::other("the device has no poll_cq/req_notify_cq"));
        };
        Ok(Cq {
            ptr,
            channel,
            poll,
            notify,
            events: std::cell::Cell::new(0),
        })
    }

    /// Takes up to `out.len()` completions; returns how many.
    pub fn poll(&self, out: &mut [Wc]) -> io::Result<usize> {
        // SAFETY: a live queue and room for `out.len()` completions.
        let n = unsafe {
            (self.poll)(
                self.ptr.as_ptr(),
                out.len().min(i32::MAX as usize) as c_int,
                out.as_mut_ptr(),
            )
        };
        if n < 0 {
            return Err(io::Error::other(format!("ibv_poll_cq failed ({n})")));
        }
        Ok(n as usize)
    }

    /// Asks for the channel to be signalled on the next completion.
    pub fn arm(&self) -> io::Result<()> {
        // SAFETY: a live queue.
        let rc = unsafe { (self.notify)(self.ptr.as_ptr(), 0) };
        check_value(rc, "ibv_req_notify_cq")
    }

    /// Takes one pending event of the channel (without blocking); true if there was one. A
    /// queue armed once signals once: after a wake-up there is one event to take.
    pub fn take_event(&self) -> bool {
        let Ok(l) = lib() else { return false };
        let mut cq: *mut ibv_cq = ptr::null_mut();
        let mut ctx: *mut c_void = ptr::null_mut();
        // SAFETY: a live, non-blocking channel and valid out-pointers.
        if unsafe { (l.get_cq_event)(self.channel.ptr.as_ptr(), &mut cq, &mut ctx) } != 0 {
            return false;
        }
        self.events.set(self.events.get() + 1);
        if self.events.get() >= 1024 {
            // SAFETY: acknowledges events taken from this queue's channel.
            unsafe { (l.ack_cq_events)(self.ptr.as_ptr(), self.events.get()) };
            self.events.set(0);
        }
        true
    }

    pub fn channel(&self) -> &Arc<CompChannel> {
        &self.channel
    }
}

impl Drop for Cq {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: acknowledges the events taken, then destroys the owned queue (its queue
            // pairs are gone: each id holding one is dropped before the driver drops this).
            unsafe {
                (l.ack_cq_events)(self.ptr.as_ptr(), self.events.get());
                (l.destroy_cq)(self.ptr.as_ptr());
            }
        }
    }
}

/// Sizes of a queue pair.
pub type QpCap = ibv_qp_cap;

/// What a send work request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOp {
    Send,
    /// A send that invalidates the peer's key `rkey`.
    SendInv(u32),
    /// Write the local data to the peer's memory.
    RdmaWrite {
        addr: u64,
        rkey: u32,
    },
    /// Read the peer's memory into the local buffers.
    RdmaRead {
        addr: u64,
        rkey: u32,
    },
}

/// The local side of a send work request.
#[derive(Debug, Clone, Copy)]
pub enum SendData<'a> {
    None,
    /// Copied into the work request when it is posted (at most the queue pair's inline size).
    Inline(&'a [u8]),
    Sges(&'a [Sge<'a>]),
}

/// One send work request.
#[derive(Debug, Clone, Copy)]
pub struct SendWr<'a> {
    pub wr_id: u64,
    pub op: SendOp,
    pub data: SendData<'a>,
    pub signaled: bool,
}

/// Work requests posted in one call at most, and scatter/gather entries per request.
pub const MAX_CHAIN: usize = 16;
pub const MAX_SGE: usize = 4;

/// An RDMA CM id (a listener, or one connection with its queue pair).
#[derive(Debug)]
pub struct CmId {
    ptr: NonNull<rdma_cm_id>,
    channel: Arc<EventChannel>,
    qp: Option<(Arc<Pd>, PostSend, PostRecv)>,
}

// SAFETY: ids may be used from any thread (librdmacm locks its own state); this value owns it.
unsafe impl Send for CmId {}

fn sockaddr_of(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero bytes are a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage, which is suitably aligned.
            unsafe { ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above, for sockaddr_in6.
            unsafe { ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// Decodes a `sockaddr_storage` image (IPv4 or IPv6).
fn socket_addr(b: &[u8; 128]) -> Option<SocketAddr> {
    let family = u16::from_ne_bytes([b[0], b[1]]) as c_int;
    let port = u16::from_be_bytes([b[2], b[3]]);
    match family {
        libc::AF_INET => {
            let ip = Ipv4Addr::new(b[4], b[5], b[6], b[7]);
            Some(SocketAddr::new(IpAddr::V4(ip), port))
        }
        libc::AF_INET6 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[8..24]);
            let ip = Ipv6Addr::from(o);
            Some(SocketAddr::new(IpAddr::V6(ip), port))
        }
        _ => None,
    }
}

impl CmId {
    /// An id listening on `addr` (RC, TCP port space), its events on `channel`.
    pub fn listen(channel: &Arc<EventChannel>, addr: SocketAddr, backlog: i32) -> io::Result<CmId> {
        let l = lib()?;
        let mut p: *mut rdma_cm_id = ptr::null_mut();
        // SAFETY: a live channel and a valid out-pointer.
        let rc =
            unsafe { (l.create_id)(channel.ptr.as_ptr(), &mut p, ptr::null_mut(), RDMA_PS_TCP) };
        check(rc, "rdma_create_id")?;
        let id = CmId {
            ptr: NonNull::new(p).ok_or_else(|| io::Error::other("rdma_create_id gave null"))?,
            channel: channel.clone(),
            qp: None,
        };
        let (ss, _) = sockaddr_of(addr);
        // SAFETY: a live id and a sockaddr of the right family in a sockaddr_storage.
        let rc = unsafe {
            (l.bind_addr)(
                id.ptr.as_ptr(),
                (&ss as *const libc::sockaddr_storage).cast(),
            )
        };
        check(rc, &format!("rdma_bind_addr({addr})"))?;
        // SAFETY: a live, bound id.
        let rc = unsafe { (l.listen)(id.ptr.as_ptr(), backlog) };
        check(rc, "rdma_listen")?;
        Ok(id)
    }

    /// Names this id in events.
    pub fn key(&self) -> IdKey {
        IdKey(self.ptr.as_ptr() as usize)
    }

    /// Sets the value events for this id carry in [`CmEvent::context`].
    pub fn set_context(&self, v: usize) {
        // SAFETY: a live id; `context` is an opaque pointer-sized field librdmacm never reads.
        unsafe { (*self.ptr.as_ptr()).context = v as *mut c_void };
    }

    /// The device the id is bound to (none for a listener on a wildcard address).
    pub fn device(&self) -> Option<Device> {
        // SAFETY: a live id; `verbs` is set by librdmacm once the id is bound to a device.
        NonNull::new(unsafe { (*self.ptr.as_ptr()).verbs }).map(Device)
    }

    /// The local address (for a listener, the bound one; with port 0, the chosen port).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        // SAFETY: a live id; the address field is plain bytes written by librdmacm.
        socket_addr(unsafe { &(*self.ptr.as_ptr()).src_addr })
    }

    /// The peer's address (connections).
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: as above.
        socket_addr(unsafe { &(*self.ptr.as_ptr()).dst_addr })
    }

    /// Moves the id's events to `channel` (nothing to do when they go there already).
    pub fn migrate(&mut self, channel: &Arc<EventChannel>) -> io::Result<()> {
        if Arc::ptr_eq(&self.channel, channel) {
            return Ok(());
        }
        let l = lib()?;
        // SAFETY: a live id and channel; every event of the id was acknowledged when read.
        let rc = unsafe { (l.migrate_id)(self.ptr.as_ptr(), channel.ptr.as_ptr()) };
        check(rc, "rdma_migrate_id")?;
        self.channel = channel.clone();
        Ok(())
    }

    /// Creates the id's RC queue pair on `pd`, with `cq` for both its queues; returns the
    /// sizes the device granted.
    pub fn create_qp(&mut self, pd: &Arc<Pd>, cq: &Cq, cap: QpCap) -> io::Result<QpCap> {
        let l = lib()?;
        if self.qp.is_some() {
            return Err(io::Error::other("the id has a queue pair already"));
        }
        let mut attr = ibv_qp_init_attr {
            qp_context: ptr::null_mut(),
            send_cq: cq.ptr.as_ptr(),
            recv_cq: cq.ptr.as_ptr(),
            srq: ptr::null_mut(),
            cap,
            qp_type: IBV_QPT_RC,
            sq_sig_all: 0,
        };
        // SAFETY: a live id, protection domain and queue of one device; `attr` is valid and
        // receives the granted sizes.
        let rc = unsafe { (l.create_qp)(self.ptr.as_ptr(), pd.ptr.as_ptr(), &mut attr) };
        check(rc, "rdma_create_qp")?;
        // SAFETY: the queue pair just created; its context's operation table is the provider's.
        let ops = unsafe { &(*(*(*self.ptr.as_ptr()).qp).context).ops };
        let (Some(send), Some(recv)) = (ops.post_send, ops.post_recv) else {
            // SAFETY: the queue pair just created, not used.
            unsafe { (l.destroy_qp)(self.ptr.as_ptr()) };
            return Err(io::Error::other("the device has no post_send/post_recv"));
        };
        self.qp = Some((pd.clone(), send, recv));
        Ok(attr.cap)
    }

    /// Accepts a connect request (its queue pair created) with `private_data`.
    pub fn accept(
        &self,
        private_data: &[u8],
        responder_resources: u8,
        initiator_depth: u8,
    ) -> io::Result<()> {
        let l = lib()?;
        let p = rdma_conn_param {
            private_data: private_data.as_ptr().cast(),
            private_data_len: private_data.len().min(255) as u8,
            responder_resources,
            initiator_depth,
            flow_control: 1,
            retry_count: 0,
            rnr_retry_count: 7,
            srq: 0,
            qp_num: 0,
        };
        // SAFETY: a live id; the parameters and private data are read during the call.
        check(unsafe { (l.accept)(self.ptr.as_ptr(), &p) }, "rdma_accept")
    }

    /// Refuses a connect request with `private_data`; the id is then destroyed.
    pub fn reject(self, private_data: &[u8]) -> io::Result<()> {
        let l = lib()?;
        // SAFETY: a live id; the private data is read during the call.
        let rc = unsafe {
            (l.reject)(
                self.ptr.as_ptr(),
                private_data.as_ptr().cast(),
                private_data.len().min(255) as u8,
            )
        };
        check(rc, "rdma_reject")
    }

    /// Disconnects; the queue pair moves to the error state and its outstanding work
    /// requests complete with flush errors.
    pub fn disconnect(&self) -> io::Result<()> {
        let l = lib()?;
        // SAFETY: a live id.
        let rc = unsafe { (l.disconnect)(self.ptr.as_ptr()) };
        check(rc, "rdma_disconnect")
    }

    fn qp_ptr(&self) -> io::Result<(*mut ibv_qp, PostSend, PostRecv)> {
        let Some((_, send, recv)) = self.qp else {
            return Err(io::Error::other("the id has no queue pair"));
        };
        // SAFETY: a live id with a queue pair.
        Ok((unsafe { (*self.ptr.as_ptr()).qp }, send, recv))
    }

    /// Posts one receive into `sges`.
    pub fn post_recv(&self, wr_id: u64, sges: &[Sge]) -> io::Result<()> {
        let (qp, _, recv) = self.qp_ptr()?;
        if sges.len() > MAX_SGE {
            return Err(io::Error::other("too many scatter/gather entries"));
        }
        let mut list = [ibv_sge::default(); MAX_SGE];
        for (d, s) in list.iter_mut().zip(sges) {
            *d = s.raw();
        }
        let mut wr = ibv_recv_wr {
            wr_id,
            next: ptr::null_mut(),
            sg_list: list.as_mut_ptr(),
            num_sge: sges.len() as c_int,
        };
        let mut bad: *mut ibv_recv_wr = ptr::null_mut();
        // SAFETY: a live queue pair; the request and its entries are read during the call;
        // each entry names a live registration and a range inside it.
        check_value(unsafe { recv(qp, &mut wr, &mut bad) }, "ibv_post_recv")
    }

    /// Posts `wrs` (at most [`MAX_CHAIN`]) as one chain, in order.
    pub fn post_send(&self, wrs: &[SendWr]) -> io::Result<()> {
        let (qp, send, _) = self.qp_ptr()?;
        if wrs.is_empty() {
            return Ok(());
        }
        if wrs.len() > MAX_CHAIN {
            return Err(io::Error::other("too many work requests in one post"));
        }
        let mut lists = [[ibv_sge::default(); MAX_SGE]; MAX_CHAIN];
        // SAFETY: all-zero bytes are a valid `ibv_send_wr` (null pointers, zero counts).
        let mut raw: [ibv_send_wr; MAX_CHAIN] = unsafe { std::mem::zeroed() };
        for (i, w) in wrs.iter().enumerate() {
            let r = &mut raw[i];
            r.wr_id = w.wr_id;
            r.send_flags = if w.signaled { IBV_SEND_SIGNALED } else { 0 };
            match w.op {
                SendOp::Send => r.opcode = IBV_WR_SEND,
                SendOp::SendInv(k) => {
                    r.opcode = IBV_WR_SEND_WITH_INV;
                    r.imm_or_inv = k;
                }
                SendOp::RdmaWrite { addr, rkey } => {
                    r.opcode = IBV_WR_RDMA_WRITE;
                    r.remote_addr = addr;
                    r.rkey = rkey;
                }
                SendOp::RdmaRead { addr, rkey } => {
                    r.opcode = IBV_WR_RDMA_READ;
                    r.remote_addr = addr;
                    r.rkey = rkey;
                }
            }
            match w.data {
                SendData::None => {}
                SendData::Inline(b) => {
                    if matches!(w.op, SendOp::RdmaRead { .. }) {
                        return Err(io::Error::other("an RDMA READ cannot be inline"));
                    }
                    lists[i][0] = ibv_sge {
                        addr: b.as_ptr() as usize as u64,
                        length: b.len() as u32,
                        lkey: 0,
                    };
                    r.num_sge = 1;
                    r.send_flags |= IBV_SEND_INLINE;
                }
                SendData::Sges(s) => {
                    if s.len() > MAX_SGE {
                        return Err(io::Error::other("too many scatter/gather entries"));
                    }
                    for (d, e) in lists[i].iter_mut().zip(s) {
                        *d = e.raw();
                    }
                    r.num_sge = s.len() as c_int;
                }
            }
        }
        for i in 0..wrs.len() {
            raw[i].sg_list = lists[i].as_mut_ptr();
            if i + 1 < wrs.len() {
                raw[i].next = &mut raw[i + 1];
            }
        }
        let mut bad: *mut ibv_send_wr = ptr::null_mut();
        // SAFETY: a live queue pair; the chain and its entries live on this stack frame for
        // the call. Inline data is copied by the provider during the call; every other entry
        // names a live registration and a range inside it.
        let rc = unsafe { send(qp, raw.as_mut_ptr(), &mut bad) };
        check_value(rc, "ibv_post_send")
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        if let Ok(l) = lib() {
            // SAFETY: owned id (and queue pair); its channel is kept alive by `self.channel`,
            // its protection domain by the `Arc` in `self.qp`, until after these calls.
            unsafe {
                if self.qp.is_some() {
                    (l.destroy_qp)(self.ptr.as_ptr());
                }
                (l.destroy_id)(self.ptr.as_ptr());
            }
        }
    }
}
