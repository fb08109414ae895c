"""Scheduling beyond "first come, highest priority": job graphs (``graph.py``; their statements are in ``pgq/queries/graph.py``).

The decisions are made in Postgres (``enqueue_jobs_v2``, ``complete_jobs``); this
package checks a graph before it is sent and says how to send it.
"""
