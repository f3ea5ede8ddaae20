//! Admin queue over loopback against the real target: Connect (admin and I/O
//! queues), Property Get/Set, Identify, Get Log Page, Get/Set Features, Keep
//! Alive, Asynchronous Event Requests and Abort.

mod common;

use std::time::Duration;

use common::*;
use nvmf_initiator::command::{
    self, Command, CNS_ACTIVE_NS_LIST, CNS_CONTROLLER, CNS_NAMESPACE, CNS_NS_DESCRIPTORS,
    FID_ASYNC_EVENT_CONFIG, FID_KEEP_ALIVE_TIMER, FID_NUMBER_OF_QUEUES, FID_VOLATILE_WRITE_CACHE,
    LID_CHANGED_NS, LID_CMD_EFFECTS, LID_DISCOVERY, LID_ERROR, LID_FW_SLOT, LID_SMART, PROP_CAP,
    PROP_CC, PROP_CSTS, PROP_VS,
};
use nvmf_initiator::pdu;
use nvmf_initiator::queue::connect_data;
use nvmf_initiator::{
    parse_ns_list, Controller, DiscoveryLog, IdentifyController, IdentifyNamespace, NsDescriptor,
    Queue,
};
use nvmf_target::config::{derived_namespace_ids, derived_serial};

const SC_CONNECT_INVALID_PARAM: u16 = 0x0182;
const SC_CONNECT_INVALID_HOST: u16 = 0x0184;
const SC_CONNECT_FORMAT: u16 = 0x0180;
const SC_INVALID_FIELD: u16 = 0x0002;
const SC_INVALID_OPCODE: u16 = 0x0001;
const SC_INVALID_NS: u16 = 0x000B;
const SC_CMD_SEQ: u16 = 0x000C;
const SC_HOST_ID_INCONSISTENT: u16 = 0x0018;
const SC_KEEP_ALIVE_INVALID: u16 = 0x001A;
const SC_ABORT_REQUESTED: u16 = 0x0007;
const SC_AER_LIMIT: u16 = 0x0105;
const SC_INVALID_LOG_PAGE: u16 = 0x0109;
const SC_NOT_SAVEABLE: u16 = 0x010D;
const SC_NOT_CHANGEABLE: u16 = 0x010E;
const SC_SGL_LENGTH: u16 = 0x000F;

/// IPO/IATTR values of Connect Invalid Parameters (dw0).
const IPO_SQE_QID: u32 = 42;
const IPO_SQE_SQSIZE: u32 = 44;
const IPO_DATA_CNTLID: u32 = 1 << 16 | 16;
const IPO_DATA_SUBNQN: u32 = 1 << 16 | 256;
const IPO_DATA_HOSTNQN: u32 = 1 << 16 | 512;

/// Sends a Connect on a fresh connection (hand-made PDUs, so that any field
/// can be sent) and returns its result as the library would.
fn raw_connect(
    addr: std::net::SocketAddr,
    qid: u16,
    sqsize: u16,
    kato: u32,
    cntlid: u16,
    subnqn: &str,
    o: &nvmf_initiator::QueueOptions,
) -> nvmf_initiator::Result<u16> {
    let mut c = RawConn::open_ic(addr, false, false);
    let data = connect_data(&o.hostid, cntlid, subnqn, &o.hostnqn).unwrap();
    let mut cmd = Command::connect(qid, sqsize, 0, kato);
    cmd.cid = 0x1234;
    cmd.dptr = command::sgl_descriptor(0, 1024, command::SGL_DATA_BLOCK_OFFSET);
    c.send(&pdu::encode_capsule_cmd(
        &cmd.to_bytes(),
        &data,
        &pdu::PduConfig::default(),
    ));
    let cqe = match c.recv() {
        pdu::Pdu::CapsuleResp(r) => command::Cqe::parse(&r.cqe),
        other => panic!("expected a CapsuleResp to Connect, got {other:?}"),
    };
    assert_eq!(cqe.cid, 0x1234);
    assert_eq!(cqe.sqid, qid, "CQE SQID of a Connect for queue {qid}");
    if cqe.status() == 0 {
        Ok(cqe.dw0 as u16)
    } else {
        Err(nvmf_initiator::Error::Status {
            status: cqe.status(),
            dnr: cqe.dnr(),
            dw0: cqe.dw0,
        })
    }
}

// ------------------------------------------------------------------ Connect

#[test]
fn connect_gives_dynamic_controller_ids() {
    let t = start_basic();
    let mut a = connect(t.addr(), 1);
    let mut b = connect(t.addr(), 1);
    assert_ne!(a.cntlid, b.cntlid, "two associations share a controller ID");
    for c in [&a, &b] {
        assert!(
            (1..0xFFF0).contains(&c.cntlid),
            "cntlid {:#x} out of the dynamic range",
            c.cntlid
        );
        assert_eq!(c.id.cntlid, c.cntlid);
        assert_eq!(c.io[0].cntlid(), c.cntlid);
    }
    // Both controllers work independently.
    write_read_check(&mut a.io[0], NS_RAM512, 512, 0, 1, 4096);
    write_read_check(&mut b.io[0], NS_RAM512, 512, 8, 2, 4096);
    a.shutdown().expect("orderly shutdown of a");
    // b still works after a is gone, and a new controller gets a fresh ID.
    write_read_check(&mut b.io[0], NS_RAM512, 512, 16, 3, 512);
    let c = connect(t.addr(), 0);
    assert_ne!(c.cntlid, b.cntlid);
    c.shutdown().unwrap();
    b.shutdown().unwrap();
}

#[test]
fn connect_admin_queue_parameter_errors() {
    let t = start_basic();
    let a = t.addr();
    let o = opts();
    // SQSIZE 0 (a queue of one entry) is invalid.
    let dw0 = expect_status_dnr(
        raw_connect(a, 0, 0, 0, 0xFFFF, NQN, &o),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_SQE_SQSIZE);
    // The admin queue holds at most 32 entries.
    let dw0 = expect_status_dnr(
        raw_connect(a, 0, 32, 0, 0xFFFF, NQN, &o),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_SQE_SQSIZE);
    raw_connect(a, 0, 31, 0, 0xFFFF, NQN, &o).expect("32 admin entries are fine");
    // KATO above keep_alive_timeout_ms_max (120 s by default).
    expect_status_dnr(
        raw_connect(a, 0, 31, 120_001, 0xFFFF, NQN, &o),
        SC_KEEP_ALIVE_INVALID,
    );
    raw_connect(a, 0, 31, 120_000, 0xFFFF, NQN, &o).expect("KATO at the maximum");
    // Unknown subsystem.
    let dw0 = expect_status_dnr(
        raw_connect(a, 0, 31, 0, 0xFFFF, "nqn.2026-01.io.example:nope", &o),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_DATA_SUBNQN);
    // The dynamic controller model: a static CNTLID on the admin queue.
    let dw0 = expect_status_dnr(
        raw_connect(a, 0, 31, 0, 5, NQN, &o),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_DATA_CNTLID);
    // Any host NQN, even an empty one (SPDK's perf sends one), is accepted
    // by a subsystem open to any host, as SPDK's target and nvmet do; the
    // allow-lists are what restrict hosts.
    for hostnqn in ["", "not-an-nqn"] {
        let mut odd = o.clone();
        odd.hostnqn = hostnqn.into();
        let cntlid = raw_connect(a, 0, 31, 0, 0xFFFF, NQN, &odd)
            .unwrap_or_else(|e| panic!("host NQN {hostnqn:?} refused: {e}"));
        assert!(cntlid > 0 && cntlid < 0xFFF0);
    }
    // RECFMT other than 0.
    let mut q = Queue::connect_transport(a, &o).unwrap();
    let mut cmd = Command::connect(0, 31, 0, 0);
    cmd.cdw10 |= 1;
    let data = connect_data(&o.hostid, 0xFFFF, NQN, &o.hostnqn).unwrap();
    expect_status_dnr(
        q.execute(cmd, Some(data), 0).unwrap().check(),
        SC_CONNECT_FORMAT,
    );
    // Connect data shorter than 1024 bytes.
    let mut q = Queue::connect_transport(a, &o).unwrap();
    let mut data = connect_data(&o.hostid, 0xFFFF, NQN, &o.hostnqn).unwrap();
    data.truncate(512);
    expect_status_dnr(
        q.execute(Command::connect(0, 31, 0, 0), Some(data), 0)
            .unwrap()
            .check(),
        SC_SGL_LENGTH,
    );
    // A second Connect on a connected queue.
    let mut q = Queue::connect(a, 0, NQN, 0xFFFF, &o).unwrap();
    let data = connect_data(&o.hostid, 0xFFFF, NQN, &o.hostnqn).unwrap();
    expect_status_dnr(
        q.execute(Command::connect(0, 31, 0, 0), Some(data), 0)
            .unwrap()
            .check(),
        SC_CMD_SEQ,
    );
    // The target still accepts a proper controller.
    connect(a, 1).shutdown().unwrap();
}

