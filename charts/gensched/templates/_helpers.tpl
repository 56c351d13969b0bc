{{- define "gensched.name" -}}gensched{{- end -}}
{{- define "gensched.fullname" -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}-gensched{{- end -}}
{{- define "gensched.labels" -}}
app.kubernetes.io/name: gensched
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}
{{- define "gensched.selector" -}}
app.kubernetes.io/name: gensched
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}
