//! Admin commands: Identify, Get Log Page, Get/Set Features, Asynchronous
//! Event Request, Abort, Keep Alive.

use super::controller::ControllerShared;
use super::queue::{Queue, Response, Role};
use crate::nvme::identify::{self, cns};
use crate::nvme::log::{self, lid, DiscoveryEntry};
use crate::nvme::{admin_op, io_op, Command, Status};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Feature identifiers.
mod fid {
    pub const ARBITRATION: u8 = 0x01;
    pub const POWER_MGMT: u8 = 0x02;
    pub const TEMP_THRESHOLD: u8 = 0x04;
    pub const ERROR_RECOVERY: u8 = 0x05;
    pub const VOLATILE_WC: u8 = 0x06;
    pub const NUM_QUEUES: u8 = 0x07;
    pub const WRITE_ATOMICITY: u8 = 0x0A;
    pub const ASYNC_EVENT: u8 = 0x0B;
    pub const KEEP_ALIVE: u8 = 0x0F;
    pub const HOST_ID: u8 = 0x81;
}

/// Features with a plain stored value.
#[derive(Debug, Clone, Copy)]
struct Features {
    arbitration: u32,
    power_mgmt: u32,
    temp_threshold: u32,
    error_recovery: u32,
    write_atomicity: u32,
    async_event: u32,
}

impl Default for Features {
    fn default() -> Features {
        Features {
            arbitration: 0,
            power_mgmt: 0,
            temp_threshold: 358,
            error_recovery: 0,
            write_atomicity: 0,
            async_event: 0,
        }
    }
}

pub(crate) struct AdminState {
    pub(crate) ctrl: Arc<ControllerShared>,
    pub(crate) kato_ms: u32,
    pub(crate) last_ka: Instant,
    aers: Vec<u16>,
    features: Features,
}

impl AdminState {
    pub(crate) fn new(ctrl: Arc<ControllerShared>, kato_ms: u32, now: Instant) -> AdminState {
        ctrl.kato_ms
            .store(kato_ms, std::sync::atomic::Ordering::Relaxed);
        AdminState {
            ctrl,
            kato_ms,
            last_ka: now,
            aers: Vec::new(),
            features: Features::default(),
        }
    }
}

const ADMIN_OPS: &[u8] = &[
    admin_op::GET_LOG_PAGE,
    admin_op::IDENTIFY,
    admin_op::ABORT,
    admin_op::SET_FEATURES,
    admin_op::GET_FEATURES,
    admin_op::ASYNC_EVENT_REQUEST,
    admin_op::KEEP_ALIVE,
    admin_op::FABRICS,
];
const IO_READ_OPS: &[u8] = &[io_op::FLUSH, io_op::READ, io_op::COMPARE, io_op::VERIFY];
const IO_WRITE_OPS: &[u8] = &[
    io_op::WRITE,
    io_op::WRITE_ZEROES,
    io_op::DATASET_MANAGEMENT,
    io_op::COPY,
];

impl Queue {
    fn admin(&mut self) -> &mut AdminState {
        match &mut self.role {
            Role::Admin(a) => a,
            _ => unreachable!("admin command on a non-admin queue"),
        }
    }

