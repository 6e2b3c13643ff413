//! Consul-style durations (`100ms`, `30s`, `5m`, `1h`, `1m30s`): the one syntax for every
//! duration flag and for `?wait=` on the state API, so an operator who knows Consul's
//! `?wait=5m` knows ours.
//!
//! Owns parsing and formatting only; it never decides what a duration is for.

use std::time::Duration;

/// Why a duration was refused; the message names the text that was wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DurationError {
    /// Not a number followed by a unit (`ns`, `us`, `ms`, `s`, `m`, `h`), or negative.
    #[error("invalid duration {0:?}: expected a number and a unit such as 500ms, 30s, 5m or 1h")]
    Invalid(String),
}

/// Parses `s` the way Go's `time.ParseDuration` (and so Consul) does, refusing negatives.
pub fn parse(s: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(s.to_string());
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return Err(invalid());
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| invalid())?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(invalid()),
        };
        rest = &rest[unit_len..];
        nanos += value * unit;
    }
    if !nanos.is_finite() || nanos > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// Formats `d` for Consul's `?wait=` in whole milliseconds (Consul accepts any Go duration).
pub fn to_consul(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A short human form for logs and messages: `250ms`, `30s`, `5m`, `90s`.
pub fn display(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(60_000) && ms > 0 {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) && ms > 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consul_style_durations_parse() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_are_refused_with_the_text_in_the_message() {
        for bad in ["", "30", "s", "1x", "-1s", "1s2", "5 m"] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn formatting_round_trips() {
        for d in [Duration::from_millis(250), Duration::from_secs(30), Duration::from_secs(300)] {
            assert_eq!(parse(&to_consul(d)), Ok(d));
            assert_eq!(parse(&display(d)), Ok(d));
        }
    }
}
