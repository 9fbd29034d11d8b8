//! Pod Security Standards v1.37, exactly as Pod Security Admission decides.
//!
//! Each check mirrors the version of PSA's check that applies at v1.37 (see
//! `k8s.io/pod-security-admission/policy`), with its id, forbidden reason and detail
//! strings. Two additions for policy exceptions: a [`Scope`] takes containers (and, when every
//! container is exempt, the pod-level fields) out of a check, and a [`CheckFailure`] names
//! the offending containers and whether a pod-level field is at fault.
//!
//! Checks allocate only to build a failure: the passing path reads the pod and returns.

mod checks;
mod text;

#[cfg(test)]
mod tests;

use crate::k8s::{Container, ObjectMeta, PodSpec};

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// `baseline`.
    Baseline,
    /// `restricted` (includes the baseline checks PSA keeps at that level).
    Restricted,
}

impl Level {
    /// The checks PSA runs at this level (v1.37), in PSA's order: baseline ids sorted, then
    /// restricted ids sorted; at `restricted` the baseline checks that a restricted check
    /// overrides (`OverrideCheckIDs`) are left out.
    pub fn checks(self) -> &'static [CheckId] {
        match self {
            Level::Baseline => BASELINE_CHECKS,
            Level::Restricted => RESTRICTED_CHECKS,
        }
    }

    /// `baseline` or `restricted`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        }
    }
}

/// One PSA check, by its PSA id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckId {
    /// `allowPrivilegeEscalation` (restricted).
    AllowPrivilegeEscalation,
    /// `appArmorProfile` (baseline).
    AppArmorProfile,
    /// `capabilities_baseline` (baseline; overridden at restricted by `capabilities_restricted`).
    CapabilitiesBaseline,
    /// `capabilities_restricted` (restricted).
    CapabilitiesRestricted,
    /// `hostNamespaces` (baseline).
    HostNamespaces,
    /// `hostPathVolumes` (baseline; overridden at restricted by `restrictedVolumes`).
    HostPathVolumes,
    /// `hostPorts` (baseline).
    HostPorts,
    /// `hostProbesAndHostLifecycle` (baseline).
    HostProbesAndHostLifecycle,
    /// `privileged` (baseline).
    Privileged,
    /// `procMount` (baseline; relaxed for `hostUsers: false`; overridden at restricted by
    /// `procMount_restricted`).
    ProcMount,
    /// `procMount_restricted` (restricted).
    ProcMountRestricted,
    /// `restrictedVolumes` (restricted).
    RestrictedVolumes,
    /// `runAsNonRoot` (restricted).
    RunAsNonRoot,
    /// `runAsUser` (restricted).
    RunAsUser,
    /// `seLinuxOptions` (baseline).
    SeLinuxOptions,
    /// `seccompProfile_baseline` (baseline; overridden at restricted by
    /// `seccompProfile_restricted`).
    SeccompProfileBaseline,
    /// `seccompProfile_restricted` (restricted).
    SeccompProfileRestricted,
    /// `sysctls` (baseline).
    Sysctls,
    /// `windowsHostProcess` (baseline).
    WindowsHostProcess,
}

impl CheckId {
    /// Every check, in PSA's id order.
    pub const ALL: [CheckId; 19] = [
        CheckId::AllowPrivilegeEscalation,
        CheckId::AppArmorProfile,
        CheckId::CapabilitiesBaseline,
        CheckId::CapabilitiesRestricted,
        CheckId::HostNamespaces,
        CheckId::HostPathVolumes,
        CheckId::HostPorts,
        CheckId::HostProbesAndHostLifecycle,
        CheckId::Privileged,
        CheckId::ProcMount,
        CheckId::ProcMountRestricted,
        CheckId::RestrictedVolumes,
        CheckId::RunAsNonRoot,
        CheckId::RunAsUser,
        CheckId::SeLinuxOptions,
        CheckId::SeccompProfileBaseline,
        CheckId::SeccompProfileRestricted,
        CheckId::Sysctls,
        CheckId::WindowsHostProcess,
    ];

