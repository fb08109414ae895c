"""Scheduling beyond "first come, highest priority": job graphs, pausing queues, periodic (cron) jobs.

The decisions are made in Postgres (the claim functions, ``enqueue_jobs_v2``,
``complete_jobs``); this package checks and prepares what it sends. ``graph``
checks a job graph before it is sent and says how to send it (its statements
are in ``pgq/queries/graph.py``). ``pause`` stops and restarts the claiming of
a queue's jobs (it only calls the functions and reads their tables). ``cron``
holds periodic schedules: their registration, the times of their ticks
(``croniter``), and the maintenance service that enqueues each tick once.
"""
