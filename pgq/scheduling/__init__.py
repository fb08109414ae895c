"""Scheduling beyond "first come, first served": pausing queues and periodic (cron) jobs.

``pause`` stops and restarts the claiming of a queue's jobs (the claim
functions in Postgres decide; this package only calls them and reads their
tables). ``cron`` holds periodic schedules: their registration, the times of
their ticks (``croniter``), and the maintenance service that enqueues each
tick once. The claim statement itself is SQL's (``db/functions/``).
"""