    /// PSA's id of the check (`hostNamespaces`, `capabilities_baseline`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            CheckId::AllowPrivilegeEscalation => "allowPrivilegeEscalation",
            CheckId::AppArmorProfile => "appArmorProfile",
            CheckId::CapabilitiesBaseline => "capabilities_baseline",
            CheckId::CapabilitiesRestricted => "capabilities_restricted",
            CheckId::HostNamespaces => "hostNamespaces",
            CheckId::HostPathVolumes => "hostPathVolumes",
            CheckId::HostPorts => "hostPorts",
            CheckId::HostProbesAndHostLifecycle => "hostProbesAndHostLifecycle",
            CheckId::Privileged => "privileged",
            CheckId::ProcMount => "procMount",
            CheckId::ProcMountRestricted => "procMount_restricted",
            CheckId::RestrictedVolumes => "restrictedVolumes",
            CheckId::RunAsNonRoot => "runAsNonRoot",
            CheckId::RunAsUser => "runAsUser",
            CheckId::SeLinuxOptions => "seLinuxOptions",
            CheckId::SeccompProfileBaseline => "seccompProfile_baseline",
            CheckId::SeccompProfileRestricted => "seccompProfile_restricted",
            CheckId::Sysctls => "sysctls",
            CheckId::WindowsHostProcess => "windowsHostProcess",
        }
    }

    /// The check with this PSA id (exact, case-sensitive).
    pub fn from_id(id: &str) -> Option<CheckId> {
        CheckId::ALL.into_iter().find(|c| c.as_str() == id)
    }

    /// The level PSA registers the check at.
    pub const fn level(self) -> Level {
        match self {
            CheckId::AllowPrivilegeEscalation
            | CheckId::CapabilitiesRestricted
            | CheckId::ProcMountRestricted
            | CheckId::RestrictedVolumes
            | CheckId::RunAsNonRoot
            | CheckId::RunAsUser
            | CheckId::SeccompProfileRestricted => Level::Restricted,
            _ => Level::Baseline,
        }
    }

    /// The restricted check that replaces this baseline check at `restricted`
    /// (PSA's `OverrideCheckIDs`), if any.
    pub const fn overridden_by(self) -> Option<CheckId> {
        match self {
            CheckId::CapabilitiesBaseline => Some(CheckId::CapabilitiesRestricted),
            CheckId::HostPathVolumes => Some(CheckId::RestrictedVolumes),
            CheckId::ProcMount => Some(CheckId::ProcMountRestricted),
            CheckId::SeccompProfileBaseline => Some(CheckId::SeccompProfileRestricted),
            _ => None,
        }
    }
}

impl std::fmt::Display for CheckId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Baseline checks at v1.37, ids sorted as PSA's registry sorts them (byte order).
const BASELINE_CHECKS: &[CheckId] = &checks_at::<12>(Level::Baseline);

/// Restricted checks at v1.37: the baseline ones not overridden, then the restricted ones.
const RESTRICTED_CHECKS: &[CheckId] = &checks_at::<15>(Level::Restricted);

/// The `N` checks PSA runs at `level`, from [`CheckId::ALL`] (in id order) by each check's
/// [`CheckId::level`] and [`CheckId::overridden_by`]: the registry's facts in one place.
/// Evaluated at compile time; a wrong `N` fails the build.
#[allow(clippy::indexing_slicing)] // const evaluation: an index out of range fails the build
const fn checks_at<const N: usize>(level: Level) -> [CheckId; N] {
    let restricted = matches!(level, Level::Restricted);
    let mut out = [CheckId::Privileged; N];
    let mut n = 0;
    // Baseline-level checks (at restricted, those no restricted check overrides), then the
    // restricted-level ones.
    let mut pass = 0;
    while pass < 2 {
        let mut i = 0;
        while i < CheckId::ALL.len() {
            let check = CheckId::ALL[i];
            let wanted = match (pass, check.level()) {
                (0, Level::Baseline) => !restricted || check.overridden_by().is_none(),
                (1, Level::Restricted) => restricted,
                _ => false,
            };
            if wanted {
                out[n] = check;
                n += 1;
            }
            i += 1;
        }
        pass += 1;
    }
    assert!(n == N, "the length of a level's check list");
    out
}
/// What part of a pod a check may look at: exceptions take containers out of scope, and
/// pod-level fields out of scope only when every container is exempt.
pub struct Scope<'a> {
    /// Whether a container is in scope (false: its image matches an exception).
    pub container: &'a dyn Fn(&Container) -> bool,
    /// Whether pod-level fields are in scope.
    pub pod_level: bool,
}

