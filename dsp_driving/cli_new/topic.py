"""``dsp-driving topic list | echo | pub | hz`` over the dds backend, like ``ros2 topic``.

Lets users without ROS 2 watch and poke the package's topics (the types in msgs.ROS_TYPES).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from typing import Any

import yaml


def _dds():
    """Import the dds side lazily (it needs cyclonedds, the dds extra)."""
    try:
        from dsp_driving import msgs
        from dsp_driving.transport import dds
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(f"`dsp-driving topic` needs {exc.name}: pip install -e "
                                  "'.[dds]'") from None
    return msgs, dds


def discover(domain_id: int | None, wait_s: float) -> dict[str, set[str]]:
    """ROS topic name -> ROS type names seen in DDS discovery (publications and subscriptions)."""
    from cyclonedds.builtin import (
        BuiltinDataReader,
        BuiltinTopicDcpsPublication,
        BuiltinTopicDcpsSubscription,
    )

    msgs, dds = _dds()
    participant = dds.participant(dds.domain_id_from_env(domain_id))
    readers = [BuiltinDataReader(participant, BuiltinTopicDcpsPublication),
               BuiltinDataReader(participant, BuiltinTopicDcpsSubscription)]
    found: dict[str, set[str]] = {}
    end = time.monotonic() + wait_s
    try:
        while time.monotonic() < end:
            for reader in readers:
                for sample in reader.take(N=1000):
                    name = getattr(sample, "topic_name", None)
                    if name and name.startswith("rt/"):
                        found.setdefault("/" + name[3:], set()).add(
                            _ros_type_from_dds(sample.type_name))
            time.sleep(0.05)
    finally:
        for entity in (*readers, participant):
            entity.__del__()  # this probe participant leaves the domain
    return found


def _ros_type_from_dds(type_name: str) -> str:
    """'pkg::msg::dds_::Name_' -> 'pkg/msg/Name' (other names are returned as they are)."""
    parts = type_name.split("::")
    if len(parts) == 4 and parts[2] == "dds_" and parts[3].endswith("_"):
        return f"{parts[0]}/{parts[1]}/{parts[3][:-1]}"
    return type_name


def _resolve_type(topic: str, given: str | None, domain_id: int | None, wait_s: float) -> type:
    msgs, _ = _dds()
    if given is None:
        types = discover(domain_id, wait_s).get(topic, set())
        if len(types) != 1:
            raise ValueError(f"cannot determine the type of {topic} (seen: {sorted(types)}); "
                             "pass --type pkg/msg/Name")
        given = types.pop()
    if given not in msgs.ROS_TYPES:
        raise ValueError(f"--type {given!r} is not one of ours: {sorted(msgs.ROS_TYPES)}")
    return msgs.ROS_TYPES[given]


def _qos(name: str):
    from dsp_driving.transport import DEFAULT_QOS, SENSOR_QOS

    return DEFAULT_QOS if name == "reliable" else SENSOR_QOS


def _node(args: argparse.Namespace, name: str):
    _dds()
    from dsp_driving.transport import create_node

    return create_node(name, backend="dds", domain_id=args.domain)


def cmd_list(args: argparse.Namespace) -> int:
    """Print the topics seen on the domain."""
    for topic, types in sorted(discover(args.domain, args.wait).items()):
        print(f"{topic} [{', '.join(sorted(types))}]" if args.show_types else topic)
    return 0


def cmd_echo(args: argparse.Namespace) -> int:
    """Print each message as YAML followed by '---', like ros2 topic echo."""
    msgs, _ = _dds()
    topic = _topic(args.topic)
    msg_type = _resolve_type(topic, args.type, args.domain, args.wait)
    node = _node(args, "dsp_topic_echo")
    count = 1 if args.once else args.count
    seen = [0]

    def show(msg: Any) -> None:
        if count is not None and seen[0] >= count:
            return
        seen[0] += 1
        sys.stdout.write(yaml.safe_dump(msgs.message_to_dict(msg), sort_keys=False,
                                        allow_unicode=True))
        sys.stdout.write("---\n")
        sys.stdout.flush()

    node.create_subscription(msg_type, topic, show, _qos(args.qos))
    end = None if args.timeout is None else time.monotonic() + args.timeout
    try:
        node.spin(until=lambda: (count is not None and seen[0] >= count)
                  or (end is not None and time.monotonic() > end))
    finally:
        node.destroy()
    return 0 if seen[0] or args.timeout is None else 1


def cmd_pub(args: argparse.Namespace) -> int:
    """Publish VALUES (YAML) as TYPE on TOPIC at --rate, like ros2 topic pub."""
    msgs, _ = _dds()
    if args.type not in msgs.ROS_TYPES:
        raise ValueError(f"type {args.type!r} is not one of ours: {sorted(msgs.ROS_TYPES)}")
    try:
        values = yaml.safe_load(args.values) if args.values else {}
    except yaml.YAMLError as exc:
        raise ValueError(f"VALUES is not YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ValueError(f"VALUES={args.values!r}: expected a YAML mapping like '{{data: 1.0}}'")
    msg = msgs.message_from_dict(msgs.ROS_TYPES[args.type], values)
    if not args.rate > 0:
        raise ValueError(f"--rate={args.rate!r}: must be > 0")
    times = 1 if args.once else args.times
    node = _node(args, "dsp_topic_pub")
    pub = node.create_publisher(type(msg), _topic(args.topic), _qos(args.qos))
    try:
        wanted = args.wait_matching
        if wanted is None:  # like ros2 topic pub: a bounded publish waits for one reader
            wanted = 1 if times is not None else 0
        node.spin(until=lambda: pub.subscription_count() >= wanted, duration_s=args.wait)
        print(f"publisher: beginning loop\npublishing #1: {msg!r}\n", flush=True)
        sent = 0
        next_s = time.monotonic()
        while times is None or sent < times:
            pub.publish(msg)
            sent += 1
            next_s += 1.0 / args.rate
            node.spin(duration_s=max(0.0, next_s - time.monotonic()))
        node.spin(duration_s=0.5)  # let reliable delivery finish
    finally:
        node.destroy()
    return 0


def cmd_hz(args: argparse.Namespace) -> int:
    """Print the receive rate over a sliding window every second, like ros2 topic hz."""
    topic = _topic(args.topic)
    msg_type = _resolve_type(topic, args.type, args.domain, args.wait)
    node = _node(args, "dsp_topic_hz")
    stamps: list[float] = []
    node.create_subscription(msg_type, topic, lambda _msg: stamps.append(time.monotonic()),
                             _qos(args.qos))
    end = None if args.duration is None else time.monotonic() + args.duration
    reported = False
    try:
        while end is None or time.monotonic() < end:
            node.spin(duration_s=1.0 if end is None else min(1.0, end - time.monotonic()))
            del stamps[:-(args.window + 1)]
            if stamps and time.monotonic() - stamps[-1] > 1.0:
                stamps.clear()  # the publisher stopped: say so instead of the old rate
            if len(stamps) >= 2:
                print(format_rate(stamps), flush=True)
                reported = True
            else:
                print("no new messages", flush=True)
    finally:
        node.destroy()
    return 0 if reported else 1


def format_rate(stamps: list[float]) -> str:
    """ros2 topic hz's two-line report for arrival times (seconds)."""
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    mean = statistics.fmean(gaps)
    std = statistics.pstdev(gaps) if len(gaps) > 1 else 0.0
    rate = 1.0 / mean if mean > 0 else math.inf
    return (f"average rate: {rate:.3f}\n\tmin: {min(gaps):.3f}s max: {max(gaps):.3f}s "
            f"std dev: {std:.5f}s window: {len(stamps)}")


