//! Protobuf ↔ domain at the edge: request fields checked with the field named
//! (InvalidArgument), domain values turned into messages.

use portcullis_engine::scan::{Finding, ScanResult, ScanType, Severity};
use portcullis_proto::common::v1 as pc;
use portcullis_proto::policystore::v1 as pb;
use portcullis_server::Caller;
use portcullis_server::status::invalid_field;
use portcullis_storage::events::{scan_type_to_proto, severity_to_proto, timestamp};
use portcullis_storage::{
    Actor, ApiKey, AuditEntry, Cluster, ClusterSettings, FailureMode, PageRequest, Policy, RegistryCredentialInfo,
    ResourceRef, Role, SettingsUpdate, StoredAttestor, StoredRuleset, Tenant, ToProto,
};
use time::OffsetDateTime;
use tonic::Status;

/// The tenant a request acts in and who acts: the preamble of every handler that writes.
pub fn acting<T>(request: &tonic::Request<T>) -> Result<(&str, Actor), Status> {
    let caller = Caller::of(request)?;
    Ok((caller.tenant()?, actor(caller)))
}

/// The store's actor for a caller: key id and role of a tenant key (none for the operator
/// and the service credential), with the call's trace context.
pub fn actor(caller: &Caller) -> Actor {
    Actor {
        key_id: caller.key_id().map(str::to_owned),
        role: caller.role(),
        traceparent: caller.trace.traceparent.clone(),
        tracestate: caller.trace.tracestate.clone(),
    }
}

/// A protobuf role: `None` for ROLE_UNSPECIFIED, InvalidArgument for an unknown number.
pub fn role_from_proto(field: &str, value: i32) -> Result<Option<Role>, Status> {
    match pc::Role::try_from(value) {
        Ok(pc::Role::Unspecified) => Ok(None),
        Ok(pc::Role::Admin) => Ok(Some(Role::Admin)),
        Ok(pc::Role::Editor) => Ok(Some(Role::Editor)),
        Ok(pc::Role::Viewer) => Ok(Some(Role::Viewer)),
        Ok(pc::Role::Connector) => Ok(Some(Role::Connector)),
        Err(_) => Err(invalid_field(field, format!("{value} is not a role"))),
    }
}

/// A required reference: InvalidArgument naming `field` when absent or empty.
pub fn required_ref(field: &str, value: Option<pc::ResourceRef>) -> Result<ResourceRef, Status> {
    optional_ref(field, value)?.ok_or_else(|| invalid_field(field, "required: an id or a name"))
}

/// Why a text with a NUL character is refused (PostgreSQL cannot store one).
const NUL_REFUSED: &str = "must not contain NUL characters";

/// An optional reference: `None` when absent; InvalidArgument when present but empty or
/// holding a NUL character.
pub fn optional_ref(field: &str, value: Option<pc::ResourceRef>) -> Result<Option<ResourceRef>, Status> {
    use pc::resource_ref::Ref;
    match value.and_then(|r| r.r#ref) {
        None => Ok(None),
        Some(Ref::Id(id)) if id.contains('\0') => Err(invalid_field(format!("{field}.id"), NUL_REFUSED)),
        Some(Ref::Name(name)) if name.contains('\0') => Err(invalid_field(format!("{field}.name"), NUL_REFUSED)),
        Some(Ref::Id(id)) if id.trim().is_empty() => Err(invalid_field(format!("{field}.id"), "must not be empty")),
        Some(Ref::Name(name)) if name.trim().is_empty() => {
            Err(invalid_field(format!("{field}.name"), "must not be empty"))
        }
        Some(Ref::Id(id)) => Ok(Some(ResourceRef::Id(id))),
        Some(Ref::Name(name)) => Ok(Some(ResourceRef::Name(name))),
    }
}

/// A required string field.
pub fn required_text<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        Err(invalid_field(field, "required"))
    } else {
        Ok(value)
    }
}

/// A free text of at most `max_bytes` (it may be empty), without NUL characters: what a
/// caller reports about itself, stored as given.
pub fn bounded_text<'a>(field: &str, value: &'a str, max_bytes: usize) -> Result<&'a str, Status> {
    if value.len() > max_bytes {
        Err(invalid_field(
            field,
            format!("is {} bytes; the limit is {max_bytes}", value.len()),
        ))
    } else if value.contains('\0') {
        Err(invalid_field(field, NUL_REFUSED))
    } else {
        Ok(value)
    }
}

