"""The verbs on a job: a job is planned (request, plan, preview), launched
(launch, behind the front door run), watched (lifecycle, watch, logs, notify,
postmortem) and stopped (lifecycle); export and cron are views and schedules of a run;
shell, forward and fetch_files reach a running job's nodes.
"""