/// Every container in scope: the `container` predicate of [`Scope::ALL`].
fn every_container(_: &Container) -> bool {
    true
}

impl Scope<'static> {
    /// Everything in scope: results equal PSA's.
    pub const ALL: Scope<'static> = Scope {
        container: &every_container,
        pod_level: true,
    };
}

impl Scope<'_> {
    /// The pod's in-scope containers, in PSA's visiting order (init, regular, ephemeral).
    fn containers<'p>(&'p self, spec: &'p PodSpec) -> impl Iterator<Item = &'p Container> + 'p {
        spec.all_containers().map(|(_, c)| c).filter(|c| (self.container)(c))
    }

    /// The names of the in-scope containers for which `bad` holds, in visiting order (empty,
    /// and so unallocated, while a pod passes).
    fn containers_where<'p>(&'p self, spec: &'p PodSpec, bad: impl Fn(&Container) -> bool) -> Vec<&'p str> {
        self.containers(spec)
            .filter(|c| bad(c))
            .map(|c| c.name.as_str())
            .collect()
    }
}

/// A failed check, in PSA's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// The check.
    pub id: CheckId,
    /// PSA's forbidden reason (`privileged`).
    pub reason: &'static str,
    /// PSA's forbidden detail (`container "app" must not set securityContext.privileged=true`).
    pub detail: String,
    /// Names of the offending containers, in visiting order, each once.
    pub containers: Vec<String>,
    /// Whether a pod-level field is at fault.
    pub pod_level: bool,
}

/// Runs one check against a pod.
pub fn check(id: CheckId, meta: &ObjectMeta, spec: &PodSpec, scope: &Scope<'_>) -> Option<CheckFailure> {
    match id {
        CheckId::AllowPrivilegeEscalation => checks::allow_privilege_escalation(spec, scope),
        CheckId::AppArmorProfile => checks::app_armor_profile(meta, spec, scope),
        CheckId::CapabilitiesBaseline => checks::capabilities_baseline(spec, scope),
        CheckId::CapabilitiesRestricted => checks::capabilities_restricted(spec, scope),
        CheckId::HostNamespaces => checks::host_namespaces(spec, scope),
        CheckId::HostPathVolumes => checks::host_path_volumes(spec, scope),
        CheckId::HostPorts => checks::host_ports(spec, scope),
        CheckId::HostProbesAndHostLifecycle => checks::host_probes_and_host_lifecycle(spec, scope),
        CheckId::Privileged => checks::privileged(spec, scope),
        CheckId::ProcMount => checks::proc_mount_baseline(spec, scope),
        CheckId::ProcMountRestricted => checks::proc_mount(CheckId::ProcMountRestricted, spec, scope),
        CheckId::RestrictedVolumes => checks::restricted_volumes(spec, scope),
        CheckId::RunAsNonRoot => checks::run_as_non_root(spec, scope),
        CheckId::RunAsUser => checks::run_as_user(spec, scope),
        CheckId::SeLinuxOptions => checks::se_linux_options(spec, scope),
        CheckId::SeccompProfileBaseline => checks::seccomp_profile_baseline(spec, scope),
        CheckId::SeccompProfileRestricted => checks::seccomp_profile_restricted(spec, scope),
        CheckId::Sysctls => checks::sysctls(spec, scope),
        CheckId::WindowsHostProcess => checks::windows_host_process(spec, scope),
    }
}

/// Runs every check of a level, in PSA's order; empty when the pod passes.
pub fn evaluate_level(level: Level, meta: &ObjectMeta, spec: &PodSpec, scope: &Scope<'_>) -> Vec<CheckFailure> {
    level
        .checks()
        .iter()
        .filter_map(|&id| check(id, meta, spec, scope))
        .collect()
}
