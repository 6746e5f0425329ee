{{- define "proglog.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "proglog.fullname" -}}
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

{{- define "proglog.headless" -}}
{{- printf "%s-headless" (include "proglog.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "proglog.selectorLabels" -}}
app.kubernetes.io/name: {{ include "proglog.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "proglog.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "proglog.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "proglog.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "proglog.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The stable DNS name of pod N: <fullname>-N.<headless>.<ns>.svc.<domain>. */}}
{{- define "proglog.podHost" -}}
{{- $root := index . 0 }}{{- $ordinal := index . 1 }}
{{- printf "%s-%d.%s.%s.svc.%s" (include "proglog.fullname" $root) (int $ordinal) (include "proglog.headless" $root) $root.Release.Namespace $root.Values.clusterDomain }}
{{- end }}

{{- define "proglog.tlsSecret" -}}
{{- default (printf "%s-tls" (include "proglog.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{- define "proglog.clientTlsSecret" -}}
{{- default (printf "%s-client-tls" (include "proglog.fullname" .)) .Values.tls.clientSecret }}
{{- end }}

{{- define "proglog.aclSecret" -}}
{{- default (printf "%s-acl" (include "proglog.fullname" .)) .Values.acl.existingSecret }}
{{- end }}

{{- define "proglog.clusterKeySecret" -}}
{{- default (printf "%s-cluster-key" (include "proglog.fullname" .)) .Values.cluster.key.existingSecret }}
{{- end }}

{{/* Where secrets are mounted in the container. */}}
{{- define "proglog.tlsDir" -}}/etc/proglog/tls{{- end }}
{{- define "proglog.aclDir" -}}/etc/proglog/acl{{- end }}
{{- define "proglog.clusterKeyDir" -}}/etc/proglog/cluster-key{{- end }}

{{/* Flags the chart sets itself: refused in .Values.config. */}}
{{- define "proglog.reservedFlags" -}}
{{- list "data-dir" "node-name" "bind-addr" "rpc-port" "http-addr" "start-join-addrs" "bootstrap" "advertise-addr" "cluster-key-file" "leave-on-shutdown" "shutdown-grace-seconds" "acl-model-file" "acl-policy-file" "server-tls-cert-file" "server-tls-key-file" "server-tls-ca-file" "peer-tls-cert-file" "peer-tls-key-file" "peer-tls-ca-file" "config-file" | toJson }}
{{- end }}

{{- define "proglog.terminationGracePeriodSeconds" -}}
{{- add (ceil .Values.shutdownGraceSeconds | int) (int .Values.terminationExtraSeconds) }}
{{- end }}
