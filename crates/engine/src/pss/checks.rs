//! The checks, one function each, as PSA v1.37 runs them.
//!
//! Container names and values are gathered as borrowed `&str` in vectors that stay empty (and
//! so unallocated) while a pod passes; strings are built only for a failure.

use std::ops::Bound;

use super::text::{go_quote, join_quote, named, once_each, pluralize, sorted_set};
use super::{CheckFailure, CheckId, Scope};
use crate::evaluate::DEFAULT_CAPABILITIES;
use crate::k8s::{
    Container, Handler, ObjectMeta, PodSecurityContext, PodSpec, Profile, SeLinuxOptions, SecurityContext,
};

/// Whether a baseline container may add `cap`: the container runtime's defaults minus NET_RAW.
fn baseline_allows(cap: &str) -> bool {
    cap != "NET_RAW" && DEFAULT_CAPABILITIES.contains(&cap)
}

/// Sysctls allowed at v1.37 (the "safe" set grown through 1.27, 1.29, 1.32 and 1.37).
const ALLOWED_SYSCTLS: [&str; 14] = [
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.ipv4.tcp_slow_start_after_idle",
    "net.ipv4.tcp_notsent_lowat",
];

/// SELinux types allowed at v1.31+ (empty means unset).
const ALLOWED_SELINUX_TYPES: [&str; 5] = [
    "",
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// Volume sources the restricted level allows (with the restricted ones below: every
/// `VolumeSource` field of Kubernetes core/v1).
const ALLOWED_VOLUME_SOURCES: [&str; 9] = [
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Restricted volume sources, in the order PSA's switch tests them (the first set names the type).
const RESTRICTED_VOLUME_SOURCES: [&str; 21] = [
    "hostPath",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "gitRepo",
    "nfs",
    "iscsi",
    "glusterfs",
    "rbd",
    "flexVolume",
    "cinder",
    "cephfs",
    "flocker",
    "fc",
    "azureFile",
    "vsphereVolume",
    "quobyte",
    "azureDisk",
    "photonPersistentDisk",
    "portworxVolume",
    "scaleIO",
    "storageos",
];

use crate::k8s::APPARMOR_ANNOTATION_PREFIX;

fn sc(c: &Container) -> Option<&SecurityContext> {
    c.security_context.as_deref()
}

/// The pod security context, only when pod-level fields are in scope.
fn pod_sc<'p>(spec: &'p PodSpec, scope: &Scope<'_>) -> Option<&'p PodSecurityContext> {
    if scope.pod_level {
        spec.security_context.as_deref()
    } else {
        None
    }
}

/// PSA relaxes some checks for pods in a user namespace (`hostUsers: false`).
fn user_namespace(spec: &PodSpec) -> bool {
    spec.host_users == Some(false)
}

fn failure(
    id: CheckId,
    reason: &'static str,
    detail: String,
    containers: &[&str],
    pod_level: bool,
) -> Option<CheckFailure> {
    Some(CheckFailure {
        id,
        reason,
        detail,
        containers: once_each(containers),
        pod_level,
    })
}

/// `pod and containers "a"`-style list of setters.
fn setters(pod: bool, containers: &[&str]) -> String {
    match (pod, containers.is_empty()) {
        (true, true) => "pod".to_owned(),
        (true, false) => ["pod and ", named("container", "containers", containers).as_str()].concat(),
        (false, _) => named("container", "containers", containers),
    }
}

/// `allowPrivilegeEscalation` (1.25+: Windows pods are exempt).
pub(super) fn allow_privilege_escalation(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if spec.is_windows() {
        return None;
    }
    let bad = scope.containers_where(spec, |c| {
        sc(c).and_then(|s| s.allow_privilege_escalation) != Some(false)
    });
    if bad.is_empty() {
        return None;
    }
    let detail = [
        named("container", "containers", &bad).as_str(),
        " must set securityContext.allowPrivilegeEscalation=false",
    ]
    .concat();
    failure(
        CheckId::AllowPrivilegeEscalation,
        "allowPrivilegeEscalation != false",
        detail,
        &bad,
        false,
    )
}

fn allowed_app_armor_type(t: &str) -> bool {
    matches!(t, "RuntimeDefault" | "Localhost")
}

fn allowed_app_armor_annotation(v: &str) -> bool {
    v.is_empty() || v == "runtime/default" || v.starts_with("localhost/")
}

/// `appArmorProfile`: profile types and the deprecated annotations.
pub(super) fn app_armor_profile(meta: &ObjectMeta, spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let mut values: Vec<&str> = Vec::new();
    let pod_bad = match pod_sc(spec, scope).and_then(|s| s.app_armor_profile.as_ref()) {
        Some(p) if !allowed_app_armor_type(&p.type_) => {
            values.push(&p.type_);
            true
        }
        _ => false,
    };
    let mut bad: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        if let Some(p) = sc(c).and_then(|s| s.app_armor_profile.as_ref())
            && !allowed_app_armor_type(&p.type_)
        {
            bad.push(&c.name);
            values.push(&p.type_);
        }
    }
    let mut annotations: Vec<(&str, &str)> = Vec::new();
    if scope.pod_level {
        // The map is sorted: the prefixed keys are one contiguous range.
        let prefixed = meta
            .annotations
            .range::<str, _>((Bound::Included(APPARMOR_ANNOTATION_PREFIX), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(APPARMOR_ANNOTATION_PREFIX));
        for (k, v) in prefixed {
            if !allowed_app_armor_annotation(v) {
                annotations.push((k.as_str(), v.as_str()));
            }
        }
    }
    if !pod_bad && bad.is_empty() && annotations.is_empty() {
        return None;
    }
    let mut who: Vec<String> = Vec::new();
    if pod_bad {
        who.push("pod".to_owned());
    }
    if !bad.is_empty() {
        who.push(named("container", "containers", &bad));
    }
    let mut value_list: Vec<String> = sorted_set(values).into_iter().map(str::to_owned).collect();
    if !annotations.is_empty() {
        let mut forbidden: Vec<String> = annotations
            .iter()
            .map(|(k, v)| format!("{k}={}", go_quote(v)))
            .collect();
        forbidden.sort_unstable();
        who.push(pluralize("annotation", "annotations", forbidden.len()).to_owned());
        value_list.extend(forbidden);
    }
    let reason = pluralize(
        "forbidden AppArmor profile",
        "forbidden AppArmor profiles",
        value_list.len(),
    );
    let detail = format!(
        "{} must not set AppArmor profile type to {}",
        who.join(" and "),
        join_quote(&value_list)
    );
    failure(
        CheckId::AppArmorProfile,
        reason,
        detail,
        &bad,
        pod_bad || !annotations.is_empty(),
    )
}

/// `capabilities_baseline`: only default capabilities (minus NET_RAW) may be added.
pub(super) fn capabilities_baseline(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let mut bad: Vec<&str> = Vec::new();
    let mut caps: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        let Some(capabilities) = sc(c).and_then(|s| s.capabilities.as_ref()) else {
            continue;
        };
        let mut valid = true;
        for cap in &capabilities.add {
            if !baseline_allows(cap) {
                valid = false;
                caps.push(cap);
            }
        }
        if !valid {
            bad.push(&c.name);
        }
    }
    if bad.is_empty() {
        return None;
    }
    let detail = format!(
        "{} must not include {} in securityContext.capabilities.add",
        named("container", "containers", &bad),
        join_quote(&sorted_set(caps))
    );
    failure(
        CheckId::CapabilitiesBaseline,
        "non-default capabilities",
        detail,
        &bad,
        false,
    )
}

/// `capabilities_restricted`: drop ALL, add nothing but NET_BIND_SERVICE (1.25+: Windows
/// pods are exempt).
pub(super) fn capabilities_restricted(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if spec.is_windows() {
        return None;
    }
    let mut missing_drop: Vec<&str> = Vec::new();
    let mut adding: Vec<&str> = Vec::new();
    let mut caps: Vec<&str> = Vec::new();
    // Both lists in one visiting order, for `CheckFailure::containers`.
    let mut offending: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        let Some(capabilities) = sc(c).and_then(|s| s.capabilities.as_ref()) else {
            missing_drop.push(&c.name);
            offending.push(&c.name);
            continue;
        };
        let mut is_bad = false;
        if !capabilities.drop.iter().any(|d| d == "ALL") {
            missing_drop.push(&c.name);
            is_bad = true;
        }
        let mut added_forbidden = false;
        for cap in &capabilities.add {
            if cap != "NET_BIND_SERVICE" {
                added_forbidden = true;
                caps.push(cap);
            }
        }
        if added_forbidden {
            adding.push(&c.name);
            is_bad = true;
        }
        if is_bad {
            offending.push(&c.name);
        }
    }
    if offending.is_empty() {
        return None;
    }
    let mut details: Vec<String> = Vec::with_capacity(2);
    if !missing_drop.is_empty() {
        details.push(
            [
                named("container", "containers", &missing_drop).as_str(),
                r#" must set securityContext.capabilities.drop=["ALL"]"#,
            ]
            .concat(),
        );
    }
    if !adding.is_empty() {
        details.push(format!(
            "{} must not include {} in securityContext.capabilities.add",
            named("container", "containers", &adding),
            join_quote(&sorted_set(caps))
        ));
    }
    failure(
        CheckId::CapabilitiesRestricted,
        "unrestricted capabilities",
        details.join("; "),
        &offending,
        false,
    )
}

