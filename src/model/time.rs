//! Wall-clock times as people read them: ISO-8601 in UTC.

/// `2026-11-26T06:12:03.123Z` for milliseconds since the Unix epoch.
pub fn iso8601(ms: i64) -> String {
    String::from_utf8_lossy(&iso_bytes(ms)).into_owned()
}

/// The same, without allocating (a list of 1,000 machines has 2,000 times).
pub fn iso_bytes(ms: i64) -> [u8; 24] {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    // Years outside 0..=9999 are clamped: they cannot come from a clock.
    let year = (yoe + era * 400 + i64::from(month <= 2)).clamp(0, 9999);
    let mut b = *b"0000-00-00T00:00:00.000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            b[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, rem / 3600);
    put(14, 2, rem % 3600 / 60);
    put(17, 2, rem % 60);
    put(20, 3, millis);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants_format_as_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(1_795_670_523_456), "2026-11-26T05:22:03.456Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59.999Z");
    }
}
