//! One NVMe/TCP connection as a sans-IO state machine: fed received bytes,
//! it frames PDUs, runs the ICReq exchange, gathers write data (in-capsule
//! or through R2T/H2CData), hands commands to the fabrics queue beside it
//! (its session's, passed in by the driver), and encodes the responses into
//! an output buffer for the driver to send.

use super::pdu::{self, fes, flags, pdu_type, Fatal, Negotiated, TxParams};
use crate::buf::Buffers;
use crate::fabrics::{DataMap, Queue, Response};
use crate::nvme::{Command, DataDir, Status};
use crate::transport::QueueConn;
use nvmf_sys::{RegionSlice, SendBuf};
use std::time::Instant;

/// Generic status: Transient Transport Error (a data digest mismatch).
const TRANSIENT_TRANSPORT_ERROR: Status = Status(0x22);
/// What a receive asks for while writes wait for their data (see
/// [`TcpConn::recv_limit`]).
const RECV_LIMIT_AWAITING_DATA: usize = 4096;
/// Writes at least this large count for [`TcpConn::recv_limit`].
const LARGE_WRITE: u32 = 64 * 1024;
/// Read data at least this large is sent from its own buffer, not copied.
const ZERO_COPY_MIN: usize = 2048;
/// Segments one gathered send takes at most (`IOV_MAX` on Linux: a
/// `sendmsg` with more fails).
pub const MAX_SEGMENTS: usize = 1024;

/// Connection settings from the target config.
#[derive(Debug, Clone, Copy)]
pub struct ConnParams {
    pub max_io_size: u32,
    pub allow_hdgst: bool,
    pub allow_ddgst: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    AwaitIcReq,
    Ready,
    /// No more input is processed; close once the output is sent.
    Closing,
}

/// An H2CData PDU whose data is arriving: bytes go straight into the
/// write's buffer as they come, with a running data digest.
struct H2cStream {
    tag: u16,
    flags: u8,
    /// Data bytes still to come.
    data_left: usize,
    /// Data digest bytes still to come, and those seen so far.
    digest_left: usize,
    digest: [u8; 4],
    crc: u32,
}

/// Write data the transport receives straight into the write's buffer, or
/// into backend memory when `region` is set: `len` bytes at offset `offset`
/// of the one or the other. Given back with [`TcpConn::direct_done`].
#[derive(Debug)]
pub struct DirectRecv {
    /// The write's buffer, lent out (empty when the data goes to `region`).
    pub buf: Vec<u8>,
    pub region: Option<RegionSlice>,
    pub offset: usize,
    pub len: usize,
}

/// A write waiting for its data through R2T / H2CData.
struct PendingWrite {
    cmd: Command,
    /// Bytes the write transfers.
    len: usize,
    /// Where its data goes: a buffer, or (`placed`) backend memory.
    buf: Vec<u8>,
    placed: Option<crate::fabrics::Placed>,
    /// The destination is out for a direct receive.
    lent: bool,
    received: usize,
    digest_error: bool,
    /// Counted in `TcpConn::large_waiting`.
    large: bool,
}

impl PendingWrite {
    /// Stores data that arrived through the receive buffer at the next
    /// offset; false if it does not fit or the destination is lent out.
    fn put(&mut self, data: &[u8]) -> bool {
        if self.lent || self.received + data.len() > self.len {
            return false;
        }
        let at = self.received;
        let ok = match &self.placed {
            Some(r) => r.copy_from(at, data),
            None => {
                self.buf[at..at + data.len()].copy_from_slice(data);
                true
            }
        };
        self.received += data.len();
        ok
    }
}

pub struct TcpConn {
    bufs: Buffers,
    params: ConnParams,
    state: State,
    neg: Negotiated,
    tx: TxParams,
    maxh2cdata: u32,
    /// A partial PDU carried over between receives.
    rx: Vec<u8>,
    /// The H2CData PDU being received in place, if any.
    stream: Option<H2cStream>,
    /// Output being built; finished segments (headers, data buffers) wait
    /// in `segs` to go out as one gathered send.
    out: Vec<u8>,
    segs: Vec<SendBuf>,
    /// Indexed by transfer tag.
    pending: Vec<Option<PendingWrite>>,
    /// Pending writes of at least `LARGE_WRITE` bytes.
    large_waiting: usize,
    free_tags: Vec<u16>,
    responses: Vec<Response>,
    close_reason: Option<String>,
    /// Commands received and not yet answered.
    outstanding: usize,
}