#[test]
fn connect_io_queue_errors() {
    let t = start(&format!(
        "{}\n[[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:other\"\nallow_any_host = true\n\n[[subsystem.namespace]]\nbackend = \"null\"\nsize = \"1MiB\"\n",
        basic_toml("max_queue_depth = 64")
    ));
    let a = t.addr();
    let o = opts();

    // Before CC.EN: the admin queue is connected but the controller is not
    // enabled.
    let admin = Queue::connect(a, 0, NQN, 0xFFFF, &o).unwrap();
    let id = admin.cntlid();
    expect_status_dnr(Queue::connect(a, 1, NQN, id, &o), SC_CMD_SEQ);
    drop(admin);

    let mut ctrl = connect(a, 0);
    let id = ctrl.cntlid;
    let (nsq, ncq) = ctrl.admin.set_number_of_queues(2, 2).unwrap();
    assert_eq!((nsq, ncq), (2, 2));
    // A queue ID beyond the granted number of queues.
    let dw0 = expect_status_dnr(Queue::connect(a, 3, NQN, id, &o), SC_CONNECT_INVALID_PARAM);
    assert_eq!(dw0, IPO_SQE_QID);
    // SQSIZE 0 and SQSIZE above CAP.MQES + 1 (64 here).
    let dw0 = expect_status_dnr(
        raw_connect(a, 1, 0, 0, id, NQN, &o),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_SQE_SQSIZE);
    let mut big = o.clone();
    big.queue_size = 65;
    let dw0 = expect_status_dnr(
        Queue::connect(a, 1, NQN, id, &big),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_SQE_SQSIZE);
    // An unknown controller ID.
    let dw0 = expect_status_dnr(
        Queue::connect(a, 1, NQN, id.wrapping_add(100), &o),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_DATA_CNTLID);
    // Another subsystem than the controller's.
    let dw0 = expect_status_dnr(
        Queue::connect(a, 1, "nqn.2026-01.io.nvmf-target:other", id, &o),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_DATA_SUBNQN);
    // Another host NQN than the admin queue's.
    let other = opts_for_host(7);
    let mut wrong_nqn = o.clone();
    wrong_nqn.hostnqn = other.hostnqn.clone();
    let dw0 = expect_status_dnr(
        Queue::connect(a, 1, NQN, id, &wrong_nqn),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_DATA_HOSTNQN);
    // A discovery controller takes no I/O queues.
    let mut d = Controller::connect(a, DISCOVERY_NQN, &o, 0).unwrap();
    let dw0 = expect_status_dnr(
        Queue::connect(a, 1, DISCOVERY_NQN, d.cntlid, &max_for(&o)),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_DATA_SUBNQN);
    d.keep_alive().unwrap();
    // The right host NQN with another host identifier.
    let mut wrong_id = o.clone();
    wrong_id.hostid = other.hostid;
    expect_status_dnr(
        Queue::connect(a, 1, NQN, id, &wrong_id),
        SC_HOST_ID_INCONSISTENT,
    );

    // The good ones work, with the largest allowed queue.
    let mut max = o.clone();
    max.queue_size = 64;
    let mut q1 = Queue::connect(a, 1, NQN, id, &max).expect("I/O queue 1");
    let mut q2 = Queue::connect(a, 2, NQN, id, &max).expect("I/O queue 2");
    assert_eq!((q1.qid(), q2.qid()), (1, 2));
    // A queue ID already in use.
    let dw0 = expect_status_dnr(
        Queue::connect(a, 1, NQN, id, &max),
        SC_CONNECT_INVALID_PARAM,
    );
    assert_eq!(dw0, IPO_SQE_QID);
    write_read_check(&mut q1, NS_RAM512, 512, 0, 11, 8192);
    write_read_check(&mut q2, NS_RAM4K, 4096, 0, 12, 8192);
    // After queue 2 closes, its ID can be connected again.
    q2.close();
    assert!(
        wait_until(Duration::from_secs(10), || Queue::connect(
            a, 2, NQN, id, &max
        )
        .map(|mut q| {
            write_read_check(&mut q, NS_RAM4K, 4096, 0, 12, 4096);
        })
        .is_ok()),
        "queue ID 2 was never released after its connection closed"
    );
    ctrl.shutdown().unwrap();
}

/// `o` with the largest I/O queue the test target allows (64 entries).
fn max_for(o: &nvmf_initiator::QueueOptions) -> nvmf_initiator::QueueOptions {
    let mut m = o.clone();
    m.queue_size = 64;
    m
}

fn two_host_toml() -> String {
    let allowed = opts_for_host(1).hostnqn;
    format!(
        r#"{}
[[subsystem]]
nqn = "nqn.2026-01.io.nvmf-target:private"
allow_any_host = false
hosts = ["{allowed}"]

[[subsystem.namespace]]
backend = "ram"
size = "1MiB"
"#,
        basic_toml("")
    )
}

#[test]
fn disallowed_host_gets_connect_invalid_host() {
    let t = start(&two_host_toml());
    let private = "nqn.2026-01.io.nvmf-target:private";
    let stranger = opts_for_host(2);
    let (status, dnr, dw0) = status_of(Queue::connect(t.addr(), 0, private, 0xFFFF, &stranger));
    assert_eq!(status, SC_CONNECT_INVALID_HOST);
    assert!(dnr);
    // IATTR 1 (in the Connect data), IPO 512: the host NQN.
    assert_eq!(dw0, IPO_DATA_HOSTNQN);
    // An empty host NQN is on no allow-list.
    let mut nobody = opts_for_host(3);
    nobody.hostnqn = String::new();
    let (status, _, _) = status_of(Queue::connect(t.addr(), 0, private, 0xFFFF, &nobody));
    assert_eq!(status, SC_CONNECT_INVALID_HOST);
    // The stranger may still use the open subsystem.
    connect_with(t.addr(), NQN, &stranger, 1)
        .shutdown()
        .unwrap();
    // The listed host connects and does I/O.
    let mut c = connect_with(t.addr(), private, &opts_for_host(1), 1);
    assert_eq!(c.id.subnqn, private);
    write_read_check(&mut c.io[0], 1, 512, 7, 5, 2048);
    c.shutdown().unwrap();
}

