//! Text output in the style of nvme-cli (`nvme discover`, `nvme id-ctrl`,
//! `nvme id-ns`, `nvme ns-descs`), used by the tools.

use std::fmt::Write as _;

use crate::identify::{
    DiscoveryLog, IdentifyController, IdentifyNamespace, NsDescriptor, PowerState,
};
use crate::uuid_to_string;

pub fn trtype_str(t: u8) -> &'static str {
    match t {
        1 => "rdma",
        2 => "fc",
        3 => "tcp",
        254 => "loop",
        _ => "unrecognized",
    }
}

pub fn adrfam_str(a: u8) -> &'static str {
    match a {
        0 => "pci",
        1 => "ipv4",
        2 => "ipv6",
        3 => "infiniband",
        4 => "fibre-channel",
        _ => "unrecognized",
    }
}

pub fn subtype_str(s: u8) -> &'static str {
    match s {
        1 => "discovery subsystem referral",
        2 => "nvme subsystem",
        3 => "current discovery subsystem",
        _ => "unrecognized",
    }
}

pub fn treq_str(t: u8) -> &'static str {
    match t {
        0 => "not specified",
        1 => "required",
        2 => "not required",
        4 => "not specified, sq flow control disable supported",
        5 => "required, sq flow control disable supported",
        6 => "not required, sq flow control disable supported",
        _ => "unrecognized",
    }
}

pub fn eflags_str(e: u16) -> &'static str {
    match e {
        0 => "none",
        1 => "duplicate discovery information",
        2 => "explicit discovery connections",
        3 => "explicit discovery connections, duplicate discovery information",
        4 => "no cdc connectivity",
        5 => "duplicate discovery information, no cdc connectivity",
        6 => "explicit discovery connections, no cdc connectivity",
        7 => "explicit discovery connections, duplicate discovery information, no cdc connectivity",
        _ => "unrecognized",
    }
}

pub fn sectype_str(s: u8) -> &'static str {
    match s {
        0 => "none",
        1 => "tls",
        2 => "tls13",
        _ => "unrecognized",
    }
}

/// `nvme discover` normal output.
pub fn discovery_log_text(log: &DiscoveryLog) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nDiscovery Log Number of Records {}, Generation counter {}",
        log.entries.len(),
        log.genctr
    );
    for (i, e) in log.entries.iter().enumerate() {
        let _ = writeln!(s, "=====Discovery Log Entry {i}======");
        let _ = writeln!(s, "trtype:  {}", trtype_str(e.trtype));
        let adrfam = if e.traddr.is_empty() {
            ""
        } else {
            adrfam_str(e.adrfam)
        };
        let _ = writeln!(s, "adrfam:  {adrfam}");
        let _ = writeln!(s, "subtype: {}", subtype_str(e.subtype));
        let _ = writeln!(s, "treq:    {}", treq_str(e.treq));
        let _ = writeln!(s, "portid:  {}", e.portid);
        let _ = writeln!(s, "trsvcid: {}", e.trsvcid);
        let _ = writeln!(s, "subnqn:  {}", e.subnqn);
        let _ = writeln!(s, "traddr:  {}", e.traddr);
        let _ = writeln!(s, "eflags:  {}", eflags_str(e.eflags));
        if e.trtype == 3 {
            let _ = writeln!(s, "sectype: {}", sectype_str(e.sectype()));
        }
    }
    s
}

