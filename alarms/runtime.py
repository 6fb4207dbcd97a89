"""The one door to other libraries' and the interpreter's internals.

Over 300 lines on purpose: having every hook in one file, to read after an
upgrade, is the point of this module.

Every hook into what Django, asgiref, daphne, Twisted or CPython do not promise
lives here, each with a start-up probe (:func:`probe`) and a test that fails
when the hook stops working, like django-debug-toolbar's ``_compat.py``.

Hooks, each documented where it is defined:

- ``release_request_thread``: asgiref's per-request thread executor;
- ``slim_request``: attributes Django and its middleware set on a request;
- ``set_session_data`` / ``session_loaded``: a Django session's ``_session_cache``;
- ``listen_params``: the PostgreSQL backend's ``get_connection_params()``;
- ``CollectorHold``: CPython's cyclic collector, held off during a broadcast;
- ``install_shutdown_handlers``: signal handlers chained in front of Twisted's,
  and, under ``runserver``'s autoreloader, ``threading._register_atexit``:

``threading._register_atexit``
    Under ``runserver``'s autoreloader the server's event loop runs in a daemon
    thread; the main thread only watches files. A signal handler cannot be set
    from the loop's thread, and at exit the daemon thread is frozen wherever it
    is, cutting every stream without a word. A threading "atexit" callback runs
    in the main thread while the loop's thread still runs, and before
    ``concurrent.futures`` refuses new work (so Django's ``response.close()``
    through asgiref still works). Test: ``tests/e2e/test_runserver.py``.

Signals are chained with the public ``signal`` API, but the order matters to
Twisted: it only takes SIGINT if it still has Python's default handler, so the
handlers here must be installed after the reactor started (the broker's first
stream), never at import or in ``AppConfig.ready()``.

Why this matters beyond a tidy exit: CPython before 3.11.8 (and Debian 12's
3.11.2) crashes with a segmentation fault at exit when a task parked in
``asyncio.Queue.get()`` survives to interpreter teardown, which is what Ctrl-C
on ``runserver --noreload`` left behind with a stream open (Django's
``listen_for_disconnect`` task). Ending the streams before the server stops
leaves no such task. See docs/runserver-segfault.md.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterable, MutableMapping
from types import FrameType
from typing import Any

from asgiref.sync import SyncToAsync

__all__ = [
    "CollectorHold",
    "install_shutdown_handlers",
    "probe",
    "session_loaded",
    "set_session_data",
]

_Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

# Loops whose streams end at exit already (a restarted broker installs again).
_ending_at_exit: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

#: After the last stream closed, how long the loop gets to flush its last bytes
#: before the process goes on exiting (exit mode only).
FLUSH_SECONDS = 0.1


def session_loaded(session: Any) -> bool:
    """Whether a Django session has read its data already."""
    return hasattr(session, "_session_cache")


def set_session_data(session: Any, data: dict[str, Any]) -> None:
    """Give a Django session the data its ``load()`` would have read.

    ``SessionBase._get_session`` keeps what ``load()`` returned in
    ``_session_cache`` and reads nothing while it is there; the stream reads a
    database session's data and expiry in one query and hands the data over
    (``alarms.broker.sessions._load_sessions``). If Django stops honouring it, the
    session loads itself again: one query more, nothing wrong
    (``tests/test_broker.py::test_a_signed_in_connect_reads_its_session_once``).
    """
    session._session_cache = data


class CollectorHold:
    """Keeps CPython's cyclic garbage collector out of a burst of writes.

    With thousands of streams a full collection walks every object of every
    connection; landing in the middle of a broadcast it delays delivery by up
    to a second (measured: p99 1.6 s against 0.4 s at 5,000 streams). A hold
    disables the collector and enables it again ``pause`` seconds later, once
    the writes are out. Test: ``tests/test_broker.py`` (the GC hold tests).
    """

    def __init__(self) -> None:
        self._timer: asyncio.TimerHandle | None = None

    def hold(self, loop: asyncio.AbstractEventLoop | None, pause: float) -> None:
        if pause <= 0 or loop is None or self._timer is not None:
            # Already held off: the hold is never extended, or broadcasts
            # coming faster than the pause would keep the collector off for
            # good and every reference cycle since would pile up (a leak).
            return
        if not gc.isenabled():
            return  # someone else manages the collector
        gc.disable()
        self._timer = loop.call_later(pause, self.release)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            gc.enable()


# Keys Django's PostgreSQL backend adds to its connection parameters for its own
# cursors; a plain psycopg connection refuses or misreads them.
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "server_side_binding", "prepare_threshold")


def listen_params(connection: Any) -> dict[str, Any]:
    """Keyword arguments for ``psycopg.AsyncConnection.connect`` to the database
    of a Django PostgreSQL ``connection``, in autocommit (for ``LISTEN``).

    ``get_connection_params()`` is the backend's, not a documented API; if it
    goes, the PostgreSQL broker cannot listen (``probe`` says so at start-up).
    Test: ``tests/test_broker.py`` (the PostgreSQL broker tests listen with it).
    """
    params = dict(connection.get_connection_params())
    for key in _DJANGO_ONLY_PARAMS:
        params.pop(key, None)
    params["autocommit"] = True
    return params


def release_request_thread() -> None:
    """Let go of the idle thread Django's ASGI handler keeps for this request.

    Each ASGI request runs in its own asgiref ``ThreadSensitiveContext``; the
    first thread-sensitive call (the ``request_started`` receivers) gives it a
    one-thread executor that lives as long as the request: for a stream, hours
    of an idle OS thread. Nothing in a stream's request needs that thread again
    until the response ends (a later call makes a fresh one, cleaned up as
    usual), so it is shut down. Without the asgiref internals this relies on
    (``SyncToAsync.thread_sensitive_context``, ``context_to_thread_executor``)
    it does nothing, and ``probe`` says so.
    Test: ``tests/e2e/test_runtime.py`` (threads stay flat while streams are open).
    """
    context_var = getattr(SyncToAsync, "thread_sensitive_context", None)
    executors: Any = getattr(SyncToAsync, "context_to_thread_executor", None)
    if context_var is None or executors is None:
        return
    context = context_var.get(None)
    if context is None:
        return
    executor = executors.pop(context, None)
    if executor is not None:
        executor.shutdown(wait=False)


# What of a request a stream keeps: what logging an error at its end may read.
_KEEP_META = ("REMOTE_ADDR", "REQUEST_METHOD", "PATH_INFO", "SERVER_NAME", "SERVER_PORT")
# Attributes Django and its middleware set on a request (some private, hence here).
_DROP = (
    "session",
    "user",
    "COOKIES",
    "_cached_user",
    "auser",
    "_messages",
    "GET",
    # request.headers, cached: a copy of every HTTP_ key of META (the CORS check reads it).
    "headers",
    "scope",
    "_stream",
    "resolver_match",
    "_post",
    "_files",
)


def slim_request(request: Any) -> None:
    """Drop what a stream's request no longer needs: Django holds it for the stream's life.

    Call it at the first step of the response body, when every middleware has
    run both its hooks. If Django renames one of these attributes, the stream
    only keeps more memory than it must (``bench/connects.py`` measures it).
    """
    request.META = {k: request.META[k] for k in _KEEP_META if k in request.META}
    for name in _DROP:
        request.__dict__.pop(name, None)


def probe() -> list[str]:
    """What of this module's hooks does not work on this interpreter; empty if all do."""
    problems = []
    if not callable(getattr(threading, "_register_atexit", None)):
        problems.append(
            "threading._register_atexit is gone: under runserver's autoreloader, "
            "streams are cut without a closing event when the server stops."
        )
    if not (
        hasattr(SyncToAsync, "thread_sensitive_context")
        and isinstance(getattr(SyncToAsync, "context_to_thread_executor", None), MutableMapping)
    ):
        problems.append(
            "asgiref's SyncToAsync.thread_sensitive_context or context_to_thread_executor "
            "is gone: every open stream keeps an idle OS thread."
        )
    if not _session_cache_honoured():
        problems.append(
            "Django sessions no longer read their data from _session_cache: each "
            "signed-in connect makes one query more."
        )
    return problems


