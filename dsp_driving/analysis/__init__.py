"""Bag analysis: rosbag2 bags of training and driving -> reports, plots and CSVs."""
