//! `INVALID_ARGUMENT` for requests tonic refuses before floodgate sees them.
//!
//! tonic decodes a request before calling the service, and answers a frame
//! that is not a valid protobuf message (including a string field that is not
//! UTF-8) with `INTERNAL`, and a message over the size limit with
//! `OUT_OF_RANGE`. Both are the caller's fault, and floodgate answers every
//! other malformed request with `INVALID_ARGUMENT`, so [`Malformed`] wraps the
//! RLS service and rewrites these two answers, keeping tonic's description
//! (which names the field, or the size and the limit) and adding the flag
//! that sets the limit. Any other status passes through untouched.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::Service;
use tonic::codegen::http::{Request, Response};
use tonic::server::NamedService;
use tonic::{Code, Status};

/// tonic's message for a frame prost cannot decode (prost's `DecodeError`).
const DECODE_FAILURE: &str = "failed to decode Protobuf message";
/// tonic's message for a message over `max_decoding_message_size`.
const TOO_LARGE: &str = "decoded message length too large";

/// Wraps a tonic service, answering undecodable or oversized requests with
/// `INVALID_ARGUMENT`.
#[derive(Clone, Debug)]
pub struct Malformed<S>(pub S);

impl<S: NamedService> NamedService for Malformed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Malformed<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Unpin,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Rewrite<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        Rewrite(self.0.call(request))
    }
}

/// The wrapped service's answer, rewritten by [`rewrite`].
pub struct Rewrite<F>(F);

impl<F> Future for Rewrite<F>
where
    F: Future<Output = Result<Response<Body>, Infallible>> + Unpin,
{
    type Output = Result<Response<Body>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0)
            .poll(cx)
            .map(|result| result.map(rewrite))
    }
}

/// A trailers-only answer (tonic's form for a request refused before the
/// handler ran) carrying a decode or size failure becomes `INVALID_ARGUMENT`.
fn rewrite(response: Response<Body>) -> Response<Body> {
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let message = match status.code() {
        Code::Internal if status.message().starts_with(DECODE_FAILURE) => {
            format!("malformed RateLimitRequest: {}", status.message())
        }
        Code::OutOfRange if status.message().contains(TOO_LARGE) => format!(
            "request too large: {} (--max-message-bytes)",
            status.message()
        ),
        _ => return response,
    };
    Status::invalid_argument(message).into_http()
}