impl crate::transport::QueueConn for TcpConn {
    fn spare(&mut self) -> &mut Vec<Response> {
        &mut self.responses
    }
    fn answer(&mut self, r: &mut Vec<Response>, q: &Queue) {
        self.respond(r, q);
    }
}

impl TcpConn {
    /// A connection whose buffers come from `bufs` (its reactor's pool).
    pub fn new(params: ConnParams, bufs: Buffers) -> TcpConn {
        TcpConn {
            bufs,
            params,
            state: State::AwaitIcReq,
            neg: Negotiated::default(),
            tx: TxParams::default(),
            maxh2cdata: params.max_io_size.max(4096),
            rx: Vec::new(),
            stream: None,
            out: Vec::new(),
            segs: Vec::new(),
            pending: Vec::new(),
            large_waiting: 0,
            free_tags: Vec::new(),
            responses: Vec::new(),
            close_reason: None,
            outstanding: 0,
        }
    }

    /// Bytes waiting to be sent.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || !self.segs.is_empty()
    }

    /// Moves the pending output, in order, to the end of `bufs` (segments
    /// for one gathered send), at most [`MAX_SEGMENTS`] of them: a send
    /// takes no more (the kernel's IOV_MAX); the rest waits for the next.
    pub fn take_output(&mut self, bufs: &mut Vec<SendBuf>) {
        let room = MAX_SEGMENTS.saturating_sub(bufs.len());
        if self.segs.len() >= room {
            bufs.extend(self.segs.drain(..room));
            return;
        }
        bufs.append(&mut self.segs);
        if !self.out.is_empty() {
            let next = self.bufs.alloc();
            bufs.push(std::mem::replace(&mut self.out, next).into());
        }
    }

    /// Gives back buffers the transport finished sending: data buffers go to
    /// the reactor's pool.
    pub fn recycle(&mut self, buf: SendBuf) {
        if let SendBuf::Bytes(b) = buf {
            self.bufs.recycle(b);
        }
    }

    /// The connection is finished: close it after sending the output.
    pub fn is_closing(&self) -> bool {
        self.state == State::Closing
    }

    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// Closes the connection after the output is sent (the controller is
    /// gone, or the transport failed).
    pub fn close(&mut self, reason: impl Into<String>) {
        if self.state != State::Closing {
            self.state = State::Closing;
            self.close_reason = Some(reason.into());
        }
    }

    /// Feeds received bytes; processes every complete PDU.
    pub fn receive(&mut self, bytes: &[u8], q: &mut Queue, now: Instant) {
        let mut bytes = bytes;
        while !bytes.is_empty() && self.state != State::Closing {
            if self.stream.is_some() {
                bytes = self.stream_in(bytes, q, now);
            } else if !self.rx.is_empty() {
                bytes = self.top_up(bytes, q, now);
            } else {
                // Parse in place; keep only a trailing partial PDU.
                let used = self.process(bytes, q, now);
                bytes = &bytes[used..];
                if self.stream.is_none() && self.state != State::Closing {
                    self.rx.extend_from_slice(bytes);
                    return;
                }
            }
        }
    }

    /// Adds to the carried-over partial PDU only the bytes it still lacks
    /// (for H2CData, just its header: the data is then streamed), and
    /// processes it once complete. Returns the unused bytes.
    fn top_up<'a>(&mut self, bytes: &'a [u8], q: &mut Queue, now: Instant) -> &'a [u8] {
        let have = self.rx.len();
        let want = if have < pdu::COMMON_HEADER_LEN {
            pdu::COMMON_HEADER_LEN
        } else {
            let plen = crate::nvme::le32(&self.rx, 4) as usize;
            let pdo = self.rx[3] as usize;
            let header = self.rx[2] as usize
                + if self.rx[1] & flags::HDGSTF != 0 {
                    4
                } else {
                    0
                };
            if !(pdu::COMMON_HEADER_LEN..=pdu::MAX_PLEN as usize).contains(&plen) {
                have // nonsense: let the framer report it now
            } else if self.rx[0] == pdu_type::H2C_DATA && pdo >= header && pdo < plen {
                pdo
            } else {
                plen
            }
        };
        let take = want.saturating_sub(have).min(bytes.len());
        self.rx.extend_from_slice(&bytes[..take]);
        let rest = &bytes[take..];
        if self.rx.len() < want || (want == pdu::COMMON_HEADER_LEN && have < want) {
            return rest;
        }
        let rx = std::mem::take(&mut self.rx);
        let used = self.process(&rx, q, now);
        if used == 0 && self.stream.is_none() && self.state != State::Closing {
            // The framer needs the whole PDU after all: keep collecting it.
            let plen = (crate::nvme::le32(&rx, 4) as usize).min(pdu::MAX_PLEN as usize);
            self.rx = rx;
            let take = plen.saturating_sub(self.rx.len()).min(rest.len());
            self.rx.extend_from_slice(&rest[..take]);
            if self.rx.len() >= plen {
                let rx = std::mem::take(&mut self.rx);
                self.process(&rx, q, now);
                self.recycle_rx(rx);
            }
            return &rest[take..];
        }
        self.recycle_rx(rx);
        rest
    }

    /// Feeds bytes of the H2CData PDU being streamed; returns what is left.
    fn stream_in<'a>(&mut self, bytes: &'a [u8], q: &mut Queue, now: Instant) -> &'a [u8] {
        let Some(st) = self.stream.as_mut() else {
            return bytes;
        };
        let n = st.data_left.min(bytes.len());
        let (data, rest) = bytes.split_at(n);
        if n > 0 {
            if self.neg.ddgst {
                st.crc = crc32c::crc32c_append(st.crc, data);
            }
            st.data_left -= n;
            let tag = st.tag;
            if let Some(w) = self.pending.get_mut(tag as usize).and_then(|w| w.as_mut()) {
                // The destination out for a direct receive: bytes cannot
                // arrive here meanwhile; refuse rather than lose them.
                if !w.put(data) {
                    self.close("write data arrived while its buffer was out");
                    return &[];
                }
            }
        }
        self.stream_tail(rest, q, now)
    }

    /// Takes the data digest bytes of the streamed H2CData PDU from `rest`
    /// and, once it is whole, finishes the PDU. Returns what is left.
    fn stream_tail<'a>(&mut self, mut rest: &'a [u8], q: &mut Queue, now: Instant) -> &'a [u8] {
        let Some(st) = self.stream.as_mut() else {
            return rest;
        };
        if st.data_left == 0 && st.digest_left > 0 {
            let k = st.digest_left.min(rest.len());
            let at = 4 - st.digest_left;
            st.digest[at..at + k].copy_from_slice(&rest[..k]);
            st.digest_left -= k;
            rest = &rest[k..];
        }
        if st.data_left == 0 && st.digest_left == 0 {
            let st = self.stream.take().expect("checked above");
            let digest_ok = !self.neg.ddgst || u32::from_le_bytes(st.digest) == st.crc;
            if let Err(f) = self.h2c_check_last(st.tag, st.flags) {
                self.fatal(f, &[]);
                return rest;
            }
            self.h2c_finish(st.tag, digest_ok, q, now);
        }
        rest
    }

    /// At most how many bytes the next receive (into the receive buffer, not
    /// a direct one) should ask for. While large writes wait for their data,
    /// the next PDU is likely an H2CData whose data the transport will
    /// receive straight into the write's buffer once the header is in: a
    /// small receive then copies a few KiB of data, not everything that
    /// happened to be queued (measured: 128 KiB writes at QD 16 went from
    /// 3.7 to 4.7 GB/s on loopback). Smaller writes are better served by
    /// large receives that take many PDUs at once (32 KiB writes lost 30%
    /// with the limit). `None`: no limit.
    pub fn recv_limit(&self) -> Option<usize> {
        (self.large_waiting > 0 && self.stream.is_none()).then_some(RECV_LIMIT_AWAITING_DATA)
    }

    /// When the H2CData PDU being received still has at least `min` bytes
    /// of data to come, lends out the write's buffer so the transport can
    /// receive them straight into it (no copy through the receive buffer).
    pub fn take_direct(&mut self, min: usize) -> Option<DirectRecv> {
        let st = self.stream.as_ref()?;
        if st.data_left < min.max(1) || self.state == State::Closing {
            return None;
        }
        let w = self.pending.get_mut(st.tag as usize)?.as_mut()?;
        if w.lent || w.len < w.received + st.data_left {
            return None;
        }
        w.lent = true;
        Some(DirectRecv {
            buf: std::mem::take(&mut w.buf),
            region: w.placed.as_ref().map(|p| p.region.clone()),
            offset: w.received,
            len: st.data_left,
        })
    }

    /// A direct receive finished with `n` bytes (`n` no more than it asked
    /// for): takes the buffer back and accounts for the data.
    pub fn direct_done(&mut self, d: DirectRecv, n: usize, q: &mut Queue, now: Instant) {
        let n = n.min(d.len);
        let Some(st) = self.stream.as_mut() else {
            return;
        };
        let Some(w) = self
            .pending
            .get_mut(st.tag as usize)
            .and_then(|w| w.as_mut())
        else {
            return;
        };
        if w.placed.is_none() {
            w.buf = d.buf;
        }
        w.lent = false;
        let fits = w.placed.is_some() || w.buf.len() >= d.offset + n;
        if w.received != d.offset || n > st.data_left || !fits {
            self.close("direct receive out of step with its write");
            return;
        }
        // (Writes are placed in backend memory only without data digests.)
        if self.neg.ddgst && w.placed.is_none() {
            st.crc = crc32c::crc32c_append(st.crc, &w.buf[d.offset..d.offset + n]);
        }
        w.received += n;
        st.data_left -= n;
        let left = self.stream_tail(&[], q, now);
        debug_assert!(left.is_empty());
    }

    fn recycle_rx(&mut self, mut rx: Vec<u8>) {
        rx.clear();
        if self.rx.capacity() == 0 {
            self.rx = rx;
        }
    }

    /// Handles every complete PDU at the start of `buf`; returns the bytes
    /// used (a trailing partial PDU is left).
    fn process(&mut self, buf: &[u8], q: &mut Queue, now: Instant) -> usize {
        let mut pos = 0;
        while self.state != State::Closing {
            let rest = &buf[pos..];
            let frame = match pdu::frame_h2c(rest, &self.neg, self.state == State::Ready) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(f) => {
                    let n = rest
                        .len()
                        .min(rest.get(2).copied().unwrap_or(8).max(8) as usize);
                    self.fatal(f, &rest[..n]);
                    break;
                }
            };
            if rest.len() < frame.plen {
                let streamable = frame.ch.pdu_type == pdu_type::H2C_DATA && frame.data_len > 0;
                if streamable && rest.len() >= frame.data_off {
                    if let Err(f) = self.h2c_begin(&frame, rest, q, now) {
                        self.fatal(f, &rest[..frame.hlen]);
                        break;
                    }
                    pos = buf.len();
                }
                break;
            }
            let pdu_bytes = &rest[..frame.plen];
            if let Err(f) = self.handle(&frame, pdu_bytes, q, now) {
                self.fatal(f, &pdu_bytes[..frame.hlen]);
            }
            pos += frame.plen;
        }
        pos
    }

    fn fatal(&mut self, f: Fatal, header: &[u8]) {
        // FEI is defined only for these two; for the others it is reserved.
        let fei = match f.fes {
            fes::INVALID_HEADER_FIELD | fes::UNSUPPORTED_PARAMETER => f.fei,
            _ => 0,
        };
        pdu::encode_c2h_term_req(&mut self.out, f.fes, fei, header);
        self.close(format!(
            "fatal transport error (FES {:#x}): {}",
            f.fes, f.reason
        ));
    }

    fn handle(
        &mut self,
        frame: &pdu::Frame,
        p: &[u8],
        q: &mut Queue,
        now: Instant,
    ) -> Result<(), Fatal> {
        let data = &p[frame.data_off..frame.data_off + frame.data_len];
        let digest_ok = !frame.ddgst || {
            let at = frame.data_off + frame.data_len;
            pdu::crc32c(data) == crate::nvme::le32(p, at)
        };
        match frame.ch.pdu_type {
            pdu_type::IC_REQ => self.ic_req(p),
            pdu_type::H2C_TERM_REQ => {
                let fes = crate::nvme::le16(p, 8);
                self.close(format!("host terminated the connection (FES {fes:#x})"));
                Ok(())
            }
            pdu_type::CAPSULE_CMD => {
                // A host may have more commands outstanding than the queue
                // has entries (the target frees an entry as it takes the
                // command, and says so in SQHD), but not without bound: what
                // one connection can queue here is bounded at twice the
                // queue's entries, as Linux's nvmet does.
                let limit = 2 * q.depth() as usize;
                if limit > 0 && self.outstanding >= limit {
                    return Err(Fatal::new(
                        fes::PDU_SEQUENCE_ERROR,
                        0,
                        format!(
                            "the host has {} commands outstanding on a queue of {} entries \
                             (at most {limit} are taken)",
                            self.outstanding + 1,
                            q.depth()
                        ),
                    ));
                }
                self.outstanding += 1;
                let mut sqe = [0u8; 64];
                sqe.copy_from_slice(&p[8..72]);
                let cmd = Command::parse(&sqe);
                if let Some(st) = self.capsule(cmd, data, digest_ok, q, now)? {
                    self.reject(&cmd, st, q);
                }
                Ok(())
            }
            pdu_type::H2C_DATA => self.h2c_data(p, data, frame.ch.flags, digest_ok, q, now),
            _ => Err(Fatal::new(
                fes::INVALID_HEADER_FIELD,
                0,
                "unexpected PDU type",
            )),
        }
    }

    fn ic_req(&mut self, p: &[u8]) -> Result<(), Fatal> {
        let ic = pdu::IcReq::parse(p);
        if ic.pfv != 0 {
            return Err(Fatal::new(
                fes::UNSUPPORTED_PARAMETER,
                8,
                format!("PFV {} is not supported", ic.pfv),
            ));
        }
        if ic.hpda > 31 {
            return Err(Fatal::new(
                fes::INVALID_HEADER_FIELD,
                10,
                format!("HPDA {} is out of range", ic.hpda),
            ));
        }
        let hdgst = ic.hdgst && self.params.allow_hdgst;
        let ddgst = ic.ddgst && self.params.allow_ddgst;
        self.neg = Negotiated {
            hdgst,
            ddgst,
            cpda: 0,
        };
        self.tx = TxParams {
            hdgst,
            ddgst,
            hpda: ic.hpda,
        };
        pdu::encode_ic_resp(&mut self.out, 0, hdgst, ddgst, self.maxh2cdata);
        self.state = State::Ready;
        Ok(())
    }

    /// Routes a command capsule; `Ok(Some(status))` completes the command
    /// with that error without executing it.
    fn capsule(
        &mut self,
        cmd: Command,
        data: &[u8],
        digest_ok: bool,
        q: &mut Queue,
        now: Instant,
    ) -> Result<Option<Status>, Fatal> {
        // The admin queue (and any queue before Connect) always takes 8 KiB
        // of in-capsule data; I/O queues take what IOCCSZ advertises.
        let limit = q.caps().in_capsule_limit(q.qid());
        if data.len() > limit as usize {
            return Err(Fatal::new(
                fes::DATA_LIMIT_EXCEEDED,
                0,
                format!(
                    "{} bytes of in-capsule data exceed the {limit} allowed",
                    data.len()
                ),
            ));
        }
        if !digest_ok {
            return Ok(Some(TRANSIENT_TRANSPORT_ERROR));
        }
        // Data the capsule carries that the command does not take is a
        // framing error on NVMe/TCP.
        let stray = match cmd.data_dir() {
            DataDir::None => Some("a command that transfers none"),
            DataDir::CtrlToHost => Some("a read command"),
            _ => None,
        };
        if let (Some(what), false) = (stray, data.is_empty()) {
            return Err(Fatal::new(
                fes::DATA_OUT_OF_RANGE,
                0,
                format!("in-capsule data on {what}"),
            ));
        }
        let req = match q.admit(&cmd) {
            Ok(r) => r,
            Err(st) => return Ok(Some(st)),
        };
        if req.map == DataMap::Transport && !data.is_empty() {
            return Err(Fatal::new(
                fes::DATA_OUT_OF_RANGE,
                0,
                "in-capsule data with a transport SGL",
            ));
        }
        match req.map {
            DataMap::InCapsule { offset } => {
                let end = offset.checked_add(req.len as u64);
                match end {
                    Some(end) if end <= data.len() as u64 => {
                        if end < data.len() as u64 {
                            return Err(Fatal::new(
                                fes::DATA_OUT_OF_RANGE,
                                0,
                                "in-capsule data beyond what the SGL describes",
                            ));
                        }
                        let data = &data[offset as usize..end as usize];
                        // (The digest, if any, was checked above.)
                        if let Some(placed) = q.place_write_now(&cmd, data) {
                            self.execute_placed(&cmd, data.len(), placed, q, now);
                        } else {
                            let mut d = self.bufs.alloc();
                            d.extend_from_slice(data);
                            self.execute(cmd, d, q, now);
                        }
                    }
                    _ => return Ok(Some(Status::DATA_SGL_LENGTH_INVALID.dnr())),
                }
            }
            DataMap::Transport if req.dir == DataDir::HostToCtrl && req.len > 0 => {
                self.start_r2t(cmd, req.len, q);
            }
            // No data, read data sent with C2HData, or a zero-length write.
            _ => self.execute(cmd, Vec::new(), q, now),
        }
        Ok(None)
    }

    fn start_r2t(&mut self, cmd: Command, len: u32, q: &mut Queue) {
        let tag = match self.free_tags.pop() {
            Some(t) => t,
            None => {
                if self.pending.len() >= u16::MAX as usize {
                    return self.reject(&cmd, Status::INTERNAL_ERROR, q);
                }
                self.pending.push(None);
                (self.pending.len() - 1) as u16
            }
        };
        // Without data digests (checked only once all the data is in) a
        // write's data may go straight into backend memory.
        let placed = if self.neg.ddgst {
            None
        } else {
            q.placed_write(&cmd, len)
        };
        // Every byte is overwritten by the host's data before it is used.
        let buf = if placed.is_some() {
            Vec::new()
        } else {
            self.bufs.alloc_len(len as usize)
        };
        self.pending[tag as usize] = Some(PendingWrite {
            cmd,
            len: len as usize,
            buf,
            placed,
            lent: false,
            received: 0,
            digest_error: false,
            large: len >= LARGE_WRITE,
        });
        if len >= LARGE_WRITE {
            self.large_waiting += 1;
        }
        pdu::encode_r2t(&mut self.out, self.tx.hdgst, cmd.cid, tag, 0, len);
    }

    /// Checks an H2CData header against its write; returns the tag.
    fn h2c_check(&self, h: &pdu::H2CData, data_len: usize) -> Result<u16, Fatal> {
        let Some(w) = self.pending.get(h.ttag as usize).and_then(|s| s.as_ref()) else {
            return Err(Fatal::new(
                fes::INVALID_HEADER_FIELD,
                10,
                format!("unknown transfer tag {}", h.ttag),
            ));
        };
        if w.cmd.cid != h.cccid {
            return Err(Fatal::new(
                fes::INVALID_HEADER_FIELD,
                8,
                format!("CCCID {} does not match transfer tag {}", h.cccid, h.ttag),
            ));
        }
        if h.datal as usize != data_len {
            return Err(Fatal::new(
                fes::INVALID_HEADER_FIELD,
                16,
                "DATAL does not match the PDU's data length",
            ));
        }
        if h.datal > self.maxh2cdata {
            return Err(Fatal::new(
                fes::DATA_LIMIT_EXCEEDED,
                16,
                "H2CData larger than MAXH2CDATA",
            ));
        }
        let end = h.datao as u64 + h.datal as u64;
        if end > w.len as u64 {
            return Err(Fatal::new(
                fes::DATA_OUT_OF_RANGE,
                12,
                format!(
                    "data {}..{end} beyond the {} bytes requested",
                    h.datao, w.len
                ),
            ));
        }
        if h.datao as usize != w.received {
            return Err(Fatal::new(
                fes::DATA_OUT_OF_RANGE,
                12,
                format!("DATAO {} but {} expected next", h.datao, w.received),
            ));
        }
        Ok(h.ttag)
    }

    /// A whole H2CData PDU.
    fn h2c_data(
        &mut self,
        p: &[u8],
        data: &[u8],
        fl: u8,
        digest_ok: bool,
        q: &mut Queue,
        now: Instant,
    ) -> Result<(), Fatal> {
        let tag = self.h2c_check(&pdu::H2CData::parse(p), data.len())?;
        if let Some(w) = self.pending[tag as usize].as_mut() {
            if !w.put(data) {
                return Err(Fatal::new(
                    fes::DATA_OUT_OF_RANGE,
                    12,
                    "write data beyond what was requested",
                ));
            }
        }
        self.h2c_check_last(tag, fl)?;
        self.h2c_finish(tag, digest_ok, q, now);
        Ok(())
    }

    /// The header of an H2CData PDU whose data is still arriving: check it
    /// and stream what is here of the data.
    fn h2c_begin(
        &mut self,
        frame: &pdu::Frame,
        rest: &[u8],
        q: &mut Queue,
        now: Instant,
    ) -> Result<(), Fatal> {
        let tag = self.h2c_check(&pdu::H2CData::parse(rest), frame.data_len)?;
        self.stream = Some(H2cStream {
            tag,
            flags: frame.ch.flags,
            data_left: frame.data_len,
            digest_left: if frame.ddgst { 4 } else { 0 },
            digest: [0; 4],
            crc: 0,
        });
        let left = self.stream_in(&rest[frame.data_off..], q, now);
        debug_assert!(left.is_empty());
        Ok(())
    }

    fn h2c_check_last(&self, tag: u16, fl: u8) -> Result<(), Fatal> {
        let done = self.pending[tag as usize]
            .as_ref()
            .is_some_and(|w| w.received == w.len);
        if done && fl & flags::LAST_PDU == 0 {
            return Err(Fatal::new(
                fes::INVALID_HEADER_FIELD,
                1,
                "last H2CData PDU without LAST_PDU",
            ));
        }
        Ok(())
    }

    /// After the data of an H2CData PDU: record a digest error and, once
    /// all the write's data is in, execute it.
    fn h2c_finish(&mut self, tag: u16, digest_ok: bool, q: &mut Queue, now: Instant) {
        let Some(w) = self.pending[tag as usize].as_mut() else {
            return;
        };
        w.digest_error |= !digest_ok;
        if w.received < w.len {
            return;
        }
        let w = self.pending[tag as usize].take().expect("checked above");
        self.free_tags.push(tag);
        if w.large {
            self.large_waiting -= 1;
        }
        if w.digest_error {
            self.reject(&w.cmd, TRANSIENT_TRANSPORT_ERROR, q);
            self.bufs.recycle(w.buf);
        } else if w.placed.is_some() {
            self.execute_placed(&w.cmd, w.len, w.placed, q, now);
        } else {
            self.execute(w.cmd, w.buf, q, now);
        }
    }

    /// Encodes responses of the queue beside this connection (read data
    /// and completions) into the output.
    pub fn respond(&mut self, r: &mut Vec<Response>, q: &Queue) {
        self.outstanding = self.outstanding.saturating_sub(r.len());
        for resp in r.drain(..) {
            let success_flag = q.sqflow_disabled() && resp.cqe.status.is_success();
            if let Some(shared) = resp.shared {
                self.send_shared(resp.cqe.cid, shared, success_flag);
                if success_flag {
                    continue;
                }
            } else if !resp.data.is_empty() {
                self.send_data(resp.cqe.cid, resp.data, success_flag);
                if success_flag {
                    continue;
                }
            }
            pdu::encode_capsule_resp(&mut self.out, &resp.cqe.to_bytes(), self.tx.hdgst);
        }
    }

    /// Sends read data in one C2HData PDU. Large data goes out as its own
    /// segment of the gathered send, not copied.
    fn send_data(&mut self, cid: u16, data: Vec<u8>, success: bool) {
        if data.len() < ZERO_COPY_MIN {
            pdu::encode_c2h_data(&mut self.out, &self.tx, cid, 0, &data, true, success);
            self.bufs.recycle(data);
            return;
        }
        pdu::encode_c2h_data_header(&mut self.out, &self.tx, cid, 0, data.len(), true, success);
        let digest = self.tx.ddgst.then(|| pdu::crc32c(&data));
        let next = self.bufs.alloc();
        self.segs
            .push(std::mem::replace(&mut self.out, next).into());
        self.segs.push(data.into());
        if let Some(d) = digest {
            self.out.extend_from_slice(&d.to_le_bytes());
        }
    }

    /// Sends read data that lives in backend memory: the C2HData header,
    /// then the memory itself as a segment of the gathered send.
    fn send_shared(&mut self, cid: u16, data: RegionSlice, success: bool) {
        if data.is_empty() {
            // Nothing to send (a zero-length read has no C2HData PDU).
            return;
        }
        if self.tx.ddgst {
            // The memory can change before the kernel copies it out (a
            // write to the same blocks, here or on another reactor): the
            // digest must cover exactly the bytes sent, so send a copy.
            // (The copy cannot fail: the lengths match and the slice was
            // checked against its region when it was made.)
            let mut copy = self.bufs.alloc_len(data.len());
            data.copy_to(&mut copy);
            return self.send_data(cid, copy, success);
        }
        pdu::encode_c2h_data_header(&mut self.out, &self.tx, cid, 0, data.len(), true, success);
        let next = self.bufs.alloc();
        self.segs
            .push(std::mem::replace(&mut self.out, next).into());
        self.segs.push(SendBuf::Region(data));
    }
}
