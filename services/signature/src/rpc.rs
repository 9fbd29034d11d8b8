//! `pc.rpc.signature.verify` over the bus: the same `VerifyRequest`/`VerifyResponse` as
//! gRPC, served in a queue group so that each request goes to one replica. The tenant is in
//! the message (the subject carries none) and is checked like any input; a request that
//! cannot be answered gets a response whose `error` says why.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis_bus::{Bus, BusError, IncomingRequest, RequestStream};
use portcullis_domain::topic::SIGNATURE_VERIFY_SUBJECT;
use portcullis_proto::common::v1 as pc;
use portcullis_proto::signature::v1 as ps;
use prost::Message as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::grpc::{Signature, cluster_sel, from_proto_request, to_proto_verification};
use crate::{RpcOptions, SignatureError};

/// Largest request accepted on the subject.
const MAX_REQUEST_BYTES: usize = 64 << 10;

/// Answers one encoded request.
pub async fn answer(signature: &Signature, payload: &[u8]) -> ps::VerifyResponse {
    match handle(signature, payload).await {
        Ok(response) => response,
        Err(e) => ps::VerifyResponse {
            error: Some(pc::ItemError {
                code: e.kind().grpc_code_number().try_into().unwrap_or(2),
                message: e.to_string(),
                field: String::new(),
            }),
            ..ps::VerifyResponse::default()
        },
    }
}

async fn handle(signature: &Signature, payload: &[u8]) -> Result<ps::VerifyResponse, SignatureError> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(SignatureError::InvalidArgument(format!(
            "the request is {} bytes, more than {MAX_REQUEST_BYTES}",
            payload.len()
        )));
    }
    let message = ps::VerifyRequest::decode(payload)
        .map_err(|e| SignatureError::InvalidArgument(format!("not a VerifyRequest: {e}")))?;
    let tenant = message.tenant_id.clone();
    let cluster = cluster_sel(message.cluster.clone())?;
    let request = from_proto_request(tenant, cluster, message);
    let verification = signature.verify(&request).await?;
    Ok(to_proto_verification(&verification))
}

/// Serves the subject in `options.queue_group` until `stop` (see [`serve_requests`]).
pub async fn serve(
    signature: Signature,
    bus: Bus,
    options: RpcOptions,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let requests = bus.serve(SIGNATURE_VERIFY_SUBJECT, &options.queue_group).await?;
    serve_requests(signature, requests, options, stop).await
}

/// Answers `requests`, at most `options.max_in_flight` at once, until the subscription ends
/// or `stop` is cancelled; returns after the requests in flight were answered.
pub async fn serve_requests(
    signature: Signature,
    mut requests: RequestStream,
    options: RpcOptions,
    stop: CancellationToken,
) -> Result<(), BusError> {
    let permits = Arc::new(Semaphore::new(options.max_in_flight.max(1)));
    let tracker = TaskTracker::new();
    loop {
        let request: IncomingRequest = tokio::select! {
            () = stop.cancelled() => break,
            next = requests.next() => match next {
                Some(request) => request,
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
                let response = answer(&signature, &request.payload).await;
                if let Err(e) = request.reply(Bytes::from(response.encode_to_vec())).await {
                    tracing::debug!(error = %e, "replying to a verification request failed");
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
