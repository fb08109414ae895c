"""The memory writer's process: ``python -m pgq.memory.process``, started by a worker.

``pgq.memory.writer.ProcessSink`` starts it and speaks pickles over its stdin
and stdout: first the settings and the worker's id, then ``("write", batch,
now, retry_now)`` answered by a ``Report``, then ``("stop",)`` answered once the
store is closed. It runs a ``StoreSink``, so embedding and Qdrant's per-point
work use this process's CPU and GIL, not the worker's. It ignores SIGINT and
SIGTERM (the worker decides when it stops) and ends when its stdin closes.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys

from pgq.memory.writer import StoreSink


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Answers go to the stdout the worker reads; anything else printed goes to stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    settings, worker_id = pickle.load(requests)
    sink = StoreSink(settings, worker_id)
    stopping = False
    try:
        while not stopping:
            try:
                request = pickle.load(requests)
            except EOFError:  # the worker is gone: nothing is left to write
                break
            if request[0] != "write":
                stopping = True
                break
            _, batch, now, retry = request
            if retry:
                sink.retry_now()
            report = sink.write(batch, now)  # stored before the answer: a dead worker does not undo it
            try:
                pickle.dump(report, answers, protocol=pickle.HIGHEST_PROTOCOL)
                answers.flush()
            except BrokenPipeError:  # the worker died while this batch was written
                break
    finally:
        sink.close()
    if stopping:
        pickle.dump("stopped", answers)
        answers.flush()
    # The store is closed and the answer sent: nothing is left that the interpreter's
    # teardown (seconds, with numpy and qdrant-client loaded) would do for us.
    os._exit(0)


if __name__ == "__main__":
    main()
