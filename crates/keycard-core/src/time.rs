//! RFC 3339 timestamps in UTC (SPEC §2: "times are RFC 3339 in UTC").

/// Formats Unix seconds as `2026-11-28T10:00:00Z`.
pub fn rfc3339(unix_secs: i64) -> String {
    let (date, secs_of_day) = split(unix_secs);
    format_parts(date, secs_of_day, None)
}

/// Formats Unix milliseconds as `2026-11-28T10:00:00.123Z`.
pub fn rfc3339_millis(unix_millis: i64) -> String {
    let secs = unix_millis.div_euclid(1000);
    let ms = unix_millis.rem_euclid(1000);
    let (date, secs_of_day) = split(secs);
    format_parts(date, secs_of_day, Some(ms))
}

/// Appends `rfc3339_millis(unix_millis)` to `out` without allocating (years 0–9999).
pub fn write_rfc3339_millis(out: &mut Vec<u8>, unix_millis: i64) {
    let secs = unix_millis.div_euclid(1000);
    let ms = unix_millis.rem_euclid(1000);
    let ((y, m, d), sod) = split(secs);
    if !(0..=9999).contains(&y) {
        out.extend_from_slice(rfc3339_millis(unix_millis).as_bytes());
        return;
    }
    let digits = |out: &mut Vec<u8>, v: i64, n: u32| {
        for i in (0..n).rev() {
            out.push(b'0' + ((v / 10i64.pow(i)) % 10) as u8);
        }
    };
    digits(out, y, 4);
    out.push(b'-');
    digits(out, i64::from(m), 2);
    out.push(b'-');
    digits(out, i64::from(d), 2);
    out.push(b'T');
    digits(out, sod / 3600, 2);
    out.push(b':');
    digits(out, (sod / 60) % 60, 2);
    out.push(b':');
    digits(out, sod % 60, 2);
    out.push(b'.');
    digits(out, ms, 3);
    out.push(b'Z');
}

fn split(unix_secs: i64) -> ((i64, u32, u32), i64) {
    let days = unix_secs.div_euclid(86_400);
    (civil_from_days(days), unix_secs.rem_euclid(86_400))
}

fn format_parts((y, m, d): (i64, u32, u32), sod: i64, ms: Option<i64>) -> String {
    let (hh, mm, ss) = (sod / 3600, (sod / 60) % 60, sod % 60);
    match ms {
        Some(ms) => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}.{ms:03}Z"),
        None => format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
    }
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_868_261), "2026-11-28T12:17:41Z");
        assert_eq!(
            rfc3339_millis(1_795_868_261_042),
            "2026-11-28T12:17:41.042Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
        for ms in [
            0,
            1_795_868_261_042,
            951_782_400_999,
            -1,
            253_402_300_800_000,
        ] {
            let mut out = Vec::new();
            write_rfc3339_millis(&mut out, ms);
            assert_eq!(String::from_utf8(out).unwrap(), rfc3339_millis(ms));
        }
    }
}
