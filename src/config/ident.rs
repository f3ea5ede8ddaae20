//! Identities: NQN syntax, derived serial numbers and namespace identifiers,
//! and the text forms of UUID, NGUID and EUI-64.

use sha2::{Digest, Sha256};

use super::DISCOVERY_NQN;

/// The longest NQN the NVMe base specification allows, in bytes.
pub const NQN_MAX_LEN: usize = 223;

const UUID_NQN_PREFIX: &str = "nqn.2014-08.org.nvmexpress:uuid:";

/// Checks the syntax of an NVMe Qualified Name: at most 223 bytes, either
/// `nqn.2014-08.org.nvmexpress:uuid:<uuid>` or
/// `nqn.<yyyy-mm>.<reverse domain>[:<anything>]`, no whitespace or control
/// characters. The discovery NQN is valid here; callers that must not accept
/// it check for it themselves.
///
/// The error is the reason, without the NQN itself, e.g.
/// `it must start with "nqn."`.
pub fn validate_nqn(nqn: &str) -> Result<(), String> {
    if nqn.is_empty() {
        return Err("it is empty".into());
    }
    if nqn.len() > NQN_MAX_LEN {
        return Err(format!(
            "it is {} bytes long and the maximum is {NQN_MAX_LEN}",
            nqn.len()
        ));
    }
    if let Some(c) = nqn.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("it contains the character {c:?}"));
    }
    let Some(rest) = nqn.strip_prefix("nqn.") else {
        return Err("it must start with \"nqn.\"".into());
    };
    if let Some(uuid) = nqn.strip_prefix(UUID_NQN_PREFIX) {
        return match parse_uuid(uuid) {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "{UUID_NQN_PREFIX:?} must be followed by a UUID (8-4-4-4-12 hex digits)"
            )),
        };
    }
    let date = rest.get(..8).unwrap_or("");
    let date_ok = date.len() == 8
        && date.bytes().enumerate().all(|(i, b)| match i {
            4 => b == b'-',
            7 => b == b'.',
            _ => b.is_ascii_digit(),
        })
        && matches!(
            &date[5..7],
            "01" | "02" | "03" | "04" | "05" | "06" | "07" | "08" | "09" | "10" | "11" | "12"
        );
    if !date_ok {
        return Err("\"nqn.\" must be followed by a date in the form yyyy-mm and a dot".into());
    }
    let after_date = &rest[8..];
    let domain = after_date.split(':').next().unwrap_or("");
    let domain_ok = !domain.is_empty()
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if !domain_ok {
        return Err(
            "the date must be followed by a reverse domain name (like \"com.example\")".into(),
        );
    }
    Ok(())
}

/// Whether `nqn` is the well-known discovery subsystem NQN.
pub fn is_discovery_nqn(nqn: &str) -> bool {
    nqn == DISCOVERY_NQN
}

/// The serial number a subsystem gets when the config does not give one:
/// the first 10 bytes of SHA-256 of the NQN as 20 uppercase hex digits.
pub fn derived_serial(nqn: &str) -> String {
    let digest = Sha256::digest(nqn.as_bytes());
    hex_upper(&digest[..10])
}

