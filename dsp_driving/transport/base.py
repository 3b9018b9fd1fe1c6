"""The transport interface our nodes are written against, shared by the rclpy and dds backends.

A node gets publishers, subscriptions, timers, a clock, a throttling logger and its parameters
from a :class:`Node`; it never imports rclpy or cyclonedds itself. Message classes come from
``node.msg_type('pkg/msg/Name')``: real ROS 2 classes under rclpy, ``dsp_driving.msgs`` classes
under dds, with the same field names, so node code builds messages the same way on both.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Iterator, Mapping
import contextlib
import dataclasses
import logging
import re
import signal
import sys
import threading
import time
import traceback
from typing import Any, TypeVar

T = TypeVar("T")
_TOKEN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclasses.dataclass(frozen=True)
class QosProfile:
    """The QoS settings we use (ROS 2 names): reliability, durability and keep-last depth."""

    reliable: bool = True
    transient_local: bool = False
    depth: int = 10

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"QosProfile.depth={self.depth!r}: must be >= 1")


# rmw_qos_profile_default and rmw_qos_profile_sensor_data
DEFAULT_QOS = QosProfile(reliable=True, transient_local=False, depth=10)
SENSOR_QOS = QosProfile(reliable=False, transient_local=False, depth=5)
# ROS 1's "latched": a late subscriber (with the same durability) gets the newest message
LATCHED_QOS = QosProfile(reliable=True, transient_local=True, depth=1)


class Publisher(abc.ABC):
    """Publishes messages of one type on one topic."""

    topic: str

    @abc.abstractmethod
    def publish(self, msg: Any) -> None:
        """Send one message."""

    @abc.abstractmethod
    def subscription_count(self) -> int:
        """Number of matched subscriptions."""

    def wait_for_acked(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` until reliable subscribers have acknowledged everything
        published (before the node goes away, say); True when they have."""
        return True


class Timer(abc.ABC):
    """A periodic callback, run by the node's spin loop."""

    period_s: float

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop calling the callback."""


class Logger:
    """info/warning/error with optional throttling, over a backend's ``emit(level, text)``."""

    def __init__(self, name: str, emit: Callable[[str, str], None]) -> None:
        self.name = name
        self._emit = emit
        self._last: dict[tuple[str, str], float] = {}

    def _log(self, level: str, text: str, throttle_s: float | None, key: str | None) -> bool:
        if throttle_s is not None:
            caller = sys._getframe(2)  # the node code that called info()/warning()/...
            mark = (level, key if key is not None
                    else f"{caller.f_code.co_filename}:{caller.f_lineno}")
            now = time.monotonic()
            if now - self._last.get(mark, -float("inf")) < throttle_s:
                return False
            self._last[mark] = now
        self._emit(level, text)
        return True

    def debug(self, text: str, throttle_s: float | None = None, key: str | None = None) -> bool:
        """Log at DEBUG; with throttle_s, at most once per throttle_s per call site (or key)."""
        return self._log("DEBUG", text, throttle_s, key)

    def info(self, text: str, throttle_s: float | None = None, key: str | None = None) -> bool:
        """Log at INFO (see debug for throttling); returns whether it was emitted."""
        return self._log("INFO", text, throttle_s, key)

    def warning(self, text: str, throttle_s: float | None = None, key: str | None = None) -> bool:
        """Log at WARN (see debug for throttling); returns whether it was emitted."""
        return self._log("WARN", text, throttle_s, key)

    def error(self, text: str, throttle_s: float | None = None, key: str | None = None) -> bool:
        """Log at ERROR (see debug for throttling); returns whether it was emitted."""
        return self._log("ERROR", text, throttle_s, key)


class LoggingBridge(logging.Handler):
    """Python logging records (the package's modules use ``logging.getLogger(__name__)``)
    into a node's Logger at their own level: rosout under rclpy."""

    def __init__(self, logger: Logger) -> None:
        super().__init__()
        self._logger = logger

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.levelno >= logging.ERROR:
            self._logger.error(text)
        elif record.levelno >= logging.WARNING:
            self._logger.warning(text)
        elif record.levelno >= logging.INFO:
            self._logger.info(text)
        else:
            self._logger.debug(text)


