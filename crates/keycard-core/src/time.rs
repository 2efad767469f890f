//! RFC 3339 timestamps in UTC (reference §2: "times are RFC 3339 in UTC").

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
    // The audit writer formats thousands of stamps within the same second: the date and time
    // of the last second a thread formatted are kept.
    thread_local! {
        static LAST: std::cell::Cell<(i64, [u8; 19])> = const { std::cell::Cell::new((i64::MIN, [0; 19])) };
    }
    let secs = unix_millis.div_euclid(1000);
    let ms = unix_millis.rem_euclid(1000);
    let (last_secs, prefix) = LAST.get();
    if last_secs == secs {
        out.extend_from_slice(&prefix);
        out.extend_from_slice(&[
            b'.',
            b'0' + (ms / 100) as u8,
            b'0' + (ms / 10 % 10) as u8,
            b'0' + (ms % 10) as u8,
            b'Z',
        ]);
        return;
    }
    let start = out.len();
    write_uncached(out, secs, ms);
    if let Some(p) = out
        .get(start..start + 19)
        .and_then(|p| <[u8; 19]>::try_from(p).ok())
        && out.len() == start + 24
    {
        LAST.set((secs, p));
    }
}

fn write_uncached(out: &mut Vec<u8>, secs: i64, ms: i64) {
    let unix_millis = secs * 1000 + ms;
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

/// Reads back what [`rfc3339_millis`] (or [`rfc3339`]) wrote: `2026-11-28T10:00:00.123Z`,
/// the fraction optional (one to three digits), UTC only; years beyond 9999 (and before 0,
/// with a `-`) as those functions write them. `None` for anything else.
pub fn parse_rfc3339_millis(s: &str) -> Option<i64> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let dash = rest.find('-')?;
    let (year, b) = (rest.get(..dash)?, rest.get(dash..)?.as_bytes());
    // `{y:04}` counts a sign in the width: year -1 is written `-001`.
    if year.len() < 4 - usize::from(negative)
        || year.len() > 12
        || !year.bytes().all(|d| d.is_ascii_digit())
    {
        return None;
    }
    let y: i64 = year.parse().ok()?;
    let y = if negative { -y } else { y };
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    // `b` is `-MM-DDTHH:MM:SS…`.
    let sep = |at: usize, c: u8| b.get(at) == Some(&c);
    if !(sep(0, b'-') && sep(3, b'-') && sep(6, b'T') && sep(9, b':') && sep(12, b':')) {
        return None;
    }
    let (m, d) = (num(1, 2)?, num(4, 2)?);
    let (hh, mm, ss) = (num(7, 2)?, num(10, 2)?, num(13, 2)?);
    let ms = match b.get(15..)? {
        b"Z" => 0,
        [b'.', frac @ .., b'Z'] if (1..=3).contains(&frac.len()) => {
            num(16, frac.len())? * 10i64.pow(3 - frac.len() as u32)
        }
        _ => return None,
    };
    let (m, d) = (u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    if !(1..=12).contains(&m) || d == 0 || d > days_in_month(y, m) || hh > 23 || mm > 59 || ss > 59
    {
        return None;
    }
    days_from_civil(y, m, d)
        .checked_mul(86_400)?
        .checked_add(hh * 3600 + mm * 60 + ss)?
        .checked_mul(1000)?
        .checked_add(ms)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if y % 4 == 0 && (y % 100 != 0 || y % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Howard Hinnant's `days_from_civil`, the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
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

    /// Stamps of one second in a row (the kept date and time), then of another second, then
    /// back: each as formatted afresh.
    #[test]
    fn stamps_in_the_same_second_format_as_fresh_ones() {
        for ms in [
            1_795_868_261_000,
            1_795_868_261_042,
            1_795_868_261_999,
            1_795_868_262_007,
            1_795_868_261_500,
            253_402_300_800_001,
            253_402_300_800_002,
            -1,
            -999,
            0,
        ] {
            let mut out = b"x".to_vec();
            write_rfc3339_millis(&mut out, ms);
            assert_eq!(out[1..], *rfc3339_millis(ms).as_bytes(), "{ms}");
        }
    }

    #[test]
    fn timestamps_read_back_to_the_millisecond() {
        for ms in [
            0,
            1_795_868_261_042,
            951_782_400_999,
            68_169_600_000,
            253_402_300_799_999,
            253_402_300_800_000,
            i64::MAX,
            -1,
            -62_167_219_200_001,
        ] {
            assert_eq!(parse_rfc3339_millis(&rfc3339_millis(ms)), Some(ms), "{ms}");
        }
        assert_eq!(
            parse_rfc3339_millis("2026-11-28T12:17:41Z"),
            Some(1_795_868_261_000)
        );
        assert_eq!(
            parse_rfc3339_millis("2026-11-28T12:17:41.5Z"),
            Some(1_795_868_261_500)
        );
        for bad in [
            "",
            "2026-11-28",
            "2026-11-28T12:17:41",
            "2026-11-28T12:17:41.0421Z",
            "2026-11-28T12:17:41.Z",
            "2026-11-28T12:17:41+01:00",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28 12:17:41Z",
            "2026-1x-28T12:17:41Z",
            "+026-11-28T12:17:41Z",
            "026-11-28T12:17:41Z",
            "99999999999999-11-28T12:17:41Z",
        ] {
            assert_eq!(parse_rfc3339_millis(bad), None, "{bad}");
        }
    }
}