// --------------------------------------------------------------- properties

#[test]
fn property_get_set() {
    let t = start(&basic_toml("max_queue_depth = 256"));
    let o = opts();
    let mut q = Queue::connect(t.addr(), 0, NQN, 0xFFFF, &o).unwrap();
    let cap = q.property_get(PROP_CAP, true).unwrap();
    assert_eq!(cap & 0xFFFF, 255, "CAP.MQES is max_queue_depth - 1");
    assert_ne!(cap & (1 << 16), 0, "CAP.CQR must be set on fabrics");
    assert!((cap >> 24) & 0xFF > 0, "CAP.TO is zero");
    assert_ne!(
        cap & (1 << 37),
        0,
        "CAP.CSS must include the NVM command set"
    );
    assert_eq!((cap >> 48) & 0xF, 0, "CAP.MPSMIN is 4 KiB");
    assert_eq!(q.property_get(PROP_VS, false).unwrap(), 0x0001_0400);
    assert_eq!(q.property_get(PROP_CC, false).unwrap(), 0);
    assert_eq!(q.property_get(PROP_CSTS, false).unwrap(), 0);

    // Admin commands other than fabrics ones need CC.EN.
    expect_status_dnr(q.identify(CNS_CONTROLLER, 0, 0, 0), SC_CMD_SEQ);

    // Bad offsets and sizes.
    expect_status_dnr(q.property_get(0x30, false), SC_INVALID_FIELD);
    expect_status_dnr(q.property_get(0x1000, true), SC_INVALID_FIELD);
    expect_status_dnr(q.property_set(PROP_VS, false, 0), SC_INVALID_FIELD);
    expect_status_dnr(q.property_set(PROP_CAP, true, 0), SC_INVALID_FIELD);
    expect_status_dnr(q.property_set(PROP_CC, true, 1), SC_INVALID_FIELD);

    // Enable: CC.EN -> CSTS.RDY.
    let cc = nvmf_initiator::controller::cc_enable_value(cap);
    q.property_set(PROP_CC, false, cc as u64).unwrap();
    assert_eq!(q.property_get(PROP_CC, false).unwrap(), cc as u64);
    assert!(
        wait_until(Duration::from_secs(10), || q
            .property_get(PROP_CSTS, false)
            .unwrap()
            & 1
            == 1),
        "CSTS.RDY never set"
    );
    q.identify(CNS_CONTROLLER, 0, 0, 0)
        .expect("identify once enabled");

    // Shutdown: CC.SHN = 01b -> CSTS.SHST = 10b.
    q.property_set(PROP_CC, false, (cc | 1 << 14) as u64)
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || q
            .property_get(PROP_CSTS, false)
            .unwrap()
            & 0xC
            == 0x8),
        "CSTS.SHST never reached 'shutdown complete'"
    );
    // Disable: CSTS.RDY clears, and the controller can be enabled again.
    q.property_set(PROP_CC, false, 0).unwrap();
    let csts = q.property_get(PROP_CSTS, false).unwrap();
    assert_eq!(csts & 1, 0, "CSTS.RDY still set after CC.EN = 0");
    assert_eq!(csts & 0xC, 0, "CSTS.SHST still set after CC.SHN = 0");
    q.property_set(PROP_CC, false, cc as u64).unwrap();
    assert_eq!(q.property_get(PROP_CSTS, false).unwrap() & 3, 1);
}

#[test]
fn enabling_with_bad_queue_entry_sizes_is_a_fatal_status() {
    let t = start_basic();
    let mut q = Queue::connect(t.addr(), 0, NQN, 0xFFFF, &opts()).unwrap();
    // EN without IOSQES/IOCQES on an I/O controller.
    q.property_set(PROP_CC, false, 1).unwrap();
    let csts = q.property_get(PROP_CSTS, false).unwrap();
    assert_eq!(csts & 1, 0, "CSTS.RDY set for an invalid CC");
    assert_ne!(csts & 2, 0, "CSTS.CFS not set for an invalid CC");
    expect_status_dnr(q.identify(CNS_CONTROLLER, 0, 0, 0), SC_CMD_SEQ);
}

#[test]
fn property_commands_on_an_io_queue_are_invalid() {
    let t = start_basic();
    let mut c = connect(t.addr(), 1);
    expect_status_dnr(c.io[0].property_get(PROP_CAP, true), SC_INVALID_OPCODE);
    expect_status_dnr(c.io[0].property_set(PROP_CC, false, 0), SC_INVALID_OPCODE);
    // Admin commands on an I/O queue are not I/O commands.
    expect_status_dnr(c.io[0].identify(CNS_CONTROLLER, 0, 0, 0), SC_INVALID_OPCODE);
    c.shutdown().unwrap();
}

// ----------------------------------------------------------------- Identify

#[test]
fn identify_controller_fields() {
    let t = start(&basic_toml(
        "in_capsule_data_size = 16384\nmax_io_size = \"1MiB\"\nmax_queue_depth = 100",
    ));
    let c = connect(t.addr(), 0);
    let id = c.id.clone();
    let raw = &id.raw;
    assert_eq!(id.ioccsz, (16384 + 64) / 16, "IOCCSZ");
    assert_eq!(id.iorcsz, 1, "IORCSZ");
    assert_eq!(id.icdoff, 0, "ICDOFF");
    assert_ne!(id.sgls & 0x3, 0, "SGLS: SGLs supported");
    assert_ne!(id.sgls & (1 << 20), 0, "SGLS: offsets in the capsule");
    assert_eq!(id.cntrltype, 1, "CNTRLTYPE: I/O controller");
    assert_eq!(id.kas, 10, "KAS: 100 ms units x 10");
    assert_eq!(id.mdts, 8, "MDTS: 1 MiB = 4 KiB << 8");
    assert_eq!(c.max_transfer_size(), 1 << 20);
    assert_eq!(id.subnqn, NQN);
    assert_eq!(id.sn, derived_serial(NQN));
    assert_eq!(id.mn, "nvmf-target");
    assert!(id.fr.starts_with('v'), "firmware revision {:?}", id.fr);
    assert_eq!(id.ver, 0x0001_0400);
    assert_eq!(id.sqes, 0x66);
    assert_eq!(id.cqes, 0x44);
    assert_eq!(id.maxcmd, 100);
    assert_eq!(id.nn, 1024);
    assert_eq!(id.aerl, 3);
    assert_eq!(id.elpe, 63);
    assert_ne!(id.lpa & 0x2, 0, "LPA: commands supported and effects log");
    assert_eq!(id.fuses & 1, 1, "FUSES: compare and write");
    // ONCS: Compare, DSM, Write Zeroes, Verify, Copy.
    for bit in [0, 2, 3, 7, 8] {
        assert_ne!(id.oncs & (1 << bit), 0, "ONCS bit {bit}");
    }
    assert_eq!(
        id.vwc & 1,
        0,
        "RAM and null namespaces have no volatile cache"
    );
    assert_eq!(id.msdbd, 1);
    assert_eq!(id.fcatt & 1, 0, "dynamic controller model");
    assert_eq!(raw.len(), 4096);
    c.shutdown().unwrap();

    // The discovery controller.
    let mut d = Controller::connect(t.addr(), DISCOVERY_NQN, &opts(), 0).unwrap();
    assert_eq!(d.id.cntrltype, 2, "CNTRLTYPE: discovery controller");
    assert_eq!(d.id.subnqn, DISCOVERY_NQN);
    assert_eq!(d.id.nn, 0);
    expect_status_dnr(d.identify(CNS_NAMESPACE, 1, 0, 0), SC_INVALID_NS);
    d.shutdown().unwrap();
    // A persistent discovery connection with a keep-alive timeout.
    let mut o = opts();
    o.kato_ms = 30_000;
    let mut d = Controller::connect(t.addr(), DISCOVERY_NQN, &o, 0).unwrap();
    d.keep_alive().unwrap();
    assert_eq!(
        d.get_features(FID_KEEP_ALIVE_TIMER, 0, 0).unwrap().dw0,
        30_000
    );
    d.shutdown().unwrap();
}

