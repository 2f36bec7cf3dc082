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

{{/* The database URLs as Secret data, keyed by variable name: every service's URL spelled
     out (its own or the shared one), so each pod can be given only the keys its role reads. */}}
{{- define "mesh.databaseUrls" -}}
{{- $url := required "database.url is required" .Values.database.url -}}
MESH_DATABASE_URL: {{ $url | quote }}
MESH_USER_DATABASE_URL: {{ default $url .Values.database.userUrl | quote }}
MESH_SOCIAL_DATABASE_URL: {{ default $url .Values.database.socialUrl | quote }}
MESH_CHAT_DATABASE_URL: {{ default $url .Values.database.chatUrl | quote }}
{{- end -}}

{{/* The database URL variables a component reads (roles.rs / config: each service its own,
     the outbox and migrations every one, the edge none). Yields a JSON list. */}}
{{- define "mesh.databaseEnvNames" -}}
{{- $all := list "MESH_DATABASE_URL" "MESH_USER_DATABASE_URL" "MESH_SOCIAL_DATABASE_URL" "MESH_CHAT_DATABASE_URL" -}}
{{- $by := dict "edge" (list) "user" (list "MESH_USER_DATABASE_URL") "social" (list "MESH_SOCIAL_DATABASE_URL") "chat" (list "MESH_CHAT_DATABASE_URL") -}}
{{- if hasKey $by . -}}
{{- get $by . | toJson -}}
{{- else -}}
{{- $all | toJson -}}
{{- end -}}
{{- end -}}

{{/* env entries: a component's database URLs from `secret`, and `secretEnv` (a map of NAME:
     {secretName, key, optional}) as secretKeyRefs. Call with (dict "component" c "secret" s
     "secretEnv" map). */}}
{{- define "mesh.secretEnv" -}}
{{- $secret := .secret -}}
{{- range $name := include "mesh.databaseEnvNames" .component | fromJsonArray }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $secret }}
      key: {{ $name }}
{{- end }}
{{- range $name, $ref := .secretEnv }}
- name: {{ $name }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.secretName }}
      key: {{ $ref.key }}
      {{- if $ref.optional }}
      optional: true
      {{- end }}
{{- end }}
{{- end -}}

{{/* secretEnv maps, later ones replacing earlier entries whole (no deep merge of one entry's
     fields). Call with a list of maps; yields JSON. */}}
{{- define "mesh.mergeSecretEnv" -}}
{{- $out := dict -}}
{{- range $m := . -}}
{{- range $name, $ref := $m -}}
{{- $_ := set $out $name $ref -}}
{{- end -}}
{{- end -}}
{{- $out | toJson -}}
{{- end -}}

{{/* A memory quantity ("512Mi", "1Gi", "800M", "1073741824") in MiB, rounded down; empty
     when it cannot be read. */}}
{{- define "mesh.mebibytes" -}}
{{- $q := toString . -}}
{{- $num := regexFind "^[0-9]+(\\.[0-9]+)?" $q -}}
{{- $unit := trimPrefix $num $q -}}
{{- $factors := dict "" 1.0 "Ki" 1024.0 "Mi" 1048576.0 "Gi" 1073741824.0 "Ti" 1099511627776.0 "k" 1000.0 "M" 1000000.0 "G" 1000000000.0 "T" 1000000000000.0 -}}
{{- if and $num (hasKey $factors $unit) -}}
{{- floor (divf (mulf (float64 $num) (get $factors $unit)) 1048576.0) | int64 -}}
{{- end -}}
{{- end -}}