/// `hostNamespaces`: hostNetwork, hostPID, hostIPC (pod-level).
pub(super) fn host_namespaces(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if !scope.pod_level {
        return None;
    }
    let set = [
        (spec.host_network, "hostNetwork=true"),
        (spec.host_pid, "hostPID=true"),
        (spec.host_ipc, "hostIPC=true"),
    ];
    if !set.iter().any(|(v, _)| *v == Some(true)) {
        return None;
    }
    let detail: Vec<&str> = set.iter().filter(|(v, _)| *v == Some(true)).map(|(_, s)| *s).collect();
    failure(CheckId::HostNamespaces, "host namespaces", detail.join(", "), &[], true)
}

/// `hostPathVolumes` (pod-level).
pub(super) fn host_path_volumes(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if !scope.pod_level {
        return None;
    }
    let mut bad: Vec<&str> = Vec::new();
    for v in &spec.volumes {
        if v.has_source("hostPath") {
            bad.push(&v.name);
        }
    }
    if bad.is_empty() {
        return None;
    }
    failure(
        CheckId::HostPathVolumes,
        "hostPath volumes",
        named("volume", "volumes", &bad),
        &[],
        true,
    )
}

/// `hostPorts`: no non-zero hostPort.
pub(super) fn host_ports(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let mut bad: Vec<&str> = Vec::new();
    let mut ports: Vec<i64> = Vec::new();
    for c in scope.containers(spec) {
        let mut valid = true;
        for p in &c.ports {
            if let Some(port) = p.host_port
                && port != 0
            {
                valid = false;
                ports.push(port);
            }
        }
        if !valid {
            bad.push(&c.name);
        }
    }
    if bad.is_empty() {
        return None;
    }
    // PSA keeps the ports as a set of strings, so they sort as text.
    let port_text: Vec<String> = ports.iter().map(i64::to_string).collect();
    let port_list = sorted_set(port_text.iter().map(String::as_str).collect());
    let detail = format!(
        "{} {} {} {}",
        named("container", "containers", &bad),
        pluralize("uses", "use", bad.len()),
        pluralize("hostPort", "hostPorts", port_list.len()),
        port_list.join(", ")
    );
    failure(CheckId::HostPorts, "hostPort", detail, &bad, false)
}

