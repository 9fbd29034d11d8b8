# The three Pod Security Standards baseline checks that the engine benchmark compares with
# regorus: privileged containers, host namespaces and added capabilities outside the
# baseline set. Written for this benchmark; input is an AdmissionReview
# (admission.k8s.io/v1). The result is `deny`, a set with one object per failure: the
# review is blocked when it is not empty.
package portcullis.bench

import rego.v1

# The kinds the engine evaluates and where each keeps its pod spec (POLICY.md section 2).
template_kinds := {
	["", "ReplicationController"],
	["apps", "Deployment"],
	["apps", "ReplicaSet"],
	["apps", "StatefulSet"],
	["apps", "DaemonSet"],
	["batch", "Job"],
}

# Only objects being created or changed are judged.
judged if input.request.operation in {"CREATE", "UPDATE"}

gvk := [object.get(input.request.kind, "group", ""), input.request.kind.kind]

pod_spec := input.request.object.spec if {
	judged
	gvk == ["", "Pod"]
}

pod_spec := input.request.object.spec.template.spec if {
	judged
	gvk in template_kinds
}

pod_spec := input.request.object.spec.jobTemplate.spec.template.spec if {
	judged
	gvk == ["batch", "CronJob"]
}

container_lists := ["containers", "initContainers", "ephemeralContainers"]

# Pod Security Standards baseline: the default runtime set minus NET_RAW, compared
# case-sensitively as Pod Security Admission does.
baseline_capabilities := {
	"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
	"NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
}

deny contains {"check": "privileged", "container": c.name} if {
	some list in container_lists
	some c in pod_spec[list]
	c.securityContext.privileged == true
}

deny contains {"check": "hostNamespaces", "field": field} if {
	some field in ["hostNetwork", "hostPID", "hostIPC"]
	pod_spec[field] == true
}

deny contains {"check": "capabilities_baseline", "container": c.name, "capability": cap} if {
	some list in container_lists
	some c in pod_spec[list]
	some cap in c.securityContext.capabilities.add
	not cap in baseline_capabilities
}
