//! Controller bring-up over an admin queue plus I/O queues, orderly
//! shutdown, and the discovery helper.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant};

use crate::command::{self, Response, CNS_ACTIVE_NS_LIST, CNS_CONTROLLER, CNS_NAMESPACE};
use crate::identify::{
    parse_ns_descriptors, parse_ns_list, DiscoveryLog, IdentifyController, IdentifyNamespace,
    NsDescriptor, DISCOVERY_ENTRY_LEN, DISCOVERY_HEADER_LEN,
};
use crate::queue::{Queue, QueueOptions};
use crate::{Error, Result};

/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

// CC fields.
const CC_EN: u32 = 1;
const CC_SHN_NORMAL: u32 = 1 << 14;
const CC_SHN_MASK: u32 = 3 << 14;
const CC_IOSQES_64: u32 = 6 << 16;
const CC_IOCQES_16: u32 = 4 << 20;
// CSTS fields.
const CSTS_RDY: u64 = 1;
const CSTS_CFS: u64 = 1 << 1;
const CSTS_SHST_MASK: u64 = 3 << 2;
const CSTS_SHST_COMPLETE: u64 = 2 << 2;

const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Extract fields of the CAP property.
pub mod cap {
    /// Maximum Queue Entries Supported (0's based).
    pub fn mqes(cap: u64) -> u16 {
        cap as u16
    }
    /// Timeout in 500 ms units.
    pub fn to(cap: u64) -> u8 {
        (cap >> 24) as u8
    }
    /// Command Sets Supported (bits 44:37).
    pub fn css(cap: u64) -> u8 {
        (cap >> 37) as u8
    }
    /// Memory Page Size Minimum (bits 51:48).
    pub fn mpsmin(cap: u64) -> u8 {
        ((cap >> 48) & 0xf) as u8
    }
}

/// CC value to enable a controller with the given CAP.
pub fn cc_enable_value(cap: u64) -> u32 {
    let css_cap = cap::css(cap);
    // CSS: 110b if I/O command sets are supported, 000b for the NVM command
    // set, 111b for admin-only controllers (e.g. discovery).
    let css = if css_cap & 0x40 != 0 {
        0b110
    } else if css_cap & 0x01 != 0 {
        0b000
    } else if css_cap & 0x80 != 0 {
        0b111
    } else {
        0b000
    };
    CC_EN | css << 4 | (cap::mpsmin(cap) as u32) << 7 | CC_IOSQES_64 | CC_IOCQES_16
}

/// A connected and enabled controller.
#[derive(Debug)]
pub struct Controller {
    pub admin: Queue,
    pub io: Vec<Queue>,
    pub cntlid: u16,
    pub cap: u64,
    pub vs: u32,
    /// CC value written to enable the controller.
    pub cc: u32,
    /// Identify Controller data read during bring-up.
    pub id: IdentifyController,
}

impl Controller {
    /// Connect the admin queue (dynamic controller), read CAP and VS, enable
    /// the controller and wait for CSTS.RDY, read Identify Controller, then
    /// negotiate (Number of Queues) and connect up to `io_queues` I/O queues.
    /// I/O queues use `min(opts.in_capsule_max, IOCCSZ*16 - 64)` for
    /// in-capsule writes and `min(opts.queue_size, CAP.MQES + 1)` entries.
    pub fn connect(
        addr: SocketAddr,
        subnqn: &str,
        opts: &QueueOptions,
        io_queues: u16,
    ) -> Result<Controller> {
        let mut admin = Queue::connect(addr, 0, subnqn, 0xFFFF, opts)?;
        let cntlid = admin.cntlid();
        let cap = admin.property_get(command::PROP_CAP, true)?;
        let vs = admin.property_get(command::PROP_VS, false)? as u32;
        let cc = cc_enable_value(cap);
        admin.property_set(command::PROP_CC, false, cc as u64)?;
        let timeout = Duration::from_millis(500 * cap::to(cap).max(1) as u64);
        wait_csts(&mut admin, timeout, "CSTS.RDY", |csts| {
            if csts & CSTS_CFS != 0 {
                return Err(Error::Protocol(format!(
                    "controller reports fatal status (CSTS {csts:#x}) while enabling"
                )));
            }
            Ok(csts & CSTS_RDY != 0)
        })?;
        let id = IdentifyController::parse(&admin.identify(CNS_CONTROLLER, 0, 0, 0)?);
        if id.cntlid != cntlid {
            return Err(Error::Protocol(format!(
                "Identify Controller CNTLID {:#06x} differs from the Connect response {cntlid:#06x}",
                id.cntlid
            )));
        }
        let mut ctrl = Controller {
            admin,
            io: Vec::new(),
            cntlid,
            cap,
            vs,
            cc,
            id,
        };
        if io_queues > 0 {
            let (nsq, ncq) = ctrl.admin.set_number_of_queues(io_queues, io_queues)?;
            let n = (io_queues as u32).min(nsq).min(ncq) as u16;
            let mut io_opts = opts.clone();
            io_opts.queue_size = opts.queue_size.min(cap::mqes(cap).saturating_add(1));
            io_opts.in_capsule_max = opts
                .in_capsule_max
                .min(ctrl.id.in_capsule_data_size().unwrap_or(0));
            for qid in 1..=n {
                ctrl.io
                    .push(Queue::connect(addr, qid, subnqn, cntlid, &io_opts)?);
            }
        }
        Ok(ctrl)
    }

