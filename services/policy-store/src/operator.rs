//! OperatorService (operator key): the outbox's dead letters.

use portcullis_proto::policystore::v1 as pb;
use portcullis_proto::policystore::v1::operator_service_server::OperatorService;
use portcullis_storage::DeadLetter;
use portcullis_storage::events::timestamp;
use tonic::{Request, Response, Status};

use crate::PolicyStore;
use crate::convert::{page, page_response};
use crate::error::OrStatus;

#[tonic::async_trait]
impl OperatorService for PolicyStore {
    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let listed = self
            .store
            .list_dead_letters(&page(request.get_ref().page.clone()))
            .await
            .or_status()?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: listed.items.into_iter().map(dead_letter_to_proto).collect(),
            page: page_response(listed.next_token),
        }))
    }
}

fn dead_letter_to_proto(d: DeadLetter) -> pb::DeadLetter {
    pb::DeadLetter {
        id: d.id,
        payload_bytes: d.event.payload.len() as u64,
        event_id: d.event.event_id,
        tenant_id: d.event.tenant_id,
        topic: d.event.topic,
        reason: d.reason,
        created_at: Some(timestamp(d.event.created_at)),
        dead_at: Some(timestamp(d.dead_at)),
    }
}
