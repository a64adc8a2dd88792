{{/*
The Deployment every service shares: one container running the service's image, settings from its
ConfigMap, gRPC health probes on the grpc port, metrics on the metrics port, a non-root read-only
container with a writable /tmp, and a termination grace period longer than the service's own drain.

What differs per service comes from its values block (replicas, resources, gpu, shm, probes, scheduling)
and from <svc>-deployment.yaml, which builds the rest as lists of maps, written as Kubernetes writes them:
  "ports"        extra container ports:  (list (dict "name" "http" "containerPort" 8080 "protocol" "TCP"))
  "env"          extra env entries, e.g. read from Secrets (sd.pod.addDatabaseUrl and sd.pod.addStoreCredentials, below, add the shared ones)
  "volumes"      extra pod volumes
  "volumeMounts" extra container mounts
  "serviceAccountName", "automountToken"  a service account of the pod's own (the operator's, the trainer's
                 when it creates TrainingRuns); default: the release's one, without an API token
Takes (dict "root" $ "svc" "gateway" "ports" (list …) "env" (list …) …); every list may be left out.
*/}}
{{- define "sd.deployment" -}}
{{- $root := .root -}}
{{- $svc := .svc -}}
{{- $v := index $root.Values $svc -}}
{{- $g := $root.Values.global -}}
{{- /* Per-service blocks are merged over the global ones; deepCopy keeps .Values unchanged. */ -}}
{{- $probes := mergeOverwrite (deepCopy $g.probes) (deepCopy ($v.probes | default dict)) -}}
{{- $podSecurity := mergeOverwrite (deepCopy $g.podSecurityContext) (deepCopy ($v.podSecurityContext | default dict)) -}}
{{- $security := mergeOverwrite (deepCopy $g.securityContext) (deepCopy ($v.securityContext | default dict)) -}}
{{- $resources := deepCopy ($v.resources | default dict) -}}
{{- if and $v.gpu (gt (int $v.gpu.count) 0) -}}
{{- /* Extended resources such as GPUs must be requested and limited alike. */ -}}
{{- $limits := $resources.limits | default dict -}}
{{- $requests := $resources.requests | default dict -}}
{{- $_ := set $limits $v.gpu.resourceName (int $v.gpu.count) -}}
{{- $_ := set $requests $v.gpu.resourceName (int $v.gpu.count) -}}
{{- $_ := set $resources "limits" $limits -}}
{{- $_ := set $resources "requests" $requests -}}
{{- end -}}
{{- $grace := int $v.shutdownGraceSeconds -}}
{{- $terminationGrace := add (int $g.preStopSleepSeconds) $grace (int $g.terminationGraceMarginSeconds) -}}
{{- $grpcPort := int $g.containerPorts.grpc -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "sd.componentName" . }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "sd.labels" . | nindent 4 }}
spec:
  {{- if not (and $v.autoscaling $v.autoscaling.enabled) }}
  replicas: {{ $v.replicas }}
  {{- end }}
  revisionHistoryLimit: 5
  {{- with $v.strategy }}
  strategy:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  selector:
    matchLabels:
      {{- include "sd.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "sd.labels" . | nindent 8 }}
        {{- with $v.podLabels }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      annotations:
        # Rolls the pods when their settings change.
        checksum/config: {{ include (print $root.Template.BasePath "/" $svc "-configmap.yaml") $root | sha256sum }}
        {{- if $root.Values.metrics.podAnnotations }}
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $g.containerPorts.metrics | quote }}
        prometheus.io/path: {{ $root.Values.metrics.path | quote }}
        {{- end }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ .serviceAccountName | default (include "sd.serviceAccountName" $root) }}
      automountServiceAccountToken: {{ if hasKey . "automountToken" }}{{ .automountToken }}{{ else }}{{ $root.Values.serviceAccount.automountToken }}{{ end }}
      {{- with $g.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        {{- toYaml $podSecurity | nindent 8 }}
      # preStop sleep + the service's drain (SD_{{ upper $svc }}_SHUTDOWN_GRACE_S={{ $grace }}) + margin.
      terminationGracePeriodSeconds: {{ $terminationGrace }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      containers:
        - name: {{ $svc }}
          image: {{ include "sd.image" . | quote }}
          imagePullPolicy: {{ $v.image.pullPolicy }}
          ports:
            - name: grpc
              containerPort: {{ $grpcPort }}
              protocol: TCP
            - name: metrics
              containerPort: {{ $g.containerPorts.metrics }}
              protocol: TCP
            {{- with .ports }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "sd.componentName" . }}
          {{- if or .env $v.extraEnv }}
          env:
            {{- with .env }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- end }}
          resources:
            {{- toYaml $resources | nindent 12 }}
          securityContext:
            {{- toYaml $security | nindent 12 }}
          {{- if $probes.startup.enabled }}
          startupProbe:
            grpc:
              port: {{ $grpcPort }}
            periodSeconds: {{ $probes.startup.periodSeconds }}
            failureThreshold: {{ $probes.startup.failureThreshold }}
            timeoutSeconds: {{ $probes.startup.timeoutSeconds }}
          {{- end }}
          readinessProbe:
            grpc:
              port: {{ $grpcPort }}
            periodSeconds: {{ $probes.readiness.periodSeconds }}
            failureThreshold: {{ $probes.readiness.failureThreshold }}
            timeoutSeconds: {{ $probes.readiness.timeoutSeconds }}
          livenessProbe:
            grpc:
              port: {{ $grpcPort }}
            periodSeconds: {{ $probes.liveness.periodSeconds }}
            failureThreshold: {{ $probes.liveness.failureThreshold }}
            timeoutSeconds: {{ $probes.liveness.timeoutSeconds }}
          {{- if gt (int $g.preStopSleepSeconds) 0 }}
          lifecycle:
            preStop:
              sleep:
                seconds: {{ int $g.preStopSleepSeconds }}
          {{- end }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- if $v.shm.enabled }}
            - name: shm
              mountPath: /dev/shm
            {{- end }}
            {{- with .volumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: {{ $g.tmpSizeLimit }}
        {{- if $v.shm.enabled }}
        - name: shm
          emptyDir:
            medium: Memory
            sizeLimit: {{ $v.shm.sizeLimit }}
        {{- end }}
        {{- with .volumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
{{- end -}}


{{/* Adds SD_<SVC>_DATABASE_URL, read from the Secret holding the service's database URL, to a pod's env;
adds nothing when no database is configured. Takes the pod dict of sd.deployment. */}}
{{- define "sd.pod.addDatabaseUrl" -}}
{{- $db := (index .root.Values .svc).database -}}
{{- if or $db.existingSecret $db.url -}}
{{- $ref := dict "name" ($db.existingSecret | default (include "sd.componentName" .))
                 "key" (ternary $db.existingSecretKey "database-url" (not (empty $db.existingSecret))) -}}
{{- $_ := set . "env" (append (.env | default (list))
      (dict "name" (print (include "sd.envPrefix" .svc) "DATABASE_URL") "valueFrom" (dict "secretKeyRef" $ref))) -}}
{{- end -}}
{{- end -}}

{{/* Adds the AWS keys of the object store to a pod's env, read from aws.existingSecret or the chart's
Secret "<prefix>-aws"; adds nothing under IRSA (no keys configured). Takes the pod dict of sd.deployment. */}}
{{- define "sd.pod.addStoreCredentials" -}}
{{- $aws := .root.Values.aws -}}
{{- $name := include "sd.awsSecretName" .root -}}
{{- if $name -}}
{{- $own := not $aws.existingSecret -}}
{{- $env := .env | default (list) -}}
{{- range $var, $key := dict "AWS_ACCESS_KEY_ID" (ternary "AWS_ACCESS_KEY_ID" $aws.accessKeyIdKey $own)
                             "AWS_SECRET_ACCESS_KEY" (ternary "AWS_SECRET_ACCESS_KEY" $aws.secretAccessKeyKey $own) }}
{{- $env = append $env (dict "name" $var "valueFrom" (dict "secretKeyRef" (dict "name" $name "key" $key))) -}}
{{- end -}}
{{- $_ := set . "env" $env -}}
{{- end -}}
{{- end -}}

{{/* Adds the TURN secret (values.diffusion.turn) to a pod's env as <prefix>TURN_SECRET, from the existing
Secret it names, when TURN URLs are configured. Takes (dict "pod" <pod dict of sd.deployment> "prefix" …). */}}
{{- define "sd.pod.addTurnSecret" -}}
{{- $turn := .pod.root.Values.diffusion.turn -}}
{{- if $turn.urls -}}
{{- $name := required "diffusion.turn.existingSecret is required with diffusion.turn.urls: the TURN secret comes from a Secret, never from values" $turn.existingSecret -}}
{{- $ref := dict "name" $name "key" $turn.existingSecretKey -}}
{{- $_ := set .pod "env" (append (.pod.env | default (list)) (dict "name" (print .prefix "TURN_SECRET") "valueFrom" (dict "secretKeyRef" $ref))) -}}
{{- end -}}
{{- end -}}