    /// Largest data transfer per command, from MDTS and CAP.MPSMIN (capped
    /// at 1 MiB for unlimited MDTS).
    pub fn max_transfer_size(&self) -> u32 {
        let page = 4096u64 << cap::mpsmin(self.cap);
        let max = if self.id.mdts == 0 {
            1 << 20
        } else {
            (page << self.id.mdts.min(20)).min(1 << 20)
        };
        max as u32
    }

    /// Normal shutdown: close the I/O queues, set CC.SHN = 01b, wait for
    /// CSTS.SHST = 10b, close the admin queue.
    pub fn shutdown(self) -> Result<()> {
        let Controller { mut admin, io, .. } = self;
        for q in io {
            q.close();
        }
        let cc = admin.property_get(command::PROP_CC, false)? as u32;
        let cc = (cc & !CC_SHN_MASK) | CC_SHN_NORMAL;
        admin.property_set(command::PROP_CC, false, cc as u64)?;
        wait_csts(&mut admin, Duration::from_secs(10), "CSTS.SHST", |csts| {
            Ok(csts & CSTS_SHST_MASK == CSTS_SHST_COMPLETE)
        })?;
        admin.close();
        Ok(())
    }

    // ----- admin delegates -----

    pub fn property_get(&mut self, offset: u32, size8: bool) -> Result<u64> {
        self.admin.property_get(offset, size8)
    }
    pub fn property_set(&mut self, offset: u32, size8: bool, value: u64) -> Result<()> {
        self.admin.property_set(offset, size8, value)
    }
    pub fn identify(&mut self, cns: u8, nsid: u32, cntid: u16, csi: u8) -> Result<Vec<u8>> {
        self.admin.identify(cns, nsid, cntid, csi)
    }
    pub fn get_log_page(
        &mut self,
        lid: u8,
        nsid: u32,
        len: u32,
        offset: u64,
        lsp: u8,
    ) -> Result<Vec<u8>> {
        self.admin.get_log_page(lid, nsid, len, offset, lsp)
    }
    pub fn get_features(&mut self, fid: u8, nsid: u32, cdw11: u32) -> Result<Response> {
        self.admin.get_features(fid, nsid, cdw11)
    }
    pub fn set_features(
        &mut self,
        fid: u8,
        nsid: u32,
        cdw11: u32,
        cdw12: u32,
        save: bool,
    ) -> Result<Response> {
        self.admin.set_features(fid, nsid, cdw11, cdw12, save)
    }
    pub fn keep_alive(&mut self) -> Result<()> {
        self.admin.keep_alive()
    }
    pub fn async_event_request(&mut self) -> Result<u16> {
        self.admin.async_event_request()
    }
    pub fn abort(&mut self, sqid: u16, cid: u16) -> Result<Response> {
        self.admin.abort(sqid, cid)
    }

    /// All active NSIDs (Identify CNS 02h, following the list past 1024
    /// entries).
    pub fn active_namespaces(&mut self) -> Result<Vec<u32>> {
        let mut all = Vec::new();
        let mut start = 0u32;
        loop {
            let page = parse_ns_list(&self.admin.identify(CNS_ACTIVE_NS_LIST, start, 0, 0)?)?;
            if let Some(&first) = page.first() {
                if first <= start {
                    return Err(Error::Protocol(format!(
                        "active namespace list starting after NSID {start} contains NSID {first}"
                    )));
                }
            }
            let full = page.len() == 1024;
            all.extend_from_slice(&page);
            match (full, page.last()) {
                (true, Some(&last)) if last < 0xFFFF_FFFE => start = last,
                _ => return Ok(all),
            }
        }
    }

    /// Identify Namespace (NVM command set).
    pub fn identify_namespace(&mut self, nsid: u32) -> Result<IdentifyNamespace> {
        Ok(IdentifyNamespace::parse(&self.admin.identify(
            CNS_NAMESPACE,
            nsid,
            0,
            0,
        )?))
    }

