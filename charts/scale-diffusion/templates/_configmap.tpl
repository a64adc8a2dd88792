{{/*
The ConfigMap of one service: the settings every service reads (where it listens, how it logs, how long
it drains), then the service's own ones from the template "sd.<svc>.config" defined in
<svc>-configmap.yaml, then the service's `env` values. Pods load it whole with envFrom.
Takes (dict "root" $ "svc" "gateway").
*/}}
{{- define "sd.configmap" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .svc -}}
{{- $g := $root.Values.global -}}
{{- $p := include "sd.envPrefix" .svc -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "sd.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sd.labels" . | nindent 4 }}
data:
  {{ $p }}GRPC_HOST: "0.0.0.0"
  {{ $p }}GRPC_PORT: {{ $g.containerPorts.grpc | quote }}
  {{ $p }}METRICS_HOST: "0.0.0.0"
  {{ $p }}METRICS_PORT: {{ $g.containerPorts.metrics | quote }}
  {{ $p }}LOG_FORMAT: {{ $g.logFormat | quote }}
  {{ $p }}LOG_LEVEL: {{ $v.logLevel | default $g.logLevel | quote }}
  {{ $p }}SHUTDOWN_GRACE_S: {{ $v.shutdownGraceSeconds | quote }}
  {{- with include (printf "sd.%s.config" .svc) $root }}
  {{- . | nindent 2 }}
  {{- end }}
  {{- range $k, $val := $v.env }}
  {{ $k }}: {{ $val | toString | quote }}
  {{- end }}
{{- end -}}