/// Paging input (absent: the first page of the default size).
pub fn page(value: Option<pc::PageRequest>) -> PageRequest {
    let value = value.unwrap_or_default();
    PageRequest {
        size: value.page_size,
        token: Some(value.page_token).filter(|t| !t.is_empty()),
    }
}

/// Paging output.
pub fn page_response(next: Option<String>) -> Option<pc::PageResponse> {
    Some(pc::PageResponse {
        next_page_token: next.unwrap_or_default(),
    })
}

/// The latest timestamp taken, 9999-12-31T23:59:59Z: the store keeps times as microseconds
/// and adds durations to them, which must not overflow.
pub const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;

/// The longest duration taken (grace periods, lifetimes): ten years, in seconds. Added to any
/// accepted timestamp it stays within what a time can hold.
pub const MAX_DURATION_SECONDS: i64 = 10 * 365 * 86_400;

/// A protobuf timestamp as a time; InvalidArgument naming `field` when out of range
/// (before 1970 or after [`MAX_TIMESTAMP_SECONDS`], or nanos outside 0..1e9).
pub fn time_from(field: &str, value: &prost_types::Timestamp) -> Result<OffsetDateTime, Status> {
    let bad = || {
        invalid_field(
            field,
            "not a valid timestamp: seconds from 0 (1970) to 253402300799 (9999-12-31), nanos from 0 to 999999999",
        )
    };
    let nanos = u32::try_from(value.nanos).map_err(|_| bad())?;
    if nanos >= 1_000_000_000 || !(0..=MAX_TIMESTAMP_SECONDS).contains(&value.seconds) {
        return Err(bad());
    }
    let seconds = OffsetDateTime::from_unix_timestamp(value.seconds).map_err(|_| bad())?;
    seconds.replace_nanosecond(nanos).map_err(|_| bad())
}

/// An optional protobuf timestamp as a time.
pub fn optional_time(field: &str, value: Option<&prost_types::Timestamp>) -> Result<Option<OffsetDateTime>, Status> {
    value.map(|t| time_from(field, t)).transpose()
}

/// A protobuf duration: InvalidArgument naming `field` when negative or over
/// [`MAX_DURATION_SECONDS`].
pub fn duration_from(field: &str, value: &prost_types::Duration) -> Result<time::Duration, Status> {
    if value.seconds < 0 || value.nanos < 0 || value.nanos >= 1_000_000_000 {
        return Err(invalid_field(field, "must be a non-negative duration"));
    }
    if value.seconds > MAX_DURATION_SECONDS || (value.seconds == MAX_DURATION_SECONDS && value.nanos > 0) {
        return Err(invalid_field(
            field,
            format!("must be at most {MAX_DURATION_SECONDS} s (10 years)"),
        ));
    }
    Ok(time::Duration::new(value.seconds, value.nanos))
}

/// A failure mode: `None` for UNSPECIFIED.
pub fn failure_mode_from(field: &str, value: i32) -> Result<Option<FailureMode>, Status> {
    match pc::FailureMode::try_from(value) {
        Ok(pc::FailureMode::Unspecified) => Ok(None),
        Ok(pc::FailureMode::FailOpen) => Ok(Some(FailureMode::FailOpen)),
        Ok(pc::FailureMode::FailClosed) => Ok(Some(FailureMode::FailClosed)),
        Err(_) => Err(invalid_field(field, format!("{value} is not a failure mode"))),
    }
}

/// Most excluded namespaces a cluster may have: real clusters exclude a handful (system and
/// product namespaces); a namespace name is at most 63 bytes, so this bounds the list to ~64 KB.
pub const MAX_EXCLUDED_NAMESPACES: usize = 1000;
/// Most trusted images a cluster may have: the product's own components, a dozen or so.
pub const MAX_TRUSTED_IMAGES: usize = 256;
/// Longest trusted image reference, in bytes (a long registry host, a 255-character path
/// and a sha512 digest fit).
pub const MAX_TRUSTED_IMAGE_BYTES: usize = 1024;

