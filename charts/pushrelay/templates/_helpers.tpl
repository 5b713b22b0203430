{{/*
Names, labels and the per-component facts every template shares.
*/}}

{{/* The three services, in the order they are rendered. */}}
{{- define "pushrelay.services" -}}
ingress router refresher
{{- end }}

{{/*
The workloads: the three services over Kafka, or (bus: embedded) the one
all-in-one process, which is all three on the embedded log.
*/}}
{{- define "pushrelay.components" -}}
{{- if eq .Values.bus "embedded" }}all-in-one{{ else }}{{ include "pushrelay.services" . }}{{ end }}
{{- end }}

{{/* The values block of a component: "all-in-one" -> allInOne. */}}
{{- define "pushrelay.valuesKey" -}}
{{- ternary "allInOne" . (eq . "all-in-one") }}
{{- end }}

{{/* Whether a component serves the receivers (Quay's port): the ingress, or all-in-one. */}}
{{- define "pushrelay.servesReceivers" -}}
{{- if has . (list "ingress" "all-in-one") }}true{{ end }}
{{- end }}

{{/* The component the receiver Service selects. */}}
{{- define "pushrelay.receiverComponent" -}}
{{- ternary "all-in-one" "ingress" (eq .Values.bus "embedded") }}
{{- end }}

{{/*
The ServiceAccount a service's ClusterRole is bound to: its own, or with the
embedded bus the all-in-one's (which so holds the union of the three roles).
(dict "root" $ "component" "router")
*/}}
{{- define "pushrelay.account" -}}
{{- $component := ternary "all-in-one" .component (eq .root.Values.bus "embedded") }}
{{- include "pushrelay.componentName" (dict "root" .root "component" $component) }}
{{- end }}

{{/*
Where the writable state lives (the image's /var/lib/pushrelay, owned by
10001): the ingress's spool and the embedded bus's log. A claim is mounted on
stateDir, the directories are its subdirectories; an emptyDir spool is mounted
on the spool directory itself.
*/}}
{{- define "pushrelay.stateDir" -}}
/var/lib/pushrelay
{{- end }}
{{- define "pushrelay.spoolDir" -}}
/var/lib/pushrelay/spool
{{- end }}
{{- define "pushrelay.dataDir" -}}
/var/lib/pushrelay/data
{{- end }}

{{/* Whether the ingress runs as a StatefulSet: its spool on a claim per replica. */}}
{{- define "pushrelay.spoolOnClaim" -}}
{{- with .Values.ingress.spool }}{{ if and .enabled (eq .volume "pvc") }}true{{ end }}{{ end }}
{{- end }}

