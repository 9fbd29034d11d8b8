//! The outermost layer of every gRPC server: a panic in a handler (or in a layer under this
//! one) answers that call `Internal` and the server goes on serving, instead of a reset stream
//! and a lost task; and an error status whose message or details would not fit a client's
//! header limits (a message quoting a 64 KB field) is cut to size, so that it still arrives.

use std::any::Any;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

use futures::FutureExt as _;
use http::{Request, Response};
use tonic::body::Body;
use tonic::{Code, Status};
use tower::{Layer, Service};

use crate::auth::BoxFuture;

/// The longest status message sent, in bytes (before percent-encoding); longer ones are cut.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2048;
/// The largest status details sent (`grpc-status-details-bin`, encoded); larger ones are
/// dropped (the message still names the problem).
pub const MAX_STATUS_DETAILS_BYTES: usize = 8192;

/// Catches panics and bounds error statuses (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardLayer;

impl<S> Layer<S> for GuardLayer {
    type Service = GuardService<S>;

    fn layer(&self, inner: S) -> GuardService<S> {
        GuardService { inner }
    }
}

/// The service [`GuardLayer`] makes.
#[derive(Debug, Clone)]
pub struct GuardService<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for GuardService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let path = request.uri().path().to_owned();
        Box::pin(async move {
            let future = match std::panic::catch_unwind(AssertUnwindSafe(|| inner.call(request))) {
                Ok(future) => future,
                Err(panic) => return Ok(panicked(&path, panic.as_ref())),
            };
            match AssertUnwindSafe(future).catch_unwind().await {
                Ok(Ok(response)) => Ok(bounded(response)),
                Ok(Err(never)) => match never {},
                Err(panic) => Ok(panicked(&path, panic.as_ref())),
            }
        })
    }
}

/// The answer to a call whose handler panicked: `Internal`, the panic logged.
fn panicked(path: &str, panic: &(dyn Any + Send)) -> Response<Body> {
    let message = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)");
    tracing::error!(method = path, panic = message, "a handler panicked; answered Internal");
    Status::internal("internal error: the call failed on the server (a bug, logged); other calls are unaffected")
        .into_http()
}

/// `response`, its error status cut to [`MAX_STATUS_MESSAGE_BYTES`] and
/// [`MAX_STATUS_DETAILS_BYTES`] when over them.
fn bounded(response: Response<Body>) -> Response<Body> {
    let headers = response.headers();
    let message_len = headers.get("grpc-message").map_or(0, |v| v.len());
    let details_len = headers.get("grpc-status-details-bin").map_or(0, |v| v.len());
    // Percent-encoding at most triples a message: only a long header can hold a long one.
    if message_len <= MAX_STATUS_MESSAGE_BYTES && details_len <= MAX_STATUS_DETAILS_BYTES {
        return response;
    }
    let Some(status) = Status::from_header_map(headers) else {
        return response;
    };
    if status.code() == Code::Ok {
        return response;
    }
    let message = cut(status.message(), MAX_STATUS_MESSAGE_BYTES);
    let bounded = if status.details().len() <= MAX_STATUS_DETAILS_BYTES * 3 / 4 {
        Status::with_details(status.code(), message, status.details().to_vec().into())
    } else {
        Status::new(status.code(), message)
    };
    bounded.into_http()
}

/// `text` cut to at most `max` bytes at a character boundary, marked as cut.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} bytes cut)",
        text.get(..end).unwrap_or_default(),
        text.len() - end
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;

    /// A service that panics while handling, or answers `status`.
    #[derive(Clone)]
    struct Handler(Option<Status>);

    impl Service<Request<Body>> for Handler {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            let status = self.0.clone();
            Box::pin(async move {
                match status {
                    Some(status) => Ok(status.into_http()),
                    None => panic!("a handler bug"),
                }
            })
        }
    }

    async fn answer(handler: Handler) -> Status {
        let mut service = GuardLayer.layer(handler);
        let response = service.call(Request::new(Body::empty())).await.unwrap();
        Status::from_header_map(response.headers()).unwrap()
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_internal() {
        let status = answer(Handler(None)).await;
        assert_eq!(status.code(), Code::Internal);
        assert!(status.message().contains("internal error"), "{}", status.message());
    }

    #[tokio::test]
    async fn long_status_messages_are_cut_and_short_ones_kept() {
        let long = format!("name: {:?} not found", "名".repeat(30_000));
        let status = answer(Handler(Some(Status::not_found(long)))).await;
        assert_eq!(status.code(), Code::NotFound);
        assert!(
            status.message().len() < MAX_STATUS_MESSAGE_BYTES + 40,
            "{}",
            status.message().len()
        );
        assert!(status.message().ends_with("bytes cut)"), "{}", status.message());
        let status = answer(Handler(Some(Status::not_found("policy \"p\" not found")))).await;
        assert_eq!(status.message(), "policy \"p\" not found");
    }
}
