{{/* The chart's name. */}}
{{- define "testgrid.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name, the prefix of every object. */}}
{{- define "testgrid.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "testgrid.coordinator" -}}
{{- printf "%s-coordinator" (include "testgrid.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "testgrid.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "testgrid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "testgrid.selector" -}}
app.kubernetes.io/name: {{ include "testgrid.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "testgrid.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "testgrid.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "testgrid.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the tokens. */}}
{{- define "testgrid.tokensSecret" -}}
{{- default (printf "%s-tokens" (include "testgrid.fullname" .)) .Values.auth.existingSecret -}}
{{- end -}}

{{/* The Secret holding the TLS certificate. */}}
{{- define "testgrid.tlsSecret" -}}
{{- default (printf "%s-tls" (include "testgrid.fullname" .)) .Values.tls.existingSecret -}}
{{- end -}}

{{/* The coordinator's gRPC address as workers reach it. */}}
{{- define "testgrid.gridUrl" -}}
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" .Values.tls.enabled) (include "testgrid.coordinator" .) .Release.Namespace (int .Values.coordinator.service.grpcPort) -}}
{{- end -}}

{{/* The coordinator's HTTP address (demand, metrics). */}}
{{- define "testgrid.httpUrl" -}}
{{- printf "%s://%s.%s.svc:%d" (ternary "https" "http" .Values.tls.enabled) (include "testgrid.coordinator" .) .Release.Namespace (int .Values.coordinator.service.httpPort) -}}
{{- end -}}

{{/* A container's security context: non-root, read-only root, nothing extra. */}}
{{- define "testgrid.containerSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "testgrid.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Seconds in a duration written as 90s, 10m or 1h (the units the chart's values take). */}}
{{- define "testgrid.seconds" -}}
{{- $d := toString . -}}
{{- if hasSuffix "h" $d -}}{{- mul (trimSuffix "h" $d | int) 3600 -}}
{{- else if hasSuffix "m" $d -}}{{- mul (trimSuffix "m" $d | int) 60 -}}
{{- else -}}{{- trimSuffix "s" $d | int -}}
{{- end -}}
{{- end -}}

{{/* Every worker pool with workers.defaults filled in, as a JSON list (fromJsonArray). */}}
{{- define "testgrid.pools" -}}
{{- $pools := list -}}
{{- range .Values.workers.pools -}}
{{- /* Not sprig's merge: it would take a default over a pool's own 0 or false. */ -}}
{{- $pool := deepCopy . -}}
{{- range $key, $value := $.Values.workers.defaults -}}
{{- if not (hasKey $pool $key) -}}
{{- $_ := set $pool $key $value -}}
{{- end -}}
{{- end -}}
{{- $pools = append $pools $pool -}}
{{- end -}}
{{- toJson $pools -}}
{{- end -}}
