{{/*
Names, labels and images shared by every template.
Templates that take a service take a dict: (dict "root" $ "svc" "gateway").
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "sd.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: "<release>-scale-diffusion", or the release name alone when it already
contains the chart name, or fullnameOverride. */}}
{{- define "sd.fullname" -}}
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

{{/* Name of one service's objects: "<prefix>-<service>" (a DNS label: at most 63 characters). */}}
{{- define "sd.componentName" -}}
{{- printf "%s-%s" (include "sd.fullname" .root) .svc | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* In-cluster gRPC address of a service of this release: "<name>.<namespace>.svc:<port>". */}}
{{- define "sd.grpcTarget" -}}
{{- $v := index .root.Values .svc -}}
{{- printf "%s.%s.svc:%v" (include "sd.componentName" .) .root.Release.Namespace $v.service.grpcPort -}}
{{- end -}}

{{- define "sd.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels that select one service's pods (svc may be omitted for release-wide selectors). */}}
{{- define "sd.selectorLabels" -}}
app.kubernetes.io/name: {{ include "sd.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- with .svc }}
app.kubernetes.io/component: {{ . }}
{{- end }}
{{- end -}}

{{/* Standard labels of every object. */}}
{{- define "sd.labels" -}}
helm.sh/chart: {{ include "sd.chart" .root }}
{{ include "sd.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: scale-diffusion
{{- end -}}

{{/* "<registry>/<repository>:<tag>" of one service's image. */}}
{{- define "sd.image" -}}
{{- $v := index .root.Values .svc -}}
{{- $g := .root.Values.global -}}
{{- $tag := $v.image.tag | default $g.imageTag | default .root.Chart.AppVersion -}}
{{- if $g.imageRegistry -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $g.imageRegistry) $v.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" $v.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "sd.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "sd.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Prefix of a service's settings: SD_GATEWAY_ … */}}
{{- define "sd.envPrefix" -}}
{{- printf "SD_%s_" (upper .) -}}
{{- end -}}

{{/* Name of the Secret with AWS keys, or "" when credentials come from the service account (IRSA). */}}
{{- define "sd.awsSecretName" -}}
{{- if .Values.aws.existingSecret -}}
{{- .Values.aws.existingSecret -}}
{{- else if .Values.aws.accessKeyId -}}
{{- printf "%s-aws" (include "sd.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The gateway's hosted diffusion provider ("mirage"), or "" when it is off (an unquoted `off` in YAML
is false, which also means off). Takes the root context. */}}
{{- define "sd.hostedDiffusion" -}}
{{- $p := toString .Values.gateway.hostedDiffusion.provider -}}
{{- if not (has $p (list "off" "false" "" "<nil>")) -}}
{{- $p -}}
{{- end -}}
{{- end -}}
