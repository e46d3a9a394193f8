"""The pipeline process of ``pipeline: process``: its main function and its delivery loop.

:func:`child_main` runs in a ``spawn``-ed child of the gateway process. It builds the
:class:`audit.pipeline.AuditPipeline` (loading the key files itself), reports ``started`` (or the
start-up error), then delivers every batch the gateway ships (:mod:`audit.wire`) to the pipeline on
its main thread, and answers with metrics, write health and flush acknowledgements. It ignores SIGINT
and SIGTERM: the gateway decides when audit stops (``stop``), and if the gateway dies the pipe's end
of file says so; either way the pipeline is closed with a ``shutdown`` checkpoint.
"""

from __future__ import annotations

import gc
import pickle
import signal
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

from audit.config import AuditConfig
from audit.keys import load_pipeline_keys
from audit.pipeline import AuditPipeline, Event
from audit.wire import FrameReader, unpack

#: seconds between the counters the pipeline process sends for the gateway's ``/metrics``
_REPORT_INTERVAL = 0.5
#: seconds without a batch after which the periodic work (time checkpoints, fsync) runs anyway
_IDLE_POLL = 0.2


def child_main(
    config: AuditConfig, instance: str, parent_pid: int, inbox: Connection, outbox: Connection
) -> None:
    """Run the pipeline on this process's main thread until ``stop`` or end of file (gateway gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the gateway decides when audit stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def send(message: tuple[Any, ...]) -> None:
        try:
            outbox.send(message)
        except (OSError, ValueError):
            pass  # the gateway process is gone: keep writing what was received

    try:
        keys = load_pipeline_keys(config)
        pipeline = AuditPipeline(
            config,
            audit_key=keys.audit_key,
            signer=keys.signer,
            instance=instance,
            pid=parent_pid,  # records name the gateway worker, not this helper
            on_health=lambda writable, reason: send(("health", writable, reason)),
        )
        pipeline.start()
    except Exception as exc:
        _report_failed_start(send, exc)
        return
    send(("started", pipeline.metrics()))
    gc.freeze()  # what start-up loaded stays: keep the collector from re-scanning it for every batch
    fatal = None
    try:
        if not _serve(pipeline, inbox, send, config.shutdown_timeout):
            pipeline.declare_gateway_exit()
        pipeline.close(time.monotonic() + config.shutdown_timeout)
    except Exception as exc:  # reported (stderr, metrics); what was written stays verifiable
        fatal = f"{type(exc).__name__}: {exc}"
        print(f"smgate audit: pipeline failed: {fatal}", file=sys.stderr)
        pipeline.abandon(time.monotonic() + config.shutdown_timeout)
    finally:
        send(("closed", fatal, pipeline.metrics()))
        outbox.close()


def _report_failed_start(send: Any, exc: Exception) -> None:
    """Hand the start-up error to the parent (which raises it), as itself if it pickles."""
    try:
        pickle.dumps(exc)
        send(("failed_start", exc))
    except Exception:
        send(("failed_start", RuntimeError(f"audit pipeline process failed to start: {type(exc).__name__}")))


def _serve(pipeline: AuditPipeline, inbox: Connection, send: Any, shutdown_timeout: float) -> bool:
    """Deliver batches to ``pipeline`` until ``stop`` (True) or end of file (False).

    All messages waiting in the pipe form one batch, so a busy gateway costs one pipeline pass per pipe
    read, not per message. With nothing to read for ``_IDLE_POLL`` seconds the periodic work (time
    checkpoints, rotation, fsync) runs anyway.
    """
    reader = FrameReader(inbox)
    last_report = time.monotonic()
    orderly = False
    while True:
        events: list[Event] = []
        acks: list[int] = []
        stopping = reader.eof
        for data in reader.read(_IDLE_POLL):
            message = pickle.loads(data)  # noqa: S301 - our own parent, over a private pipe
            if message[0] == "stop":
                stopping = orderly = True
                break
            _, drops, wire = message
            for item in wire:
                if item[0] == "flush":
                    acks.append(item[1])
                elif type(item[2]) is bytes:  # fields pickled on their own (audit.wire)
                    events.append(unpack(item))
                else:
                    events.append(item)
            if drops is not None:  # lost after this message's events: the gap goes right after them
                pipeline.process(events)
                events = []
                pipeline.declare_drops(drops)
        stopping = stopping or reader.eof
        if stopping:  # the gateway is closing (or gone): a failing disk may hold the end up this long
            pipeline.give_up_writes_at(time.monotonic() + shutdown_timeout)
        pipeline.process(events)
        if stopping:
            return orderly  # the caller closes the pipeline (shutdown checkpoint, sync)
        pipeline.tick()
        if acks:  # after the batch: an acknowledged flush covers the events and any gap before it
            pipeline.sync()
            metrics = pipeline.metrics()
            for ack_id in acks:
                send(("flushed", ack_id, metrics))
        now = time.monotonic()
        if now - last_report >= _REPORT_INTERVAL:  # counters for the gateway's /metrics
            last_report = now
            send(("metrics", pipeline.metrics()))