def _session_cache_honoured() -> bool:
    from django.contrib.sessions.backends.base import SessionBase

    class Probe(SessionBase):
        def load(self) -> dict[str, Any]:
            return {}

    session = Probe()
    set_session_data(session, {"probe": 1})
    return session.get("probe") == 1


def install_shutdown_handlers(
    loop: asyncio.AbstractEventLoop,
    begin_shutdown: Callable[[str], None],
    grace: float,
    *,
    drained: Callable[[], bool] | None = None,
    signals: Iterable[signal.Signals] = (signal.SIGTERM, signal.SIGINT),
) -> str:
    """Have ``begin_shutdown(reason)`` run on ``loop`` before the server stops.

    Call it from ``loop``'s thread once the server runs. ``begin_shutdown``
    ends the streams; the server's own shutdown follows:

    - loop in the main thread (daphne, ``runserver --noreload``): on the first
      of ``signals``, ``begin_shutdown("SIGINT")`` (or ``"SIGTERM"``) runs on
      the loop, and ``grace`` seconds later the handler that was there before
      (Twisted's) gets the signal; a second signal hands over at once.
      Returns ``"signals"``.
    - loop in another thread (``runserver`` with its autoreloader, which stops
      by leaving its main thread on Ctrl-C, SIGTERM or a reload): at
      interpreter exit, ``begin_shutdown("exit")`` runs on the loop and the
      exit waits until ``drained()`` is true (and the loop flushed), or
      ``grace`` seconds. Returns ``"exit"``.

    Returns ``""`` when nothing could be installed. A signal the process
    ignores (a background job's SIGINT) stays ignored.
    """
    if grace <= 0:
        return ""
    if threading.current_thread() is threading.main_thread():
        chain = _SignalChain(loop, begin_shutdown, grace, tuple(signals))
        return "signals" if chain.install() else ""
    register = getattr(threading, "_register_atexit", None)
    if not callable(register):
        return ""
    if loop not in _ending_at_exit:
        try:
            register(lambda: _end_at_exit(loop, begin_shutdown, grace, drained))
        except RuntimeError:  # the interpreter is exiting already
            return ""
        _ending_at_exit.add(loop)
    return "exit"


