{{- define "transkube.fullname" -}}
{{- printf "%s" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "transkube.labels" -}}
app.kubernetes.io/name: transkube
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "transkube.image" -}}
{{- printf "%s:%s" .image.repository (default .appVersion .image.tag) -}}
{{- end -}}

{{/* The scheduling block as the operator (and the shim's queue stats) read it: TRANSKUBE_SCHEDULING. */}}
{{- define "transkube.schedulingJson" -}}
{{- $s := .Values.scheduling -}}
{{- toPrettyJson (dict "mode" $s.mode "pools" $s.pools "defaultPools" $s.defaultPools "agingSeconds" $s.agingSeconds "defaultQuota" $s.defaultQuota "quotas" $s.quotas "kueueQueueName" $s.kueueQueueName) -}}
{{- end -}}

{{/* Storage confinement (values: storageScope, shim.storageScope): every prefix must be an s3:// one. */}}
{{- define "transkube.checkScope" -}}
{{- range $name, $entry := . -}}
{{- range concat ($entry.prefixes | default list) ($entry.readOnlyPrefixes | default list) -}}
{{- if not (hasPrefix "s3://" .) -}}
{{- fail (printf "storage scope %s: %q is not an s3://bucket/ or s3://bucket/prefix/ prefix" $name .) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The namespace mapping as the operator reads it (TRANSKUBE_STORAGE_SCOPE). */}}
{{- define "transkube.storageScopeJson" -}}
{{- $s := .Values.storageScope -}}
{{- include "transkube.checkScope" (merge (dict "(default)" $s.default) $s.namespaces) -}}
{{- toPrettyJson (dict "default" $s.default "namespaces" $s.namespaces) -}}
{{- end -}}

{{/* One entry of the admission policy's parameter ConfigMap (keys: transkube_api/scope.py, param_data). */}}
{{- define "transkube.storageScopeEntry" -}}
{{ .name }}.unconfined: {{ .entry.unconfined | default false | toString | quote }}
{{ .name }}.readWrite: {{ join "\n" (.entry.prefixes | default list) | quote }}
{{ .name }}.readOnly: {{ join "\n" (.entry.readOnlyPrefixes | default list) | quote }}
{{- end -}}

{{/* The tenants' scopes as the shim reads them (TRANSKUBE_SHIM_STORAGE_SCOPE). */}}
{{- define "transkube.shimStorageScopeJson" -}}
{{- $s := .Values.shim.storageScope -}}
{{- include "transkube.checkScope" (merge (dict "(default)" $s.default) $s.tenants) -}}
{{- toPrettyJson (dict "default" $s.default "tenants" $s.tenants) -}}
{{- end -}}

{{/* The operator replicas' leader-election Lease (named here only: the Role and the operator's env use it). */}}
{{- define "transkube.leaseName" -}}
{{- printf "%s-operator" (include "transkube.fullname" .) -}}
{{- end -}}

{{/* Leader election as the operator reads it (TRANSKUBE_LEADER_ELECTION). */}}
{{- define "transkube.leaderElectionJson" -}}
{{- $l := .Values.operator.leaderElection -}}
{{- if not (and (lt 0.0 (float64 $l.retryPeriodSeconds)) (lt (float64 $l.retryPeriodSeconds) (float64 $l.renewDeadlineSeconds)) (lt (float64 $l.renewDeadlineSeconds) (float64 $l.leaseDurationSeconds))) -}}
{{- fail "operator.leaderElection needs 0 < retryPeriodSeconds < renewDeadlineSeconds < leaseDurationSeconds" -}}
{{- end -}}
{{- if and (not $l.enabled) (gt (int .Values.operator.replicas) 1) -}}
{{- fail "operator.replicas > 1 needs operator.leaderElection.enabled (two reconcilers must never run at once)" -}}
{{- end -}}
{{- toPrettyJson (dict "enabled" $l.enabled "leaseName" (include "transkube.leaseName" .) "leaseNamespace" .Release.Namespace "leaseDurationSeconds" $l.leaseDurationSeconds "renewDeadlineSeconds" $l.renewDeadlineSeconds "retryPeriodSeconds" $l.retryPeriodSeconds) -}}
{{- end -}}