/// Non-empty hosts of a probe or lifecycle handler: httpGet, then tcpSocket.
fn handler_hosts<'c>(handler: Option<&'c Handler>, out: &mut Vec<&'c str>) -> bool {
    let Some(h) = handler else { return false };
    let mut found = false;
    for host in [h.http_get.as_ref(), h.tcp_socket.as_ref()]
        .into_iter()
        .flatten()
        .filter_map(|f| f.host.as_deref())
    {
        if !host.is_empty() {
            out.push(host);
            found = true;
        }
    }
    found
}

/// `hostProbesAndHostLifecycle` (1.34+): no `host` in probes or lifecycle handlers.
pub(super) fn host_probes_and_host_lifecycle(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let mut bad: Vec<&str> = Vec::new();
    let mut hosts: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        let lifecycle = c.lifecycle.as_deref();
        let mut found = false;
        for handler in [
            c.liveness_probe.as_deref(),
            c.readiness_probe.as_deref(),
            c.startup_probe.as_deref(),
            lifecycle.and_then(|l| l.post_start.as_ref()),
            lifecycle.and_then(|l| l.pre_stop.as_ref()),
        ] {
            found |= handler_hosts(handler, &mut hosts);
        }
        if found {
            bad.push(&c.name);
        }
    }
    if bad.is_empty() {
        return None;
    }
    // PSA keeps both as sets: the detail lists them sorted and once each.
    let names = sorted_set(bad.clone());
    let hosts = sorted_set(hosts);
    let detail = format!(
        "{} {} {} {}",
        named("container", "containers", &names),
        pluralize("uses", "use", names.len()),
        pluralize("probe or lifecycle host", "probe or lifecycle hosts", hosts.len()),
        join_quote(&hosts)
    );
    failure(
        CheckId::HostProbesAndHostLifecycle,
        "probe or lifecycle host",
        detail,
        &bad,
        false,
    )
}