/// Refuses settings lists longer than the limits above, naming the field and the limit:
/// with them a cluster's `cluster.changed` event stays far below the bus's 1 MiB limit
/// (about 330 KB at worst), so no settings change can make an event the bus refuses.
fn check_list_limits(s: &pb::ClusterSettings) -> Result<(), Status> {
    if s.excluded_namespaces.len() > MAX_EXCLUDED_NAMESPACES {
        return Err(invalid_field(
            "settings.excluded_namespaces",
            format!(
                "at most {MAX_EXCLUDED_NAMESPACES} namespaces; {} given",
                s.excluded_namespaces.len()
            ),
        ));
    }
    if s.trusted_images.len() > MAX_TRUSTED_IMAGES {
        return Err(invalid_field(
            "settings.trusted_images",
            format!("at most {MAX_TRUSTED_IMAGES} images; {} given", s.trusted_images.len()),
        ));
    }
    if let Some((i, image)) = s
        .trusted_images
        .iter()
        .enumerate()
        .find(|(_, image)| image.len() > MAX_TRUSTED_IMAGE_BYTES)
    {
        return Err(invalid_field(
            format!("settings.trusted_images[{i}]"),
            format!("at most {MAX_TRUSTED_IMAGE_BYTES} bytes; {} given", image.len()),
        ));
    }
    Ok(())
}

/// Initial cluster settings: absent fields take the defaults. (Protobuf cannot tell an
/// empty list from an absent one, so an empty list keeps the default.)
pub fn new_settings(value: Option<pb::ClusterSettings>) -> Result<SettingsUpdate, Status> {
    let Some(s) = value else {
        return Ok(SettingsUpdate::default());
    };
    check_list_limits(&s)?;
    Ok(SettingsUpdate {
        failure_mode: failure_mode_from("settings.failure_mode", s.failure_mode)?,
        excluded_namespaces: Some(s.excluded_namespaces).filter(|v| !v.is_empty()),
        trusted_images: Some(s.trusted_images).filter(|v| !v.is_empty()),
    })
}

/// Adds the seed images (`ServiceOptions::default_trusted_images`) to a new cluster's
/// trusted images, before those its registration gives, each once; the list limit still holds.
pub fn seed_trusted_images(settings: &mut SettingsUpdate, seed: &[String]) -> Result<(), Status> {
    if seed.is_empty() {
        return Ok(());
    }
    let given = settings.trusted_images.take().unwrap_or_default();
    let mut images: Vec<String> = Vec::with_capacity(seed.len() + given.len());
    for image in seed.iter().chain(&given) {
        if !images.contains(image) {
            images.push(image.clone());
        }
    }
    if images.len() > MAX_TRUSTED_IMAGES {
        return Err(invalid_field(
            "settings.trusted_images",
            format!(
                "at most {MAX_TRUSTED_IMAGES} images, the {} every cluster trusts by default included; {} in all",
                seed.len(),
                images.len()
            ),
        ));
    }
    settings.trusted_images = Some(images);
    Ok(())
}

/// A settings change under a field mask (an empty mask replaces every field; an
/// unspecified failure mode keeps the current one).
pub fn settings_update(
    value: Option<pb::ClusterSettings>,
    mask: Option<prost_types::FieldMask>,
) -> Result<SettingsUpdate, Status> {
    let s = value.unwrap_or_default();
    check_list_limits(&s)?;
    let paths = mask.map(|m| m.paths).unwrap_or_default();
    let mut update = SettingsUpdate::default();
    let failure_mode = failure_mode_from("settings.failure_mode", s.failure_mode)?;
    if paths.is_empty() {
        update.failure_mode = failure_mode;
        update.excluded_namespaces = Some(s.excluded_namespaces);
        update.trusted_images = Some(s.trusted_images);
        return Ok(update);
    }
    for (i, path) in paths.iter().enumerate() {
        match path.as_str() {
            "failure_mode" | "failureMode" => {
                update.failure_mode = Some(
                    failure_mode.ok_or_else(|| invalid_field("settings.failure_mode", "required by update_mask"))?,
                );
            }
            "excluded_namespaces" | "excludedNamespaces" => {
                update.excluded_namespaces = Some(s.excluded_namespaces.clone());
            }
            "trusted_images" | "trustedImages" => update.trusted_images = Some(s.trusted_images.clone()),
            other => {
                return Err(invalid_field(
                    format!("update_mask.paths[{i}]"),
                    format!("{other:?} is not a settings field (failure_mode, excluded_namespaces, trusted_images)"),
                ));
            }
        }
    }
    Ok(update)
}

