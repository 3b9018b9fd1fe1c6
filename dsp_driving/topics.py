"""trainer_node's topic names and the summary's labels, shared by the publisher
(nodes/stats_topics.py) and the bag reports (analysis/training.py). Relative names: they
follow the node's namespace; reports match them by the end of the recorded name."""

from __future__ import annotations

COMPACTION_TOPIC = "dsp/compaction"  # diagnostic_msgs/DiagnosticArray, per network and layer
SUMMARY_TOPIC = "dsp/compaction/summary"  # std_msgs/Float32MultiArray, SUMMARY_LABELS
TRAINING_TOPIC = "dsp/training"  # diagnostic_msgs/DiagnosticArray, losses etc., evaluation
POLICY_TOPIC = "dsp/policy"  # std_msgs/String, transient local: the newest policy.onnx path
SUMMARY_LABELS = ("step", "actor_neurons_alive", "actor_weights_alive", "critic_neurons_alive",
                  "critic_weights_alive", "actor_weights_removed_pct", "kappa",
                  "ep_return_mean")