@contextlib.contextmanager
def package_logging_to(handler: logging.Handler) -> Iterator[None]:
    """Inside the block the ``dsp_driving`` loggers' INFO and above go to ``handler`` (a
    LoggingBridge to a node's logger, the CLI's stdout) instead of further up."""
    package = logging.getLogger("dsp_driving")
    previous = package.level, package.propagate
    package.addHandler(handler)
    package.setLevel(logging.INFO)
    package.propagate = False
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.level, package.propagate = previous


def guarded(logger: Logger, what: str, callback: Callable[..., None]) -> Callable[..., None]:
    """``callback`` that logs (throttled, per ``what``) instead of raising into the spin loop.

    A node never dies on one bad message or one failing timer tick; the traceback is logged.
    """

    def call(*args: Any) -> None:
        try:
            callback(*args)
        except Exception as exc:
            logger.error(f"{what} raised {type(exc).__name__}: {exc}\n"
                         f"{traceback.format_exc(limit=5)}", throttle_s=5.0, key=what)

    return call


def ros_topic(name: str) -> str:
    """A topic name checked against ROS 2's rules, made absolute ('/dsp/compaction').

    Tokens are [A-Za-z_][A-Za-z0-9_]* separated by '/'; '~' (private) names are not supported.
    """
    name = name.strip()
    body = name[1:] if name.startswith("/") else name
    if not body or not all(_TOKEN.fullmatch(t) for t in body.split("/")):
        raise ValueError(f"invalid topic name {name!r}: ROS 2 names are tokens of letters, "
                         "digits and '_' (not starting with a digit) separated by '/'")
    return "/" + body


def parameter_value(name: str, value: Any, default: Any) -> Any:
    """``value`` for the parameter declared with ``default``: it must have the default's type,
    except that an int is accepted (and made a float) where a float is declared, as YAML and
    ``-p rate_hz:=20`` write it. Both backends use this check, so the words are the same."""
    if isinstance(default, bool) or default is None:
        ok = default is None or isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        value = list(value) if ok else value
        if ok and default and all(isinstance(d, float) for d in default):  # [1, 2] for floats
            value = [float(v) if isinstance(v, int) and not isinstance(v, bool) else v
                     for v in value]
    else:
        ok = True
    if not ok:
        raise ValueError(f"parameter {name}={value!r}: expected {type(default).__name__} like "
                         f"the default {default!r}")
    return value


def resolve_parameters(node: str, given: Mapping[str, Any], declared: set[str],
                       defaults: Mapping[str, Any], strict: bool) -> dict[str, Any]:
    """The values of ``defaults``' parameters: the given ones checked (parameter_value),
    the rest their defaults. ``declared`` gathers the names of this and earlier calls; with
    ``strict``, a given name none of them declared is refused (check_parameter_names).
    Both backends read their parameters through this."""
    declared.update(defaults)
    if strict:
        check_parameter_names(node, given, declared)
    return {name: parameter_value(name, given[name], default) if name in given else default
            for name, default in defaults.items()}