/// Escape a string for JSON.
pub fn json_str(v: &str) -> String {
    let mut o = String::with_capacity(v.len() + 2);
    o.push('"');
    for c in v.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// `nvme discover -o json` output.
pub fn discovery_log_json(log: &DiscoveryLog) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{{");
    let _ = writeln!(s, "  \"genctr\":{},", log.genctr);
    let _ = write!(s, "  \"records\":[");
    for (i, e) in log.entries.iter().enumerate() {
        let mut fields = vec![
            ("trtype", json_str(trtype_str(e.trtype))),
            ("adrfam", json_str(adrfam_str(e.adrfam))),
            ("subtype", json_str(subtype_str(e.subtype))),
            ("treq", json_str(treq_str(e.treq))),
            ("portid", e.portid.to_string()),
            ("trsvcid", json_str(&e.trsvcid)),
            ("subnqn", json_str(&e.subnqn)),
            ("traddr", json_str(&e.traddr)),
            ("eflags", json_str(eflags_str(e.eflags))),
        ];
        if e.trtype == 3 {
            fields.push(("sectype", json_str(sectype_str(e.sectype()))));
        }
        let _ = write!(s, "{}\n    {{\n", if i == 0 { "" } else { "," });
        let n = fields.len();
        for (j, (k, v)) in fields.into_iter().enumerate() {
            let _ = writeln!(s, "      \"{k}\":{v}{}", if j + 1 < n { "," } else { "" });
        }
        let _ = write!(s, "    }}");
    }
    if !log.entries.is_empty() {
        s.push_str("\n  ");
    }
    let _ = writeln!(s, "]");
    let _ = writeln!(s, "}}");
    s
}

fn power(p: u16, scale: u8) -> String {
    match scale & 3 {
        0 => "-".into(),
        1 => format!("{}.{:04}W", p / 10000, p % 10000),
        2 => format!("{}.{:02}W", p / 100, p % 100),
        _ => "reserved".into(),
    }
}

fn workload(apws: u8) -> &'static str {
    match apws & 7 {
        0 => "-",
        1 => "1MiB 32 RW, 30s idle",
        2 => "80K 128KiB SW",
        _ => "reserved",
    }
}

fn psd_lines(s: &mut String, i: usize, p: &PowerState) {
    let mp = if p.flags & 1 != 0 {
        format!("{}.{:04}W", p.mp / 10000, p.mp % 10000)
    } else {
        format!("{}.{:02}W", p.mp / 100, p.mp % 100)
    };
    let nonop = if p.flags & 2 != 0 { "non-" } else { "" };
    let _ = writeln!(
        s,
        "ps   {i:4} : mp:{mp} {nonop}operational enlat:{} exlat:{} rrt:{} rrl:{}",
        p.enlat, p.exlat, p.rrt, p.rrl
    );
    let _ = writeln!(
        s,
        "            rwt:{} rwl:{} idle_power:{} active_power:{}",
        p.rwt,
        p.rwl,
        power(p.idlp, p.ips >> 6),
        power(p.actp, p.apws >> 6)
    );
    let _ = writeln!(s, "            active_power_workload:{}", workload(p.apws));
}

fn hex0(v: u64) -> String {
    // printf("%#x"): "0" for zero, "0x..." otherwise.
    if v == 0 {
        "0".into()
    } else {
        format!("{v:#x}")
    }
}

/// `nvme id-ctrl` normal output.
pub fn id_ctrl_text(c: &IdentifyController) -> String {
    let mut s = String::from("NVME Identify Controller:\n");
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<10}: {v}");
    };
    line("vid", hex0(c.vid as u64));
    line("ssvid", hex0(c.ssvid as u64));
    line("sn", c.sn.clone());
    line("mn", c.mn.clone());
    line("fr", c.fr.clone());
    line("rab", c.rab.to_string());
    line(
        "ieee",
        format!("{:02x}{:02x}{:02x}", c.ieee[2], c.ieee[1], c.ieee[0]),
    );
    line("cmic", hex0(c.cmic as u64));
    line("mdts", c.mdts.to_string());
    line("cntlid", hex0(c.cntlid as u64));
    line("ver", hex0(c.ver as u64));
    line("rtd3r", hex0(c.rtd3r as u64));
    line("rtd3e", hex0(c.rtd3e as u64));
    line("oaes", hex0(c.oaes as u64));
    line("ctratt", hex0(c.ctratt as u64));
    line("rrls", hex0(c.rrls as u64));
    line("cntrltype", c.cntrltype.to_string());
    line("fguid", uuid_to_string(&c.fguid));
    line("crdt1", c.crdt1.to_string());
    line("crdt2", c.crdt2.to_string());
    line("crdt3", c.crdt3.to_string());
    line("nvmsr", c.nvmsr.to_string());
    line("vwci", c.vwci.to_string());
    line("mec", c.mec.to_string());
    line("oacs", hex0(c.oacs as u64));
    line("acl", c.acl.to_string());
    line("aerl", c.aerl.to_string());
    line("frmw", hex0(c.frmw as u64));
    line("lpa", hex0(c.lpa as u64));
    line("elpe", c.elpe.to_string());
    line("npss", c.npss.to_string());
    line("avscc", hex0(c.avscc as u64));
    line("apsta", hex0(c.apsta as u64));
    line("wctemp", c.wctemp.to_string());
    line("cctemp", c.cctemp.to_string());
    line("mtfa", c.mtfa.to_string());
    line("hmpre", c.hmpre.to_string());
    line("hmmin", c.hmmin.to_string());
    line("tnvmcap", c.tnvmcap.to_string());
    line("unvmcap", c.unvmcap.to_string());
    line("rpmbs", hex0(c.rpmbs as u64));
    line("edstt", c.edstt.to_string());
    line("dsto", c.dsto.to_string());
    line("fwug", c.fwug.to_string());
    line("kas", c.kas.to_string());
    line("hctma", hex0(c.hctma as u64));
    line("mntmt", c.mntmt.to_string());
    line("mxtmt", c.mxtmt.to_string());
    line("sanicap", hex0(c.sanicap as u64));
    line("hmminds", c.hmminds.to_string());
    line("hmmaxd", c.hmmaxd.to_string());
    line("nsetidmax", c.nsetidmax.to_string());
    line("endgidmax", c.endgidmax.to_string());
    line("anatt", c.anatt.to_string());
    line("anacap", c.anacap.to_string());
    line("anagrpmax", c.anagrpmax.to_string());
    line("nanagrpid", c.nanagrpid.to_string());
    line("pels", c.pels.to_string());
    line("domainid", c.domainid.to_string());
    line("megcap", c.megcap.to_string());
    line("sqes", hex0(c.sqes as u64));
    line("cqes", hex0(c.cqes as u64));
    line("maxcmd", c.maxcmd.to_string());
    line("nn", c.nn.to_string());
    line("oncs", hex0(c.oncs as u64));
    line("fuses", hex0(c.fuses as u64));
    line("fna", hex0(c.fna as u64));
    line("vwc", hex0(c.vwc as u64));
    line("awun", c.awun.to_string());
    line("awupf", c.awupf.to_string());
    line("icsvscc", c.icsvscc.to_string());
    line("nwpc", c.nwpc.to_string());
    line("acwu", c.acwu.to_string());
    line("ocfs", hex0(c.ocfs as u64));
    line("sgls", hex0(c.sgls as u64));
    line("mnan", c.mnan.to_string());
    line("maxdna", c.maxdna.to_string());
    line("maxcna", c.maxcna.to_string());
    line("oaqd", c.oaqd.to_string());
    line("subnqn", c.subnqn.clone());
    line("ioccsz", c.ioccsz.to_string());
    line("iorcsz", c.iorcsz.to_string());
    line("icdoff", c.icdoff.to_string());
    line("fcatt", hex0(c.fcatt as u64));
    line("msdbd", c.msdbd.to_string());
    line("ofcs", c.ofcs.to_string());
    line("dctype", c.dctype.to_string());
    for (i, p) in c.psd.iter().enumerate() {
        psd_lines(&mut s, i, p);
    }
    s
}

