//! The value syntaxes of flags and variables, one parser each: durations,
//! ratios, Go booleans, log levels; and the redaction of Redis credentials
//! in logs.

use std::time::Duration;

pub(crate) fn parse_ratio(text: &str) -> Result<f32, String> {
    match text.parse::<f32>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("expected a number from 0 to 1, got '{text}'")),
    }
}

/// `url` with any password replaced, for logs (`REDIS_URL` may carry one).
pub(crate) fn redact_url(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => url.to_owned(),
    }
}

/// A number from 0 to 1 (`XDS_CLIENT_BACKOFF_RANDOM_FACTOR`).
pub(crate) fn parse_factor(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(factor) if (0.0..=1.0).contains(&factor) => Ok(factor),
        _ => Err(format!("expected a number from 0 to 1, got '{text}'")),
    }
}

/// A boolean as Go's `strconv.ParseBool` reads it, for flags that take a
/// value (`--xds-backoff-jitter false`, `USE_STATSD=false`).
pub(crate) fn parse_bool(text: &str) -> Result<bool, String> {
    parse_go_bool(text.trim())
        .ok_or_else(|| format!("expected a boolean (true/false, 1/0, t/f), got '{text}'"))
}

/// `k1<sep>v1,k2<sep>v2` into pairs (names and values trimmed); an item
/// without `sep` is an error, as with the reference's envconfig maps.
pub(crate) fn parse_pairs(text: &str, sep: char) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| match item.split_once(sep) {
            Some((name, value)) if !name.trim().is_empty() => {
                Ok((name.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!("'{item}' is not name{sep}value")),
        })
        .collect()
}

/// Go's `strconv.ParseBool`, which envconfig uses.
pub(crate) fn parse_go_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A listen address as Go's `net/http` takes it: `host:port`, or `:port`
/// for every interface (IPv4 here: `0.0.0.0`, which works where IPv6 is
/// off too).
pub(crate) fn parse_listen_addr(text: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    let full = match text.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => text.to_owned(),
    };
    full.to_socket_addrs()
        .map_err(|e| format!("'{text}': {e}"))?
        .next()
        .ok_or_else(|| format!("'{text}' resolves to no address"))
}

/// `EXTRA_TAGS`: `key:value` pairs separated by commas, as envconfig reads
/// a map (an empty text is no tags).
pub(crate) fn parse_tags(text: &str) -> Result<Tags, String> {
    text.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once(':') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((key.trim().to_owned(), value.trim().to_owned()))
            }
            _ => Err(format!("'{pair}': expected key:value")),
        })
        .collect::<Result<_, _>>()
        .map(Tags)
}

/// Tags as `EXTRA_TAGS` gives them, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tags(pub Vec<(String, String)>);

/// The `tracing` filter for a log level: the reference's logrus names in
/// any case (`WARN`, `warning`, `FATAL`, ...) map to tracing levels;
/// anything else is taken as a `tracing` filter directive as is.
pub fn tracing_filter(level: &str) -> String {
    match level.trim().to_ascii_lowercase().as_str() {
        "trace" => "trace".to_owned(),
        "debug" => "debug".to_owned(),
        "info" => "info".to_owned(),
        "warn" | "warning" => "warn".to_owned(),
        "error" | "fatal" | "panic" => "error".to_owned(),
        _ => level.to_owned(),
    }
}

#[cfg(test)]
#[test]
fn pairs_and_factors() {
    assert_eq!(
        parse_pairs("a:1, b : x:y ,", ':'),
        Ok(vec![("a".into(), "1".into()), ("b".into(), "x:y".into())])
    );
    assert!(parse_pairs("a:1,b", ':').is_err());
    assert_eq!(parse_pairs("", '='), Ok(Vec::new()));
    assert_eq!(parse_factor("0.5"), Ok(0.5));
    assert!(parse_factor("1.5").is_err());
    assert_eq!(parse_bool("T"), Ok(true));
    assert!(parse_bool("yes").is_err());
}

/// Parses a duration as Go's `time.ParseDuration` does, the syntax of the
/// reference server's variables and of every floodgate flag: one or more
/// decimal numbers each with a unit (`ns`, `us`/`µs`, `ms`, `s`, `m`, `h`),
/// as in `10ms`, `0.5s`, `1m30s`; `0` alone needs none. A bare number is
/// refused: whether `15` meant milliseconds or seconds is a guess.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    const UNITS: &[(&str, f64)] = &[
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("μs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("expected a duration like 10ms, 2s or 1m30s, got nothing".to_owned());
    }
    let mut rest = text;
    let mut seconds = 0.0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("expected a duration like 10ms, 2s or 1m30s, got '{text}'"))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_end);
        let scale = match UNITS.iter().find(|(name, _)| *name == unit) {
            Some((_, scale)) => *scale,
            None if unit.is_empty() => {
                return Err(format!(
                    "'{text}' needs a unit: ms, s, m or h (e.g. {number}ms or {number}s)"
                ));
            }
            None => {
                return Err(format!(
                    "unknown unit '{unit}' in '{text}' (use ns, us, ms, s, m or h)"
                ));
            }
        };
        seconds += value * scale;
        rest = after;
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("'{text}': {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_have_one_syntax() {
        assert_eq!(parse_duration("10ms"), Ok(Duration::from_millis(10)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("800us"), Ok(Duration::from_micros(800)));
        assert_eq!(parse_duration("800µs"), Ok(Duration::from_micros(800)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
        // A bare number is ambiguous: refused, with the fix in the message.
        let bare = parse_duration("15").expect_err("bare number");
        assert!(bare.contains("15ms or 15s"), "{bare}");
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1.2.3s").is_err());
    }

    #[test]
    fn log_levels_map_to_tracing() {
        assert_eq!(tracing_filter("WARN"), "warn");
        assert_eq!(tracing_filter("Warning"), "warn");
        assert_eq!(tracing_filter("DEBUG"), "debug");
        assert_eq!(tracing_filter("FATAL"), "error");
        assert_eq!(tracing_filter("floodgate=debug"), "floodgate=debug");
    }
}