{{- define "pushrelay.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: fullnameOverride, else the release name when it
contains the chart name, else "<release>-<chart>". Release "pushrelay" gives
the names of deploy/ ("pushrelay-ingress", ...).
*/}}
{{- define "pushrelay.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of a component's objects: (dict "root" $ "component" "ingress"). */}}
{{- define "pushrelay.componentName" -}}
{{- printf "%s-%s" (include "pushrelay.fullname" .root) .component }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "pushrelay.labels" -}}
app.kubernetes.io/part-of: pushrelay
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* What selects a component's pods: (dict "root" $ "component" "ingress"). */}}
{{- define "pushrelay.selectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" (include "pushrelay.name" .root) .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end }}

{{/* Labels of a component's objects and pods. */}}
{{- define "pushrelay.componentLabels" -}}
{{ include "pushrelay.labels" .root }}
app.kubernetes.io/name: {{ printf "%s-%s" (include "pushrelay.name" .root) .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "pushrelay.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The named container port a component serves /healthz, /readyz and /metrics on:
the ingress serves them on its receiver port, router and refresher on the
health port.
*/}}
{{- define "pushrelay.healthPortName" -}}
health
{{- end }}

{{/* The number behind pushrelay.healthPortName: (dict "root" $ "component" ...). */}}
{{- define "pushrelay.healthPort" -}}
{{- .root.Values.ports.health }}
{{- end }}

{{/* Mount point of kafka.tls.existingSecret. */}}
{{- define "pushrelay.kafkaTLSDir" -}}
/etc/pushrelay/kafka-tls
{{- end }}

{{/*
The ConfigMap's data: the typed values as PUSHRELAY_* settings, then
.Values.config. A config key that a typed value already sets is an error.
*/}}
{{- define "pushrelay.configData" -}}
{{- $v := .Values }}
{{- $data := dict
  "PUSHRELAY_TOPIC_PREFIX" $v.kafka.topicPrefix
  "PUSHRELAY_TOPIC_PARTITIONS" (toString $v.kafka.topicPartitions)
  "PUSHRELAY_LOG_LEVEL" $v.logLevel
  "PUSHRELAY_LOG_FORMAT" $v.logFormat
  "PUSHRELAY_HEALTH_PORT" (toString $v.ports.health)
  "PUSHRELAY_INGRESS_PORT" (toString $v.ports.ingress)
  "PUSHRELAY_SHUTDOWN_TIMEOUT" (toString $v.shutdownTimeout)
  "PUSHRELAY_BASE_URL" $v.baseUrl
  "PUSHRELAY_WRITE_STATUS" (toString $v.writeStatus)
}}
{{- /* Set per workload (env), from bus and ingress.spool: never from config. */}}
{{- range $key := list "PUSHRELAY_BUS" "PUSHRELAY_DATA_DIR" "PUSHRELAY_SPOOL_DIR" }}
{{- if hasKey $v.config $key }}
{{- fail (printf "config.%s is set by a typed value of the chart (bus, ingress.spool; see README.md); set it there" $key) }}
{{- end }}
{{- end }}
{{- if eq $v.bus "kafka" }}
{{- $_ := set $data "PUSHRELAY_KAFKA_BOOTSTRAP" $v.kafka.bootstrap }}
{{- $_ := set $data "PUSHRELAY_TOPIC_REPLICATION" (toString $v.kafka.topicReplication) }}
{{- $_ := set $data "PUSHRELAY_KAFKA_SECURITY_PROTOCOL" $v.kafka.securityProtocol }}
{{- include "pushrelay.kafkaSecurityData" (dict "root" . "data" $data) }}
{{- end }}
{{- range $key, $value := $v.config }}
{{- if hasKey $data $key }}
{{- fail (printf "config.%s is set by a typed value of the chart (see README.md); set it there" $key) }}
{{- end }}
{{- $_ := set $data $key (toString $value) }}
{{- end }}
{{- toYaml $data }}
{{- end }}

{{/*
Kafka's TLS/SASL settings into .data (dict "root" $ "data" $data); with the
Kafka bus only.
*/}}
{{- define "pushrelay.kafkaSecurityData" -}}
{{- $v := .root.Values }}
{{- $data := .data }}
{{- $tls := has $v.kafka.securityProtocol (list "SSL" "SASL_SSL") }}
{{- $sasl := hasPrefix "SASL_" $v.kafka.securityProtocol }}
{{- if $sasl }}
{{- if not $v.kafka.sasl.existingSecret }}
{{- fail (printf "kafka.securityProtocol %s needs kafka.sasl.existingSecret (a Secret with the username and password)" $v.kafka.securityProtocol) }}
{{- end }}
{{- $_ := set $data "PUSHRELAY_KAFKA_SASL_MECHANISM" $v.kafka.sasl.mechanism }}
{{- end }}
{{- with $v.kafka.tls }}
{{- if .existingSecret }}
{{- if not $tls }}
{{- fail "kafka.tls.existingSecret needs kafka.securityProtocol SSL or SASL_SSL" }}
{{- end }}
{{- $_ := set $data "PUSHRELAY_KAFKA_CA_FILE" (printf "%s/%s" (include "pushrelay.kafkaTLSDir" $) .caKey) }}
{{- if or .certKey .keyKey }}
{{- if not (and .certKey .keyKey) }}
{{- fail "kafka.tls.certKey and kafka.tls.keyKey go together" }}
{{- end }}
{{- $_ := set $data "PUSHRELAY_KAFKA_CERT_FILE" (printf "%s/%s" (include "pushrelay.kafkaTLSDir" $) .certKey) }}
{{- $_ := set $data "PUSHRELAY_KAFKA_KEY_FILE" (printf "%s/%s" (include "pushrelay.kafkaTLSDir" $) .keyKey) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/* Whether the pods talk to Kafka with SASL credentials (from a Secret, as env). */}}
{{- define "pushrelay.kafkaSasl" -}}
{{- if and (eq .Values.bus "kafka") (hasPrefix "SASL_" .Values.kafka.securityProtocol) }}true{{ end }}
{{- end }}

{{/* Whether the pods mount kafka.tls.existingSecret. */}}
{{- define "pushrelay.kafkaTLSMount" -}}
{{- if and (eq .Values.bus "kafka") .Values.kafka.tls.existingSecret }}true{{ end }}
{{- end }}
