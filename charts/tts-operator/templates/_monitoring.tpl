{{/* Which namespaces the runtime pods live in, as a namespaceSelector. */}}
{{- define "tts-operator.runtimeNamespaceSelector" -}}
{{- if include "tts-operator.clusterScoped" . }}
any: true
{{- else }}
matchNames:
  {{- include "tts-operator.watchNamespaces" . | fromJsonArray | toYaml | nindent 2 }}
{{- end }}
{{- end }}

{{/*
Relabelling shared by the PodMonitor and the ServiceMonitor: every series carries the
TTSService's name as tts_service (for dashboards and KEDA), besides namespace and pod (for
prometheus-adapter).
*/}}
{{- define "tts-operator.runtimeRelabelings" -}}
- sourceLabels: [__meta_kubernetes_pod_label_app_kubernetes_io_instance]
  targetLabel: tts_service
- sourceLabels: [__meta_kubernetes_pod_name]
  targetLabel: pod
- sourceLabels: [__meta_kubernetes_namespace]
  targetLabel: namespace
{{- end }}
