//! Asks a rate-limit server one question and prints the answer readably.
//!
//! ```text
//! cargo run --example client -- --domain exotel \
//!     --descriptor account=acme,api_category=bridges
//! cargo run --example client -- --addr 127.0.0.1:8081 --domain xola \
//!     --descriptor user=u1,seller=s1 --descriptor user=u1 --hits 5
//! ```
//!
//! `--descriptor key=value[,key=value...]` is one descriptor; repeat it for
//! several. `--hits N` sets the request's `hits_addend`. It prints the
//! overall code, each descriptor's status (the limit with its name, the
//! remaining quota and the time until the window resets), the headers and
//! the body Envoy would send, and the dynamic metadata. The exit status is 0
//! for OK, 1 for OVER_LIMIT and 2 when the call failed.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use floodgate::proto::{
    Code, Entry, RateLimitDescriptor, RateLimitRequest, RateLimitResponse, RateLimitServiceClient,
    ResponseUnit,
};
use tonic::transport::Endpoint;

/// Asks a rate-limit server (RLS v3) about one request.
#[derive(Debug, Parser)]
pub struct Args {
    /// The server's gRPC address (`host:port` or `http://host:port`).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub addr: String,
    /// The request's domain.
    #[arg(long, default_value = "exotel")]
    pub domain: String,
    /// One descriptor as `key=value[,key=value...]`; repeat for several.
    #[arg(
        long = "descriptor",
        default_value = "account=acme,api_category=bridges"
    )]
    pub descriptors: Vec<String>,
    /// The request's `hits_addend` (0 means 1).
    #[arg(long, default_value_t = 0)]
    pub hits: u32,
    /// How long to wait for the answer, in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
}

/// One descriptor from `key=value[,key=value...]`.
pub fn parse_descriptor(text: &str) -> Result<RateLimitDescriptor, String> {
    let entries = text
        .split(',')
        .map(|pair| match pair.split_once('=') {
            Some(("", _)) | None => Err(format!("{pair:?} is not key=value in {text:?}")),
            Some((key, value)) => Ok(Entry {
                key: key.to_owned(),
                value: value.to_owned(),
            }),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RateLimitDescriptor {
        entries,
        ..RateLimitDescriptor::default()
    })
}

/// The request `args` describe.
pub fn build_request(args: &Args) -> Result<RateLimitRequest, String> {
    Ok(RateLimitRequest {
        domain: args.domain.clone(),
        descriptors: args
            .descriptors
            .iter()
            .map(|text| parse_descriptor(text))
            .collect::<Result<_, _>>()?,
        hits_addend: args.hits,
    })
}

/// Sends the request `args` describe and returns the answer.
pub async fn ask(args: &Args) -> Result<RateLimitResponse, String> {
    let request = build_request(args)?;
    let url = if args.addr.contains("://") {
        args.addr.clone()
    } else {
        format!("http://{}", args.addr)
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let channel = Endpoint::from_shared(url.clone())
        .map_err(|e| format!("bad address {url}: {e}"))?
        .connect_timeout(timeout)
        .timeout(timeout)
        .connect()
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    RateLimitServiceClient::new(channel)
        .should_rate_limit(request)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("{}: {}", status.code(), status.message()))
}

fn code_name(code: i32) -> &'static str {
    match Code::try_from(code) {
        Ok(Code::Ok) => "OK",
        Ok(Code::OverLimit) => "OVER_LIMIT",
        _ => "UNKNOWN",
    }
}

/// The answer as text: the overall code, one line per descriptor, then
/// headers, body and metadata when there are any.
pub fn render(request: &RateLimitRequest, response: &RateLimitResponse) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "overall: {}", code_name(response.overall_code));
    for (i, status) in response.statuses.iter().enumerate() {
        let entries = request.descriptors.get(i).map_or_else(String::new, |d| {
            d.entries
                .iter()
                .map(|e| format!("{}={}", e.key, e.value))
                .collect::<Vec<_>>()
                .join(",")
        });
        let _ = write!(out, "  [{entries}] {}", code_name(status.code));
        match &status.current_limit {
            Some(limit) => {
                let unit = ResponseUnit::try_from(limit.unit).map_or("?", |u| u.as_str_name());
                let name = if limit.name.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", limit.name)
                };
                let _ = write!(
                    out,
                    ": limit {}/{unit}{name}, remaining {}",
                    limit.requests_per_unit, status.limit_remaining
                );
                if let Some(reset) = &status.duration_until_reset {
                    let _ = match reset.nanos / 1_000_000 {
                        0 => write!(out, ", resets in {}s", reset.seconds),
                        millis => write!(out, ", resets in {}.{millis:03}s", reset.seconds),
                    };
                }
            }
            None => out.push_str(": no limit"),
        }
        out.push('\n');
    }
    if !response.response_headers_to_add.is_empty() {
        out.push_str("headers:\n");
        for header in &response.response_headers_to_add {
            let _ = writeln!(out, "  {}: {}", header.key, header.value);
        }
    }
    if !response.raw_body.is_empty() {
        let _ = writeln!(
            out,
            "body:\n{}",
            String::from_utf8_lossy(&response.raw_body)
        );
    }
    if let Some(metadata) = &response.dynamic_metadata {
        match metadata.to_struct() {
            Ok(metadata) => {
                let json = json_of_struct(&metadata);
                let _ = writeln!(out, "dynamic metadata: {json}");
            }
            Err(e) => {
                let _ = writeln!(out, "dynamic metadata: not a valid Struct ({e})");
            }
        }
    }
    out
}

/// A protobuf `Struct` as JSON.
fn json_of_struct(value: &prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        value
            .fields
            .iter()
            .map(|(key, value)| (key.clone(), json_of(value)))
            .collect(),
    )
}

fn json_of(value: &prost_types::Value) -> serde_json::Value {
    use prost_types::value::Kind;
    match &value.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => serde_json::Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::Bool(*b),
        Some(Kind::StructValue(s)) => json_of_struct(s),
        Some(Kind::ListValue(list)) => {
            serde_json::Value::Array(list.values.iter().map(json_of).collect())
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("client: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let request = match build_request(&args) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("client: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(ask(&args)) {
        Ok(response) => {
            print!("{}", render(&request, &response));
            if response.overall_code == Code::OverLimit as i32 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("client: {e}");
            ExitCode::from(2)
        }
    }
}