    /// Namespace Identification Descriptor list.
    pub fn ns_descriptors(&mut self, nsid: u32) -> Result<Vec<NsDescriptor>> {
        parse_ns_descriptors(
            &self
                .admin
                .identify(command::CNS_NS_DESCRIPTORS, nsid, 0, 0)?,
        )
    }

    /// Read a whole log page in chunks no larger than the transfer limit.
    pub fn read_log(&mut self, lid: u8, nsid: u32, len: u64, lsp: u8) -> Result<Vec<u8>> {
        let chunk = (self.max_transfer_size() & !3).max(4096) as u64;
        let mut out = Vec::with_capacity(len as usize);
        let mut off = 0u64;
        while off < len {
            let n = chunk.min(len - off) as u32;
            out.extend(self.admin.get_log_page(lid, nsid, n, off, lsp)?);
            off += n as u64;
        }
        Ok(out)
    }

    /// Read the complete Discovery log page, re-reading until the
    /// generation counter is stable across the read.
    pub fn discovery_log(&mut self) -> Result<DiscoveryLog> {
        const MAX_RECORDS: u64 = 65536;
        for _ in 0..10 {
            let hdr = DiscoveryLog::parse_header(&self.admin.get_log_page(
                command::LID_DISCOVERY,
                0,
                DISCOVERY_HEADER_LEN as u32,
                0,
                0,
            )?)?;
            if hdr.recfmt != 0 {
                return Err(Error::Protocol(format!(
                    "discovery log: RECFMT {} is not 0",
                    hdr.recfmt
                )));
            }
            if hdr.numrec > MAX_RECORDS {
                return Err(Error::Protocol(format!(
                    "discovery log: NUMREC {} is implausible",
                    hdr.numrec
                )));
            }
            let total = DISCOVERY_HEADER_LEN as u64 + hdr.numrec * DISCOVERY_ENTRY_LEN as u64;
            let full = self.read_log(command::LID_DISCOVERY, 0, total, 0)?;
            let log = DiscoveryLog::parse(&full)?;
            let after = DiscoveryLog::parse_header(&self.admin.get_log_page(
                command::LID_DISCOVERY,
                0,
                DISCOVERY_HEADER_LEN as u32,
                0,
                0,
            )?)?;
            if log.genctr == hdr.genctr && after.genctr == hdr.genctr {
                if log.numrec != hdr.numrec {
                    return Err(Error::Protocol(format!(
                        "discovery log: NUMREC changed from {} to {} without a GENCTR change ({})",
                        hdr.numrec, log.numrec, hdr.genctr
                    )));
                }
                return Ok(log);
            }
        }
        Err(Error::Protocol(
            "discovery log: generation counter kept changing over 10 attempts".into(),
        ))
    }
}

/// Poll CSTS until `done` says so, with a timeout.
fn wait_csts(
    admin: &mut Queue,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(u64) -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let csts = admin.property_get(command::PROP_CSTS, false)?;
        if done(csts)? {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Protocol(format!(
                "controller did not set {what} within {} ms (CSTS {csts:#x})",
                timeout.as_millis()
            )));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Connect to the discovery controller at `addr` (admin queue only), read the
/// whole Discovery log page (checking that the generation counter did not
/// change), then shut the controller down.
pub fn discover(addr: SocketAddr, opts: &QueueOptions) -> Result<DiscoveryLog> {
    let mut ctrl = Controller::connect(addr, DISCOVERY_NQN, opts, 0)?;
    let log = ctrl.discovery_log();
    let shut = ctrl.shutdown();
    let log = log?;
    shut?;
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cc_value() {
        // NVM command set only, MPSMIN 0, TO 10.
        let cap = 1u64 << 37 | 10 << 24 | 127;
        let cc = cc_enable_value(cap);
        assert_eq!(cc, 0x0046_0001);
        assert_eq!(cap::mqes(cap), 127);
        assert_eq!(cap::to(cap), 10);
        // I/O command sets supported -> CSS 110b.
        let cc = cc_enable_value(1u64 << 43 | 1 << 37);
        assert_eq!((cc >> 4) & 7, 0b110);
        // Admin only (discovery) -> CSS 111b.
        let cc = cc_enable_value(1u64 << 44);
        assert_eq!((cc >> 4) & 7, 0b111);
        // MPSMIN 2 -> CC.MPS 2.
        let cc = cc_enable_value(1u64 << 37 | 2 << 48);
        assert_eq!((cc >> 7) & 0xf, 2);
    }
}