/// A scan type: InvalidArgument naming `field` for UNSPECIFIED when `required`.
pub fn scan_type_from(field: &str, value: i32, required: bool) -> Result<Option<ScanType>, Status> {
    match pc::ScanType::try_from(value) {
        Ok(pc::ScanType::Unspecified) if required => Err(invalid_field(field, "required")),
        Ok(pc::ScanType::Unspecified) => Ok(None),
        Ok(pc::ScanType::Vulnerability) => Ok(Some(ScanType::Vulnerability)),
        Ok(pc::ScanType::Malware) => Ok(Some(ScanType::Malware)),
        Ok(pc::ScanType::Secret) => Ok(Some(ScanType::Secret)),
        Err(_) => Err(invalid_field(field, format!("{value} is not a scan type"))),
    }
}

fn severity_from(field: &str, value: i32) -> Result<Severity, Status> {
    match pc::Severity::try_from(value) {
        Ok(pc::Severity::None) => Ok(Severity::None),
        Ok(pc::Severity::Unknown) => Ok(Severity::Unknown),
        Ok(pc::Severity::Negligible) => Ok(Severity::Negligible),
        Ok(pc::Severity::Low) => Ok(Severity::Low),
        Ok(pc::Severity::Medium) => Ok(Severity::Medium),
        Ok(pc::Severity::High) => Ok(Severity::High),
        Ok(pc::Severity::Critical) => Ok(Severity::Critical),
        Ok(pc::Severity::Unspecified) => Err(invalid_field(field, "required")),
        Err(_) => Err(invalid_field(field, format!("{value} is not a severity"))),
    }
}

/// A native scan result message (under the request field `native`) as the engine's.
pub fn scan_result_from(value: pb::ScanResult) -> Result<ScanResult, Status> {
    let scan_type = scan_type_from("native.scan_type", value.scan_type, true)?
        .ok_or_else(|| invalid_field("native.scan_type", "required"))?;
    let scanned_at = value
        .scanned_at
        .as_ref()
        .ok_or_else(|| invalid_field("native.scanned_at", "required"))
        .and_then(|t| time_from("native.scanned_at", t))?;
    let findings = value
        .findings
        .into_iter()
        .enumerate()
        .map(|(i, f)| {
            Ok(Finding {
                severity: severity_from(&format!("native.findings[{i}].severity"), f.severity)?,
                id: f.id,
                cvss_v3_vector: f.cvss_v3_vector,
                fixed_version: f.fixed_version,
            })
        })
        .collect::<Result<Vec<_>, Status>>()?;
    Ok(ScanResult {
        digest: value.digest,
        scan_type,
        scanned_at,
        scanner: value.scanner,
        findings,
    })
}

/// The engine's scan result as a message.
pub fn scan_result_to_proto(
    id: &str,
    result: &ScanResult,
    image: &str,
    uploaded_at: OffsetDateTime,
    uploader: &str,
) -> pb::ScanResult {
    pb::ScanResult {
        id: id.to_owned(),
        digest: result.digest.clone(),
        scan_type: scan_type_to_proto(result.scan_type) as i32,
        scanned_at: Some(timestamp(result.scanned_at)),
        scanner: result.scanner.clone(),
        findings: result
            .findings
            .iter()
            .map(|f| pb::ScanFinding {
                id: f.id.clone(),
                severity: severity_to_proto(f.severity) as i32,
                cvss_v3_vector: f.cvss_v3_vector.clone(),
                fixed_version: f.fixed_version.clone(),
            })
            .collect(),
        image: image.to_owned(),
        uploaded_at: Some(timestamp(uploaded_at)),
        uploader_key_id: uploader.to_owned(),
    }
}