/// `privileged`.
pub(super) fn privileged(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let bad = scope.containers_where(spec, |c| sc(c).and_then(|s| s.privileged) == Some(true));
    if bad.is_empty() {
        return None;
    }
    let detail = [
        named("container", "containers", &bad).as_str(),
        " must not set securityContext.privileged=true",
    ]
    .concat();
    failure(CheckId::Privileged, "privileged", detail, &bad, false)
}

/// `procMount` (baseline, 1.35+): any value is allowed in a user namespace.
pub(super) fn proc_mount_baseline(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if user_namespace(spec) {
        return None;
    }
    proc_mount(CheckId::ProcMount, spec, scope)
}

/// The unconditional procMount check: `procMount_restricted`, and `procMount` outside user
/// namespaces.
pub(super) fn proc_mount(id: CheckId, spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let mut bad: Vec<&str> = Vec::new();
    let mut types: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        if let Some(pm) = sc(c).and_then(|s| s.proc_mount.as_deref())
            && pm != "Default"
        {
            bad.push(&c.name);
            types.push(pm);
        }
    }
    if bad.is_empty() {
        return None;
    }
    let detail = format!(
        "{} must not set securityContext.procMount to {}",
        named("container", "containers", &bad),
        join_quote(&sorted_set(types))
    );
    failure(id, "procMount", detail, &bad, false)
}

/// `restrictedVolumes` (pod-level): only the allowed inline volume sources.
pub(super) fn restricted_volumes(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if !scope.pod_level {
        return None;
    }
    let mut bad: Vec<&str> = Vec::new();
    let mut types: Vec<&str> = Vec::new();
    for v in &spec.volumes {
        if ALLOWED_VOLUME_SOURCES.iter().any(|s| v.has_source(s)) {
            continue;
        }
        // A volume with no known source is defaulted to emptyDir by the API server before
        // PSA sees it (PSA's own pass fixture relies on this), so only a restricted source
        // fails; PSA's "unknown" type cannot occur, the two lists covering every source.
        if let Some(kind) = RESTRICTED_VOLUME_SOURCES.iter().copied().find(|s| v.has_source(s)) {
            bad.push(&v.name);
            types.push(kind);
        }
    }
    if bad.is_empty() {
        return None;
    }
    let types = sorted_set(types);
    let detail = format!(
        "{} {} {} {}",
        named("volume", "volumes", &bad),
        pluralize("uses", "use", bad.len()),
        pluralize("restricted volume type", "restricted volume types", types.len()),
        join_quote(&types)
    );
    failure(CheckId::RestrictedVolumes, "restricted volume types", detail, &[], true)
}

