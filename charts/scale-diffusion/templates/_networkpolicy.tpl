{{/*
The NetworkPolicy of one service, when networkPolicy.enabled. Ingress: Prometheus to the metrics port,
and the service's callers to its API ports; nothing else. Egress, when networkPolicy.egress.enabled as
well: DNS, the grpc port of the release's services it calls, and networkPolicy.egress.external for the
services that reach the store or a database outside the release.
Takes (dict "root" $ "svc" "processor"
        "api"      (list "grpc")       the container ports callers reach
        "callers"  (list "ingest")     services of this release that call it
        "from"     (list <peer> …)     further callers, as NetworkPolicy peers (from its values block)
        "public"   false               true: anyone may reach the API ports (the gateway)
        "calls"    (list "diffusion")  services of this release it calls
        "external" true)               whether it reaches networkPolicy.egress.external
*/}}
{{- define "sd.networkPolicy" -}}
{{- $root := .root -}}
{{- $np := $root.Values.networkPolicy -}}
{{- $apiPorts := list -}}
{{- range .api }}{{ $apiPorts = append $apiPorts (dict "port" . "protocol" "TCP") }}{{ end -}}
{{- /* Prometheus: one peer, so namespace and pod selectors must both match. */ -}}
{{- $prometheus := dict -}}
{{- with $np.prometheus.namespaceSelector }}{{ $_ := set $prometheus "namespaceSelector" . }}{{ end -}}
{{- with $np.prometheus.podSelector }}{{ $_ := set $prometheus "podSelector" . }}{{ end -}}
{{- $ingress := list (dict "from" (list $prometheus) "ports" (list (dict "port" "metrics" "protocol" "TCP"))) -}}
{{- if .public -}}
{{- $ingress = append $ingress (dict "ports" $apiPorts) -}}
{{- else -}}
{{- $peers := list -}}
{{- range .callers }}
{{- $peers = append $peers (dict "podSelector" (dict "matchLabels" (dict
      "app.kubernetes.io/name" (include "sd.name" $root)
      "app.kubernetes.io/instance" $root.Release.Name
      "app.kubernetes.io/component" .))) -}}
{{- end -}}
{{- $peers = concat $peers (.from | default (list)) -}}
{{- if $peers }}{{ $ingress = append $ingress (dict "from" $peers "ports" $apiPorts) }}{{ end -}}
{{- end -}}
{{- $egress := list -}}
{{- if $np.egress.enabled -}}
{{- $dns := dict -}}
{{- with $np.egress.dns.namespaceSelector }}{{ $_ := set $dns "namespaceSelector" . }}{{ end -}}
{{- with $np.egress.dns.podSelector }}{{ $_ := set $dns "podSelector" . }}{{ end -}}
{{- $egress = append $egress (dict "to" (list $dns) "ports" (list
      (dict "port" 53 "protocol" "UDP") (dict "port" 53 "protocol" "TCP"))) -}}
{{- range .calls }}
{{- $egress = append $egress (dict
      "to" (list (dict "podSelector" (dict "matchLabels" (dict
        "app.kubernetes.io/name" (include "sd.name" $root)
        "app.kubernetes.io/instance" $root.Release.Name
        "app.kubernetes.io/component" .))))
      "ports" (list (dict "port" "grpc" "protocol" "TCP"))) -}}
{{- end -}}
{{- if and .external $np.egress.external }}{{ $egress = append $egress (dict "to" $np.egress.external) }}{{ end -}}
{{- end -}}
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: {{ include "sd.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sd.labels" . | nindent 4 }}
spec:
  podSelector:
    matchLabels:
      {{- include "sd.selectorLabels" . | nindent 6 }}
  policyTypes:
    - Ingress
    {{- if $np.egress.enabled }}
    - Egress
    {{- end }}
  ingress:
    {{- toYaml $ingress | nindent 4 }}
  {{- if $np.egress.enabled }}
  egress:
    {{- toYaml $egress | nindent 4 }}
  {{- end }}
{{- end -}}
