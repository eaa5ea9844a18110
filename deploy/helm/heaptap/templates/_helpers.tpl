{{/* The chart's full name: the release's, or release-chart. */}}
{{- define "heaptap.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "heaptap.selectorLabels" -}}
app.kubernetes.io/name: {{ include "heaptap.fullname" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "heaptap.labels" -}}
{{ include "heaptap.selectorLabels" . }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The library the application preloads, by heaptap.libc. */}}
{{- define "heaptap.preload" -}}
{{- if eq .Values.heaptap.libc "glibc" -}}
/heaptap/libheaptap.so
{{- else if eq .Values.heaptap.libc "musl" -}}
/heaptap/libheaptap-musl.so
{{- else -}}
{{- fail (printf "heaptap.libc must be glibc or musl, not %q" .Values.heaptap.libc) -}}
{{- end -}}
{{- end -}}

{{- define "heaptap.image" -}}
{{ .Values.heaptap.image.repository }}:{{ .Values.heaptap.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* heaptap's containers: no user of their own (they run as the pod's), nothing else. */}}
{{- define "heaptap.securityContext" -}}
runAsNonRoot: true
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}