fn hexbytes(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `nvme id-ns` normal output.
pub fn id_ns_text(n: &IdentifyNamespace, nsid: u32) -> String {
    let mut s = format!("NVME Identify Namespace {nsid}:\n");
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<8}: {v}");
    };
    line("nsze", hex0(n.nsze));
    line("ncap", hex0(n.ncap));
    line("nuse", hex0(n.nuse));
    line("nsfeat", hex0(n.nsfeat as u64));
    line("nlbaf", n.nlbaf.to_string());
    line("flbas", hex0(n.flbas as u64));
    line("mc", hex0(n.mc as u64));
    line("dpc", hex0(n.dpc as u64));
    line("dps", hex0(n.dps as u64));
    line("nmic", hex0(n.nmic as u64));
    line("rescap", hex0(n.rescap as u64));
    line("fpi", hex0(n.fpi as u64));
    line("dlfeat", n.dlfeat.to_string());
    line("nawun", n.nawun.to_string());
    line("nawupf", n.nawupf.to_string());
    line("nacwu", n.nacwu.to_string());
    line("nabsn", n.nabsn.to_string());
    line("nabo", n.nabo.to_string());
    line("nabspf", n.nabspf.to_string());
    line("noiob", n.noiob.to_string());
    line("nvmcap", n.nvmcap.to_string());
    if n.nsfeat & 0x30 != 0 {
        line("npwg", n.npwg.to_string());
        line("npwa", n.npwa.to_string());
        if n.nsfeat & 0x10 != 0 {
            line("npdg", n.npdg.to_string());
        }
        line("npda", n.npda.to_string());
        line("nows", n.nows.to_string());
    }
    line("mssrl", n.mssrl.to_string());
    line("mcl", n.mcl.to_string());
    line("msrc", n.msrc.to_string());
    line("kpios", n.kpios.to_string());
    line("nulbaf", n.nulbaf.to_string());
    line("kpiodaag", n.kpiodaag.to_string());
    line("anagrpid", n.anagrpid.to_string());
    line("nsattr", n.nsattr.to_string());
    line("nvmsetid", n.nvmsetid.to_string());
    line("endgid", n.endgid.to_string());
    line("nguid", hexbytes(&n.nguid));
    line("eui64", hexbytes(&n.eui64));
    let inuse = n.lba_format_index();
    for (i, f) in n.lbaf.iter().enumerate() {
        let _ = writeln!(
            s,
            "lbaf {i:2} : ms:{:<3} lbads:{:<2} rp:{} {}",
            f.ms,
            f.lbads,
            hex0(f.rp as u64),
            if i == inuse { "(in use)" } else { "" }
        );
    }
    s
}