#[test]
fn identify_namespace_and_lists() {
    let t = start_basic();
    let mut c = connect(t.addr(), 0);
    let n1 = c.identify_namespace(NS_RAM512).unwrap();
    assert_eq!(n1.nsze, RAM_SIZE / 512);
    assert_eq!(n1.ncap, n1.nsze);
    assert_eq!(n1.block_size(), Some(512));
    let n2 = c.identify_namespace(NS_RAM4K).unwrap();
    assert_eq!(n2.nsze, RAM_SIZE / 4096);
    assert_eq!(n2.block_size(), Some(4096));
    let n3 = c.identify_namespace(NS_NULL).unwrap();
    assert_eq!(n3.nsze, NULL_SIZE / 512);
    let (_, nguid, eui64) = derived_namespace_ids(NQN, NS_RAM4K);
    assert_eq!(n2.nguid, nguid);
    assert_eq!(n2.eui64, eui64);
    // Copy limits are consistent with MDTS.
    assert_eq!(n2.mssrl as u32, MAX_IO / 4096);
    assert_eq!(n2.mcl, MAX_IO / 4096);

    // An inactive (but valid) NSID reads as zeros.
    let z = c.identify(CNS_NAMESPACE, 10, 0, 0).unwrap();
    assert!(
        z.iter().all(|&b| b == 0),
        "inactive namespace is not zeroed"
    );
    // Invalid NSIDs.
    for nsid in [0, 2000, 0xFFFF_FFFF] {
        expect_status_dnr(c.identify(CNS_NAMESPACE, nsid, 0, 0), SC_INVALID_NS);
    }
    expect_status_dnr(c.identify(CNS_NS_DESCRIPTORS, 10, 0, 0), SC_INVALID_NS);

    // Active namespace lists.
    assert_eq!(c.active_namespaces().unwrap(), vec![1, 2, 3]);
    let l = parse_ns_list(&c.identify(CNS_ACTIVE_NS_LIST, 1, 0, 0).unwrap()).unwrap();
    assert_eq!(l, vec![2, 3]);
    let l = parse_ns_list(&c.identify(CNS_ACTIVE_NS_LIST, 3, 0, 0).unwrap()).unwrap();
    assert!(l.is_empty());
    expect_status_dnr(
        c.identify(CNS_ACTIVE_NS_LIST, 0xFFFF_FFFE, 0, 0),
        SC_INVALID_NS,
    );
    // CNS 07h: active namespaces of the NVM command set (CSI 0).
    let l = parse_ns_list(&c.identify(0x07, 0, 0, 0).unwrap()).unwrap();
    assert_eq!(l, vec![1, 2, 3]);
    expect_status_dnr(c.identify(0x07, 0, 0, 2), SC_INVALID_FIELD);
    c.shutdown().unwrap();
}

#[test]
fn identify_other_cns_values() {
    let t = start_basic();
    let mut c = connect(t.addr(), 0);
    // CNS 05h: I/O command set specific namespace (NVM).
    let d = c.identify(0x05, NS_RAM512, 0, 0).unwrap();
    assert_eq!(d.len(), 4096);
    expect_status_dnr(c.identify(0x05, NS_RAM512, 0, 2), SC_INVALID_FIELD);
    expect_status_dnr(c.identify(0x05, 0, 0, 0), SC_INVALID_NS);
    // CNS 06h: I/O command set specific controller (NVM).
    let d = c.identify(0x06, 0, 0, 0).unwrap();
    assert_eq!(d.len(), 4096);
    expect_status_dnr(c.identify(0x06, 0, 0, 2), SC_INVALID_FIELD);
    // CNS 08h: I/O command set independent namespace.
    let d = c.identify(0x08, NS_RAM4K, 0, 0).unwrap();
    assert_eq!(d.len(), 4096);
    assert!(
        d.iter().any(|&b| b != 0),
        "CNS 08h of an active ns is empty"
    );
    expect_status_dnr(c.identify(0x08, 0, 0, 0), SC_INVALID_NS);
    // CNS 1Ch: I/O command set combinations; the first one has NVM.
    let d = c.identify(0x1C, 0, 0, 0).unwrap();
    assert_eq!(le64(&d, 0) & 1, 1, "command set combination 0 lacks NVM");
    // Unknown CNS values.
    for cns in [0x04, 0x10, 0x30, 0xFF] {
        expect_status_dnr(c.identify(cns, 0, 0, 0), SC_INVALID_FIELD);
    }
    c.shutdown().unwrap();
}

/// UUID, NGUID and EUI-64 from the descriptor list, where present.
type NsIds = (Option<[u8; 16]>, Option<[u8; 16]>, Option<[u8; 8]>);

fn descriptors(c: &mut Controller, nsid: u32) -> NsIds {
    let (mut u, mut n, mut e) = (None, None, None);
    for d in c.ns_descriptors(nsid).unwrap() {
        match d {
            NsDescriptor::Uuid(v) => u = Some(v),
            NsDescriptor::Nguid(v) => n = Some(v),
            NsDescriptor::Eui64(v) => e = Some(v),
            _ => {}
        }
    }
    (u, n, e)
}