/// A policy as a message.
pub fn policy_to_proto(p: Policy) -> pb::Policy {
    pb::Policy {
        id: p.id,
        name: p.name,
        revision: p.revision,
        document_json: p.document_json,
        description: p.description,
        author_key_id: p.author_key_id,
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

/// A ruleset as a message.
pub fn ruleset_to_proto(r: StoredRuleset) -> pb::Ruleset {
    pb::Ruleset {
        id: r.id,
        name: r.name,
        revision: r.revision,
        document_json: r.document_json,
        description: r.description,
        rule_count: r.rule_count,
        author_key_id: r.author_key_id,
        created_at: Some(timestamp(r.created_at)),
        updated_at: Some(timestamp(r.updated_at)),
    }
}

/// An attestor as a message.
pub fn attestor_to_proto(a: StoredAttestor) -> pb::Attestor {
    pb::Attestor {
        id: a.id,
        name: a.name,
        revision: a.revision,
        document_json: a.document_json,
        description: a.description,
        attestor_type: a.attestor_type,
        author_key_id: a.author_key_id,
        created_at: Some(timestamp(a.created_at)),
        updated_at: Some(timestamp(a.updated_at)),
    }
}

/// Cluster settings as a message.
pub fn settings_to_proto(s: &ClusterSettings) -> pb::ClusterSettings {
    s.to_proto()
}

/// A cluster as a message (its registries empty: [`with_registries`] fills them).
pub fn cluster_to_proto(c: Cluster) -> pb::Cluster {
    pb::Cluster {
        id: c.id,
        name: c.name,
        description: c.description,
        policy_id: c.policy_id.unwrap_or_default(),
        policy_name: c.policy_name.unwrap_or_default(),
        settings: Some(settings_to_proto(&c.settings)),
        last_seen_at: c.last_seen_at.map(timestamp),
        connector_version: c.connector_version,
        created_at: Some(timestamp(c.created_at)),
        updated_at: Some(timestamp(c.updated_at)),
        generation: c.generation,
        credential_registries: Vec::new(),
        registry_credentials: Vec::new(),
    }
}

/// `cluster` with the registries that have stored credentials: hosts and usernames, never
/// the secrets (which the listing does not hold).
pub fn with_registries(mut cluster: pb::Cluster, registries: Vec<RegistryCredentialInfo>) -> pb::Cluster {
    cluster.credential_registries = registries.iter().map(|c| c.registry.clone()).collect();
    cluster.registry_credentials = registries
        .into_iter()
        .map(|c| pb::RegistryCredentialInfo {
            registry: c.registry,
            username: c.username,
            updated_at: Some(timestamp(c.updated_at)),
        })
        .collect();
    cluster
}

/// An API key (never its secret) as a message.
pub fn api_key_to_proto(k: ApiKey) -> pb::ApiKey {
    let expiry = k.effective_expiry();
    pb::ApiKey {
        id: k.id,
        description: k.description,
        role: k.role.to_proto() as i32,
        cluster_id: k.cluster_id.unwrap_or_default(),
        secret_prefix: k.secret_prefix,
        created_at: Some(timestamp(k.created_at)),
        // A rotated connector key stops at the end of its grace period: that is its expiry.
        expires_at: expiry.map(timestamp),
        last_used_at: k.last_used_at.map(timestamp),
        revoked_at: k.revoked_at.map(timestamp),
        created_by_key_id: k.created_by_key_id.unwrap_or_default(),
    }
}

/// A tenant as a message.
pub fn tenant_to_proto(t: Tenant) -> pb::Tenant {
    pb::Tenant {
        id: t.id,
        name: t.name,
        created_at: Some(timestamp(t.created_at)),
    }
}

/// An audit entry as a message.
pub fn audit_to_proto(e: AuditEntry) -> pb::AuditEntry {
    pb::AuditEntry {
        id: e.id,
        time: Some(timestamp(e.time)),
        actor_key_id: e.actor_key_id,
        actor_role: e.actor_role.map_or(pc::Role::Unspecified, Role::to_proto) as i32,
        action: e.action,
        resource_type: e.resource_type,
        resource_id: e.resource_id,
        resource_name: e.resource_name,
        details_json: e.details_json,
        trace_id: e.trace_id,
    }
}
