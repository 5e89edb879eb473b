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
