//! Durations as people write them in configs and flags: `30s`, `10m`, `12h`, `30d`
//! (also `1h30m`, and `500ms`).

use std::time::Duration;

/// Why a duration string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration `{0}`: write a number and a unit, such as 30s, 10m, 12h or 30d")]
pub struct InvalidDuration(pub String);

/// Parses `30s`, `10m`, `12h`, `30d`, `500ms`, or a sum such as `1h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let err = || InvalidDuration(text.to_owned());
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(err());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(err());
        }
        let (num, tail) = rest.split_at(digits);
        let n: u64 = num.parse().map_err(|_| err())?;
        let unit_len = tail.bytes().take_while(u8::is_ascii_alphabetic).count();
        let (unit, tail) = tail.split_at(unit_len);
        let part = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60).ok_or_else(err)?),
            "h" => Duration::from_secs(n.checked_mul(3600).ok_or_else(err)?),
            "d" => Duration::from_secs(n.checked_mul(86_400).ok_or_else(err)?),
            _ => return Err(err()),
        };
        total = total.checked_add(part).ok_or_else(err)?;
        rest = tail;
    }
    Ok(total)
}

/// A rate such as `10/min`: `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Events allowed per window (at least 1).
    pub count: u32,
    /// The window.
    pub per: Duration,
}

/// Why a rate string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rate `{0}`: write a count and a unit, such as 10/min, 100/s or 1000/h")]
pub struct InvalidRate(pub String);

/// Parses `10/min`, `100/s`, `1000/h`, `5000/d`, or a count per duration (`20/30s`).
pub fn parse_rate(text: &str) -> Result<Rate, InvalidRate> {
    let err = || InvalidRate(text.to_owned());
    let (count, unit) = text.trim().split_once('/').ok_or_else(err)?;
    let count: u32 = count.trim().parse().map_err(|_| err())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => Duration::from_secs(1),
        "m" | "min" | "minute" => Duration::from_secs(60),
        "h" | "hour" => Duration::from_secs(3600),
        "d" | "day" => Duration::from_secs(86_400),
        other => parse_duration(other).map_err(|_| err())?,
    };
    if count == 0 || per.is_zero() {
        return Err(err());
    }
    Ok(Rate { count, per })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert_eq!(
            parse_rate("10/min"),
            Ok(Rate {
                count: 10,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(parse_rate(" 100 / s ").unwrap().per, Duration::from_secs(1));
        assert_eq!(parse_rate("20/30s").unwrap().per, Duration::from_secs(30));
        for bad in ["", "10", "0/min", "10/0s", "x/min", "10/fortnight", "-1/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_the_spec_forms() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn refuses_nonsense() {
        for bad in [
            "",
            "10",
            "s",
            "10x",
            "-5s",
            "1.5h",
            "99999999999999999999d",
            "10 m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