class _SignalChain:
    """Our handler for some signals, in front of the ones that were there before."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        begin_shutdown: Callable[[str], None],
        grace: float,
        signals: tuple[signal.Signals, ...],
    ) -> None:
        self.loop = loop
        self.begin_shutdown = begin_shutdown
        self.grace = grace
        self.begun = self.handed_over = False
        self.previous: dict[signal.Signals, _Handler] = {}
        for signum in signals:
            handler = signal.getsignal(signum)
            chain = getattr(handler, "__self__", None)
            if isinstance(chain, _SignalChain):  # installed again (a restarted broker)
                handler = chain.previous.get(signum)
            # None: a handler not set from Python, which could not be restored.
            if handler is not None and handler != signal.SIG_IGN:
                self.previous[signum] = handler

    def install(self) -> bool:
        for signum in self.previous:
            signal.signal(signum, self.on_signal)
        return bool(self.previous)

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.begun:  # a second signal: no more waiting
            self.hand_over(signum)
            return
        self.begun = True
        try:
            # A signal handler may interrupt the loop anywhere: only schedule.
            self.loop.call_soon_threadsafe(self.begin, signum)
        except RuntimeError:  # the loop is closed: nothing left to end
            self.hand_over(signum)

    def begin(self, signum: int) -> None:
        try:
            self.begin_shutdown(signal.Signals(signum).name)
        finally:
            self.loop.call_later(self.grace, self.hand_over, signum)

    def hand_over(self, signum: int) -> None:
        """Put the previous handlers back and deliver the signal to them."""
        if self.handed_over:
            return
        self.handed_over = True
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        # Raised again rather than called: a handler set through
        # loop.add_signal_handler() is a no-op that only the real signal wakes,
        # and SIG_DFL ends the process as the signal would have.
        signal.raise_signal(signum)


def _end_at_exit(
    loop: asyncio.AbstractEventLoop,
    begin_shutdown: Callable[[str], None],
    grace: float,
    drained: Callable[[], bool] | None,
) -> None:
    # Runs in the main thread while the interpreter exits; the loop's thread
    # still runs until this returns.
    if loop.is_closed() or not loop.is_running():
        return
    try:
        loop.call_soon_threadsafe(begin_shutdown, "exit")
    except RuntimeError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if drained is not None and _ask(loop, drained, deadline):
            time.sleep(min(FLUSH_SECONDS, max(0.0, deadline - time.monotonic())))
            return
        time.sleep(0.02)


def _ask(loop: asyncio.AbstractEventLoop, question: Callable[[], bool], deadline: float) -> bool:
    """``question()`` answered on ``loop`` (its state belongs to that thread); False if late."""
    answer: concurrent.futures.Future[bool] = concurrent.futures.Future()

    def ask() -> None:
        if answer.set_running_or_notify_cancel():
            try:
                answer.set_result(question())
            except Exception as exc:
                answer.set_exception(exc)

    try:
        loop.call_soon_threadsafe(ask)
        return answer.result(max(0.0, deadline - time.monotonic()))
    except (RuntimeError, concurrent.futures.TimeoutError):
        answer.cancel()
        return False
