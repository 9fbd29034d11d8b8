//! `pc.rpc.signature.verify` and `pc.rpc.signature.resolve` over the bus: the same
//! `VerifyRequest`/`VerifyResponse` and `ResolveDigestRequest`/`ResolveDigestResponse` as
//! gRPC, served in one queue group so that each request goes to one replica. The tenant is
//! in the message (the subject carries none) and is checked like any input; a request that
//! cannot be answered gets a response whose `error` says why (for a resolution, NotFound
//! when the registry has no such image, so callers tell it from an outage).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis_bus::{Bus, BusError, IncomingRequest, RequestStream};
use portcullis_domain::topic::{SIGNATURE_RESOLVE_SUBJECT, SIGNATURE_VERIFY_SUBJECT};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::signature::v1 as ps;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::grpc::{Signature, cluster_sel, from_proto_request, to_proto_resolution, to_proto_verification};
use crate::{RpcOptions, SignatureError};

/// Largest request accepted on the subject.
const MAX_REQUEST_BYTES: usize = 64 << 10;

/// The error of a request that could not be answered, as the bus carries it.
fn item_error(e: &SignatureError) -> pc::ItemError {
    pc::ItemError {
        code: e.kind().grpc_code_number().try_into().unwrap_or(2),
        message: e.to_string(),
        field: String::new(),
    }
}

/// The checks every request on the subjects gets before it is decoded.
fn check_size(payload: &[u8]) -> Result<(), SignatureError> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(SignatureError::InvalidArgument(format!(
            "the request is {} bytes, more than {MAX_REQUEST_BYTES}",
            payload.len()
        )));
    }
    Ok(())
}

/// Answers one encoded verification request.
pub async fn answer(signature: &Signature, payload: &[u8]) -> ps::VerifyResponse {
    match handle(signature, payload).await {
        Ok(response) => response,
        Err(e) => ps::VerifyResponse {
            error: Some(item_error(&e)),
            ..ps::VerifyResponse::default()
        },
    }
}

async fn handle(signature: &Signature, payload: &[u8]) -> Result<ps::VerifyResponse, SignatureError> {
    check_size(payload)?;
    let message = ps::VerifyRequest::decode(payload)
        .map_err(|e| SignatureError::InvalidArgument(format!("not a VerifyRequest: {e}")))?;
    let tenant = message.tenant_id.clone();
    let cluster = cluster_sel(message.cluster.clone())?;
    let request = from_proto_request(tenant, cluster, message);
    let verification = signature.verify(&request).await?;
    Ok(to_proto_verification(&verification))
}

/// Answers one encoded resolution request: the digest, or an `error` whose code tells a
/// registry that has no such image (NotFound) from one that could not be asked.
pub async fn answer_resolve(signature: &Signature, payload: &[u8]) -> ps::ResolveDigestResponse {
    let mut image = String::new();
    match handle_resolve(signature, payload, &mut image).await {
        Ok(response) => response,
        Err(e) => ps::ResolveDigestResponse {
            image,
            error: Some(item_error(&e)),
            ..ps::ResolveDigestResponse::default()
        },
    }
}

async fn handle_resolve(
    signature: &Signature,
    payload: &[u8],
    image: &mut String,
) -> Result<ps::ResolveDigestResponse, SignatureError> {
    check_size(payload)?;
    let message = ps::ResolveDigestRequest::decode(payload)
        .map_err(|e| SignatureError::InvalidArgument(format!("not a ResolveDigestRequest: {e}")))?;
    image.clone_from(&message.image);
    // The same tenant check as a verification's.
    crate::verify::validate_tenant(&message.tenant_id)?;
    let cluster = cluster_sel(message.cluster)?;
    let resolution = signature
        .resolve(&message.tenant_id, cluster.as_ref(), &message.image)
        .await?;
    Ok(to_proto_resolution(resolution))
}

/// Serves both subjects in `options.queue_group` until `stop` (see [`serve_requests`]).
pub async fn serve(
    signature: Signature,
    bus: Bus,
    options: RpcOptions,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let verify = bus.serve(SIGNATURE_VERIFY_SUBJECT, &options.queue_group).await?;
    let resolve = bus.serve(SIGNATURE_RESOLVE_SUBJECT, &options.queue_group).await?;
    serve_requests(signature, verify, resolve, options, stop).await
}

/// Which subject a request came on.
#[derive(Clone, Copy)]
enum Method {
    Verify,
    Resolve,
}

/// Answers the requests of both subjects, at most `options.max_in_flight` at once in all,
/// until a subscription ends or `stop` is cancelled; returns after the requests in flight
/// were answered.
pub async fn serve_requests(
    signature: Signature,
    mut verify: RequestStream,
    mut resolve: RequestStream,
    options: RpcOptions,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let permits = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let (method, request): (Method, IncomingRequest) = tokio::select! {
            () = stop.cancelled() => break,
            next = verify.next() => match next {
                Some(request) => (Method::Verify, request),
                None => break,
            },
            next = resolve.next() => match next {
                Some(request) => (Method::Resolve, request),
                None => break,
            },
        };
        // Waiting here leaves further requests in the subscription's bounded buffer.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let signature = signature.clone();
        // A child of the asker's span (admission's review) when its context came along.
        let span = portcullis_kit::trace::request_span(&request.subject, &request.headers);
        tracker.spawn(
            async move {
                let response = match method {
                    Method::Verify => answer(&signature, &request.payload).await.encode_to_vec(),
                    Method::Resolve => answer_resolve(&signature, &request.payload).await.encode_to_vec(),
                };
                if let Err(e) = request.reply(Bytes::from(response)).await {
                    let subject = match method {
                        Method::Verify => SIGNATURE_VERIFY_SUBJECT,
                        Method::Resolve => SIGNATURE_RESOLVE_SUBJECT,
                    };
                    tracing::debug!(error = %e, subject, "replying to a request failed");
                }
                drop(permit);
            }
            .instrument(span),
        );
    }
    tracker.close();
    tracker.wait().await;
    Ok(())
}

/// Asks the service over the bus (admission's path), waiting at most `timeout`.
pub async fn request(
    bus: &Bus,
    request: &ps::VerifyRequest,
    timeout: Duration,
) -> Result<ps::VerifyResponse, SignatureError> {
    let reply = bus
        .request_with_headers(
            SIGNATURE_VERIFY_SUBJECT,
            portcullis_kit::trace::current_headers(),
            Bytes::from(request.encode_to_vec()),
            timeout,
        )
        .await
        .map_err(|e| SignatureError::Unavailable(format!("the signature service: {e}")))?;
    let response = ps::VerifyResponse::decode(reply)
        .map_err(|e| SignatureError::Internal(format!("the signature service's reply: {e}")))?;
    if let Some(error) = &response.error {
        return Err(SignatureError::Unavailable(format!(
            "the signature service refused the request (code {}): {}",
            error.code, error.message
        )));
    }
    Ok(response)
}
