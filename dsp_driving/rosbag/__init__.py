"""rosbag2 bags without ROS 2 (rosbags): writer.py writes them (MCAP, metadata version 8,
crash-safe segments; Recorder records what a node publishes and receives), reader.py reads
any rosbag2 bag (MCAP or sqlite3; a damaged file costs only itself); stats_bag.py records a
training run's dsp/* topics (StatsBag)."""
