{{/*
The operator's permissions, from what it really touches (README "RBAC" explains each rule).
Namespaced rules: used by the ClusterRole (scope cluster) and by every Role (scope namespaced).
Nothing here reads Secrets, Nodes or anything else the operator does not use.
*/}}
{{- define "tts-operator.namespacedRules" -}}
# The TTSService: watched and read, status written (kopf writes nothing into it).
- apiGroups: ["ttsoperator.io"]
  resources: ["ttsservices"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ttsoperator.io"]
  resources: ["ttsservices/status"]
  verbs: ["patch"]
# Children, applied server-side (create + patch) and watched for drift (a child changed or
# deleted by hand is put back).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: [""]
  resources: ["services", "configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# ... the HPA and the PDB are also deleted when autoscaling / disruption is switched off.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# ... and so is a TTSService's KEDA ScaledObject (autoscaling.provider keda) when autoscaling
# goes off or back to hpa.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Status: Pending pods with an Unschedulable reason become Degraded/InsufficientGPU.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# pvc:// model URIs: the claim must exist.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get"]
# kopf posts core/v1 Events about each TTSService (it never reads or updates them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
kopf's peering heartbeats: it watches the peering object and patches its own entry. It never
creates the object: the release does (peering.create), or whoever manages it when that is off;
the operator waits for it at start (TTS_OPERATOR_PEERING_CREATE=false).
*/}}
{{- define "tts-operator.peeringRule" -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ . | quote }}]
  verbs: ["get", "list", "watch", "patch"]
{{- end }}
