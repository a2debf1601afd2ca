//! `floodgate overrides set|list|delete`: the admin API's overrides
//! endpoints from a shell, for operators and the scripts of a billing
//! system or support tool. One plain HTTP/1.1 request per command (the
//! admin server speaks plain HTTP, on loopback by default); the answer's
//! JSON is printed, and the exit status is 0 for a 2xx answer, else 1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Map, Value, json};

use super::args::{OverridesAction, OverridesArgs};

/// How long the admin server may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs one `floodgate overrides` command; the process exit status.
pub fn run(args: &OverridesArgs) -> i32 {
    let request = match build(&args.action) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("floodgate overrides: {e}");
            return 2;
        }
    };
    match send(args, &request) {
        Ok((status, body)) => {
            if (200..300).contains(&status) {
                println!("{}", pretty(&body));
                0
            } else {
                eprintln!("floodgate overrides: {status}: {}", body.trim());
                1
            }
        }
        Err(e) => {
            eprintln!("floodgate overrides: {}: {e}", args.admin_addr);
            1
        }
    }
}

/// A request to the admin server: method, path and JSON body.
struct Call {
    method: &'static str,
    path: String,
    body: Option<String>,
}

fn build(action: &OverridesAction) -> Result<Call, String> {
    match action {
        OverridesAction::Set {
            domain,
            entries,
            limits,
            expires_at,
        } => {
            let mut body = json!({
                "domain": domain,
                "entries": parse_entries(entries)?,
                "limits": limits.iter().map(|l| parse_limit(l)).collect::<Result<Vec<_>, _>>()?,
            });
            if let (Some(at), Some(map)) = (expires_at, body.as_object_mut()) {
                map.insert("expires_at".into(), json!(at));
            }
            Ok(Call {
                method: "PUT",
                path: "/overrides".into(),
                body: Some(body.to_string()),
            })
        }
        OverridesAction::List { domain } => Ok(Call {
            method: "GET",
            path: match domain {
                Some(domain) => format!("/overrides?domain={}", percent_encode(domain)),
                None => "/overrides".into(),
            },
            body: None,
        }),
        OverridesAction::Delete { domain, entries } => Ok(Call {
            method: "DELETE",
            path: "/overrides".into(),
            body: Some(json!({"domain": domain, "entries": parse_entries(entries)?}).to_string()),
        }),
    }
}

/// `key=value` entries (split at the first `=`).
fn parse_entries(entries: &[String]) -> Result<Vec<Value>, String> {
    entries
        .iter()
        .map(|entry| match entry.split_once('=') {
            Some((key, value)) => Ok(json!({"key": key, "value": value})),
            None => Err(format!("entry '{entry}' is not key=value")),
        })
        .collect()
}

/// `RPU/UNIT[,key=value...]` as a limit object; the server checks it.
fn parse_limit(text: &str) -> Result<Value, String> {
    let mut parts = text.split(',');
    let head = parts.next().unwrap_or_default();
    let (rpu, unit) = head
        .split_once('/')
        .ok_or_else(|| format!("limit '{text}' must start with RPU/UNIT, e.g. 100/hour"))?;
    let rpu: u64 = rpu
        .trim()
        .parse()
        .map_err(|_| format!("limit '{text}': '{rpu}' is not a number of requests"))?;
    let mut limit = Map::new();
    limit.insert("requests_per_unit".into(), json!(rpu));
    limit.insert("unit".into(), json!(unit.trim()));
    for part in parts {
        let (key, value) = part
            .split_once('=')
            .ok_or_else(|| format!("limit '{text}': '{part}' is not key=value"))?;
        let value = match key {
            "unit_multiplier" | "burst" => json!(
                value
                    .parse::<u64>()
                    .map_err(|_| format!("limit '{text}': {key} must be a number"))?
            ),
            "calendar" => json!(value == "true"),
            _ => json!(value),
        };
        limit.insert(key.into(), value);
    }
    Ok(Value::Object(limit))
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends `call`; the status and body of the answer.
fn send(args: &OverridesArgs, call: &Call) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(args.admin_addr.as_str())?;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.set_write_timeout(Some(TIMEOUT))?;
    let body = call.body.as_deref().unwrap_or("");
    let actor = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Floodgate-Actor: {}@cli\r\nConnection: close\r\n",
        call.method,
        call.path,
        args.admin_addr,
        body.len(),
        actor.replace(['\r', '\n'], "")
    );
    if let Some(token) = &args.admin_token {
        head.push_str(&format!(
            "Authorization: Bearer {}\r\n",
            token.replace(['\r', '\n'], "")
        ));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let chunked = head.lines().any(|line| {
        line.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    Ok((
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_owned()
        },
    ))
}

/// A chunked body's data.
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(rest.get(..size).unwrap_or_default());
        body = rest
            .get(size..)
            .unwrap_or_default()
            .trim_start_matches("\r\n");
    }
    out
}

fn pretty(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| serde_json::to_string_pretty(&value).ok())
        .unwrap_or_else(|| body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_and_entries_parse_into_the_api_shape() {
        let limit =
            parse_limit("10/minute,algorithm=token_bucket,burst=20,name=burst").expect("valid");
        assert_eq!(
            limit,
            json!({"requests_per_unit": 10, "unit": "minute", "algorithm": "token_bucket", "burst": 20, "name": "burst"})
        );
        assert!(parse_limit("10").is_err());
        assert!(parse_limit("x/hour").is_err());
        assert_eq!(
            parse_entries(&["customer=a=b".into()]).expect("valid"),
            [json!({"key": "customer", "value": "a=b"})]
        );
        assert!(parse_entries(&["nokey".into()]).is_err());
        assert_eq!(dechunk("5\r\nhello\r\n0\r\n\r\n"), "hello");
        assert_eq!(percent_encode("a b/é"), "a%20b%2F%C3%A9");
    }
}
