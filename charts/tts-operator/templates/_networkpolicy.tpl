{{/*
Helpers of the optional NetworkPolicies (values networkPolicy.*; README "Network policies").

A NetworkPolicy rule with an empty `from` (or `to`) matches every peer, so a rule is rendered
only when its peer list is not empty: an empty list in the values means "nobody", never
"everybody".
*/}}

{{/* The runtime pods' port: the API and /metrics (tts_operator.models.RUNTIME_PORT). */}}
{{- define "tts-operator.runtimePort" -}}
8000
{{- end }}

{{/*
The namespaces that get a runtime NetworkPolicy, as a list (JSON): networkPolicy.runtime.namespaces,
else the served namespaces with scope "namespaced". Scope "cluster" serves namespaces the chart
cannot know (made after the install), so there the list must be given.
*/}}
{{- define "tts-operator.runtimePolicyNamespaces" -}}
{{- if .Values.networkPolicy.runtime.namespaces }}
{{- .Values.networkPolicy.runtime.namespaces | uniq | toJson }}
{{- else if include "tts-operator.clusterScoped" . }}
{{- fail "networkPolicy.runtime.enabled with scope=cluster: list the namespaces whose runtime pods get a NetworkPolicy in networkPolicy.runtime.namespaces (the chart cannot create one in namespaces made after the install)" }}
{{- else }}
{{- include "tts-operator.watchNamespaces" . }}
{{- end }}
{{- end }}

{{/*
One ingress rule: "peers" from, on TCP "port"; nothing when peers is empty. Arguments: dict
"peers" "port" "why" (a comment line).
*/}}
{{- define "tts-operator.ingressRule" -}}
{{- if .peers -}}
# {{ .why }}
- from:
    {{- toYaml .peers | nindent 4 }}
  ports:
    - port: {{ .port }}
      protocol: TCP
{{- end }}
{{- end }}
