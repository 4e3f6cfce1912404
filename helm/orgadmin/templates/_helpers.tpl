{{/*
Names and labels.
*/}}
{{- define "orgadmin.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orgadmin.fullname" -}}
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

{{- define "orgadmin.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "orgadmin.selectorLabels" -}}
app.kubernetes.io/name: {{ include "orgadmin.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "orgadmin.labels" -}}
helm.sh/chart: {{ include "orgadmin.chart" . }}
{{ include "orgadmin.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: orgadmin
{{- end }}

{{- define "orgadmin.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "orgadmin.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "orgadmin.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The mode. SQLite when DATABASE_URL comes from nowhere (the embedded default)
or is a sqlite: URL given as a trial value; an existing Secret is taken to
hold a PostgreSQL URL. Prints "true" or nothing.
*/}}
{{- define "orgadmin.sqlite" -}}
{{- if and (not .Values.secrets.database.existingSecret) (or (not .Values.trialSecrets.databaseUrl) (hasPrefix "sqlite:" .Values.trialSecrets.databaseUrl)) -}}
true
{{- end -}}
{{- end }}

{{/* The component of the pods behind the Service: "standalone" or "service". */}}
{{- define "orgadmin.serverComponent" -}}
{{- if include "orgadmin.sqlite" . }}standalone{{ else }}service{{ end }}
{{- end }}

{{- define "orgadmin.trialSecretName" -}}
{{- printf "%s-trial" (include "orgadmin.fullname" .) }}
{{- end }}

{{/* Whether any trial value is given: the chart then makes the trial Secret. */}}
{{- define "orgadmin.trialSecret" -}}
{{- $t := .Values.trialSecrets }}
{{- if or $t.databaseUrl $t.smtpUrl $t.cprLookupKey $t.cprEncryptionKey $t.operatorTokens $t.caKey $t.caCert $t.caChain -}}
true
{{- end -}}
{{- end }}

{{/* Whether a CA is mounted (existing Secret or trial PEM). */}}
{{- define "orgadmin.ca" -}}
{{- if or .Values.secrets.ca.existingSecret .Values.trialSecrets.caKey -}}
true
{{- end -}}
{{- end }}

{{/*
The rules a release must meet; each failure says what to change. Included
by every template that depends on them, so any render stops here.
*/}}
{{- define "orgadmin.validate" -}}
{{- $v := .Values }}
{{- $t := $v.trialSecrets }}
{{- $s := $v.secrets }}
{{- if include "orgadmin.sqlite" . }}
{{- if or (ne (int $v.service.replicaCount) 1) $v.service.autoscaling.enabled (gt (int $v.worker.replicaCount) 1) $v.worker.autoscaling.enabled }}
{{- fail "orgadmin: SQLite cannot run more than one replica: without a PostgreSQL DATABASE_URL (secrets.database.existingSecret) service and worker run together in one `orgadmin-service standalone` pod on one SQLite file. Set service.replicaCount=1, worker.replicaCount<=1 and autoscaling off, or give secrets.database.existingSecret." }}
{{- end }}
{{- else }}
{{- if and (not $s.cprKeys.existingSecret) (not (and $t.cprLookupKey $t.cprEncryptionKey)) }}
{{- fail "orgadmin: PostgreSQL needs the CPR keys: set secrets.cprKeys.existingSecret (a Secret with ORGADMIN_CPR_LOOKUP_KEY and ORGADMIN_CPR_ENCRYPTION_KEY, 64 hex digits each), or for a trial trialSecrets.cprLookupKey and trialSecrets.cprEncryptionKey." }}
{{- end }}
{{- end }}
{{- range $name, $pair := dict "database" (list $s.database.existingSecret $t.databaseUrl) "smtp" (list $s.smtp.existingSecret $t.smtpUrl) "cprKeys" (list $s.cprKeys.existingSecret (or $t.cprLookupKey $t.cprEncryptionKey)) "operatorTokens" (list $s.operatorTokens.existingSecret $t.operatorTokens) "ca" (list $s.ca.existingSecret (or $t.caKey $t.caCert $t.caChain)) }}
{{- if and (index $pair 0) (index $pair 1) }}
{{- fail (printf "orgadmin: secrets.%s.existingSecret and its trialSecrets value are both set: use one (the existing Secret in production)" $name) }}
{{- end }}
{{- end }}
{{- if and $t.caKey (not $t.caCert) }}
{{- fail "orgadmin: trialSecrets.caKey needs trialSecrets.caCert" }}
{{- end }}
{{- /* A production CA: every certificate it signs carries the CRL and OCSP
     addresses for its whole life, and the pickup mail its link; the
     defaults are the pod's loopback, which no client reaches. */}}
{{- if $s.ca.existingSecret }}
{{- range $key := list "ORGADMIN_CA_CRL_URL" "ORGADMIN_CA_OCSP_URL" "ORGADMIN_CERTIFICATE_PICKUP_URL_TEMPLATE" }}
{{- if not (index $v.config $key) }}
{{- fail (printf "orgadmin: with secrets.ca.existingSecret set config.%s: certificates carry the CRL and OCSP addresses for life, and the default is the pod's loopback address (no client reaches it); use the public address of certificates.httpPort" $key) }}
{{- end }}
{{- end }}
{{- end }}
{{- /* The service pod's two listeners: gRPC, and the certificate and
     pages port, which listens on 127.0.0.1:50080 in the pod when
     certificates.httpPort is 0. (The worker's health port is in another
     pod.) */}}
{{- $httpPort := int (default 50080 $v.certificates.httpPort) }}
{{- if eq (int $v.service.grpcPort) $httpPort }}
{{- fail (printf "orgadmin: service.grpcPort is %d, the port of the certificate and pages listener (certificates.httpPort, or 50080 in the pod when that is 0): the second bind fails and the pod restarts forever" $httpPort) }}
{{- end }}
{{- if lt (int $v.service.terminationGracePeriodSeconds) (add (int $v.service.shutdownDelaySeconds) 15) }}
{{- fail (printf "orgadmin: service.terminationGracePeriodSeconds (%d) must be at least service.shutdownDelaySeconds (%d) plus 15: after the delay the calls in flight finish and sign-ins get up to 10 s, and a pod killed before that cuts them off" (int $v.service.terminationGracePeriodSeconds) (int $v.service.shutdownDelaySeconds)) }}
{{- end }}
{{- range $component := list "service" "worker" }}
{{- $a := (index $v $component).autoscaling }}
{{- if and $a.enabled (gt (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- fail (printf "orgadmin: %s.autoscaling.minReplicas (%d) is above maxReplicas (%d)" $component (int $a.minReplicas) (int $a.maxReplicas)) }}
{{- end }}
{{- end }}
{{- range $key, $_ := $v.config }}
{{- if not (regexMatch "^ORGADMIN_[A-Z0-9_]+$" $key) }}
{{- fail (printf "orgadmin: config.%s: only ORGADMIN_* settings go into the ConfigMap (DATABASE_URL and SMTP_URL come from secrets.database and secrets.smtp)" $key) }}
{{- end }}
{{- if has $key (list "ORGADMIN_OPERATOR_TOKENS" "ORGADMIN_CPR_LOOKUP_KEY" "ORGADMIN_CPR_ENCRYPTION_KEY") }}
{{- fail (printf "orgadmin: config.%s is a secret and must not go into the ConfigMap: use secrets.* (an existing Secret)" $key) }}
{{- end }}
{{- if has $key (list "ORGADMIN_LISTEN" "ORGADMIN_WORKER_HEALTH_LISTEN" "ORGADMIN_DATA_DIR" "ORGADMIN_CERTIFICATE_HTTP_LISTEN" "ORGADMIN_CA_KEY_FILE" "ORGADMIN_CA_CERTIFICATE_FILE" "ORGADMIN_CA_CHAIN_FILE" "ORGADMIN_CONFIG" "ORGADMIN_PASSWORD_HASH_THREADS" "ORGADMIN_SHUTDOWN_DELAY_SECONDS") }}
{{- fail (printf "orgadmin: config.%s is set by the chart (see service.grpcPort, worker.healthPort, certificates.httpPort, secrets.ca, service.passwordHashThreads, service.shutdownDelaySeconds)" $key) }}
{{- end }}
{{- end }}
{{- end }}

{{/* A config value as a string: YAML/JSON numbers arrive as float64. */}}
{{- define "orgadmin.configValue" -}}
{{- if kindIs "float64" . }}{{ int64 . | toString }}{{ else }}{{ toString . }}{{ end }}
{{- end }}

{{/*
One env entry from a Secret: from the existing Secret when named, else from
the trial Secret when the trial value is given, else nothing.
dict "name" ENV "existing" SECRET "key" KEY "trial" VALUE "root" $
*/}}
{{- define "orgadmin.secretEnv" -}}
{{- if .existing }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .existing }}
      key: {{ .key }}
{{- else if .trial }}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "orgadmin.trialSecretName" .root }}
      key: {{ .name }}
{{- end }}
{{- end }}

{{- define "orgadmin.env.database" -}}
{{- include "orgadmin.secretEnv" (dict "name" "DATABASE_URL" "existing" .Values.secrets.database.existingSecret "key" .Values.secrets.database.key "trial" .Values.trialSecrets.databaseUrl "root" .) }}
{{- end }}

{{- define "orgadmin.env.cprKeys" -}}
{{- include "orgadmin.secretEnv" (dict "name" "ORGADMIN_CPR_LOOKUP_KEY" "existing" .Values.secrets.cprKeys.existingSecret "key" .Values.secrets.cprKeys.lookupKey "trial" .Values.trialSecrets.cprLookupKey "root" .) }}
{{- include "orgadmin.secretEnv" (dict "name" "ORGADMIN_CPR_ENCRYPTION_KEY" "existing" .Values.secrets.cprKeys.existingSecret "key" .Values.secrets.cprKeys.encryptionKey "trial" .Values.trialSecrets.cprEncryptionKey "root" .) }}
{{- end }}

{{- define "orgadmin.env.smtp" -}}
{{- include "orgadmin.secretEnv" (dict "name" "SMTP_URL" "existing" .Values.secrets.smtp.existingSecret "key" .Values.secrets.smtp.key "trial" .Values.trialSecrets.smtpUrl "root" .) }}
{{- end }}

{{- define "orgadmin.env.operatorTokens" -}}
{{- include "orgadmin.secretEnv" (dict "name" "ORGADMIN_OPERATOR_TOKENS" "existing" .Values.secrets.operatorTokens.existingSecret "key" .Values.secrets.operatorTokens.key "trial" .Values.trialSecrets.operatorTokens "root" .) }}
{{- end }}

{{/* The CA files' paths, for the containers that mount the CA. */}}
{{- define "orgadmin.env.ca" -}}
{{- if include "orgadmin.ca" . }}
- name: ORGADMIN_CA_KEY_FILE
  value: {{ printf "%s/ca.key" .Values.secrets.ca.mountPath | quote }}
- name: ORGADMIN_CA_CERTIFICATE_FILE
  value: {{ printf "%s/ca.crt" .Values.secrets.ca.mountPath | quote }}
{{- if or .Values.secrets.ca.chainKey .Values.trialSecrets.caChain }}
- name: ORGADMIN_CA_CHAIN_FILE
  value: {{ printf "%s/ca-chain.crt" .Values.secrets.ca.mountPath | quote }}
{{- end }}
{{- end }}
{{- end }}

{{- define "orgadmin.caVolume" -}}
{{- if include "orgadmin.ca" . }}
- name: ca
  secret:
    {{- if .Values.secrets.ca.existingSecret }}
    secretName: {{ .Values.secrets.ca.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.secrets.ca.keyKey }}
        path: ca.key
      - key: {{ .Values.secrets.ca.certKey }}
        path: ca.crt
      {{- with .Values.secrets.ca.chainKey }}
      - key: {{ . }}
        path: ca-chain.crt
      {{- end }}
    {{- else }}
    secretName: {{ include "orgadmin.trialSecretName" . }}
    defaultMode: 0440
    items:
      - key: ca.key
        path: ca.key
      - key: ca.crt
        path: ca.crt
      {{- if .Values.trialSecrets.caChain }}
      - key: ca-chain.crt
        path: ca-chain.crt
      {{- end }}
    {{- end }}
{{- end }}
{{- end }}

{{/* The data folder's mount (its data/ subfolder is made 0700 by the process). */}}
{{- define "orgadmin.dataMountPath" -}}
/var/lib/orgadmin
{{- end }}

{{/* Pod-level settings every orgadmin pod shares. */}}
{{- define "orgadmin.podCommon" -}}
serviceAccountName: {{ include "orgadmin.serviceAccountName" . }}
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end }}

{{/* Annotations that roll the pods when their configuration changes. */}}
{{- define "orgadmin.checksums" -}}
checksum/config: {{ include (print .Template.BasePath "/configmap.yaml") . | sha256sum }}
{{- if include "orgadmin.trialSecret" . }}
checksum/trial-secret: {{ include (print .Template.BasePath "/secret-trial.yaml") . | sha256sum }}
{{- end }}
{{- end }}

{{/* Where a Deployment's pods may run: given .Values.service or .Values.worker. */}}
{{- define "orgadmin.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* A private CA for an https:// OTLP collector (telemetry.otlpCaConfigMap). */}}
{{- define "orgadmin.otlpCaMount" -}}
{{- if and .Values.telemetry.otlpEndpoint .Values.telemetry.otlpCaConfigMap.name }}
- name: otlp-ca
  mountPath: /etc/orgadmin/otlp-ca
  readOnly: true
{{- end }}
{{- end }}

{{- define "orgadmin.otlpCaVolume" -}}
{{- if and .Values.telemetry.otlpEndpoint .Values.telemetry.otlpCaConfigMap.name }}
- name: otlp-ca
  configMap:
    name: {{ .Values.telemetry.otlpCaConfigMap.name }}
    items:
      - key: {{ .Values.telemetry.otlpCaConfigMap.key }}
        path: ca.crt
{{- end }}
{{- end }}
