"""`transkube` (also `kubectl transcode`): upload media, submit TranscodeJobs, watch them, fetch their outputs,
directly against the cluster or through the REST shim."""
