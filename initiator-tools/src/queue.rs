//! One NVMe/TCP connection carrying one NVMe queue (admin or I/O), driven
//! with blocking std sockets.
//!
//! Every read from the network is bounded by [`QueueOptions::io_timeout`]
//! (per PDU), so a silent target yields [`Error::Timeout`] rather than a hang.
//! After a fatal error (protocol violation, termination, closed connection,
//! a timeout in the middle of a PDU) the queue refuses further use and every
//! call returns an error describing the original failure; the raw calls
//! ([`Queue::send_raw`], [`Queue::recv_raw_pdu`]) stay available for tests.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::command::{self, Command, Cqe, Response};
use crate::pdu::{self, CommonHeader, IcReq, Pdu, PduConfig};
use crate::{uuid_to_string, Error, Result};

/// In-capsule data size of the admin queue on NVMe/TCP (fixed by the
/// transport specification).
pub const ADMIN_IN_CAPSULE_MAX: u32 = 8192;

/// Host identifier used by [`QueueOptions::default`] (a fixed, valid v4 UUID
/// so that runs are reproducible).
pub const DEFAULT_HOSTID: [u8; 16] = [
    0x6e, 0x76, 0x6d, 0x66, 0x2d, 0x69, 0x4e, 0x69, 0x94, 0x74, 0x69, 0x61, 0x74, 0x6f, 0x72, 0x31,
];

/// Largest PDU accepted by [`Queue::recv_raw_pdu`].
const RAW_PDU_LIMIT: usize = 64 << 20;

/// Connection parameters.
#[derive(Clone, Debug)]
pub struct QueueOptions {
    pub hostnqn: String,
    pub hostid: [u8; 16],
    /// Request header digests in ICReq.
    pub hdr_digest: bool,
    /// Request data digests in ICReq.
    pub data_digest: bool,
    /// I/O queue size (SQSIZE + 1).
    pub queue_size: u16,
    /// Admin queue size (SQSIZE + 1); 32 like Linux.
    pub admin_queue_size: u16,
    /// Keep Alive Timeout sent in the admin Connect, in ms (0 = disabled).
    /// This library sends no keep-alives by itself: call `keep_alive()`.
    pub kato_ms: u32,
    /// Largest write sent as in-capsule data on I/O queues; larger writes use
    /// R2T + H2CData. [`crate::Controller::connect`] lowers this to the
    /// controller's IOCCSZ limit.
    pub in_capsule_max: u32,
    pub connect_timeout: Duration,
    /// Upper bound on every wait for the target (per PDU).
    pub io_timeout: Duration,
    /// Ask the controller to disable SQ flow control (Connect CATTR bit 2);
    /// this is what allows C2HData PDUs with the SUCCESS flag.
    pub disable_sqflow: bool,
    /// HPDA sent in ICReq (host data alignment = (hpda + 1) * 4 bytes).
    pub hpda: u8,
    /// Tolerate what real targets do and the Linux host accepts, though
    /// the spec says otherwise: C2HData with the SUCCESS flag while SQ flow
    /// control is enabled, and completions whose SQID is not the queue's
    /// (SPDK's nvmf_tgt does both). Off by default: the library judges our
    /// target strictly; the tools turn it on to work with other targets.
    pub lenient: bool,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            hostnqn: format!(
                "nqn.2014-08.org.nvmexpress:uuid:{}",
                uuid_to_string(&DEFAULT_HOSTID)
            ),
            hostid: DEFAULT_HOSTID,
            hdr_digest: false,
            data_digest: false,
            queue_size: 128,
            admin_queue_size: 32,
            kato_ms: 0,
            in_capsule_max: 8192,
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            disable_sqflow: false,
            lenient: false,
            hpda: 0,
        }
    }
}