    pub(super) fn admin_command(
        &mut self,
        cmd: &Command,
        data: Vec<u8>,
        now: Instant,
        out: &mut Vec<Response>,
    ) {
        let ctrl = self.admin().ctrl.clone();
        // Only fabrics commands are allowed before the controller is enabled.
        if !ctrl.is_ready() {
            return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR.dnr(), 0, out);
        }
        match cmd.opcode {
            admin_op::IDENTIFY => self.identify(cmd, &ctrl, out),
            admin_op::GET_LOG_PAGE => self.get_log_page(cmd, &ctrl, out),
            admin_op::GET_FEATURES => self.get_features(cmd, &ctrl, out),
            admin_op::SET_FEATURES => self.set_features(cmd, &ctrl, &data, now, out),
            admin_op::KEEP_ALIVE => {
                self.admin().last_ka = now;
                self.complete(cmd, Status::SUCCESS, 0, out)
            }
            admin_op::ASYNC_EVENT_REQUEST => {
                if self.admin().aers.len() >= super::MAX_AERS {
                    self.complete(cmd, Status::AER_LIMIT_EXCEEDED, 0, out)
                } else {
                    self.admin().aers.push(cmd.cid);
                    self.deliver_events(out);
                }
            }
            admin_op::ABORT => {
                let sqid = cmd.cdw10 as u16;
                let cid = (cmd.cdw10 >> 16) as u16;
                let a = self.admin();
                // Only a held AER can still be aborted: every other command
                // completes before the next one is read.
                if sqid == 0 {
                    if let Some(i) = a.aers.iter().position(|&c| c == cid) {
                        a.aers.remove(i);
                        let cqe = self.cqe(cid, Status::ABORT_REQUESTED, 0, 0);
                        out.push(Response {
                            cqe,
                            data: Vec::new(),
                            shared: None,
                        });
                        return self.complete(cmd, Status::SUCCESS, 0, out);
                    }
                }
                self.complete(cmd, Status::SUCCESS, 1, out)
            }
            _ => self.complete(cmd, Status::INVALID_OPCODE.dnr(), 0, out),
        }
    }

    /// Completes an outstanding Asynchronous Event Request with a pending
    /// event the host enabled (Namespace Attribute Notices): Notice, Namespace
    /// Attribute Changed, log page 04h.
    pub(super) fn deliver_events(&mut self, out: &mut Vec<Response>) {
        let Role::Admin(a) = &mut self.role else {
            return;
        };
        if a.aers.is_empty()
            || !a
                .ctrl
                .events_pending
                .load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        // Notice (type 2): Namespace Attribute Changed (info 00h, log page
        // 04h) or Discovery Log Page Change (info F0h, log page 70h).
        let (ns, disc) = a.ctrl.take_events();
        let enabled = a.features.async_event;
        let dw0 = if ns && enabled & identify::OAES_NS_ATTR != 0 {
            0x2 | ((log::lid::CHANGED_NS as u32) << 16)
        } else if disc && enabled & identify::OAES_DISC_CHANGE != 0 {
            0x2 | (0xF0 << 8) | ((log::lid::DISCOVERY as u32) << 16)
        } else {
            return;
        };
        let cid = a.aers.remove(0);
        let cqe = self.cqe(cid, Status::SUCCESS, dw0, 0);
        out.push(Response {
            cqe,
            data: Vec::new(),
            shared: None,
        });
    }

    fn identify(&mut self, cmd: &Command, ctrl: &ControllerShared, out: &mut Vec<Response>) {
        let cns = cmd.cdw10 as u8;
        let csi = (cmd.cdw11 >> 24) as u8;
        let subsys = &ctrl.subsys;
        let nsid = cmd.nsid;
        let ns_valid = |nsid: u32| nsid != 0 && nsid <= crate::subsystem::MAX_NSID;
        let data = match cns {
            cns::CONTROLLER => identify::controller(&self.controller_info(ctrl)),
            cns::NAMESPACE | cns::CSI_NAMESPACE | cns::CS_INDEPENDENT_NS | cns::NS_DESCRIPTORS
                if subsys.discovery =>
            {
                return self.complete(cmd, Status::INVALID_NAMESPACE.dnr(), 0, out)
            }
            cns::NAMESPACE => match subsys.namespace(nsid) {
                Some(ns) => identify::namespace(&self.namespace_info(&ns)),
                // An inactive but valid NSID reads as zeros.
                None if ns_valid(nsid) => vec![0u8; identify::IDENTIFY_LEN],
                None => return self.complete(cmd, Status::INVALID_NAMESPACE.dnr(), 0, out),
            },
            cns::ACTIVE_NS_LIST | cns::CSI_ACTIVE_NS_LIST => {
                if cns == cns::CSI_ACTIVE_NS_LIST && csi != 0 {
                    return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
                }
                if nsid >= 0xFFFF_FFFE {
                    return self.complete(cmd, Status::INVALID_NAMESPACE.dnr(), 0, out);
                }
                identify::active_ns_list(subsys.namespaces().iter().map(|n| n.nsid), nsid)
            }
            cns::NS_DESCRIPTORS => match subsys.namespace(nsid) {
                Some(ns) => identify::ns_descriptors(&ns.eui64, &ns.nguid, &ns.uuid),
                None => return self.complete(cmd, Status::INVALID_NAMESPACE.dnr(), 0, out),
            },
            cns::CSI_NAMESPACE => {
                if csi != 0 {
                    return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
                }
                match subsys.namespace(nsid) {
                    Some(_) => vec![0u8; identify::IDENTIFY_LEN],
                    None if ns_valid(nsid) => vec![0u8; identify::IDENTIFY_LEN],
                    None => return self.complete(cmd, Status::INVALID_NAMESPACE.dnr(), 0, out),
                }
            }
            cns::CSI_CONTROLLER => {
                if csi != 0 {
                    return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
                }
                // NVM command set controller data: no extra limits (all zero).
                vec![0u8; identify::IDENTIFY_LEN]
            }
            cns::CS_INDEPENDENT_NS => match subsys.namespace(nsid) {
                Some(_) => identify::cs_independent_namespace(),
                None if ns_valid(nsid) => vec![0u8; identify::IDENTIFY_LEN],
                None => return self.complete(cmd, Status::INVALID_NAMESPACE.dnr(), 0, out),
            },
            cns::COMMAND_SET_LIST => identify::command_set_list(),
            _ => return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out),
        };
        self.reply_data(cmd, data, out);
    }

    /// Completes a command whose result is a data buffer. The host's buffer
    /// (the SGL length) must be exactly that long: SGLS bit 18 is clear (no
    /// SGL longer than the transfer), and a shorter one cannot take the
    /// data, so either is Data SGL Length Invalid, as nvmet answers too.
    fn reply_data(&self, cmd: &Command, data: Vec<u8>, out: &mut Vec<Response>) {
        if cmd.sgl().length as usize != data.len() {
            return self.complete(cmd, Status::DATA_SGL_LENGTH_INVALID.dnr(), 0, out);
        }
        self.complete_with(cmd, Status::SUCCESS, 0, data, out);
    }

    fn controller_info<'a>(&'a self, ctrl: &'a ControllerShared) -> identify::ControllerInfo<'a> {
        let cfg = &self.target.config;
        let subsys = &ctrl.subsys;
        let discovery = subsys.discovery;
        let vwc = subsys
            .namespaces()
            .iter()
            .any(|n| n.backend.volatile_write_cache());
        use identify::oncs;
        identify::ControllerInfo {
            serial: &subsys.serial,
            model: &subsys.model,
            firmware: super::FIRMWARE,
            cntlid: ctrl.cntlid,
            version: super::NVME_VERSION,
            mdts: self.target.mdts(),
            cntrltype: if discovery {
                identify::CNTRLTYPE_DISCOVERY
            } else {
                identify::CNTRLTYPE_IO
            },
            subnqn: &subsys.nqn,
            nn: if discovery {
                0
            } else {
                crate::subsystem::MAX_NSID
            },
            oncs: if discovery {
                0
            } else {
                oncs::COMPARE | oncs::DSM | oncs::WRITE_ZEROES | oncs::VERIFY | oncs::COPY
            },
            fuses: if discovery { 0 } else { 1 },
            vwc,
            ocfs: if discovery { 0 } else { 1 },
            aerl: (super::MAX_AERS - 1) as u8,
            elpe: (super::ERROR_LOG_ENTRIES - 1) as u8,
            oaes: if discovery {
                identify::OAES_DISC_CHANGE
            } else {
                identify::OAES_NS_ATTR
            },
            lpa: identify::LPA_EFFECTS | identify::LPA_EXTENDED,
            maxcmd: cfg.max_queue_depth,
            kas: super::KAS,
            in_capsule: self.caps().in_capsule_data,
            sgls: self.caps().sgls(),
        }
    }

    fn namespace_info(&self, ns: &crate::subsystem::Namespace) -> identify::NamespaceInfo {
        let max_blocks = (self.target.config.max_io_size >> ns.lba_shift).clamp(1, 0xFFFF);
        identify::NamespaceInfo {
            nsze: ns.num_blocks,
            lba_shift: ns.lba_shift as u8,
            nguid: ns.nguid,
            eui64: ns.eui64,
            mssrl: max_blocks as u16,
            mcl: max_blocks,
            msrc: 127,
        }
    }

    fn get_log_page(&mut self, cmd: &Command, ctrl: &ControllerShared, out: &mut Vec<Response>) {
        let lid = cmd.cdw10 as u8;
        let numd = (((cmd.cdw11 & 0xFFFF) << 16) | (cmd.cdw10 >> 16)) as u64 + 1;
        let len = numd * 4;
        let offset = cmd.cdw12 as u64 | ((cmd.cdw13 as u64) << 32);
        if !offset.is_multiple_of(4) || len > self.max_transfer() as u64 {
            return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
        }
        let discovery = ctrl.subsys.discovery;
        let page = match lid {
            lid::DISCOVERY if discovery => self.discovery_log(ctrl),
            lid::ERROR => log::error_log(&ctrl.error_entries()),
            lid::SMART if !discovery => {
                if cmd.nsid != 0 && cmd.nsid != 0xFFFF_FFFF {
                    // LPA bit 0 is clear: no per-namespace SMART data.
                    return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
                }
                log::smart(&ctrl.health())
            }
            lid::FW_SLOT if !discovery => log::fw_slot(super::FIRMWARE),
            // Cleared only by a whole read from the start that will
            // succeed, without Retain Asynchronous Event.
            lid::CHANGED_NS if !discovery => ctrl.changed_ns_log(
                cmd.cdw10 & (1 << 15) != 0
                    || offset != 0
                    || len != 4096
                    || cmd.sgl().length as u64 != len,
            ),
            lid::CMD_EFFECTS => {
                if discovery {
                    log::cmd_effects(ADMIN_OPS, &[], &[])
                } else {
                    log::cmd_effects(ADMIN_OPS, IO_READ_OPS, IO_WRITE_OPS)
                }
            }
            _ => return self.complete(cmd, Status::INVALID_LOG_PAGE.dnr(), 0, out),
        };
        if offset > page.len() as u64 {
            return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
        }
        let start = offset as usize;
        let end = page.len().min(start + len as usize);
        let mut data = page[start..end].to_vec();
        data.resize(len as usize, 0);
        self.reply_data(cmd, data, out);
    }

    /// The discovery log for this host: every subsystem it may connect to,
    /// on every listener, at an address the host can reach.
    fn discovery_log(&self, ctrl: &ControllerShared) -> Vec<u8> {
        let mut entries = Vec::new();
        let subsystems = self.target.subsystems();
        for l in self.target.listeners().iter() {
            let port = &l.port;
            let addr = reachable_addr(port.addr, self.local);
            let entry = |nqn: &str, subtype| DiscoveryEntry {
                trtype: port.trtype,
                adrfam: if addr.is_ipv4() { 1 } else { 2 },
                subtype,
                portid: l.id,
                asqsz: super::ADMIN_QUEUE_DEPTH as u16,
                eflags: if subtype == log::subtype::CURRENT_DISCOVERY {
                    0b11 // duplicate info returned, explicit persistent connections
                } else {
                    0
                },
                trsvcid: addr.port().to_string(),
                subnqn: nqn.to_string(),
                traddr: addr.ip().to_string(),
                tsas: port.tsas,
            };
            entries.push(entry(
                crate::config::DISCOVERY_NQN,
                log::subtype::CURRENT_DISCOVERY,
            ));
            for s in &subsystems {
                if s.host_allowed(&ctrl.hostnqn) && s.served_on(l) {
                    entries.push(entry(&s.nqn, log::subtype::NVME));
                }
            }
        }
        log::discovery(self.target.genctr.load(Relaxed), &entries)
    }

    fn get_features(&mut self, cmd: &Command, ctrl: &ControllerShared, out: &mut Vec<Response>) {
        let f = cmd.cdw10 as u8;
        let sel = (cmd.cdw10 >> 8) & 7;
        let supported = [
            fid::ARBITRATION,
            fid::POWER_MGMT,
            fid::TEMP_THRESHOLD,
            fid::ERROR_RECOVERY,
            fid::VOLATILE_WC,
            fid::NUM_QUEUES,
            fid::WRITE_ATOMICITY,
            fid::ASYNC_EVENT,
            fid::KEEP_ALIVE,
            fid::HOST_ID,
        ];
        if !supported.contains(&f) || sel > 3 {
            return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
        }
        if sel == 3 {
            // Supported capabilities: changeable, not saveable, not per namespace.
            let changeable = !matches!(f, fid::HOST_ID | fid::VOLATILE_WC);
            return self.complete(cmd, Status::SUCCESS, (changeable as u32) << 2, out);
        }
        let default = sel != 0;
        let feats = if default {
            Features::default()
        } else {
            self.admin().features
        };
        let granted = if default {
            self.target.config.max_io_queues.max(1) as u32 - 1
        } else {
            ctrl.io_queues.load(Relaxed).max(1) as u32 - 1
        };
        let vwc_on = ctrl
            .subsys
            .namespaces()
            .iter()
            .any(|n| n.backend.volatile_write_cache());
        let kato = if default { 0 } else { self.admin().kato_ms };
        let dw0 = match f {
            fid::ARBITRATION => feats.arbitration,
            fid::POWER_MGMT => feats.power_mgmt,
            fid::TEMP_THRESHOLD => feats.temp_threshold,
            fid::ERROR_RECOVERY => feats.error_recovery,
            fid::VOLATILE_WC => vwc_on as u32,
            fid::NUM_QUEUES => granted | (granted << 16),
            fid::WRITE_ATOMICITY => feats.write_atomicity,
            fid::ASYNC_EVENT => feats.async_event,
            fid::KEEP_ALIVE => kato,
            fid::HOST_ID => {
                // Fabrics hosts have a 128-bit host identifier (EXHID = 1).
                if cmd.cdw11 & 1 == 0 {
                    return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
                }
                let data = ctrl.hostid.to_vec();
                return self.reply_data(cmd, data, out);
            }
            _ => 0,
        };
        self.complete(cmd, Status::SUCCESS, dw0, out)
    }

    fn set_features(
        &mut self,
        cmd: &Command,
        ctrl: &ControllerShared,
        _data: &[u8],
        now: Instant,
        out: &mut Vec<Response>,
    ) {
        let f = cmd.cdw10 as u8;
        if cmd.cdw10 & (1 << 31) != 0 {
            return self.complete(cmd, Status::FEATURE_NOT_SAVEABLE.dnr(), 0, out);
        }
        let v = cmd.cdw11;
        let max_queues = self.target.config.max_io_queues;
        let kato_max = self.target.config.keep_alive_timeout_ms_max;
        let a = self.admin();
        let mut dw0 = 0;
        match f {
            fid::ARBITRATION => a.features.arbitration = v,
            fid::POWER_MGMT => {
                // One power state only.
                if v & 0x1F != 0 {
                    return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
                }
                a.features.power_mgmt = v;
            }
            fid::TEMP_THRESHOLD => a.features.temp_threshold = v,
            fid::ERROR_RECOVERY => {
                // DULBE needs deallocated-block errors, which we do not report.
                if v & (1 << 16) != 0 {
                    return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
                }
                a.features.error_recovery = v;
            }
            fid::WRITE_ATOMICITY => a.features.write_atomicity = v,
            fid::ASYNC_EVENT => {
                let supported = if a.ctrl.subsys.discovery {
                    identify::OAES_DISC_CHANGE
                } else {
                    identify::OAES_NS_ATTR
                };
                a.features.async_event = v & supported
            }
            fid::KEEP_ALIVE => {
                if v > kato_max {
                    return self.complete(cmd, Status::KEEP_ALIVE_INVALID.dnr(), 0, out);
                }
                a.kato_ms = v;
                a.ctrl
                    .kato_ms
                    .store(v, std::sync::atomic::Ordering::Relaxed);
                // A new timeout restarts the timer.
                a.last_ka = now;
            }
            fid::NUM_QUEUES => {
                // Only before the first I/O queue is created.
                if ctrl.had_io_queues() {
                    return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR.dnr(), 0, out);
                }
                let nsq = v & 0xFFFF;
                let ncq = v >> 16;
                if nsq == 0xFFFF || ncq == 0xFFFF {
                    return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out);
                }
                let want = nsq.min(ncq) + 1;
                let granted = want.min(max_queues as u32);
                ctrl.io_queues.store(granted as u16, Relaxed);
                dw0 = (granted - 1) | ((granted - 1) << 16);
            }
            fid::VOLATILE_WC => {
                let present = ctrl
                    .subsys
                    .namespaces()
                    .iter()
                    .any(|n| n.backend.volatile_write_cache());
                if !present || v & 1 == 0 {
                    // Without a volatile cache there is nothing to switch; a
                    // present cache stays on (Flush makes it durable).
                    return self.complete(cmd, Status::FEATURE_NOT_CHANGEABLE.dnr(), 0, out);
                }
            }
            fid::HOST_ID => {
                // The host identifier of a fabrics host comes from Connect.
                return self.complete(cmd, Status::COMMAND_SEQUENCE_ERROR.dnr(), 0, out);
            }
            _ => return self.complete(cmd, Status::INVALID_FIELD.dnr(), 0, out),
        }
        self.complete(cmd, Status::SUCCESS, dw0, out)
    }
}

/// The address to advertise for a listener: a wildcard listener is reported
/// with the local address this host reached us at.
fn reachable_addr(listener: SocketAddr, local: SocketAddr) -> SocketAddr {
    if listener.ip().is_unspecified() {
        // An IPv4 host reaching a dual-stack "::" listener is seen at an
        // IPv4-mapped address: advertise the plain IPv4 address it used.
        let ip = match local.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            ip => ip,
        };
        SocketAddr::new(ip, listener.port())
    } else {
        listener
    }
}
