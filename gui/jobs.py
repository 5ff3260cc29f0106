"""Slow explanations (saliency, probes) off the GUI thread, on a thread of their own so that
live prediction never waits behind them. Per topic only the newest request matters: an older one
still queued is skipped, and a result that a newer request has replaced is dropped."""

from __future__ import annotations

import logging
from collections.abc import Callable

from PySide6.QtCore import QObject, QThread, Signal, Slot

from gui.worker import stop_thread

log = logging.getLogger(__name__)


class _Runner(QObject):
    done = Signal(str, int, object)  # topic, request, result
    failed = Signal(str, int, str)  # topic, request, message

    def __init__(self):
        super().__init__()
        self.latest: dict[str, int] = {}  # written by the GUI thread; dict lookups are atomic

    @Slot(str, int, object)
    def run(self, topic: str, request: int, job: Callable[[], object]) -> None:
        if self.latest.get(topic) != request:
            return  # replaced before it started
        try:
            result = job()
        except Exception as err:  # shown in its panel; the app keeps running
            log.exception("%s failed", topic)
            self.failed.emit(topic, request, f"{type(err).__name__}: {err}")
        else:
            self.done.emit(topic, request, result)


class Jobs(QObject):
    """``submit(topic, job)`` runs ``job()`` on the explanation thread; ``finished(topic, result)``
    or ``failed(topic, message)`` come back on the GUI thread for the newest job of each topic."""

    finished = Signal(str, object)
    failed = Signal(str, str)
    _run = Signal(str, int, object)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._thread = QThread()
        self._thread.setObjectName("explanations")
        self._runner = _Runner()
        self._runner.moveToThread(self._thread)
        self._run.connect(self._runner.run)
        self._runner.done.connect(self._on_done)
        self._runner.failed.connect(self._on_failed)
        self._requests: dict[str, int] = {}
        self._thread.start()

    def submit(self, topic: str, job: Callable[[], object]) -> int:
        request = self._requests.get(topic, 0) + 1
        self._requests[topic] = request
        self._runner.latest[topic] = request
        self._run.emit(topic, request, job)
        return request

    def cancel(self, topic: str) -> None:
        """Drop whatever of ``topic`` is queued or running (the drawing was cleared, say)."""
        request = self._requests.get(topic, 0) + 1
        self._requests[topic] = request
        self._runner.latest[topic] = request

    def _current(self, topic: str, request: int) -> bool:
        return self._requests.get(topic) == request

    def _on_done(self, topic: str, request: int, result: object) -> None:
        if self._current(topic, request):
            self.finished.emit(topic, result)

    def _on_failed(self, topic: str, request: int, message: str) -> None:
        if self._current(topic, request):
            self.failed.emit(topic, message)

    def shutdown(self) -> None:
        """Stop the thread after the job it is running, if any. Idempotent."""
        stop_thread(self.__dict__.get("_thread"))

    def __del__(self) -> None:
        self.shutdown()  # a running QThread destroyed with its object aborts the process
