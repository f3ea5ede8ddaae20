//! Sizes written as `"1GiB"`, `"512"`, `"4 K"`.

const UNITS: [(&str, u32); 9] = [
    ("B", 0),
    ("KiB", 10),
    ("MiB", 20),
    ("GiB", 30),
    ("TiB", 40),
    ("K", 10),
    ("M", 20),
    ("G", 30),
    ("T", 40),
];

/// Parses a size: decimal digits, optionally followed (after optional spaces)
/// by one of the binary units `B`, `KiB`, `MiB`, `GiB`, `TiB`, or `K`, `M`,
/// `G`, `T` meaning the same. Decimal units (`KB`, `GB`, ...) are refused as
/// ambiguous. The error is one sentence about `s`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let trimmed = s.trim();
    let digits_end = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(digits_end);
    let unit = unit.trim_start();
    let bad = || {
        format!(
            "invalid size {s:?}: expected a whole number of bytes, optionally followed by \
             B, KiB, MiB, GiB or TiB (or K, M, G, T)"
        )
    };
    if digits.is_empty() {
        return Err(bad());
    }
    let shift = match UNITS.iter().find(|(name, _)| *name == unit) {
        Some((_, shift)) => *shift,
        None if unit.is_empty() => 0,
        None => {
            let upper = unit.to_ascii_uppercase();
            if ["KB", "MB", "GB", "TB"].contains(&upper.as_str()) {
                return Err(format!(
                    "invalid size {s:?}: the unit {unit:?} is ambiguous; write {}iB for binary units",
                    &upper[..1]
                ));
            }
            return Err(bad());
        }
    };
    let too_large = || format!("invalid size {s:?}: it is too large");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number.checked_mul(1u64 << shift).ok_or_else(too_large)
}

/// The shortest exact text for `bytes`: `"1GiB"` if it is a whole number of
/// KiB, MiB, GiB or TiB, otherwise `None` (write the plain integer).
pub(crate) fn format_size(bytes: u64) -> Option<String> {
    if bytes == 0 {
        return None;
    }
    [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)]
        .iter()
        .find(|(_, shift)| bytes.is_multiple_of(1u64 << shift))
        .map(|(name, shift)| format!("{}{name}", bytes >> shift))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_units() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("4 KiB"), Ok(4096));
        assert_eq!(parse_size(" 3MiB "), Ok(3 << 20));
        assert_eq!(parse_size("3M"), Ok(3 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("10G"), Ok(10 << 30));
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert_eq!(parse_size("2T"), Ok(2 << 40));
    }

    #[test]
    fn refuses_bad_sizes() {
        let generic = "expected a whole number of bytes, optionally followed by B, KiB, MiB, \
                       GiB or TiB (or K, M, G, T)";
        for bad in [
            "", "GiB", "-1", "1.5GiB", "1 GiB x", "1Gib", "1Q", "0x10", "1_000", "١",
        ] {
            let err = parse_size(bad).unwrap_err();
            assert_eq!(err, format!("invalid size {bad:?}: {generic}"));
        }
        assert_eq!(
            parse_size("1GB"),
            Err(
                "invalid size \"1GB\": the unit \"GB\" is ambiguous; write GiB for binary units"
                    .into()
            )
        );
        assert_eq!(
            parse_size("99999999999999999999"),
            Err("invalid size \"99999999999999999999\": it is too large".into())
        );
        assert_eq!(
            parse_size("16777216TiB"),
            Err("invalid size \"16777216TiB\": it is too large".into())
        );
        assert_eq!(parse_size("16777215TiB"), Ok(16777215 << 40));
    }

    #[test]
    fn formats_exact_sizes() {
        assert_eq!(format_size(1 << 30).as_deref(), Some("1GiB"));
        assert_eq!(format_size(10 << 30).as_deref(), Some("10GiB"));
        assert_eq!(format_size(1536 << 20).as_deref(), Some("1536MiB"));
        assert_eq!(format_size(4096).as_deref(), Some("4KiB"));
        assert_eq!(format_size(3 << 40).as_deref(), Some("3TiB"));
        assert_eq!(format_size(512), None);
        assert_eq!(format_size(0), None);
        for n in [4096u64, 1 << 30, 1536 << 20, 5 << 40, 12288] {
            assert_eq!(parse_size(&format_size(n).unwrap()), Ok(n));
        }
    }
}
