//! Durations on the command line: `30s`, `15m`, `24h`, `7d`, `1h30m`, `500ms`, `0`.

use std::time::{Duration, SystemTime};

/// Parses a duration: one or more `<number><unit>` parts with units `ms`, `s`, `m`, `h`,
/// `d` (each at most once, largest first), or a bare `0`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a duration (examples: 30s, 15m, 24h, 7d, 1h30m, 0)");
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad());
    }
    let mut total = Duration::ZERO;
    // Units in the order they must appear, so `30s5m` or `1h1h` is refused.
    let mut last_rank = usize::MAX;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        if number.is_empty() {
            return Err(bad());
        }
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let (rank, millis_per_unit): (usize, u64) = match unit {
            "d" => (0, 86_400_000),
            "h" => (1, 3_600_000),
            "m" => (2, 60_000),
            "s" => (3, 1_000),
            "ms" => (4, 1),
            _ => return Err(bad()),
        };
        if last_rank != usize::MAX && rank <= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        let value: u64 = number.parse().map_err(|_| bad())?;
        let millis = value
            .checked_mul(millis_per_unit)
            .ok_or_else(|| format!("{text:?} is too long"))?;
        total = total
            .checked_add(Duration::from_millis(millis))
            .ok_or_else(|| format!("{text:?} is too long"))?;
        rest = next;
    }
    Ok(total)
}

/// Parses `--timeout`: a duration that is not zero.
pub fn parse_timeout(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        d if d.is_zero() => Err("a timeout of 0 would fail every call".to_owned()),
        d => Ok(d),
    }
}

/// Formats a duration the way [`parse_duration`] reads it, e.g. `1h30m`, `500ms`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let mut millis = duration.as_millis();
    if millis == 0 {
        return "0s".to_owned();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u128),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        let count = millis / size;
        if count > 0 {
            out.push_str(&format!("{count}{unit}"));
            millis -= count * size;
        }
    }
    out
}

/// `now + duration` as a protobuf timestamp, for `--expires-in`.
pub fn expiry_from_now(now: SystemTime, duration: Duration) -> Result<prost_types::Timestamp, String> {
    if duration.is_zero() {
        return Err("an expiry must be in the future, not 0".to_owned());
    }
    now.checked_add(duration)
        .map(prost_types::Timestamp::from)
        .ok_or_else(|| format!("{} from now is too far", format_duration(duration)))
}

/// A duration as a protobuf duration, for `--grace`.
pub fn to_proto(duration: Duration) -> Result<prost_types::Duration, String> {
    prost_types::Duration::try_from(duration).map_err(|e| format!("{}: {e}", format_duration(duration)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn single_units_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    }

    #[test]
    fn compound_durations_add_up() {
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1d2h3m4s5ms"), Ok(Duration::from_millis(93_784_005)));
    }

    #[test]
    fn malformed_durations_are_refused() {
        for bad in [
            "", "s", "10", "10x", "1.5h", "-1s", "1h1h", "30s5m", "h1", " 1 h", "1hh",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn a_zero_timeout_is_refused() {
        assert!(parse_timeout("0").is_err());
        assert!(parse_timeout("0s").is_err());
        assert_eq!(parse_timeout("2m"), Ok(Duration::from_secs(120)));
    }

    #[test]
    fn overflow_is_an_error_not_a_panic() {
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("18446744073709551615d").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["30s", "1h30m", "7d", "250ms", "1d2h3m4s5ms"] {
            let parsed = parse_duration(text).unwrap();
            assert_eq!(format_duration(parsed), text);
        }
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn expiry_is_now_plus_the_duration() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let ts = expiry_from_now(now, Duration::from_secs(60)).unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_060, 0));
        assert!(expiry_from_now(now, Duration::ZERO).is_err());
    }

    #[test]
    fn grace_converts_to_a_protobuf_duration() {
        let d = to_proto(Duration::from_millis(1_500)).unwrap();
        assert_eq!((d.seconds, d.nanos), (1, 500_000_000));
    }
}
