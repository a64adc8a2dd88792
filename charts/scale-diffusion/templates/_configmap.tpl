{{/*
The ConfigMap of one service: the settings every service reads (where it listens, how it logs, how long
it drains), then the service's own ones, then the service's `env` values. Pods load it whole with envFrom.
Takes (dict "root" $ "svc" "gateway" "settings" (dict "SD_GATEWAY_HTTP_PORT" "8080" …)): the service's
own settings as a map of name to value, built in <svc>-configmap.yaml.
*/}}
{{- define "sd.configmap" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .svc -}}
{{- $g := $root.Values.global -}}
{{- $p := include "sd.envPrefix" .svc -}}
{{- $data := dict
      (print $p "GRPC_HOST") "0.0.0.0"
      (print $p "GRPC_PORT") (toString $g.containerPorts.grpc)
      (print $p "METRICS_HOST") "0.0.0.0"
      (print $p "METRICS_PORT") (toString $g.containerPorts.metrics)
      (print $p "LOG_FORMAT") (toString $g.logFormat)
      (print $p "LOG_LEVEL") (toString ($v.logLevel | default $g.logLevel))
      (print $p "SHUTDOWN_GRACE_S") (toString $v.shutdownGraceSeconds) -}}
{{- range $k, $val := (.settings | default dict) }}
{{- $_ := set $data $k (toString $val) }}
{{- end }}
{{- range $k, $val := $v.env }}
{{- $_ := set $data $k (toString $val) }}
{{- end -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "sd.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sd.labels" . | nindent 4 }}
data:
  {{- toYaml $data | nindent 2 }}
{{- end -}}

{{/* Adds the SD_STORE_* settings to a settings map, for the services that use the object store.
Optional settings are left out when empty, so the service sees them unset rather than "".
Takes (dict "root" $ "settings" $settings). */}}
{{- define "sd.settings.addStore" -}}
{{- $s := .root.Values.store -}}
{{- $_ := set .settings "SD_STORE_BACKEND" $s.backend -}}
{{- $_ := set .settings "SD_STORE_BUCKET" $s.bucket -}}
{{- $_ := set .settings "SD_STORE_REGION" $s.region -}}
{{- $_ := set .settings "SD_STORE_URL_EXPIRY_S" $s.urlExpirySeconds -}}
{{- with $s.endpointUrl }}{{ $_ := set $.settings "SD_STORE_ENDPOINT_URL" . }}{{ end -}}
{{- with $s.queueUrl }}{{ $_ := set $.settings "SD_STORE_QUEUE_URL" . }}{{ end -}}
{{- if eq $s.backend "local" }}{{ $_ := set .settings "SD_STORE_ROOT" "/tmp/store" }}{{ end -}}
{{- end -}}

{{/* Adds the TURN settings but its secret (values.diffusion.turn) to a settings dict, keys <prefix>TURN_*.
Takes (dict "root" $ "settings" <dict> "prefix" …). */}}
{{- define "sd.settings.addTurn" -}}
{{- $turn := .root.Values.diffusion.turn -}}
{{- if $turn.urls -}}
{{- $_ := set .settings (print .prefix "TURN_URLS") (join "," $turn.urls) -}}
{{- $_ = set .settings (print .prefix "TURN_TTL_S") (toString $turn.ttlSeconds) -}}
{{- end -}}
{{- end -}}