/// Build the 1024-byte Connect command data.
pub fn connect_data(
    hostid: &[u8; 16],
    cntlid: u16,
    subnqn: &str,
    hostnqn: &str,
) -> Result<Vec<u8>> {
    for (what, s) in [("subsystem NQN", subnqn), ("host NQN", hostnqn)] {
        if s.len() > 255 {
            return Err(Error::Invalid(format!(
                "{what} is {} bytes, the limit is 255",
                s.len()
            )));
        }
    }
    let mut d = vec![0u8; 1024];
    d[0..16].copy_from_slice(hostid);
    d[16..18].copy_from_slice(&cntlid.to_le_bytes());
    d[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
    d[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
    Ok(d)
}

/// Why a queue stopped working.
#[derive(Clone, Debug)]
enum Dead {
    Closed,
    Terminated { fes: u16, fei: u32 },
    Failed(String),
}

/// State of an outstanding command.
#[derive(Debug)]
struct Pending {
    opcode: u8,
    /// Expected controller-to-host data length (0 = not a read).
    data_in_len: u32,
    data_in: Vec<u8>,
    last_seen: bool,
    /// Write data waiting for R2Ts (None when in-capsule or no data).
    data_out: Option<Vec<u8>>,
    in_capsule: bool,
    data_sent: u32,
}

/// One NVMe/TCP queue.
#[derive(Debug)]
pub struct Queue {
    stream: TcpStream,
    peer: SocketAddr,
    qid: u16,
    cntlid: u16,
    tx: PduConfig,
    rx: PduConfig,
    maxh2cdata: u32,
    queue_size: u16,
    in_capsule_max: u32,
    io_timeout: Duration,
    sqflow_disabled: bool,
    lenient: bool,
    next_cid: u16,
    pending: HashMap<u16, Pending>,
    done: VecDeque<Response>,
    dead: Option<Dead>,
}

impl Queue {
    /// Open a TCP connection, exchange ICReq/ICResp and send the Fabrics
    /// Connect command for queue `qid`. Use `cntlid` 0xFFFF for a dynamic
    /// controller on the admin queue, and the admin queue's CNTLID for I/O
    /// queues.
    pub fn connect(
        addr: SocketAddr,
        qid: u16,
        subnqn: &str,
        cntlid: u16,
        opts: &QueueOptions,
    ) -> Result<Queue> {
        let mut q = Queue::connect_transport(addr, opts)?;
        q.qid = qid;
        q.queue_size = if qid == 0 {
            opts.admin_queue_size
        } else {
            opts.queue_size
        };
        q.in_capsule_max = if qid == 0 {
            ADMIN_IN_CAPSULE_MAX
        } else {
            opts.in_capsule_max
        };
        q.sqflow_disabled = opts.disable_sqflow;
        q.lenient = opts.lenient;
        if q.queue_size < 2 {
            return Err(Error::Invalid(format!(
                "queue size {} is below the minimum of 2",
                q.queue_size
            )));
        }
        let cattr = if opts.disable_sqflow {
            command::CATTR_DISABLE_SQ_FLOW_CONTROL
        } else {
            0
        };
        let kato = if qid == 0 { opts.kato_ms } else { 0 };
        let cmd = Command::connect(qid, q.queue_size - 1, cattr, kato);
        let data = connect_data(&opts.hostid, cntlid, subnqn, &opts.hostnqn)?;
        let cid = q.submit_inner(cmd, Some(data), 0, true)?;
        let r = q.wait_for(cid)?.check()?;
        let got = (r.dw0 & 0xffff) as u16;
        let authreq = (r.dw0 >> 16) & 0x3;
        if authreq != 0 {
            return Err(Error::Invalid(format!(
                "controller requires in-band authentication (AUTHREQ {authreq:#x}), which this host does not support"
            )));
        }
        if got >= 0xFFF0 {
            return Err(Error::Protocol(format!(
                "Connect response: CNTLID {got:#06x} is not a valid controller ID"
            )));
        }
        if cntlid < 0xFFF0 && got != cntlid {
            return Err(Error::Protocol(format!(
                "Connect response: CNTLID {got:#06x} differs from the requested {cntlid:#06x}"
            )));
        }
        q.cntlid = got;
        Ok(q)
    }

    /// Open the TCP connection and do the ICReq/ICResp exchange only (no
    /// Connect command). Useful for tests of the Connect path itself; the
    /// returned queue behaves as an admin queue (qid 0, size 32).
    pub fn connect_transport(addr: SocketAddr, opts: &QueueOptions) -> Result<Queue> {
        if opts.hpda > pdu::MAX_PDA {
            return Err(Error::Invalid(format!(
                "HPDA {} exceeds {}",
                opts.hpda,
                pdu::MAX_PDA
            )));
        }
        let stream = TcpStream::connect_timeout(&addr, opts.connect_timeout)?;
        stream.set_nodelay(true)?;
        stream.set_write_timeout(Some(opts.io_timeout))?;
        let mut q = Queue {
            stream,
            peer: addr,
            qid: 0,
            cntlid: 0xFFFF,
            tx: PduConfig::default(),
            rx: PduConfig::new(false, false, opts.hpda),
            maxh2cdata: pdu::MIN_MAXH2CDATA,
            queue_size: 32,
            in_capsule_max: ADMIN_IN_CAPSULE_MAX,
            io_timeout: opts.io_timeout,
            sqflow_disabled: false,
            lenient: false,
            next_cid: 0,
            pending: HashMap::new(),
            done: VecDeque::new(),
            dead: None,
        };
        let icreq = Pdu::IcReq(IcReq {
            pfv: 0,
            hpda: opts.hpda,
            hdgst: opts.hdr_digest,
            ddgst: opts.data_digest,
            maxr2t: 0,
        });
        q.write_all(&icreq.encode(&q.tx))?;
        let resp = match q.read_pdu(pdu::IC_PDU_LEN)? {
            Pdu::IcResp(r) => r,
            Pdu::C2hTermReq(t) => {
                q.dead = Some(Dead::Terminated {
                    fes: t.fes,
                    fei: t.fei,
                });
                return Err(Error::Terminated {
                    fes: t.fes,
                    fei: t.fei,
                });
            }
            other => {
                return q.fail(format!(
                    "expected ICResp after ICReq, got {}",
                    pdu::pdu_type_name(other.pdu_type())
                ))
            }
        };
        if resp.hdgst && !opts.hdr_digest {
            return q.fail("ICResp enables header digests, which the host did not request".into());
        }
        if resp.ddgst && !opts.data_digest {
            return q.fail("ICResp enables data digests, which the host did not request".into());
        }
        q.tx = PduConfig::new(resp.hdgst, resp.ddgst, resp.cpda);
        q.rx = PduConfig::new(resp.hdgst, resp.ddgst, opts.hpda);
        q.maxh2cdata = resp.maxh2cdata;
        Ok(q)
    }

    // ----- accessors -----

    pub fn qid(&self) -> u16 {
        self.qid
    }
    /// Controller ID returned by Connect.
    pub fn cntlid(&self) -> u16 {
        self.cntlid
    }
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
    /// Header digests in effect after ICResp.
    pub fn hdr_digest(&self) -> bool {
        self.tx.hdr_digest
    }
    /// Data digests in effect after ICResp.
    pub fn data_digest(&self) -> bool {
        self.tx.data_digest
    }
    /// CPDA from ICResp.
    pub fn cpda(&self) -> u8 {
        self.tx.pda
    }
    /// MAXH2CDATA from ICResp.
    pub fn maxh2cdata(&self) -> u32 {
        self.maxh2cdata
    }
    /// Queue size (SQSIZE + 1) sent in Connect.
    pub fn queue_size(&self) -> u16 {
        self.queue_size
    }
    pub fn in_capsule_max(&self) -> u32 {
        self.in_capsule_max
    }
    /// Change the largest write sent in-capsule (e.g. after reading IOCCSZ).
    pub fn set_in_capsule_max(&mut self, n: u32) {
        self.in_capsule_max = n;
    }
    pub fn set_io_timeout(&mut self, t: Duration) -> Result<()> {
        self.io_timeout = t;
        self.stream.set_write_timeout(Some(t))?;
        Ok(())
    }
    /// Number of submitted commands not yet returned by `wait`.
    pub fn outstanding(&self) -> usize {
        self.pending.len() + self.done.len()
    }
    /// Codec settings for host-to-controller PDUs (to hand-craft PDUs).
    pub fn tx_config(&self) -> PduConfig {
        self.tx
    }
    /// Codec settings for controller-to-host PDUs.
    pub fn rx_config(&self) -> PduConfig {
        self.rx
    }
    /// Encode a PDU with this queue's host-to-controller settings.
    pub fn encode_pdu(&self, p: &Pdu) -> Vec<u8> {
        p.encode(&self.tx)
    }
    /// Hands over the connected socket (for a load generator with its own
    /// event loop). Fails while commands are outstanding.
    pub fn into_stream(self) -> Result<TcpStream> {
        if !self.pending.is_empty() || !self.done.is_empty() {
            return Err(Error::Invalid(
                "commands are still outstanding on this queue".into(),
            ));
        }
        Ok(self.stream)
    }

    // ----- error state -----

    fn fail<T>(&mut self, msg: String) -> Result<T> {
        self.dead = Some(Dead::Failed(msg.clone()));
        Err(Error::Protocol(msg))
    }

    fn check_alive(&self) -> Result<()> {
        match &self.dead {
            None => Ok(()),
            Some(Dead::Closed) => Err(Error::Closed),
            Some(Dead::Terminated { fes, fei }) => Err(Error::Terminated {
                fes: *fes,
                fei: *fei,
            }),
            Some(Dead::Failed(m)) => Err(Error::Protocol(format!(
                "queue unusable after an earlier error: {m}"
            ))),
        }
    }

    /// Record a fatal error (anything but a timeout at a PDU boundary).
    fn record(&mut self, e: Error) -> Error {
        self.dead = Some(match &e {
            Error::Closed => Dead::Closed,
            Error::Terminated { fes, fei } => Dead::Terminated {
                fes: *fes,
                fei: *fei,
            },
            other => Dead::Failed(other.to_string()),
        });
        e
    }

    // ----- socket I/O -----

    fn write_all(&mut self, b: &[u8]) -> Result<()> {
        match self.stream.write_all(b) {
            Ok(()) => Ok(()),
            Err(e) => {
                let e = Error::from(e);
                Err(self.record(e))
            }
        }
    }

    /// Fill `buf` before `deadline`. `done_before` is how many bytes of the
    /// current PDU were already read (for messages and desync tracking).
    fn read_full(
        &mut self,
        buf: &mut [u8],
        deadline: Instant,
        done_before: usize,
        total: usize,
    ) -> Result<()> {
        let mut off = 0;
        while off < buf.len() {
            let now = Instant::now();
            if now >= deadline {
                let e = Error::Timeout;
                return Err(if off + done_before == 0 {
                    e
                } else {
                    self.record(e)
                });
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            match self.stream.read(&mut buf[off..]) {
                Ok(0) => {
                    let got = off + done_before;
                    let e = if got == 0 {
                        Error::Closed
                    } else {
                        Error::Protocol(format!(
                            "connection closed in the middle of a PDU ({got} of {total} bytes received)"
                        ))
                    };
                    return Err(self.record(e));
                }
                Ok(n) => off += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) => {}
                Err(e) => {
                    let e = Error::from(e);
                    return Err(self.record(e));
                }
            }
        }
        Ok(())
    }

    /// Read and strictly decode one PDU of at most `limit` bytes.
    fn read_pdu(&mut self, limit: usize) -> Result<Pdu> {
        let deadline = Instant::now() + self.io_timeout;
        let mut hdr = [0u8; pdu::COMMON_HEADER_LEN];
        self.read_full(&mut hdr, deadline, 0, pdu::COMMON_HEADER_LEN)?;
        let ch = CommonHeader::parse(&hdr)?;
        if let Err(e) = pdu::check_common_header(&ch, &self.rx) {
            return Err(self.record(e));
        }
        let plen = ch.plen as usize;
        if plen > limit {
            let msg = format!(
                "{}: PLEN {plen} exceeds the largest PDU this queue can expect now ({limit} bytes)",
                pdu::pdu_type_name(ch.pdu_type)
            );
            return Err(self.record(Error::Protocol(msg)));
        }
        let mut buf = vec![0u8; plen];
        buf[..8].copy_from_slice(&hdr);
        self.read_full(&mut buf[8..], deadline, 8, plen)?;
        match pdu::decode(&buf, &self.rx) {
            Ok(p) => Ok(p),
            Err(e) => Err(self.record(e)),
        }
    }

    /// Largest PDU acceptable given the outstanding reads.
    fn rx_limit(&self) -> usize {
        let max_read = self
            .pending
            .values()
            .map(|p| (p.data_in_len - p.data_in.len() as u32) as usize)
            .max()
            .unwrap_or(0);
        max_read + 4096
    }

    // ----- commands -----

    fn alloc_cid(&mut self) -> u16 {
        loop {
            let cid = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1);
            // 0xFFFF is avoided: error log entries use it for "no command".
            if cid != 0xFFFF
                && !self.pending.contains_key(&cid)
                && !self.done.iter().any(|r| r.cid == cid)
            {
                return cid;
            }
        }
    }

    /// Submit a command. `data_out` is write data (in-capsule if it fits the
    /// queue's in-capsule limit, otherwise announced with a transport SGL and
    /// sent on R2T); `data_in_len` is the length of data the command returns.
    /// The command's `cid` and `dptr` are filled in; `flags` is sent as given
    /// (builders set PSDT to SGL). Returns the CID.
    pub fn submit(
        &mut self,
        cmd: Command,
        data_out: Option<Vec<u8>>,
        data_in_len: u32,
    ) -> Result<u16> {
        self.submit_inner(cmd, data_out, data_in_len, false)
    }

    fn submit_inner(
        &mut self,
        mut cmd: Command,
        data_out: Option<Vec<u8>>,
        data_in_len: u32,
        force_in_capsule: bool,
    ) -> Result<u16> {
        self.check_alive()?;
        let data_out = data_out.filter(|d| !d.is_empty());
        if data_out.is_some() && data_in_len > 0 {
            return Err(Error::Invalid(
                "a command cannot both send and receive data".into(),
            ));
        }
        let limit = self.queue_size.saturating_sub(1) as usize;
        if self.outstanding() >= limit {
            return Err(Error::Invalid(format!(
                "queue {} is full: {} commands outstanding, queue size {}",
                self.qid,
                self.outstanding(),
                self.queue_size
            )));
        }
        let cid = self.alloc_cid();
        cmd.cid = cid;
        let mut pending = Pending {
            opcode: cmd.opcode,
            data_in_len,
            data_in: Vec::new(),
            last_seen: false,
            data_out: None,
            in_capsule: false,
            data_sent: 0,
        };
        let mut capsule_data: Vec<u8> = Vec::new();
        match data_out {
            Some(d) => {
                let len = u32::try_from(d.len()).map_err(|_| {
                    Error::Invalid(format!("{} bytes of write data is too much", d.len()))
                })?;
                if force_in_capsule || len <= self.in_capsule_max {
                    cmd.dptr = command::sgl_descriptor(0, len, command::SGL_DATA_BLOCK_OFFSET);
                    pending.in_capsule = true;
                    pending.data_sent = len;
                    capsule_data = d;
                } else {
                    cmd.dptr = command::sgl_descriptor(0, len, command::SGL_TRANSPORT_DATA_BLOCK);
                    pending.data_out = Some(d);
                }
            }
            None => {
                cmd.dptr =
                    command::sgl_descriptor(0, data_in_len, command::SGL_TRANSPORT_DATA_BLOCK);
            }
        }
        let bytes = pdu::encode_capsule_cmd(&cmd.to_bytes(), &capsule_data, &self.tx);
        self.write_all(&bytes)?;
        self.pending.insert(cid, pending);
        Ok(cid)
    }

    /// Wait for the next completed command (any CID).
    pub fn wait(&mut self) -> Result<Response> {
        if let Some(r) = self.done.pop_front() {
            return Ok(r);
        }
        self.check_alive()?;
        if self.pending.is_empty() {
            return Err(Error::Invalid("wait: no command is outstanding".into()));
        }
        loop {
            self.poll_once()?;
            if let Some(r) = self.done.pop_front() {
                return Ok(r);
            }
        }
    }

    /// Wait for the completion of command `cid`; other completions arriving
    /// meanwhile are kept for later `wait` calls.
    pub fn wait_for(&mut self, cid: u16) -> Result<Response> {
        loop {
            if let Some(i) = self.done.iter().position(|r| r.cid == cid) {
                return Ok(self.done.remove(i).expect("index from position"));
            }
            self.check_alive()?;
            if !self.pending.contains_key(&cid) {
                return Err(Error::Invalid(format!(
                    "wait_for: command {cid} is not outstanding"
                )));
            }
            self.poll_once()?;
        }
    }

    /// Submit and wait for that command. The response is returned whatever
    /// its status (use [`Response::check`] to turn a failure into an error).
    pub fn execute(
        &mut self,
        cmd: Command,
        data_out: Option<Vec<u8>>,
        data_in_len: u32,
    ) -> Result<Response> {
        let cid = self.submit(cmd, data_out, data_in_len)?;
        self.wait_for(cid)
    }

    /// Read one PDU and advance command state.
    fn poll_once(&mut self) -> Result<()> {
        let limit = self.rx_limit();
        let p = self.read_pdu(limit)?;
        let r = match p {
            Pdu::CapsuleResp(r) => self.on_capsule_resp(&r.cqe),
            Pdu::C2hData(d) => self.on_c2h_data(d),
            Pdu::R2t(r) => self.on_r2t(&r),
            Pdu::C2hTermReq(t) => Err(Error::Terminated {
                fes: t.fes,
                fei: t.fei,
            }),
            other => Err(Error::Protocol(format!(
                "unexpected {} PDU from the controller",
                pdu::pdu_type_name(other.pdu_type())
            ))),
        };
        r.map_err(|e| self.record(e))
    }

    fn on_capsule_resp(&mut self, raw: &[u8; 16]) -> Result<()> {
        let cqe = Cqe::parse(raw);
        let cid = cqe.cid;
        let Some(p) = self.pending.get(&cid) else {
            return Err(Error::Protocol(format!(
                "CapsuleResp for unknown CID {cid} ({} commands outstanding)",
                self.pending.len()
            )));
        };
        if cqe.sqid != self.qid && !self.lenient {
            return Err(Error::Protocol(format!(
                "CapsuleResp for CID {cid}: SQID {} but this is queue {}",
                cqe.sqid, self.qid
            )));
        }
        if !self.sqflow_disabled && cqe.sqhd >= self.queue_size {
            return Err(Error::Protocol(format!(
                "CapsuleResp for CID {cid}: SQHD {} out of range for a queue of {} entries",
                cqe.sqhd, self.queue_size
            )));
        }
        if cqe.status() == 0 {
            if p.data_in_len > 0 {
                let got = p.data_in.len();
                if got != p.data_in_len as usize {
                    return Err(Error::Protocol(format!(
                        "successful CapsuleResp for CID {cid} (opcode {:#04x}) after only {got} of {} data bytes",
                        p.opcode, p.data_in_len
                    )));
                }
                if !p.last_seen {
                    return Err(Error::Protocol(format!(
                        "successful CapsuleResp for CID {cid}: its last C2HData PDU did not have LAST_PDU set"
                    )));
                }
            }
            if let Some(d) = &p.data_out {
                if (p.data_sent as usize) < d.len() {
                    return Err(Error::Protocol(format!(
                        "successful CapsuleResp for CID {cid} (opcode {:#04x}) before the write data was requested ({} of {} bytes)",
                        p.opcode,
                        p.data_sent,
                        d.len()
                    )));
                }
            }
        }
        let p = self.pending.remove(&cid).expect("checked above");
        self.done.push_back(Response::from_cqe(&cqe, p.data_in));
        Ok(())
    }

    fn on_c2h_data(&mut self, d: pdu::DataPdu) -> Result<()> {
        let cid = d.cccid;
        let Some(p) = self.pending.get_mut(&cid) else {
            return Err(Error::Protocol(format!(
                "C2HData for unknown CID {cid} ({} commands outstanding)",
                self.pending.len()
            )));
        };
        if p.data_in_len == 0 {
            return Err(Error::Protocol(format!(
                "C2HData for CID {cid} (opcode {:#04x}), which transfers no data to the host",
                p.opcode
            )));
        }
        if p.last_seen {
            return Err(Error::Protocol(format!(
                "C2HData for CID {cid} after its PDU with LAST_PDU"
            )));
        }
        let received = p.data_in.len() as u32;
        if d.datao != received {
            return Err(Error::Protocol(format!(
                "C2HData for CID {cid}: DATAO {} out of order, expected {received}",
                d.datao
            )));
        }
        let datal = d.data.len() as u32;
        if d.datao as u64 + datal as u64 > p.data_in_len as u64 {
            return Err(Error::Protocol(format!(
                "C2HData for CID {cid}: DATAO {} + DATAL {datal} exceeds the command's data length {}",
                d.datao, p.data_in_len
            )));
        }
        p.data_in.extend_from_slice(&d.data);
        if d.last {
            p.last_seen = true;
            if p.data_in.len() != p.data_in_len as usize {
                return Err(Error::Protocol(format!(
                    "C2HData for CID {cid}: LAST_PDU after {} of {} data bytes",
                    p.data_in.len(),
                    p.data_in_len
                )));
            }
        }
        if d.success {
            if !self.sqflow_disabled && !self.lenient {
                return Err(Error::Protocol(format!(
                    "C2HData for CID {cid} has the SUCCESS flag, but SQ flow control was not disabled at Connect"
                )));
            }
            let p = self.pending.remove(&cid).expect("checked above");
            self.done.push_back(Response {
                cid,
                sqid: self.qid,
                data: p.data_in,
                c2h_success: true,
                ..Default::default()
            });
        }
        Ok(())
    }

    fn on_r2t(&mut self, r: &pdu::R2t) -> Result<()> {
        let cid = r.cccid;
        let Some(p) = self.pending.get_mut(&cid) else {
            return Err(Error::Protocol(format!(
                "R2T for unknown CID {cid} ({} commands outstanding)",
                self.pending.len()
            )));
        };
        let Some(data) = &p.data_out else {
            return Err(Error::Protocol(if p.in_capsule {
                format!("R2T for CID {cid}, whose data was sent in-capsule")
            } else {
                format!(
                    "R2T for CID {cid} (opcode {:#04x}), which transfers no data to the controller",
                    p.opcode
                )
            }));
        };
        let total = data.len() as u64;
        if r.r2to != p.data_sent {
            return Err(Error::Protocol(format!(
                "R2T for CID {cid}: R2TO {} out of order, expected {}",
                r.r2to, p.data_sent
            )));
        }
        let end = r.r2to as u64 + r.r2tl as u64;
        if end > total {
            return Err(Error::Protocol(format!(
                "R2T for CID {cid}: R2TO {} + R2TL {} exceeds the command's data length {total}",
                r.r2to, r.r2tl
            )));
        }
        let mut off = r.r2to as usize;
        let end = end as usize;
        let chunk = self.maxh2cdata as usize;
        while off < end {
            let n = chunk.min(end - off);
            let bytes = pdu::encode_data_pdu(
                pdu::PDU_H2C_DATA,
                cid,
                r.ttag,
                off as u32,
                &data[off..off + n],
                off + n == end,
                false,
                &self.tx,
            );
            if let Err(e) = self.stream.write_all(&bytes) {
                return Err(Error::from(e));
            }
            off += n;
        }
        p.data_sent = end as u32;
        Ok(())
    }

    // ----- raw access (malformed-PDU tests) -----

    /// Send arbitrary bytes on the connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.write_all(bytes)
    }

    /// Read the next PDU, strictly decoded, without interpreting it (command
    /// state is not updated).
    pub fn recv_raw_pdu(&mut self) -> Result<Pdu> {
        self.read_pdu(RAW_PDU_LIMIT)
    }

    /// Whether the peer has closed (or reset) the connection, without
    /// blocking. Pending unread data means "not closed".
    pub fn is_closed(&self) -> bool {
        if matches!(self.dead, Some(Dead::Closed)) {
            return true;
        }
        if self.stream.set_nonblocking(true).is_err() {
            return false;
        }
        let mut b = [0u8; 1];
        let closed = match self.stream.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => matches!(
                e.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            ),
        };
        let _ = self.stream.set_nonblocking(false);
        closed
    }

    /// Wait up to `timeout` for the peer to close the connection. Returns
    /// `Ok(())` on close, [`Error::Timeout`] if it stays open, and a protocol
    /// error if the peer sends anything instead.
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut b = [0u8; 256];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout);
            }
            self.stream.set_read_timeout(Some(deadline - now))?;
            match self.stream.read(&mut b) {
                Ok(0) => {
                    self.dead = Some(Dead::Closed);
                    return Ok(());
                }
                Ok(n) => {
                    return Err(Error::Protocol(format!(
                        "expected the connection to close, received {n} bytes (first byte {:#04x})",
                        b[0]
                    )))
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted
                    ) =>
                {
                    self.dead = Some(Dead::Closed);
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::WouldBlock | ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(Error::Io(e)),
            }
        }
    }

    /// Close the connection (both directions).
    pub fn close(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    // ----- admin helpers -----

    fn run_checked(&mut self, cmd: Command, out: Option<Vec<u8>>, in_len: u32) -> Result<Response> {
        self.execute(cmd, out, in_len)?.check()
    }

    /// Fabrics Property Get (`size8` for 8-byte properties such as CAP).
    pub fn property_get(&mut self, offset: u32, size8: bool) -> Result<u64> {
        let r = self.run_checked(Command::property_get(offset, size8), None, 0)?;
        Ok(if size8 {
            r.dw0 as u64 | (r.dw1 as u64) << 32
        } else {
            r.dw0 as u64
        })
    }

    /// Fabrics Property Set.
    pub fn property_set(&mut self, offset: u32, size8: bool, value: u64) -> Result<()> {
        self.run_checked(Command::property_set(offset, size8, value), None, 0)?;
        Ok(())
    }

    /// Identify; returns the 4096-byte data structure.
    pub fn identify(&mut self, cns: u8, nsid: u32, cntid: u16, csi: u8) -> Result<Vec<u8>> {
        Ok(self
            .run_checked(Command::identify(cns, nsid, cntid, csi), None, 4096)?
            .data)
    }

    /// Get Log Page: `len` bytes (a non-zero multiple of 4) at byte `offset`.
    pub fn get_log_page(
        &mut self,
        lid: u8,
        nsid: u32,
        len: u32,
        offset: u64,
        lsp: u8,
    ) -> Result<Vec<u8>> {
        if len == 0 || !len.is_multiple_of(4) {
            return Err(Error::Invalid(format!(
                "log page length {len} must be a non-zero multiple of 4"
            )));
        }
        if !offset.is_multiple_of(4) {
            return Err(Error::Invalid(format!(
                "log page offset {offset} must be a multiple of 4"
            )));
        }
        Ok(self
            .run_checked(
                Command::get_log_page(lid, nsid, len, offset, lsp, false),
                None,
                len,
            )?
            .data)
    }

    /// Get Features (current value); the value is in `dw0`.
    pub fn get_features(&mut self, fid: u8, nsid: u32, cdw11: u32) -> Result<Response> {
        self.run_checked(Command::get_features(fid, 0, nsid, cdw11), None, 0)
    }

    /// Set Features.
    pub fn set_features(
        &mut self,
        fid: u8,
        nsid: u32,
        cdw11: u32,
        cdw12: u32,
        save: bool,
    ) -> Result<Response> {
        self.run_checked(
            Command::set_features(fid, nsid, cdw11, cdw12, save),
            None,
            0,
        )
    }

    /// Set Features - Number of Queues; returns the allocated (1's based)
    /// submission and completion queue counts.
    pub fn set_number_of_queues(&mut self, nsq: u16, ncq: u16) -> Result<(u32, u32)> {
        if nsq == 0 || ncq == 0 {
            return Err(Error::Invalid("number of queues must be at least 1".into()));
        }
        let r = self.run_checked(Command::set_number_of_queues(nsq - 1, ncq - 1), None, 0)?;
        Ok(((r.dw0 & 0xffff) + 1, (r.dw0 >> 16) + 1))
    }

    pub fn keep_alive(&mut self) -> Result<()> {
        self.run_checked(Command::keep_alive(), None, 0)?;
        Ok(())
    }

    /// Submit an Asynchronous Event Request (completes when an event occurs);
    /// returns its CID.
    pub fn async_event_request(&mut self) -> Result<u16> {
        self.submit(Command::async_event_request(), None, 0)
    }

    /// Abort; `dw0` bit 0 is 1 if the command was not aborted.
    pub fn abort(&mut self, sqid: u16, cid: u16) -> Result<Response> {
        self.run_checked(Command::abort(sqid, cid), None, 0)
    }

    // ----- I/O helpers -----

    fn nlb0_for(len: usize, block_size: u32) -> Result<u16> {
        if block_size == 0 || len == 0 || !len.is_multiple_of(block_size as usize) {
            return Err(Error::Invalid(format!(
                "data length {len} is not a non-zero multiple of the block size {block_size}"
            )));
        }
        let n = len / block_size as usize;
        if n > 65536 {
            return Err(Error::Invalid(format!(
                "{n} blocks exceed the 65536-block limit of one command"
            )));
        }
        Ok((n - 1) as u16)
    }

    /// Read `nlb0 + 1` blocks of `block_size` bytes.
    pub fn read(&mut self, nsid: u32, slba: u64, nlb0: u16, block_size: u32) -> Result<Vec<u8>> {
        let len = (nlb0 as u64 + 1) * block_size as u64;
        let len = u32::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| Error::Invalid(format!("read length {len} is not usable")))?;
        Ok(self
            .run_checked(Command::read(nsid, slba, nlb0), None, len)?
            .data)
    }

    /// Write `data` (a whole number of blocks) at `slba`.
    pub fn write(
        &mut self,
        nsid: u32,
        slba: u64,
        data: &[u8],
        block_size: u32,
    ) -> Result<Response> {
        let nlb0 = Self::nlb0_for(data.len(), block_size)?;
        self.run_checked(Command::write(nsid, slba, nlb0), Some(data.to_vec()), 0)
    }

    /// Compare `data` with the blocks at `slba` (miscompare is
    /// `Error::Status` with status 0x0285).
    pub fn compare(
        &mut self,
        nsid: u32,
        slba: u64,
        data: &[u8],
        block_size: u32,
    ) -> Result<Response> {
        let nlb0 = Self::nlb0_for(data.len(), block_size)?;
        self.run_checked(Command::compare(nsid, slba, nlb0), Some(data.to_vec()), 0)
    }

    /// Fused Compare (FUSE=01b) + Write (FUSE=10b) of the same range. Both
    /// responses are returned whatever their status (a miscompare is an
    /// expected outcome).
    pub fn compare_and_write(
        &mut self,
        nsid: u32,
        slba: u64,
        compare: &[u8],
        write: &[u8],
        block_size: u32,
    ) -> Result<(Response, Response)> {
        if compare.len() != write.len() {
            return Err(Error::Invalid(format!(
                "compare data ({} bytes) and write data ({} bytes) differ in length",
                compare.len(),
                write.len()
            )));
        }
        let nlb0 = Self::nlb0_for(write.len(), block_size)?;
        let mut c = Command::compare(nsid, slba, nlb0);
        c.flags |= command::FUSE_FIRST;
        let mut w = Command::write(nsid, slba, nlb0);
        w.flags |= command::FUSE_SECOND;
        let c1 = self.submit(c, Some(compare.to_vec()), 0)?;
        let c2 = self.submit(w, Some(write.to_vec()), 0)?;
        let r1 = self.wait_for(c1)?;
        let r2 = self.wait_for(c2)?;
        Ok((r1, r2))
    }

    pub fn flush(&mut self, nsid: u32) -> Result<Response> {
        self.run_checked(Command::flush(nsid), None, 0)
    }

    pub fn write_zeroes(&mut self, nsid: u32, slba: u64, nlb0: u16) -> Result<Response> {
        self.run_checked(Command::write_zeroes(nsid, slba, nlb0, false), None, 0)
    }

    pub fn verify(&mut self, nsid: u32, slba: u64, nlb0: u16) -> Result<Response> {
        self.run_checked(Command::verify(nsid, slba, nlb0), None, 0)
    }

    /// Dataset Management, deallocate: `ranges` are `(slba, number of blocks)`.
    pub fn dsm_deallocate(&mut self, nsid: u32, ranges: &[(u64, u32)]) -> Result<Response> {
        if ranges.is_empty() || ranges.len() > 256 {
            return Err(Error::Invalid(format!(
                "DSM takes 1..=256 ranges, got {}",
                ranges.len()
            )));
        }
        let data = command::dsm_ranges(ranges);
        let nr0 = (ranges.len() - 1) as u8;
        self.run_checked(Command::dsm(nsid, nr0, true), Some(data), 0)
    }

    /// Copy (descriptor format 0) to `sdlba`: `ranges` are
    /// `(slba, number of blocks)`.
    pub fn copy(&mut self, nsid: u32, sdlba: u64, ranges: &[(u64, u32)]) -> Result<Response> {
        if ranges.is_empty() || ranges.len() > 256 {
            return Err(Error::Invalid(format!(
                "Copy takes 1..=256 ranges, got {}",
                ranges.len()
            )));
        }
        let mut r0 = Vec::with_capacity(ranges.len());
        for &(slba, nlb) in ranges {
            if nlb == 0 || nlb > 65536 {
                return Err(Error::Invalid(format!(
                    "copy range of {nlb} blocks is outside 1..=65536"
                )));
            }
            r0.push((slba, (nlb - 1) as u16));
        }
        let data = command::copy_ranges_format0(&r0);
        let nr0 = (ranges.len() - 1) as u8;
        self.run_checked(Command::copy(nsid, sdlba, nr0, 0), Some(data), 0)
    }
}