#[test]
fn namespace_identifiers_are_stable_across_restarts() {
    let toml = format!(
        "{}\n[[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:pinned\"\nallow_any_host = true\n\n[[subsystem.namespace]]\nbackend = \"ram\"\nsize = \"1MiB\"\nuuid = \"6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b\"\nnguid = \"0123456789abcdef0123456789abcdef\"\neui64 = \"0223456789abcdef\"\n",
        basic_toml("")
    );
    let pinned = "nqn.2026-01.io.nvmf-target:pinned";
    let read_all = || {
        let t = start(&toml);
        let mut c = connect(t.addr(), 0);
        let mut v = Vec::new();
        for nsid in [1, 2, 3] {
            v.push(descriptors(&mut c, nsid));
        }
        c.shutdown().unwrap();
        let mut p = connect_with(t.addr(), pinned, &opts(), 0);
        let pinned_ids = descriptors(&mut p, 1);
        let id_ns = p.identify_namespace(1).unwrap();
        p.shutdown().unwrap();
        t.shutdown();
        (v, pinned_ids, id_ns)
    };
    let (first, pinned1, id_ns) = read_all();
    let (second, pinned2, _) = read_all();
    assert_eq!(first, second, "identifiers changed across a restart");
    assert_eq!(pinned1, pinned2);
    for (i, (u, n, e)) in first.iter().enumerate() {
        let (du, dn, de) = derived_namespace_ids(NQN, i as u32 + 1);
        assert_eq!(*u, Some(du), "ns {} UUID", i + 1);
        assert_eq!(*n, Some(dn), "ns {} NGUID", i + 1);
        assert_eq!(*e, Some(de), "ns {} EUI-64", i + 1);
    }
    // Identifiers given in the config are reported as given.
    let (u, n, e) = pinned1;
    assert_eq!(
        nvmf_initiator::uuid_to_string(&u.unwrap()),
        "6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b"
    );
    assert_eq!(n.unwrap()[..4], [0x01, 0x23, 0x45, 0x67]);
    assert_eq!(e.unwrap(), [0x02, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
    assert_eq!(id_ns.nguid, n.unwrap());
    assert_eq!(id_ns.eui64, e.unwrap());
    // UUIDs of different namespaces differ.
    assert_ne!(first[0].0, first[1].0);
}

// ------------------------------------------------------------- log pages

#[test]
fn error_log_records_failed_commands() {
    let t = start_basic();
    let mut c = connect(t.addr(), 1);
    let before = c.get_log_page(LID_ERROR, 0, 64, 0, 0).unwrap();
    let count0 = le64(&before, 0);
    // An admin command with an invalid opcode.
    let admin_cid = c.admin.submit(Command::new(0xC5), None, 0).unwrap();
    let r = c.admin.wait_for(admin_cid).unwrap();
    assert_eq!(r.status, SC_INVALID_OPCODE);
    // An I/O command beyond the namespace.
    let lba = RAM_SIZE / 512 + 5;
    let io_cid = c.io[0]
        .submit(Command::read(NS_RAM512, lba, 0), None, 512)
        .unwrap();
    let r = c.io[0].wait_for(io_cid).unwrap();
    assert_eq!(r.status, 0x0080);

    let log = c.get_log_page(LID_ERROR, 0, 4096, 0, 0).unwrap();
    // Newest first.
    let e0 = &log[0..64];
    let e1 = &log[64..128];
    assert_eq!(le64(e0, 0), count0 + 2, "error count of the newest entry");
    assert_eq!(le64(e1, 0), count0 + 1);
    assert_eq!(le16(e0, 8), 1, "SQID");
    assert_eq!(le16(e0, 10), io_cid, "CID");
    let st = le16(e0, 12);
    assert_eq!((st >> 1) & 0x7FF, 0x0080, "status field");
    assert_ne!(st & 0x8000, 0, "DNR in the status field");
    assert_eq!(le64(e0, 16), lba, "LBA");
    assert_eq!(le32(e0, 24), NS_RAM512, "NSID");
    assert_eq!(le16(e1, 8), 0);
    assert_eq!(le16(e1, 10), admin_cid);
    assert_eq!((le16(e1, 12) >> 1) & 0x7FF, 0x0001);
    // SMART counts the error log entries.
    let smart = c.get_log_page(LID_SMART, 0xFFFF_FFFF, 512, 0, 0).unwrap();
    assert_eq!(le64(&smart, 176), count0 + 2, "number of error log entries");
    c.shutdown().unwrap();
}

#[test]
fn smart_log_counts_data_units_and_commands() {
    let t = start_basic();
    let mut c = connect(t.addr(), 2);
    let smart = |c: &mut Controller| c.get_log_page(LID_SMART, 0xFFFF_FFFF, 512, 0, 0).unwrap();
    let s = smart(&mut c);
    assert_eq!(le64(&s, 32), 0, "data units read");
    assert_eq!(le64(&s, 48), 0, "data units written");
    assert_eq!(le64(&s, 64), 0, "host read commands");
    assert_eq!(le64(&s, 80), 0, "host write commands");
    assert!(s[3] > 0 && s[3] >= s[4], "available spare above threshold");

    // 4 writes of 128 KiB on 4 KiB blocks = 1024 units of 512 bytes: 2 data
    // units (thousands, rounded up); and 1 write of 512 bytes on queue 2.
    let data = pattern(1, 128 * 1024);
    for i in 0..4 {
        c.io[0].write(NS_RAM4K, i * 32, &data, 4096).unwrap();
    }
    c.io[1].write(NS_RAM512, 0, &data[..512], 512).unwrap();
    // 1000 units of 512 bytes read exactly: 1 data unit.
    for i in 0..8 {
        c.io[1].read(NS_RAM512, i * 125, 124, 512).unwrap();
    }
    let s = smart(&mut c);
    assert_eq!(le64(&s, 48), 2, "data units written (1025 x 512 bytes)");
    assert_eq!(le64(&s, 80), 5, "host write commands");
    assert_eq!(le64(&s, 32), 1, "data units read (1000 x 512 bytes)");
    assert_eq!(le64(&s, 64), 8, "host read commands");
    // One more block read: 1001 units -> 2.
    c.io[0].read(NS_RAM512, 0, 0, 512).unwrap();
    let s = smart(&mut c);
    assert_eq!(le64(&s, 32), 2);
    assert_eq!(le64(&s, 64), 9);
    // Failed commands count nothing.
    c.io[0].read(NS_RAM512, RAM_SIZE / 512, 0, 512).unwrap_err();
    assert_eq!(le64(&smart(&mut c), 64), 9);
    // Per-namespace SMART data is not supported (LPA bit 0 clear).
    assert_eq!(c.id.lpa & 1, 0);
    expect_status_dnr(c.get_log_page(LID_SMART, 1, 512, 0, 0), SC_INVALID_FIELD);
    // Counters are per controller.
    let mut other = connect(t.addr(), 0);
    assert_eq!(le64(&smart(&mut other), 80), 0);
    other.shutdown().unwrap();
    c.shutdown().unwrap();
}

#[test]
fn other_log_pages() {
    let t = start_basic();
    let mut c = connect(t.addr(), 0);
    let fw = c.get_log_page(LID_FW_SLOT, 0, 512, 0, 0).unwrap();
    assert_eq!(fw[0] & 7, 1, "AFI: slot 1 active");
    assert_eq!(ascii(&fw[8..16]), c.id.fr, "FRS1 is the firmware revision");
    let ch = c.get_log_page(LID_CHANGED_NS, 0, 4096, 0, 0).unwrap();
    assert!(ch.iter().all(|&b| b == 0), "no namespace changed");
    let fx = c.get_log_page(LID_CMD_EFFECTS, 0, 4096, 0, 0).unwrap();
    let acs = |op: usize| le32(&fx, op * 4);
    let iocs = |op: usize| le32(&fx, 1024 + op * 4);
    for op in [0x02, 0x06, 0x08, 0x09, 0x0A, 0x0C, 0x18] {
        assert_eq!(acs(op) & 1, 1, "admin opcode {op:#04x} supported");
    }
    assert_eq!(acs(0x01), 0, "Create I/O SQ is not supported on fabrics");
    for op in [0x00, 0x02, 0x05, 0x0C] {
        assert_eq!(iocs(op) & 1, 1, "I/O opcode {op:#04x} supported");
    }
    for op in [0x01, 0x08, 0x09, 0x19] {
        assert_eq!(iocs(op) & 3, 3, "I/O opcode {op:#04x}: CSUPP and LBCC");
    }
    assert_eq!(iocs(0x02) & 2, 0, "Read changes no logical block content");
    // Unknown and discovery-only log pages on an I/O controller.
    expect_status_dnr(c.get_log_page(0x7F, 0, 512, 0, 0), SC_INVALID_LOG_PAGE);
    expect_status_dnr(
        c.get_log_page(LID_DISCOVERY, 0, 1024, 0, 0),
        SC_INVALID_LOG_PAGE,
    );
    // Offsets: beyond the page, and not dword aligned.
    expect_status_dnr(c.get_log_page(LID_FW_SLOT, 0, 4, 516, 0), SC_INVALID_FIELD);
    let r = c
        .admin
        .execute(
            Command::get_log_page(LID_FW_SLOT, 0, 8, 2, 0, false),
            None,
            8,
        )
        .unwrap();
    assert_eq!(r.status, SC_INVALID_FIELD);
    // An offset inside the page returns that part of it.
    let part = c.get_log_page(LID_FW_SLOT, 0, 8, 8, 0).unwrap();
    assert_same(&part, &fw[8..16], "firmware slot log at offset 8");
    // More than MDTS in one command.
    expect_status_dnr(
        c.get_log_page(LID_ERROR, 0, MAX_IO + 4, 0, 0),
        SC_INVALID_FIELD,
    );
    c.shutdown().unwrap();
}

#[test]
fn discovery_log_lists_permitted_subsystems_with_real_addresses() {
    let allowed = opts_for_host(1);
    let toml = format!(
        r#"
[target]
cores = [0]

[[listener]]
transport = "tcp"
address = "0.0.0.0"
port = 4420

[[listener]]
transport = "tcp"
address = "127.0.0.1"
port = 4421

[[subsystem]]
nqn = "nqn.2026-01.io.nvmf-target:open1"
allow_any_host = true
[[subsystem.namespace]]
backend = "null"
size = "1MiB"

[[subsystem]]
nqn = "nqn.2026-01.io.nvmf-target:open2"
allow_any_host = true
[[subsystem.namespace]]
backend = "null"
size = "1MiB"

[[subsystem]]
nqn = "nqn.2026-01.io.nvmf-target:private"
hosts = ["{}"]
[[subsystem.namespace]]
backend = "ram"
size = "1MiB"
"#,
        allowed.hostnqn
    );
    let t = start(&toml);
    let wild = t.addrs[0];
    let local = t.addrs[1];
    assert!(wild.ip().is_unspecified());
    // Reach the wildcard listener through 127.0.0.1.
    let via = std::net::SocketAddr::new("127.0.0.1".parse().unwrap(), wild.port());

    let entries = |log: &DiscoveryLog| -> Vec<(String, String, String, u8)> {
        log.entries
            .iter()
            .map(|e| {
                (
                    e.subnqn.clone(),
                    e.traddr.clone(),
                    e.trsvcid.clone(),
                    e.subtype,
                )
            })
            .collect()
    };
    let stranger = opts_for_host(2);
    let log = nvmf_initiator::discover(via, &stranger).unwrap();
    let got = entries(&log);
    for e in &log.entries {
        assert_eq!(e.trtype, 3, "TRTYPE TCP");
        assert_eq!(e.adrfam, 1, "ADRFAM IPv4");
        assert_ne!(e.traddr, "0.0.0.0", "a wildcard address is not reachable");
        assert_eq!(e.cntlid, 0xFFFF);
        assert!(e.asqsz >= 32);
    }
    for (port, ip) in [(wild.port(), "127.0.0.1"), (local.port(), "127.0.0.1")] {
        let port = port.to_string();
        assert!(
            got.contains(&(DISCOVERY_NQN.to_string(), ip.to_string(), port.clone(), 3)),
            "no current discovery entry for port {port}: {got:?}"
        );
        for s in ["open1", "open2"] {
            let nqn = format!("nqn.2026-01.io.nvmf-target:{s}");
            assert!(
                got.contains(&(nqn, ip.to_string(), port.clone(), 2)),
                "{s} missing on port {port}: {got:?}"
            );
        }
    }
    assert!(
        !got.iter().any(|e| e.0.ends_with(":private")),
        "a subsystem the host may not use is listed: {got:?}"
    );
    assert_eq!(log.entries.len(), 6);

    // The permitted host sees the private subsystem too, on both listeners.
    let log = nvmf_initiator::discover(local, &allowed).unwrap();
    let private: Vec<_> = entries(&log)
        .into_iter()
        .filter(|e| e.0.ends_with(":private"))
        .collect();
    assert_eq!(private.len(), 2, "{private:?}");
    // Each advertised entry actually works for that host.
    for e in &log.entries {
        if e.subtype == 2 {
            let addr = format!("{}:{}", e.traddr, e.trsvcid).parse().unwrap();
            let c = connect_with(addr, &e.subnqn, &allowed, 1);
            c.shutdown().unwrap();
        }
    }

    // Reading in chunks at offsets (LPOL) gives the same bytes.
    let mut d = Controller::connect(local, DISCOVERY_NQN, &allowed, 0).unwrap();
    let total = 1024 * (1 + log.entries.len() as u32);
    let whole = d.get_log_page(LID_DISCOVERY, 0, total, 0, 0).unwrap();
    assert_eq!(le64(&whole, 8), log.entries.len() as u64, "NUMREC");
    let mut pieced = Vec::new();
    let mut off = 0u32;
    let mut step = 1000u32;
    while off < total {
        let n = step.min(total - off);
        pieced.extend(d.get_log_page(LID_DISCOVERY, 0, n, off as u64, 0).unwrap());
        off += n;
        step = if step == 1000 { 3076 } else { 1000 };
    }
    assert_same(&pieced, &whole, "discovery log read in chunks");
    // Asking for more than there is pads with zeros; an offset past the end
    // is an error.
    let more = d
        .get_log_page(LID_DISCOVERY, 0, 1024, total as u64 - 512, 0)
        .unwrap();
    assert_same(&more[..512], &whole[total as usize - 512..], "tail");
    assert!(more[512..].iter().all(|&b| b == 0));
    expect_status_dnr(
        d.get_log_page(LID_DISCOVERY, 0, 1024, total as u64 + 1024, 0),
        SC_INVALID_FIELD,
    );
    // Discovery controllers have no SMART log.
    expect_status_dnr(d.get_log_page(LID_SMART, 0, 512, 0, 0), SC_INVALID_LOG_PAGE);
    // The discovery controller takes no I/O queues.
    d.shutdown().unwrap();
}

// ------------------------------------------------------------- features

#[test]
fn features_number_of_queues_kato_aec() {
    let t = start(&basic_toml("max_io_queues = 6"));
    let mut c = connect(t.addr(), 0);
    // Number of queues: asking for 4 grants 4; asking for 100 grants the max.
    assert_eq!(c.admin.set_number_of_queues(4, 4).unwrap(), (4, 4));
    let r = c.get_features(FID_NUMBER_OF_QUEUES, 0, 0).unwrap();
    assert_eq!(r.dw0, 3 | 3 << 16);
    assert_eq!(c.admin.set_number_of_queues(100, 100).unwrap(), (6, 6));
    assert_eq!(
        c.get_features(FID_NUMBER_OF_QUEUES, 0, 0).unwrap().dw0,
        5 | 5 << 16
    );
    // 65536 queues (0xFFFF zero-based) is invalid.
    expect_status_dnr(
        c.set_features(FID_NUMBER_OF_QUEUES, 0, 0xFFFF_FFFF, 0, false),
        SC_INVALID_FIELD,
    );

    // Keep-alive timer: from Connect (0), then changed.
    assert_eq!(c.get_features(FID_KEEP_ALIVE_TIMER, 0, 0).unwrap().dw0, 0);
    c.set_features(FID_KEEP_ALIVE_TIMER, 0, 60_000, 0, false)
        .unwrap();
    assert_eq!(
        c.get_features(FID_KEEP_ALIVE_TIMER, 0, 0).unwrap().dw0,
        60_000
    );
    expect_status_dnr(
        c.set_features(FID_KEEP_ALIVE_TIMER, 0, 120_001, 0, false),
        SC_KEEP_ALIVE_INVALID,
    );
    c.set_features(FID_KEEP_ALIVE_TIMER, 0, 0, 0, false)
        .unwrap();

    // Asynchronous event configuration: namespace attribute notices only.
    c.set_features(FID_ASYNC_EVENT_CONFIG, 0, 1 << 8, 0, false)
        .unwrap();
    assert_eq!(
        c.get_features(FID_ASYNC_EVENT_CONFIG, 0, 0).unwrap().dw0,
        1 << 8
    );
    c.set_features(FID_ASYNC_EVENT_CONFIG, 0, 0xFFFF_FFFF, 0, false)
        .unwrap();
    assert_eq!(
        c.get_features(FID_ASYNC_EVENT_CONFIG, 0, 0).unwrap().dw0 & !(1 << 8),
        0,
        "unsupported event notices stay off"
    );
    // Get Features SEL: default (1) and supported capabilities (3).
    let r = c
        .admin
        .execute(
            Command::get_features(FID_KEEP_ALIVE_TIMER, 1, 0, 0),
            None,
            0,
        )
        .unwrap()
        .check()
        .unwrap();
    assert_eq!(r.dw0, 0);
    let r = c
        .admin
        .execute(
            Command::get_features(FID_ASYNC_EVENT_CONFIG, 3, 0, 0),
            None,
            0,
        )
        .unwrap()
        .check()
        .unwrap();
    assert_eq!(r.dw0 & 1, 0, "not saveable");
    assert_ne!(r.dw0 & 4, 0, "changeable");

    // Saving is not supported.
    expect_status_dnr(
        c.set_features(FID_ASYNC_EVENT_CONFIG, 0, 0, 0, true),
        SC_NOT_SAVEABLE,
    );
    // Unsupported feature identifiers.
    for fid in [0x00, 0x03, 0x7E, 0xC0] {
        expect_status_dnr(c.get_features(fid, 0, 0), SC_INVALID_FIELD);
        expect_status_dnr(c.set_features(fid, 0, 0, 0, false), SC_INVALID_FIELD);
    }
    c.shutdown().unwrap();
}

#[test]
fn features_volatile_write_cache_and_host_identifier() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.img");
    let toml = format!(
        "{}\n[[subsystem]]\nnqn = \"nqn.2026-01.io.nvmf-target:file\"\nallow_any_host = true\n\n[[subsystem.namespace]]\nbackend = \"file\"\npath = \"{}\"\nsize = \"4MiB\"\n",
        basic_toml(""),
        path.display()
    );
    let t = start(&toml);
    // RAM/null: no volatile write cache; it cannot be switched on.
    let mut c = connect(t.addr(), 0);
    assert_eq!(c.id.vwc & 1, 0);
    assert_eq!(
        c.get_features(FID_VOLATILE_WRITE_CACHE, 0, 0).unwrap().dw0 & 1,
        0
    );
    expect_status_dnr(
        c.set_features(FID_VOLATILE_WRITE_CACHE, 0, 1, 0, false),
        SC_NOT_CHANGEABLE,
    );
    // Host identifier: 128-bit (EXHID = 1) is the Connect host ID.
    let r = c
        .admin
        .execute(Command::get_features(0x81, 0, 0, 1), None, 16)
        .unwrap()
        .check()
        .unwrap();
    assert_eq!(r.data, opts().hostid.to_vec());
    let r = c
        .admin
        .execute(Command::get_features(0x81, 0, 0, 0), None, 8)
        .unwrap();
    assert_eq!(r.status, SC_INVALID_FIELD, "64-bit host ID on fabrics");
    // Set Features Host Identifier is not allowed on fabrics.
    let (st, dnr, _) = status_of(c.set_features(0x81, 0, 1, 0, false));
    assert!(dnr && st != 0, "Set Features Host Identifier succeeded");
    c.shutdown().unwrap();

    // A file namespace: a volatile cache (data needs a Flush to be durable).
    let mut f = connect_with(t.addr(), "nqn.2026-01.io.nvmf-target:file", &opts(), 1);
    assert_eq!(f.id.vwc & 1, 1, "Identify VWC for a file namespace");
    assert_eq!(
        f.get_features(FID_VOLATILE_WRITE_CACHE, 0, 0).unwrap().dw0 & 1,
        1
    );
    f.set_features(FID_VOLATILE_WRITE_CACHE, 0, 1, 0, false)
        .expect("enabling the cache that is on");
    expect_status_dnr(
        f.set_features(FID_VOLATILE_WRITE_CACHE, 0, 0, 0, false),
        SC_NOT_CHANGEABLE,
    );
    f.shutdown().unwrap();
}

// ------------------------------------------------------ keep alive, AER, abort

#[test]
fn keep_alive_aers_and_abort() {
    let t = start_basic();
    let mut o = opts();
    o.kato_ms = 30_000;
    let mut c = connect_with(t.addr(), NQN, &o, 1);
    c.keep_alive().unwrap();
    assert_eq!(
        c.get_features(FID_KEEP_ALIVE_TIMER, 0, 0).unwrap().dw0,
        30_000
    );
    // Up to AERL + 1 = 4 outstanding requests; they do not complete.
    let aers: Vec<u16> = (0..4).map(|_| c.async_event_request().unwrap()).collect();
    // The admin queue keeps working meanwhile.
    c.keep_alive().unwrap();
    c.identify(CNS_CONTROLLER, 0, 0, 0).unwrap();
    let fifth = c.async_event_request().unwrap();
    let r = c.admin.wait_for(fifth).unwrap();
    assert_eq!(r.status, SC_AER_LIMIT);

    // Abort an AER: it completes with Abort Requested; Abort dw0 bit 0 = 0.
    let r = c.abort(0, aers[1]).unwrap();
    assert_eq!(r.dw0 & 1, 0, "the AER was not aborted");
    let aborted = c.admin.wait_for(aers[1]).unwrap();
    assert_eq!(aborted.status, SC_ABORT_REQUESTED);
    // Its slot is free again.
    let again = c.async_event_request().unwrap();
    // Abort of commands that do not exist: dw0 bit 0 = 1.
    assert_eq!(c.abort(0, 0x4242).unwrap().dw0 & 1, 1);
    assert_eq!(c.abort(1, 0x4242).unwrap().dw0 & 1, 1);
    assert_eq!(c.abort(9, aers[0]).unwrap().dw0 & 1, 1);
    // I/O still works with AERs held.
    write_read_check(&mut c.io[0], NS_RAM512, 512, 100, 9, 4096);
    // The rest are still outstanding and abortable.
    for cid in [aers[0], aers[2], aers[3], again] {
        assert_eq!(c.abort(0, cid).unwrap().dw0 & 1, 0);
        assert_eq!(c.admin.wait_for(cid).unwrap().status, SC_ABORT_REQUESTED);
    }
    c.shutdown().unwrap();
}

#[test]
fn io_commands_on_the_admin_queue_are_invalid() {
    let t = start_basic();
    let mut c = connect(t.addr(), 0);
    let r = c
        .admin
        .execute(Command::read(NS_RAM512, 0, 0), None, 512)
        .unwrap();
    // Read's opcode (02h) is Get Log Page on the admin queue; with these
    // fields that is an invalid log page, never a read.
    assert_ne!(r.status, 0);
    let r = c.admin.execute(Command::flush(1), None, 0).unwrap();
    assert_eq!(r.status, SC_INVALID_OPCODE, "opcode 00h on the admin queue");
    c.shutdown().unwrap();
}

#[test]
fn identify_controller_parses_the_same_through_the_library() {
    let t = start_basic();
    let mut c = connect(t.addr(), 0);
    let raw = c.identify(CNS_CONTROLLER, 0, 0, 0).unwrap();
    let id = IdentifyController::parse(&raw);
    assert_eq!(id, c.id);
    let ns = IdentifyNamespace::parse(&c.identify(CNS_NAMESPACE, 1, 0, 0).unwrap());
    assert_eq!(ns.nsze, RAM_SIZE / 512);
    c.shutdown().unwrap();
}

#[test]
fn discovery_over_ipv6_and_on_a_wildcard_ipv6_listener() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("no IPv6 loopback here: skipped");
        return;
    }
    let toml = basic_toml("").replace(
        "[[listener]]\ntransport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 4420\n",
        "[[listener]]\ntransport = \"tcp\"\naddress = \"::1\"\nport = 4420\n\n[[listener]]\ntransport = \"tcp\"\naddress = \"::\"\nport = 4421\n",
    );
    let t = start(&toml);
    let v6 = t.addrs[0];
    let wild = t.addrs[1];
    assert!(v6.is_ipv6() && wild.ip().is_unspecified());
    let via: std::net::SocketAddr = format!("[::1]:{}", wild.port()).parse().unwrap();
    for addr in [v6, via] {
        let log = nvmf_initiator::discover(addr, &opts()).unwrap();
        assert_eq!(log.entries.len(), 4, "{:?}", log.entries);
        for e in &log.entries {
            assert_eq!(e.adrfam, 2, "ADRFAM IPv6");
            assert_eq!(e.traddr, "::1", "a reachable IPv6 address");
        }
        let ports: Vec<String> = log.entries.iter().map(|e| e.trsvcid.clone()).collect();
        assert!(ports.contains(&v6.port().to_string()));
        assert!(ports.contains(&wild.port().to_string()));
    }
    let mut c = connect(via, 1);
    write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 1, 8192);
    c.shutdown().unwrap();
}

