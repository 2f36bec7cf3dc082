{{/* Names, labels and the pieces every workload shares. */}}

{{- define "mesh.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "mesh.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "mesh.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "mesh.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mesh.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "mesh.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selector labels of one component; call with (dict "root" $ "component" "edge"). */}}
{{- define "mesh.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mesh.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* The Deployments to render: "all" alone, or the five roles. Yields a JSON list. */}}
{{- define "mesh.components" -}}
{{- if eq .Values.mode "all" -}}
["all"]
{{- else -}}
["edge","user","social","chat","outbox"]
{{- end -}}
{{- end -}}

{{/* Settings of one component. */}}
{{- define "mesh.componentValues" -}}
{{- if eq .component "all" -}}
{{- toYaml .root.Values.all -}}
{{- else -}}
{{- toYaml (index .root.Values.roles .component) -}}
{{- end -}}
{{- end -}}

{{/* Name of a component's Deployment and Service: the edge (or all) is the release's name. */}}
{{- define "mesh.componentName" -}}
{{- if or (eq .component "all") (eq .component "edge") -}}
{{- include "mesh.fullname" .root -}}
{{- else -}}
{{- printf "%s-%s" (include "mesh.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* True ("true") when a component serves the HTTP API. */}}
{{- define "mesh.servesHttp" -}}
{{- if or (eq .component "all") (eq .component "edge") }}true{{ end -}}
{{- end -}}

{{- define "mesh.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "mesh.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "mesh.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the database URLs (keys are the variable names). */}}
{{- define "mesh.databaseSecret" -}}
{{- if .Values.database.existingSecret -}}
{{- .Values.database.existingSecret -}}
{{- else -}}
{{- printf "%s-database" (include "mesh.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The Secret with the JWT key pair. */}}
{{- define "mesh.jwtSecret" -}}
{{- if .Values.jwt.existingSecret -}}
{{- .Values.jwt.existingSecret -}}
{{- else if and .Values.jwt.privateKey .Values.jwt.publicKey -}}
{{- printf "%s-jwt" (include "mesh.fullname" .) -}}
{{- else -}}
{{- fail "jwt: set jwt.existingSecret (a Secret with jwt_ed25519.pem and jwt_ed25519.pub.pem, see `mesh keygen`) or both jwt.privateKey and jwt.publicKey" -}}
{{- end -}}
{{- end -}}

{{/* Fails early when no database URL is configured. */}}
{{- define "mesh.requireDatabase" -}}
{{- if not (or .Values.database.existingSecret .Values.database.url) -}}
{{- fail "database: set database.url (MESH_DATABASE_URL) or database.existingSecret" -}}
{{- end -}}
{{- end -}}

{{/* The container's security context. */}}
{{- define "mesh.securityContext" -}}
{{- toYaml .Values.securityContext -}}
{{- end -}}

{{/* The database URLs as Secret data, keyed by variable name. */}}
{{- define "mesh.databaseUrls" -}}
MESH_DATABASE_URL: {{ required "database.url is required" .Values.database.url | quote }}
{{- with .Values.database.userUrl }}
MESH_USER_DATABASE_URL: {{ . | quote }}
{{- end }}
{{- with .Values.database.socialUrl }}
MESH_SOCIAL_DATABASE_URL: {{ . | quote }}
{{- end }}
{{- with .Values.database.chatUrl }}
MESH_CHAT_DATABASE_URL: {{ . | quote }}
{{- end }}
{{- end -}}