def _topic(name: str) -> str:
    from dsp_driving.transport.base import ros_topic

    return ros_topic(name)


def add_parser(sub: Any) -> None:
    """Register `topic` and its subcommands on the dsp-driving parser."""
    p = sub.add_parser("topic", help="list, echo, pub and hz ROS 2 topics over DDS (no ROS "
                       "needed)")
    tsub = p.add_subparsers(dest="topic_command", required=True)

    def common(q: argparse.ArgumentParser, qos: bool = True) -> None:
        q.add_argument("--domain", type=int, help="DDS domain id (default: $ROS_DOMAIN_ID or 0)")
        q.add_argument("--wait", type=float, default=1.5,
                       help="seconds of discovery / waiting for peers (default 1.5)")
        if qos:  # best effort readers match both kinds of writer; writers stay reliable
            q.add_argument("--qos", choices=["reliable", "best_effort"],
                           default="reliable" if q.prog.endswith(" pub") else "best_effort")

    q = tsub.add_parser("list", help="topics seen on the domain")
    q.add_argument("-t", "--show-types", action="store_true")
    common(q, qos=False)
    q.set_defaults(func=cmd_list)

    q = tsub.add_parser("echo", help="print messages as YAML")
    q.add_argument("topic")
    q.add_argument("--type", help="pkg/msg/Name (default: discovered)")
    q.add_argument("--once", action="store_true")
    q.add_argument("-n", "--count", type=int, help="exit after this many messages")
    q.add_argument("--timeout", type=float, help="exit after this many seconds (1 if none came)")
    common(q)
    q.set_defaults(func=cmd_echo)

    q = tsub.add_parser("pub", help="publish a message given as YAML")
    q.add_argument("topic")
    q.add_argument("type", help="pkg/msg/Name, e.g. std_msgs/msg/Float32")
    q.add_argument("values", nargs="?", default="", help="YAML, e.g. '{data: 1.5}'")
    q.add_argument("-r", "--rate", type=float, default=1.0, help="Hz (default 1)")
    q.add_argument("-1", "--once", action="store_true")
    q.add_argument("-t", "--times", type=int, help="publish this many times, then exit")
    q.add_argument("--wait-matching", type=int,
                   help="wait (up to --wait s) for this many subscribers before publishing "
                   "(default 1 with --once/--times, else 0)")
    common(q)
    q.set_defaults(func=cmd_pub)

    q = tsub.add_parser("hz", help="receive rate")
    q.add_argument("topic")
    q.add_argument("--type", help="pkg/msg/Name (default: discovered)")
    q.add_argument("-w", "--window", type=int, default=10000)
    q.add_argument("--duration", type=float, help="exit after this many seconds")
    common(q)
    q.set_defaults(func=cmd_hz)