/// The identifiers a namespace gets when the config does not give them:
/// `(uuid, nguid, eui64)`, derived from the subsystem NQN and the NSID so that
/// they are the same on every start of the target.
pub fn derived_namespace_ids(nqn: &str, nsid: u32) -> ([u8; 16], [u8; 16], [u8; 8]) {
    let digest = Sha256::digest(format!("{nqn}\0{nsid}").as_bytes());
    let mut uuid = [0u8; 16];
    uuid.copy_from_slice(&digest[..16]);
    uuid[6] = (uuid[6] & 0x0f) | 0x50; // version 5
    uuid[8] = (uuid[8] & 0x3f) | 0x80; // variant 10
    let mut nguid = [0u8; 16];
    nguid.copy_from_slice(&digest[16..32]);
    let digest = Sha256::digest(format!("eui64\0{nqn}\0{nsid}").as_bytes());
    let mut eui64 = [0u8; 8];
    eui64.copy_from_slice(&digest[..8]);
    eui64[0] = (eui64[0] | 0x02) & !0x01; // locally administered, unicast
    (uuid, nguid, eui64)
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Lowercase hex digits, no separators.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The canonical 8-4-4-4-12 lowercase form.
pub fn format_uuid(uuid: &[u8; 16]) -> String {
    let h = hex_lower(uuid);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Parses exactly `N` bytes of hex digits (either case).
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Parses a UUID in the canonical 8-4-4-4-12 hex form.
pub fn parse_uuid(s: &str) -> Result<[u8; 16], String> {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    if groups.len() != 5 || groups.iter().zip(lens).any(|(g, n)| g.len() != n) {
        return Err(format!(
            "{s:?} is not a UUID in the form xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx"
        ));
    }
    parse_hex::<16>(&groups.concat()).ok_or_else(|| {
        format!("{s:?} is not a UUID: it contains a character that is not a hex digit")
    })
}

/// Parses an NGUID: 32 hex digits.
pub fn parse_nguid(s: &str) -> Result<[u8; 16], String> {
    parse_hex::<16>(s).ok_or_else(|| format!("{s:?} is not an NGUID (32 hex digits)"))
}

/// Parses an EUI-64: 16 hex digits.
pub fn parse_eui64(s: &str) -> Result<[u8; 8], String> {
    parse_hex::<8>(s).ok_or_else(|| format!("{s:?} is not an EUI-64 (16 hex digits)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nqn_syntax() {
        for good in [
            "nqn.2026-01.io.nvmf-target:ram0",
            "nqn.2014-08.org.nvmexpress.discovery",
            "nqn.2014-08.org.nvmexpress:uuid:6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b",
            "nqn.1992-05.com.example",
            "nqn.2016-06.io.spdk:cnode1",
        ] {
            assert_eq!(validate_nqn(good), Ok(()), "{good}");
        }
        assert_eq!(validate_nqn(""), Err("it is empty".into()));
        assert_eq!(
            validate_nqn("iqn.2026-01.io.x:y"),
            Err("it must start with \"nqn.\"".into())
        );
        assert!(validate_nqn("nqn.2026-1.io.x:y")
            .unwrap_err()
            .contains("yyyy-mm"));
        assert!(validate_nqn("nqn.2026-13.io.x:y")
            .unwrap_err()
            .contains("yyyy-mm"));
        assert!(validate_nqn("nqn.2026-01.:y")
            .unwrap_err()
            .contains("reverse domain"));
        assert!(validate_nqn("nqn.2026-01.io..x")
            .unwrap_err()
            .contains("reverse domain"));
        assert!(validate_nqn("nqn.2026-01.io.x:a b")
            .unwrap_err()
            .contains("' '"));
        assert!(validate_nqn("nqn.2014-08.org.nvmexpress:uuid:1234")
            .unwrap_err()
            .contains("UUID"));
        let long = format!("nqn.2026-01.io.x:{}", "a".repeat(NQN_MAX_LEN));
        assert_eq!(
            validate_nqn(&long),
            Err(format!(
                "it is {} bytes long and the maximum is 223",
                long.len()
            ))
        );
        let max = format!("nqn.2026-01.io.x:{}", "a".repeat(NQN_MAX_LEN - 17));
        assert_eq!(max.len(), NQN_MAX_LEN);
        assert_eq!(validate_nqn(&max), Ok(()));
        // Multi-byte characters must not trip up the slicing.
        assert!(validate_nqn("nqn.é").is_err());
        assert!(validate_nqn("nqn.2026-01.é").is_err());
        assert_eq!(validate_nqn("nqn.2026-01.io.x:é"), Ok(()));
    }

    #[test]
    fn derived_ids_follow_the_documented_recipe() {
        let nqn = "nqn.2026-01.io.nvmf-target:ram0";
        let serial = derived_serial(nqn);
        assert_eq!(serial.len(), 20);
        assert!(serial
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase()));
        let digest = Sha256::digest(nqn.as_bytes());
        assert_eq!(serial, hex_upper(&digest[..10]));

        let (uuid, nguid, eui64) = derived_namespace_ids(nqn, 1);
        let digest = Sha256::digest(b"nqn.2026-01.io.nvmf-target:ram0\x001");
        assert_eq!(uuid[6] >> 4, 5);
        assert_eq!(uuid[8] >> 6, 0b10);
        assert_eq!(uuid[..6], digest[..6]);
        assert_eq!(uuid[6] & 0x0f, digest[6] & 0x0f);
        assert_eq!(uuid[9..], digest[9..16]);
        assert_eq!(nguid[..], digest[16..32]);
        let digest = Sha256::digest(b"eui64\0nqn.2026-01.io.nvmf-target:ram0\x001");
        assert_eq!(eui64[0] & 0x03, 0x02);
        assert_eq!(eui64[0] & 0xfc, digest[0] & 0xfc);
        assert_eq!(eui64[1..], digest[1..8]);

        // Stable and distinct.
        assert_eq!(derived_namespace_ids(nqn, 1), (uuid, nguid, eui64));
        assert_ne!(derived_namespace_ids(nqn, 2).0, uuid);
        assert_ne!(derived_namespace_ids("nqn.2026-01.io.x:y", 1).0, uuid);
    }

    #[test]
    fn hex_forms() {
        let uuid = parse_uuid("6C1A5AB8-0c4c-4a5e-9b6f-3f2d1e0c9a7b").unwrap();
        assert_eq!(uuid[0], 0x6c);
        assert_eq!(uuid[15], 0x7b);
        assert_eq!(format_uuid(&uuid), "6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b");
        assert!(parse_uuid("6c1a5ab80c4c4a5e9b6f3f2d1e0c9a7b").is_err());
        assert!(parse_uuid("6c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7g").is_err());
        assert!(parse_uuid("+c1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b").is_err());
        assert!(parse_uuid("é1a5ab8-0c4c-4a5e-9b6f-3f2d1e0c9a7b").is_err());
        assert_eq!(parse_nguid(&"ab".repeat(16)).unwrap(), [0xab; 16]);
        assert!(parse_nguid(&"ab".repeat(15)).is_err());
        assert_eq!(parse_eui64("0123456789ABCDEF").unwrap()[7], 0xef);
        assert!(parse_eui64("0123456789ABCDE").is_err());
        assert!(parse_eui64("01-23-45-67-89-AB-CD-EF").is_err());
    }
}
