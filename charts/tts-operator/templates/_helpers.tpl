{{/* Chart name, 63 characters at most (a DNS label). */}}
{{- define "tts-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: prefix of every object the chart creates. */}}
{{- define "tts-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "tts-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Selector labels of the operator pods. */}}
{{- define "tts-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "tts-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "tts-operator.labels" -}}
helm.sh/chart: {{ include "tts-operator.chart" . }}
{{ include "tts-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: tts-operator
{{- end }}

{{- define "tts-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "tts-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "tts-operator.peeringName" -}}
{{- default (include "tts-operator.fullname" .) .Values.peering.name }}
{{- end }}

{{/* The namespaces the operator serves when scope is "namespaced", as a list (JSON). */}}
{{- define "tts-operator.watchNamespaces" -}}
{{- if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{- define "tts-operator.clusterScoped" -}}
{{- if eq .Values.scope "cluster" }}true{{ end }}
{{- end }}

{{/* Labels that select the runtime pods of every TTSService (set by the operator). */}}
{{- define "tts-operator.runtimeSelector" -}}
app.kubernetes.io/name: tts-runtime
app.kubernetes.io/managed-by: tts-operator
{{- end }}

{{/*
Queue latency in seconds: the mean queue wait over the rate window. A rate of the histogram's
_sum over a rate of its _count falls to 0 when load stops (clamp_min keeps an idle pod at 0
instead of NaN). Arguments: dict "matchers" (label matchers) "window" "by" (grouping labels).
The operator's KEDA ScaledObjects run the same query per TTSService
(operator/tts_operator/builders/scaledobject.py).
*/}}
{{- define "tts-operator.queueLatencyQuery" -}}
sum by ({{ .by }}) (rate(tts_queue_wait_seconds_sum{ {{- .matchers -}} }[{{ .window }}])) / clamp_min(sum by ({{ .by }}) (rate(tts_queue_wait_seconds_count{ {{- .matchers -}} }[{{ .window }}])), 1e-9)
{{- end }}
