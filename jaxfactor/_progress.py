"""One progress and timing layer for every long job (fit loops, restarts, sweeps, K selection,
training epochs, predict).

How a job talks, decided once per process (:func:`mode`):

- ``"bar"``: a tqdm bar on stderr (stderr is a terminal, or a notebook);
- ``"lines"``: plain lines on stderr (a log file, a batch job): a job says nothing for its first
  :data:`FIRST_LINE_AFTER` seconds, then one line at most every :data:`LINE_EVERY` seconds with
  its iteration, objective and the time left to ``max_iter`` (an upper bound: a fit usually
  converges sooner), and a last line when it ends;
- ``"off"``: silent. Chosen when the environment variable ``CI`` is set, inside :func:`quiet`
  (``jaxfactor … --quiet``), or with ``JAXFACTOR_PROGRESS=off``; ``JAXFACTOR_PROGRESS=bar`` /
  ``lines`` force a mode (also under CI).

The compiled fit loops report from the host between compiled chunks (``jaxfactor._fit`` drives
them chunk by chunk when a bar is wanted); nothing is called back from inside a compiled step.
Fits report when ``progress=True`` is passed, or whenever they run inside a :func:`task` (what
the runner opens around every sweep point), so the families need no progress plumbing of their
own.

:func:`timed` measures wall time and, apart, the time JAX spent tracing, lowering and compiling
(or loading compiled programs from the persistent cache), from JAX's monitoring events.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

FIRST_LINE_AFTER = 5.0
LINE_EVERY = 10.0
MODES = ("bar", "lines", "off")

_state = {"quiet": 0, "tasks": [], "force": 0}
_lock = threading.Lock()


def mode() -> str:
    """``"bar"``, ``"lines"`` or ``"off"`` (module docstring)."""
    env = os.environ.get("JAXFACTOR_PROGRESS", "").strip().lower()
    if env in MODES:
        return env
    if _state["quiet"] or os.environ.get("CI"):
        return "off"
    try:
        tty = sys.stderr.isatty()
    except (AttributeError, ValueError):
        tty = False
    return "bar" if tty or _in_notebook() else "lines"


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


@contextmanager
def quiet(on: bool = True):
    """Silence every progress line and bar inside (``--quiet``)."""
    _state["quiet"] += int(on)
    try:
        yield
    finally:
        _state["quiet"] -= int(on)


def reporting(progress: bool | None = None) -> bool:
    """Whether a fit should report: with ``progress=True``, and always inside a :func:`task`
    (the runner decides there: ``run.progress = false`` runs its tasks in :func:`quiet`); never
    when the mode is ``"off"``."""
    if mode() == "off":
        return False
    return bool(progress) or bool(_state["tasks"])


def note(message: str) -> None:
    """One line on stderr unless the mode is ``"off"`` (tqdm-safe)."""
    if mode() == "off":
        return
    if mode() == "bar":
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)
    else:
        print(message, file=sys.stderr, flush=True)


@contextmanager
def task(name: str):
    """A named long job (a sweep point, a K candidate): fits inside report, their bars and lines
    named ``name``."""
    _state["tasks"].append(name)
    try:
        yield
    finally:
        _state["tasks"].pop()


@contextmanager
def subtask(name: str):
    """Inside a :func:`task`, name what runs now more precisely (``"<task>: <name>"``, e.g. one K
    of a K selection); outside a task nothing changes (a library call stays silent)."""
    if not _state["tasks"]:
        yield
        return
    with task(f"{_state['tasks'][-1]}: {name}"):
        yield


def _fmt_seconds(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    return f"{s / 60:.1f} min" if s < 5400 else f"{s / 3600:.1f} h"


class Bar:
    """A progress report over ``total`` units: a tqdm bar, rate-limited plain lines, or nothing
    (see :func:`mode`). ``update(n, objective=..., **info)`` sets the position."""

    def __init__(self, total: int, desc: str | None = None, unit: str = "it", initial: int = 0, enabled: bool = True):
        self.total, self.unit, self.n = int(total), unit, int(initial)
        self.desc = desc if desc is not None else (_state["tasks"][-1] if _state["tasks"] else "fit")
        self.mode = mode() if enabled else "off"
        self.t0 = self.last = time.perf_counter()
        self.info: dict = {}
        self.printed, self.printed_n = False, None
        self.first = None  # (time, n) of the first update: the rate excludes compiling the first chunk
        self._tqdm = None
        if self.mode == "bar":
            from tqdm.auto import tqdm

            self._tqdm = tqdm(total=self.total, initial=self.n, desc=self.desc, unit=unit, leave=False, file=sys.stderr,
                              dynamic_ncols=True)

    def _info_text(self) -> str:
        return ", ".join(f"{k} {v:.6g}" if isinstance(v, float) else f"{k} {v}" for k, v in self.info.items())

    def update(self, n: int, **info) -> None:
        self.n = min(int(n), self.total)
        self.info.update(info)
        if self.first is None:
            self.first = (time.perf_counter(), self.n)
        if self._tqdm is not None:
            self._tqdm.n = self.n
            self._tqdm.set_postfix_str(self._info_text(), refresh=False)
            self._tqdm.refresh()
        elif self.mode == "lines":
            now = time.perf_counter()
            if now - self.t0 >= FIRST_LINE_AFTER and now - self.last >= (LINE_EVERY if self.printed else 0):
                self._line(now)

    def _line(self, now: float, end: str = "") -> None:
        elapsed = now - self.t0
        text = f"{self.desc}: {self.unit} {self.n}/{self.total}"
        if self._info_text():
            text += f", {self._info_text()}"
        text += f", {_fmt_seconds(elapsed)}"
        if end:
            text += f"; {end}"
        elif self.first is not None and self.first[1] < self.n < self.total:
            rate = (now - self.first[0]) / (self.n - self.first[1])
            text += f", at most {_fmt_seconds(rate * (self.total - self.n))} left"
        print(text, file=sys.stderr, flush=True)
        self.last, self.printed, self.printed_n = now, True, self.n

    def close(self, end: str = "done") -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None
        elif self.mode == "lines" and self.printed:  # a job that talked says when it ends
            if self.printed_n == self.n:
                print(f"{self.desc}: {end}", file=sys.stderr, flush=True)
            else:
                self._line(time.perf_counter(), end)
        self.mode = "off"

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, exc_type, *_) -> None:
        self.close("stopped" if exc_type is not None else "done")


def bar(total: int, desc: str | None = None, unit: str = "it", initial: int = 0, progress: bool | None = None) -> Bar:
    """A :class:`Bar` if :func:`reporting` says so (``progress`` as there), else a silent one."""
    return Bar(total, desc, unit, initial, enabled=reporting(progress))


# ---------------------------------------------------------------------------------------------
# compile time, apart from run time

_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_spans: list[tuple[float, float]] = []
_listening = {"on": False, "open": 0}


def _on_span(event: str, start: float, end: float, **_) -> None:
    if _listening["open"] and event in _COMPILE_EVENTS:
        with _lock:
            _spans.append((start, end))


def _union_seconds(spans: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Length of the union of ``spans`` clipped to [lo, hi] (nested traces counted once)."""
    total, cur_start, cur_end = 0.0, None, None
    for s, e in sorted((max(s, lo), min(e, hi)) for s, e in spans):
        if e <= s:
            continue
        if cur_end is None or s > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = s, e
        else:
            cur_end = max(cur_end, e)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


@dataclass
class Timing:
    """Wall seconds of a block, and of them the seconds JAX spent compiling (tracing, lowering,
    XLA compilation or loading from the persistent cache); ``run_seconds`` is the rest."""

    seconds: float = 0.0
    compile_seconds: float = 0.0

    @property
    def run_seconds(self) -> float:
        return max(self.seconds - self.compile_seconds, 0.0)


@contextmanager
def timed():
    """``with timed() as t: ...`` then ``t.seconds``, ``t.compile_seconds``, ``t.run_seconds``."""
    import jax

    if not _listening["on"]:
        jax.monitoring.register_event_time_span_listener(_on_span)
        _listening["on"] = True
    t = Timing()
    _listening["open"] += 1
    wall0, perf0 = time.time(), time.perf_counter()
    try:
        yield t
    finally:
        wall1 = time.time()
        t.seconds = time.perf_counter() - perf0
        with _lock:
            t.compile_seconds = min(_union_seconds(_spans, wall0, wall1), t.seconds)
            _listening["open"] -= 1
            if not _listening["open"]:
                _spans.clear()
