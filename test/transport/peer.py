"""A separate process on the dds backend: publishes or subscribes, reports JSON on stdout.

Run by test_dds.py as ``python peer.py pub|sub ...``; every message type comes from
test/msg_samples.py, so both sides build the same content independently.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
import sys
import time

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # test/, for msg_samples

from msg_samples import sample_message  # noqa: E402

from dsp_driving import msgs  # noqa: E402
from dsp_driving.transport import DEFAULT_QOS, SENSOR_QOS, create_node  # noqa: E402


def topic_of(ros_type: str) -> str:
    """One topic per type: /test/<pkg>/<Name>."""
    package, _, name = ros_type.split("/")
    return f"/test/{package}/{name}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["pub", "sub"])
    parser.add_argument("--domain", type=int, required=True)
    parser.add_argument("--types", default="all")
    parser.add_argument("--count", type=int, default=3)
    parser.add_argument("--qos", choices=["reliable", "best_effort"], default="reliable")
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--tag", default="", help="frame_id-free marker: String data prefix")
    args = parser.parse_args()
    types = sorted(msgs.ROS_TYPES) if args.types == "all" else args.types.split(",")
    qos = DEFAULT_QOS if args.qos == "reliable" else SENSOR_QOS
    node = create_node(f"peer_{args.role}", backend="dds", domain_id=args.domain)
    deadline = time.monotonic() + args.timeout
    if args.role == "pub":
        pubs = {t: node.create_publisher(msgs.ROS_TYPES[t], topic_of(t), qos) for t in types}
        while any(p.subscription_count() == 0 for p in pubs.values()):
            if time.monotonic() > deadline:
                print(json.dumps({"error": "no subscriber matched"}), flush=True)
                return 1
            time.sleep(0.05)
        time.sleep(0.2)  # let the reader side finish matching every writer
        for i in range(args.count):
            for t, pub in pubs.items():
                msg = sample_message(t)
                if t == "std_msgs/msg/String":
                    msg.data = f"{args.tag}{i}"
                pub.publish(msg)
            time.sleep(0.02)
        time.sleep(1.0)  # reliable delivery finishes before the writers go away
        print(json.dumps({"published": args.count * len(types)}), flush=True)
        return 0
    received: dict[str, list] = {t: [] for t in types}

    def keep(ros_type: str):
        return lambda msg: received[ros_type].append(msgs.message_to_dict(msg))

    for t in types:
        node.create_subscription(msgs.ROS_TYPES[t], topic_of(t), keep(t), qos)
    print(json.dumps({"ready": True}), flush=True)
    node.spin(until=lambda: all(len(v) >= args.count for v in received.values())
              or time.monotonic() > deadline)
    node.spin(duration_s=0.5)  # anything beyond the expected count would show up here
    print(json.dumps({"received": received}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