/// `runAsNonRoot` (1.35+: skipped in a user namespace).
pub(super) fn run_as_non_root(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if user_namespace(spec) {
        return None;
    }
    // The pod's value is inherited by containers whether or not the pod level is in scope.
    let pod_value = spec.security_context.as_ref().and_then(|s| s.run_as_non_root);
    let pod_bad = scope.pod_level && pod_value == Some(false);
    let mut explicit: Vec<&str> = Vec::new();
    let mut implicit: Vec<&str> = Vec::new();
    // Both, in visiting order: a container that leaves it unset is at fault too.
    let mut offending: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        match sc(c).and_then(|s| s.run_as_non_root) {
            Some(false) => {
                explicit.push(&c.name);
                offending.push(&c.name);
            }
            Some(true) => {}
            None if pod_value != Some(true) => {
                implicit.push(&c.name);
                offending.push(&c.name);
            }
            None => {}
        }
    }
    if pod_bad || !explicit.is_empty() {
        let detail = [
            setters(pod_bad, &explicit).as_str(),
            " must not set securityContext.runAsNonRoot=false",
        ]
        .concat();
        return failure(
            CheckId::RunAsNonRoot,
            "runAsNonRoot != true",
            detail,
            &offending,
            pod_bad,
        );
    }
    if implicit.is_empty() {
        return None;
    }
    let detail = [
        "pod or ",
        named("container", "containers", &implicit).as_str(),
        " must set securityContext.runAsNonRoot=true",
    ]
    .concat();
    failure(CheckId::RunAsNonRoot, "runAsNonRoot != true", detail, &offending, false)
}

/// `runAsUser` (1.35+: skipped in a user namespace): no `runAsUser: 0`.
pub(super) fn run_as_user(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if user_namespace(spec) {
        return None;
    }
    let pod_bad = pod_sc(spec, scope).and_then(|s| s.run_as_user) == Some(0);
    let bad = scope.containers_where(spec, |c| sc(c).and_then(|s| s.run_as_user) == Some(0));
    if !pod_bad && bad.is_empty() {
        return None;
    }
    let detail = [setters(pod_bad, &bad).as_str(), " must not set runAsUser=0"].concat();
    failure(CheckId::RunAsUser, "runAsUser=0", detail, &bad, pod_bad)
}

/// What a set of invalid seLinuxOptions had wrong, across the pod.
#[derive(Default)]
struct SeLinuxFaults<'p> {
    types: Vec<&'p str>,
    user: bool,
    role: bool,
}

impl<'p> SeLinuxFaults<'p> {
    /// Records the options' faults; true when they are valid.
    fn validate(&mut self, opts: &'p SeLinuxOptions) -> bool {
        let mut valid = true;
        let t = opts.type_.as_deref().unwrap_or("");
        if !ALLOWED_SELINUX_TYPES.contains(&t) {
            valid = false;
            self.types.push(t);
        }
        if opts.user.as_deref().is_some_and(|u| !u.is_empty()) {
            valid = false;
            self.user = true;
        }
        if opts.role.as_deref().is_some_and(|r| !r.is_empty()) {
            valid = false;
            self.role = true;
        }
        valid
    }
}

/// `seLinuxOptions` (1.31+ type list): type limited, user and role unset.
pub(super) fn se_linux_options(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let mut faults = SeLinuxFaults::default();
    let pod_bad = pod_sc(spec, scope)
        .and_then(|s| s.se_linux_options.as_ref())
        .is_some_and(|o| !faults.validate(o));
    let mut bad: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        if let Some(opts) = sc(c).and_then(|s| s.se_linux_options.as_ref())
            && !faults.validate(opts)
        {
            bad.push(&c.name);
        }
    }
    if !pod_bad && bad.is_empty() {
        return None;
    }
    let mut data: Vec<String> = Vec::new();
    let types = sorted_set(faults.types);
    if !types.is_empty() {
        data.push(named("type", "types", &types));
    }
    if faults.user {
        data.push("user may not be set".to_owned());
    }
    if faults.role {
        data.push("role may not be set".to_owned());
    }
    let detail = format!(
        "{} set forbidden securityContext.seLinuxOptions: {}",
        setters(pod_bad, &bad),
        data.join("; ")
    );
    failure(CheckId::SeLinuxOptions, "seLinuxOptions", detail, &bad, pod_bad)
}

fn valid_seccomp(p: &Profile) -> bool {
    matches!(p.type_.as_str(), "RuntimeDefault" | "Localhost")
}

