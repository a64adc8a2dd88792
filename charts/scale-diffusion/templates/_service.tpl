{{/*
The ClusterIP Service of one service: its gRPC port, its metrics port, and any extra ports given as a
list of Service ports in "ports" (the gateway's HTTP port).
Takes (dict "root" $ "svc" "gateway" ["ports" (list (dict "name" "http" "port" 80 …))]).
*/}}
{{- define "sd.service" -}}
{{- $root := .root -}}
{{- $v := index $root.Values .svc -}}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "sd.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sd.labels" . | nindent 4 }}
  {{- with $v.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: {{ $v.service.type }}
  {{- if .headless }}
  clusterIP: None
  {{- end }}
  selector:
    {{- include "sd.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $v.service.grpcPort }}
      targetPort: grpc
      protocol: TCP
    - name: metrics
      port: {{ $root.Values.global.containerPorts.metrics }}
      targetPort: metrics
      protocol: TCP
    {{- with .ports }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