{{/* Settings the chart derives from its own values: set through `env` they would bypass what
     the chart does with the value (per-role Secrets, the Ingress, checks). name -> value. */}}
{{- define "mesh.ownedEnv" -}}
MESH_TRUSTED_PROXIES: edge.trustedProxies
MESH_FORWARDED_HEADER: edge.forwardedHeader
MESH_CONSOLE_PATH: edge.console
MESH_USER_HASH_THREADS: all.hashThreads / roles.user.hashThreads
MESH_DATABASE_URL: database.url / database.existingSecret
MESH_USER_DATABASE_URL: database.userUrl / database.existingSecret
MESH_SOCIAL_DATABASE_URL: database.socialUrl / database.existingSecret
MESH_CHAT_DATABASE_URL: database.chatUrl / database.existingSecret
MESH_NATS_ROLE_CREDENTIALS: nats.roleCredentials.existingSecret (each pod mounts only its own role's login)
MESH_JWT_PRIVATE_KEY: jwt.existingSecret / jwt.privateKey
MESH_JWT_PUBLIC_KEY: jwt.existingSecret / jwt.publicKey
MESH_DB_MAX_CONNECTIONS: all.databaseConnections / roles.<role>.databaseConnections (default database.maxConnections)
{{- end -}}

{{/* Secrets: never in the ConfigMap. */}}
{{- define "mesh.secretNames" -}}
["MESH_NATS_PASSWORD","MESH_NATS_TOKEN","MESH_NATS_NKEY_SEED"]
{{- end -}}

{{/* Variables the ConfigMap sets from chart values (a second key would be a duplicate). */}}
{{- define "mesh.configMapEnv" -}}
MESH_PREFIX: prefix
MESH_NATS_URL: nats.url (or secretEnv.MESH_NATS_URL)
MESH_JWT_ISSUER: jwt.issuer
MESH_JWT_AUDIENCE: jwt.audience
MESH_HTTP_ADDR: ports.http
MESH_METRICS_ADDR: ports.metrics
MESH_PUBLIC_URL: publicUrl
{{- end -}}

{{/* Refuses values the chart cannot deploy safely, each with what to set instead. */}}
{{- define "mesh.validate" -}}
{{- include "mesh.requireDatabase" . -}}
{{- $v := .Values -}}
{{- if and $v.ingress.enabled (not $v.edge.trustedProxies) (not $v.ingress.unsafeSharedClientAddress) -}}
{{- fail "ingress.enabled needs edge.trustedProxies: the CIDRs of the ingress controller's pods (MESH_TRUSTED_PROXIES), e.g. --set 'edge.trustedProxies={10.244.0.0/16}'. Without them the edge sees every client as the proxy's address, so all users share one per-address rate limit, connection limit and sign-in lockout. (ingress.unsafeSharedClientAddress=true renders anyway: unsafe.)" -}}
{{- end -}}
{{- if contains "@" $v.nats.url -}}
{{- fail "nats.url holds credentials, and would sit in the ConfigMap: put the URL in a Secret and set secretEnv.MESH_NATS_URL={secretName,key} (or use nats.roleCredentials)" -}}
{{- end -}}
{{- $owned := include "mesh.ownedEnv" . | fromYaml -}}
{{- $secrets := include "mesh.secretNames" . | fromJsonArray -}}
{{- $configMap := include "mesh.configMapEnv" . | fromYaml -}}
{{- $plain := list (list "env" $v.env true) (list "nats.env" $v.nats.env true) (list "all.env" $v.all.env false) -}}
{{- $secretMaps := list (list "secretEnv" $v.secretEnv) (list "all.secretEnv" $v.all.secretEnv) (list "migration.secretEnv" $v.migration.secretEnv) -}}
{{- range $role, $rv := $v.roles -}}
{{- $plain = append $plain (list (printf "roles.%s.env" $role) $rv.env false) -}}
{{- $secretMaps = append $secretMaps (list (printf "roles.%s.secretEnv" $role) $rv.secretEnv) -}}
{{- end -}}
{{- range $entry := $plain -}}
{{- $where := index $entry 0 -}}
{{- range $name, $value := index $entry 1 -}}
{{- if and (hasSuffix "_URL" $name) (contains "@" (toString $value)) -}}
{{- fail (printf "%s.%s holds credentials, and would sit in plain text in the ConfigMap or pod spec: take it from a Secret with secretEnv.%s={secretName,key}" $where $name $name) -}}
{{- end -}}
{{- if hasKey $owned $name -}}
{{- fail (printf "%s.%s: the chart sets %s from %s; set that value instead" $where $name $name (get $owned $name)) -}}
{{- end -}}
{{- if has $name $secrets -}}
{{- fail (printf "%s.%s is a secret and would sit in plain text in the ConfigMap or pod spec: take it from a Secret with secretEnv.%s={secretName,key}" $where $name $name) -}}
{{- end -}}
{{- if and (index $entry 2) (hasKey $configMap $name) -}}
{{- fail (printf "%s.%s: the chart sets %s from %s; set that value instead" $where $name $name (get $configMap $name)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $entry := $secretMaps -}}
{{- range $name, $_ := index $entry 1 -}}
{{- if hasKey $owned $name -}}
{{- fail (printf "%s.%s: the chart sets %s from %s; set that value instead" (index $entry 0) $name $name (get $owned $name)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $global := merge (deepCopy (default dict $v.env)) (default dict $v.nats.env) -}}
{{- $components := list (list "all" $v.all) -}}
{{- range $role, $rv := $v.roles -}}
{{- $components = append $components (list (printf "roles.%s" $role) $rv) -}}
{{- end -}}
{{- $components = append $components (list "migration" (dict "secretEnv" $v.migration.secretEnv)) -}}
{{- range $entry := $components -}}
{{- $c := index $entry 1 -}}
{{- $plainNames := keys (merge (deepCopy $global) (default dict $c.env)) -}}
{{- range $name, $_ := merge (deepCopy (default dict $c.secretEnv)) (default dict $v.secretEnv) -}}
{{- if has $name $plainNames -}}
{{- fail (printf "%s: %s is set both as plain env and in secretEnv; keep one" (index $entry 0) $name) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $component := list "all" "user" -}}
{{- $c := ternary $v.all (index $v.roles "user") (eq $component "all") -}}
{{- $limit := "" -}}
{{- with $c.resources -}}{{- with .limits -}}{{- with .memory -}}{{- $limit = include "mesh.mebibytes" . -}}{{- end -}}{{- end -}}{{- end -}}
{{- if and $c.hashThreads $limit -}}
{{- $base := ternary 256 128 (eq $component "all") -}}
{{- $need := add (mul (int $c.hashThreads) 19) $base -}}
{{- if lt (int64 $limit) (int64 $need) -}}
{{- $path := ternary "all" "roles.user" (eq $component "all") -}}
{{- fail (printf "%s.resources.limits.memory (%s) is below %s.hashThreads x 19Mi + %dMi = %dMi: argon2 hashing would be OOM-killed under a sign-in burst; lower hashThreads or raise the limit" $path (toString $c.resources.limits.memory) $path $base $need) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- include "mesh.checkDisruptionBudgets" . -}}
{{- include "mesh.checkNetworkPolicy" . -}}
{{- include "mesh.checkConnectionBudget" . -}}
{{- end -}}

{{/* Refuses a PodDisruptionBudget that keeps every pod of its Deployment: it allows no
     eviction, so every node drain (kubectl drain, node pool upgrades) waits forever. The pods
     counted are the HPA's minReplicas when autoscaling (where it rests when idle), else
     replicas; a percentage keeps ceil(percentage x pods / 100) of them, as Kubernetes rounds
     it. A Deployment scaled to 0 has nothing to evict and passes. */}}
{{- define "mesh.checkDisruptionBudgets" -}}
{{- range $component := include "mesh.components" . | fromJsonArray -}}
{{- $c := include "mesh.componentValues" (dict "root" $ "component" $component) | fromYaml -}}
{{- $path := ternary "all" (printf "roles.%s" $component) (eq $component "all") -}}
{{- if and $c.pdb.enabled (ne (toString $c.pdb.minAvailable) "<nil>") -}}
{{- $raw := toString $c.pdb.minAvailable -}}
{{- $autoscaled := and $c.autoscaling $c.autoscaling.enabled -}}
{{- $pods := int (ternary (default 1 $c.autoscaling.minReplicas) $c.replicas $autoscaled) -}}
{{- $podsFrom := ternary (printf "%s.autoscaling.minReplicas" $path) (printf "%s.replicas" $path) $autoscaled -}}
{{- $kept := 0 -}}
{{- if regexMatch "^[0-9]+%$" $raw -}}
{{- $kept = div (add (mul (int (trimSuffix "%" $raw)) $pods) 99) 100 -}}
{{- else if regexMatch "^[0-9]+$" $raw -}}
{{- $kept = int $raw -}}
{{- else -}}
{{- fail (printf "%s.pdb.minAvailable (%s) must be a whole number of pods or a percentage such as 50%%" $path $raw) -}}
{{- end -}}
{{- if and (gt $pods 0) (ge $kept $pods) -}}
{{- $given := ternary (printf "%s, i.e. %d %s" $raw $kept (ternary "pod" "pods" (eq $kept 1))) $raw (hasSuffix "%" $raw) -}}
{{- fail (printf "%s.pdb.minAvailable (%s) must stay below %s (%d): a PodDisruptionBudget that keeps every pod allows no eviction, so every node drain (kubectl drain, node upgrades) would wait forever. Lower %s.pdb.minAvailable, raise %s, or set %s.pdb.enabled=false" $path $given $podsFrom $pods $path $podsFrom $path) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Peers that may reach the port serving /metrics: networkPolicy.metrics.from, else every
     pod of the release's namespace. Yields a JSON list of NetworkPolicyPeers. */}}
{{- define "mesh.metricsPeers" -}}
{{- default (list (dict "podSelector" (dict))) .Values.networkPolicy.metrics.from | toJson -}}
{{- end -}}

{{/* Refuses NetworkPolicy values that would cut the release off from what it needs. */}}
{{- define "mesh.checkNetworkPolicy" -}}
{{- $np := .Values.networkPolicy -}}
{{- if $np.enabled -}}
{{- if and .Values.metrics.serviceMonitor.enabled (not $np.metrics.from) -}}
{{- fail `metrics.serviceMonitor.enabled with networkPolicy.enabled needs networkPolicy.metrics.from: the peers Prometheus scrapes from (without them the policies admit the metrics ports from this namespace only, and a Prometheus elsewhere scrapes nothing), e.g. --set-json 'networkPolicy.metrics.from=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]', or [{"podSelector":{}}] when Prometheus runs in this namespace` -}}
{{- end -}}
{{- if $np.egress.enabled -}}
{{- range $name := list "nats" "postgres" "otlp" -}}
{{- $peer := get $np.egress $name -}}
{{- if and (or (ne $name "otlp") $peer.enabled) (not $peer.ports) -}}
{{- fail (printf "networkPolicy.egress.%s.ports is empty: an egress rule without ports would allow every port; list the ports" $name) -}}
{{- end -}}
{{- end -}}
{{- if not $np.egress.otlp.enabled -}}
{{- $maps := list .Values.env .Values.secretEnv .Values.migration.secretEnv -}}
{{- range $component := include "mesh.components" . | fromJsonArray -}}
{{- $c := include "mesh.componentValues" (dict "root" $ "component" $component) | fromYaml -}}
{{- $maps = append (append $maps $c.env) $c.secretEnv -}}
{{- end -}}
{{- range $m := $maps -}}
{{- if hasKey (default dict $m) "OTEL_EXPORTER_OTLP_ENDPOINT" -}}
{{- fail "OTEL_EXPORTER_OTLP_ENDPOINT is set while networkPolicy.egress.enabled blocks the collector: set networkPolicy.egress.otlp.enabled=true and networkPolicy.egress.otlp.to (and .ports, default 4318) to reach it" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Postgres connections one pod of a component may hold at once: its service pools at their
     size, plus, where the outbox relay runs, three per relayed schema (the advisory lock's
     connection, the LISTEN connection and a one-connection pool; src/roles.rs). */}}
{{- define "mesh.podConnections" -}}
{{- $size := int (include "mesh.poolSize" .) -}}
{{- $pools := dict "edge" 0 "user" 1 "social" 1 "chat" 1 "outbox" 1 "all" 4 -}}
{{- $relay := dict "edge" 0 "user" 0 "social" 0 "chat" 0 "outbox" 9 "all" 9 -}}
{{- add (mul (get $pools .component) $size) (get $relay .component) -}}
{{- end -}}

{{/* MESH_DB_MAX_CONNECTIONS of a component: its databaseConnections, else database.maxConnections. */}}
{{- define "mesh.poolSize" -}}
{{- $c := include "mesh.componentValues" (dict "root" .root "component" .component) | fromYaml -}}
{{- default .root.Values.database.maxConnections $c.databaseConnections -}}
{{- end -}}

{{/* Refuses a release that may open more Postgres connections than database.connectionBudget:
     every Deployment at its most pods (the HPA's maxReplicas when autoscaling, else replicas)
     plus what a rolling update adds (maxSurge 25% new pods, rounded up, while maxUnavailable
     25% of the old ones, rounded down, may still be stopping), each holding its pools full,
     plus the migration Job's pool of 2. Kubernetes does not count pods that are terminating,
     so this assumes an old pod is gone before the next new one is ready: the roles stop
     within seconds of SIGTERM (the chart test's wiring measures it), while a new pod needs its
     readiness probe; old pods slower to stop would overlap further. */}}
{{- define "mesh.checkConnectionBudget" -}}
{{- $budget := int .Values.database.connectionBudget -}}
{{- if gt $budget 0 -}}
{{- $total := 2 -}}
{{- $parts := list "2 (migration Job)" -}}
{{- range $component := include "mesh.components" . | fromJsonArray -}}
{{- $c := include "mesh.componentValues" (dict "root" $ "component" $component) | fromYaml -}}
{{- $each := int (include "mesh.podConnections" (dict "root" $ "component" $component)) -}}
{{- if gt $each 0 -}}
{{- $pods := int (ternary $c.autoscaling.maxReplicas $c.replicas (and $c.autoscaling $c.autoscaling.enabled)) -}}
{{- $pods = add $pods (div (add $pods 3) 4) (div $pods 4) -}}
{{- $total = add $total (mul $pods $each) -}}
{{- $parts = append $parts (printf "%d %s pods x %d" $pods $component $each) -}}
{{- end -}}
{{- end -}}
{{- if gt $total $budget -}}
{{- fail (printf "database.connectionBudget is %d, but this release may hold %d Postgres connections at once: %s (pods at the HPA's maxReplicas or replicas, plus a rolling update's 25%% new pods and 25%% old ones still stopping; each pod's pools full). Postgres refuses connections beyond its max_connections, and the services then fail requests. Lower all.databaseConnections / roles.<role>.databaseConnections, replicas or autoscaling.maxReplicas, or raise database.connectionBudget to what the server allows this release (max_connections minus superuser_reserved_connections and other clients; 0 skips the check, e.g. behind PgBouncer)" $budget $total (join " + " $parts)) -}}
{{- end -}}
{{- end -}}
{{- end -}}