/// `seccompProfile_baseline` (1.19+): if set, only RuntimeDefault or Localhost.
pub(super) fn seccomp_profile_baseline(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let mut values: Vec<&str> = Vec::new();
    let pod_bad = match pod_sc(spec, scope).and_then(|s| s.seccomp_profile.as_ref()) {
        Some(p) if !valid_seccomp(p) => {
            values.push(&p.type_);
            true
        }
        _ => false,
    };
    let mut bad: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        if let Some(p) = sc(c).and_then(|s| s.seccomp_profile.as_ref())
            && !valid_seccomp(p)
        {
            bad.push(&c.name);
            values.push(&p.type_);
        }
    }
    if !pod_bad && bad.is_empty() {
        return None;
    }
    let detail = format!(
        "{} must not set securityContext.seccompProfile.type to {}",
        setters(pod_bad, &bad),
        join_quote(&sorted_set(values))
    );
    failure(CheckId::SeccompProfileBaseline, "seccompProfile", detail, &bad, pod_bad)
}

/// `seccompProfile_restricted` (1.25+: Windows pods are exempt): set, to RuntimeDefault or
/// Localhost, on the pod or on every container.
pub(super) fn seccomp_profile_restricted(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    if spec.is_windows() {
        return None;
    }
    let pod_profile = spec.security_context.as_ref().and_then(|s| s.seccomp_profile.as_ref());
    // A valid pod profile covers containers whether or not the pod level is in scope.
    let pod_set = pod_profile.is_some_and(valid_seccomp);
    let mut values: Vec<&str> = Vec::new();
    let pod_bad = match pod_profile {
        Some(p) if scope.pod_level && !valid_seccomp(p) => {
            values.push(&p.type_);
            true
        }
        _ => false,
    };
    let mut explicit: Vec<&str> = Vec::new();
    let mut implicit: Vec<&str> = Vec::new();
    let mut offending: Vec<&str> = Vec::new();
    for c in scope.containers(spec) {
        match sc(c).and_then(|s| s.seccomp_profile.as_ref()) {
            Some(p) if !valid_seccomp(p) => {
                explicit.push(&c.name);
                offending.push(&c.name);
                values.push(&p.type_);
            }
            Some(_) => {}
            None if !pod_set => {
                implicit.push(&c.name);
                offending.push(&c.name);
            }
            None => {}
        }
    }
    if pod_bad || !explicit.is_empty() {
        let detail = format!(
            "{} must not set securityContext.seccompProfile.type to {}",
            setters(pod_bad, &explicit),
            join_quote(&sorted_set(values))
        );
        return failure(
            CheckId::SeccompProfileRestricted,
            "seccompProfile",
            detail,
            &offending,
            pod_bad,
        );
    }
    if implicit.is_empty() {
        return None;
    }
    let detail = [
        "pod or ",
        named("container", "containers", &implicit).as_str(),
        r#" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost""#,
    ]
    .concat();
    failure(
        CheckId::SeccompProfileRestricted,
        "seccompProfile",
        detail,
        &offending,
        false,
    )
}

/// `sysctls` (pod-level, 1.37 allowed set).
pub(super) fn sysctls(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let psc = pod_sc(spec, scope)?;
    let mut forbidden: Vec<&str> = Vec::new();
    for s in &psc.sysctls {
        if !ALLOWED_SYSCTLS.contains(&s.name.as_str()) {
            forbidden.push(&s.name);
        }
    }
    if forbidden.is_empty() {
        return None;
    }
    failure(CheckId::Sysctls, "forbidden sysctls", forbidden.join(", "), &[], true)
}

/// `windowsHostProcess`: hostProcess not true on the pod or any container.
pub(super) fn windows_host_process(spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    let bad = scope.containers_where(spec, |c| {
        sc(c)
            .and_then(|s| s.windows_options.as_ref())
            .and_then(|w| w.host_process)
            == Some(true)
    });
    let pod_bad = pod_sc(spec, scope)
        .and_then(|s| s.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true);
    if !pod_bad && bad.is_empty() {
        return None;
    }
    let detail = [
        setters(pod_bad, &bad).as_str(),
        " must not set securityContext.windowsOptions.hostProcess=true",
    ]
    .concat();
    failure(CheckId::WindowsHostProcess, "hostProcess", detail, &bad, pod_bad)
}