/// `nvme ns-descs` normal output.
pub fn ns_descs_text(d: &[NsDescriptor], nsid: u32) -> String {
    let mut s = format!("NVME Namespace Identification Descriptors NS {nsid}:\n");
    for x in d {
        let _ = match x {
            NsDescriptor::Eui64(v) => writeln!(s, "eui64   : {}", hexbytes(v)),
            NsDescriptor::Nguid(v) => writeln!(s, "nguid   : {}", hexbytes(v)),
            NsDescriptor::Uuid(v) => writeln!(s, "uuid    : {}", uuid_to_string(v)),
            NsDescriptor::Csi(v) => writeln!(s, "csi     : {}", hex0(*v as u64)),
            NsDescriptor::Other { nidt, data } => {
                writeln!(s, "nidt {nidt:<3}: {}", hexbytes(data))
            }
        };
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identify::{DiscoveryLogEntry, LbaFormat};

    fn entry(subtype: u8, nqn: &str) -> DiscoveryLogEntry {
        DiscoveryLogEntry {
            trtype: 3,
            adrfam: 1,
            subtype,
            treq: 0x02,
            portid: 1,
            cntlid: 0xffff,
            asqsz: 32,
            eflags: 0,
            trsvcid: "4420".into(),
            subnqn: nqn.into(),
            traddr: "127.0.0.1".into(),
            tsas: vec![0; 256],
        }
    }

    #[test]
    fn discover_text_matches_nvme_cli() {
        let log = DiscoveryLog {
            genctr: 5,
            numrec: 1,
            recfmt: 0,
            entries: vec![entry(2, "nqn.2024-01.io.example:a")],
        };
        let want = "\nDiscovery Log Number of Records 1, Generation counter 5\n\
=====Discovery Log Entry 0======\n\
trtype:  tcp\n\
adrfam:  ipv4\n\
subtype: nvme subsystem\n\
treq:    not required\n\
portid:  1\n\
trsvcid: 4420\n\
subnqn:  nqn.2024-01.io.example:a\n\
traddr:  127.0.0.1\n\
eflags:  none\n\
sectype: none\n";
        assert_eq!(discovery_log_text(&log), want);
    }

    #[test]
    fn discover_json() {
        let log = DiscoveryLog {
            genctr: 2,
            numrec: 2,
            recfmt: 0,
            entries: vec![entry(3, "nqn.x\"y"), entry(2, "nqn.z")],
        };
        let j = discovery_log_json(&log);
        assert!(j.starts_with("{\n  \"genctr\":2,\n  \"records\":[\n    {\n"));
        assert!(j.contains("\"subnqn\":\"nqn.x\\\"y\","));
        assert!(j.contains("\"subtype\":\"current discovery subsystem\""));
        assert!(j.contains("\"portid\":1,"));
        assert!(j.contains("\"sectype\":\"none\"\n    },\n    {"));
        assert!(j.trim_end().ends_with("}\n  ]\n}"));
        let empty = discovery_log_json(&DiscoveryLog::default());
        assert_eq!(empty, "{\n  \"genctr\":0,\n  \"records\":[]\n}\n");
    }

    #[test]
    fn id_ctrl_lines() {
        let mut raw = vec![0u8; 4096];
        raw[0] = 0xf4;
        raw[1] = 0x1a;
        raw[4..8].copy_from_slice(b"SN01");
        raw[73..76].copy_from_slice(&[0x11, 0x22, 0x33]);
        raw[512] = 0x66;
        raw[516] = 4;
        let c = IdentifyController::parse(&raw);
        let t = id_ctrl_text(&c);
        assert!(t.starts_with(
            "NVME Identify Controller:\nvid       : 0x1af4\nssvid     : 0\nsn        : SN01\n"
        ));
        assert!(t.contains("\nieee      : 332211\n"));
        assert!(t.contains("\nsqes      : 0x66\n"));
        assert!(t.contains("\nnn        : 4\n"));
        assert!(t.contains("\nfguid     : 00000000-0000-0000-0000-000000000000\n"));
        assert!(t.contains("\nps      0 : mp:0.00W operational enlat:0 exlat:0 rrt:0 rrl:0\n"));
    }

    #[test]
    fn id_ns_lines() {
        let n = IdentifyNamespace {
            nsze: 0x800,
            ncap: 0x800,
            nuse: 0,
            nlbaf: 1,
            flbas: 1,
            nguid: [0xab; 16],
            lbaf: vec![
                LbaFormat {
                    ms: 0,
                    lbads: 9,
                    rp: 0,
                },
                LbaFormat {
                    ms: 8,
                    lbads: 12,
                    rp: 1,
                },
            ],
            ..Default::default()
        };
        let t = id_ns_text(&n, 1);
        assert!(t.starts_with(
            "NVME Identify Namespace 1:\nnsze    : 0x800\nncap    : 0x800\nnuse    : 0\n"
        ));
        assert!(t.contains("\nnguid   : abababababababababababababababab\n"));
        assert!(t.contains("\nlbaf  0 : ms:0   lbads:9  rp:0 \n"));
        assert!(t.contains("\nlbaf  1 : ms:8   lbads:12 rp:0x1 (in use)\n"));
    }

    #[test]
    fn ns_descs_lines() {
        let t = ns_descs_text(
            &[
                NsDescriptor::Eui64([1, 2, 3, 4, 5, 6, 7, 8]),
                NsDescriptor::Uuid([0x11; 16]),
                NsDescriptor::Csi(0),
            ],
            3,
        );
        assert_eq!(
            t,
            "NVME Namespace Identification Descriptors NS 3:\n\
eui64   : 0102030405060708\n\
uuid    : 11111111-1111-1111-1111-111111111111\n\
csi     : 0\n"
        );
    }
}