/// A discovery port (`discovery = true`) serves and advertises only the
/// discovery subsystem; a subsystem that names its listeners is listed, and
/// may be connected to, on those only.
#[test]
fn discovery_ports_and_subsystems_served_on_named_listeners() {
    let toml = basic_toml("")
        .replace(
            "port = 4420\n",
            "port = 4420\n\n[[listener]]\nname = \"other\"\ntransport = \"tcp\"\n\
             address = \"127.0.0.1\"\nport = 4421\n\n[[listener]]\nname = \"disc\"\n\
             transport = \"tcp\"\naddress = \"127.0.0.1\"\nport = 8009\ndiscovery = true\n",
        )
        .replace(
            "allow_any_host = true\n",
            "allow_any_host = true\nlisteners = [\"other\"]\n",
        );
    let mut cfg = nvmf_target::config::Config::parse(&toml, "test.toml").unwrap();
    for l in &mut cfg.listeners {
        l.addr.set_port(0);
    }
    cfg.target.cores = test_cores();
    let rt = nvmf_target::reactor::Runtime::start(&cfg).unwrap();
    let addrs = rt.listen_addrs().to_vec();
    let log = nvmf_initiator::discover(addrs[2], &opts()).unwrap();
    let mut got: Vec<(String, u16, u16)> = log
        .entries
        .iter()
        .map(|e| (e.subnqn.clone(), e.trsvcid.parse().unwrap(), e.portid))
        .collect();
    got.sort();
    let mut want = vec![
        (DISCOVERY_NQN.to_string(), addrs[0].port(), 1),
        (DISCOVERY_NQN.to_string(), addrs[1].port(), 2),
        (DISCOVERY_NQN.to_string(), addrs[2].port(), 3),
        (NQN.to_string(), addrs[1].port(), 2),
    ];
    want.sort();
    assert_eq!(got, want);
    // Not served on the first listener, nor on the discovery port.
    for a in [addrs[0], addrs[2]] {
        let (status, dnr, _) =
            status_of(nvmf_initiator::Controller::connect(a, NQN, &opts(), 1).map(|_| ()));
        assert_eq!(
            (status, dnr),
            (0x182, true),
            "Connect Invalid Parameters at {a}"
        );
    }
    let mut c = connect(addrs[1], 1);
    write_read_check(&mut c.io[0], NS_RAM512, 512, 0, 1, 8192);
    c.shutdown().unwrap();
    // The discovery subsystem is served everywhere.
    for a in &addrs {
        nvmf_initiator::discover(*a, &opts()).unwrap();
    }
    rt.shutdown();
}

/// An IPv4 host reaching a dual-stack wildcard listener ("::") sees itself
/// connected to an IPv4-mapped address; the discovery log must give it the
/// plain IPv4 address (ADRFAM IPv4), which is what it can connect to.
#[test]
fn ipv4_host_on_a_dual_stack_wildcard_listener() {
    if std::net::TcpListener::bind("[::]:0").is_err() {
        eprintln!("no IPv6 here: skipped");
        return;
    }
    let toml = basic_toml("").replace("address = \"127.0.0.1\"", "address = \"::\"");
    let t = start(&toml);
    let via: std::net::SocketAddr = format!("127.0.0.1:{}", t.addr().port()).parse().unwrap();
    if std::net::TcpStream::connect(via).is_err() {
        eprintln!("the IPv6 wildcard listener is IPv6-only here: skipped");
        return;
    }
    let log = nvmf_initiator::discover(via, &opts()).unwrap();
    for e in &log.entries {
        assert_eq!(e.traddr, "127.0.0.1", "{e:?}");
        assert_eq!(e.adrfam, 1, "ADRFAM IPv4 for {}", e.traddr);
    }
}