def check_parameter_names(node: str, given: Iterable[str], declared: Iterable[str]) -> None:
    """Refuse a given parameter that the node does not declare (a typo such as ``rate_hx``
    would otherwise be ignored silently), naming the known ones."""
    known = sorted(set(declared))
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} for node {node} "
                         f"(known: {', '.join(known)})")


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(signum: int, frame: object) -> None:
    for sig in _STOP_SIGNALS:  # the first signal disarms the rest: shutdown is not cut short
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_signals_handled_by(handler: Any) -> Iterator[None]:
    """SIGINT and SIGTERM go to ``handler`` inside the block, the previous handlers after it.
    Only the main thread can set handlers: elsewhere the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def interrupt_on_signals() -> contextlib.AbstractContextManager[None]:
    """Inside the block SIGINT and SIGTERM (Ctrl-C, ``kill``, ``docker stop``, systemd,
    ``ros2 launch``) raise KeyboardInterrupt once; later ones are ignored until the block
    exits, so the one ``except KeyboardInterrupt`` path can close bags, checkpoints and
    entities."""
    return _stop_signals_handled_by(_interrupt)


def signals_ignored() -> contextlib.AbstractContextManager[None]:
    """SIGINT and SIGTERM ignored inside the block (a shutdown that no signal started, e.g.
    the end of ``duration_s``, is not cut short either)."""
    return _stop_signals_handled_by(signal.SIG_IGN)


class Node(abc.ABC):
    """What a dsp_driving node uses from ROS 2; one instance per node."""

    name: str
    backend: str
    logger: Logger

    @abc.abstractmethod
    def msg_type(self, ros_type: str) -> type:
        """The message class for 'pkg/msg/Name' in this backend."""

    @abc.abstractmethod
    def create_publisher(self, msg_type: type, topic: str,
                         qos: QosProfile = DEFAULT_QOS) -> Publisher:
        """A publisher of ``msg_type`` on ``topic``."""

    @abc.abstractmethod
    def create_subscription(self, msg_type: type, topic: str, callback: Callable[[Any], None],
                            qos: QosProfile = DEFAULT_QOS) -> Any:
        """Call ``callback(msg)`` from the spin loop for each message received on ``topic``."""

    @abc.abstractmethod
    def create_timer(self, period_s: float, callback: Callable[[], None]) -> Timer:
        """Call ``callback()`` every ``period_s`` seconds from the spin loop."""

    @abc.abstractmethod
    def now_ns(self) -> int:
        """The node clock's time in nanoseconds (ROS time under rclpy, system time under dds)."""

    def resolve_topic(self, topic: str) -> str:
        """A topic's full name (relative names under the node's namespace)."""
        return ros_topic(topic)

    def serialize(self, msg: Any) -> bytes:
        """A message's CDR bytes, as rosbag2 stores them."""
        return msg.serialize()

    def now_msg(self) -> Any:
        """The node clock's time as builtin_interfaces/Time."""
        ns = self.now_ns()
        return self.msg_type("builtin_interfaces/msg/Time")(sec=ns // 1_000_000_000,
                                                           nanosec=ns % 1_000_000_000)

    @abc.abstractmethod
    def get_parameters(self, defaults: Mapping[str, Any], strict: bool = True
                       ) -> dict[str, Any]:
        """Declare parameters with these defaults (dotted names) and return their values.

        A node that reads its parameters in several groups passes ``strict=False`` for all but
        the last, so names of later groups are not taken for typos.
        """

    @abc.abstractmethod
    def spin_once(self, timeout_s: float = 0.1) -> None:
        """Wait up to ``timeout_s`` for work, then run due timers and message callbacks."""

    def spin(self, duration_s: float | None = None,
             until: Callable[[], bool] | None = None) -> None:
        """Spin until ``duration_s`` passes, ``until()`` is true, or Ctrl-C."""
        end = None if duration_s is None else time.monotonic() + duration_s
        while (end is None or time.monotonic() < end) and not (until and until()):
            self.spin_once(0.05 if end is None else max(0.0, min(0.05, end - time.monotonic())))

    def serve_in_background(self) -> Callable[[], None]:
        """Answer the middleware's own requests (rclpy: the parameter services that
        ``ros2 param`` uses) from a thread while this thread is busy, e.g. training; returns
        the function that stops it. Timers and subscriptions stay with ``spin``. The dds
        backend offers no such services: nothing to do."""
        return lambda: None

    @abc.abstractmethod
    def destroy(self) -> None:
        """Release the node's entities."""

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def flatten_params(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}: ROS 2's naming of nested parameters."""
    out: dict[str, Any] = {}
    for key, value in nested.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten_params(value, name + "."))
        else:
            out[name] = value
    return out


def unflatten_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{'a.b': 1} -> {'a': {'b': 1}}."""
    out: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def dataclass_from_parameters(node: Node, cls: type[T], prefix: str = "") -> T:
    """Build a flat config dataclass from the node's parameters (defaults from ``cls()``).

    Validation is the dataclass's own (``__post_init__`` raising ValueError naming the field).
    """
    defaults = {f"{prefix}{k}": v for k, v in dataclasses.asdict(cls()).items()}
    values = node.get_parameters(defaults)
    kwargs = {}
    for f in dataclasses.fields(cls):
        value, default = values[f"{prefix}{f.name}"], getattr(cls(), f.name)
        kwargs[f.name] = tuple(value) if isinstance(default, tuple) else value
    return cls(**kwargs)


def config_from_parameters(node: Node, base: Any = None, strict: bool = True) -> Any:
    """The training Config from the node's parameters (dotted: ``ppo.gamma``, ...).

    Defaults are ``base`` (or the built-in defaults); validation is config.from_dict's.
    ``strict=False`` when the node reads more parameters afterwards (see get_parameters).
    """
    from dsp_driving.config import Config, from_dict

    base = base if base is not None else Config()
    values = node.get_parameters(flatten_params(base.to_dict()), strict=strict)
    return from_dict(unflatten_params(values), base)
