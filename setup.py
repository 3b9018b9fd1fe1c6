"""dsp_driving: ROS 2 ament_python package (also pip-installable without ROS)."""

from glob import glob

from setuptools import find_packages, setup

package_name = "dsp_driving"

extras = {
    "highway": ["highway-env==1.12.1"],  # the embedded driving task (dsp_driving/HighwayDrive-v0)
    # the CARLA bridge's client (dsp_driving/Carla-v0) and Ray: each env and its server run in
    # a supervised Ray actor process (train.vector_mode: ray, docs/cluster.md)
    "carla": ["carla==0.9.16", "ray>=2.41,<3"],
    "sim": ["gymnasium[box2d,mujoco]>=1.1", "highway-env==1.12.1"],
    "export": ["onnx>=1.17", "onnxscript>=0.2"],
    "dds": ["cyclonedds==11.0.1"],  # in install_requires too; the name is kept for old commands
    "bench": ["stable-baselines3>=2.4", "gymnasium[box2d,mujoco]>=1.1"],
    # dsp-driving sweep (Ray Tune) and table (scipy's bootstrap); docs/experiments.md
    "sweep": ["ray[tune]>=2.41,<3", "scipy>=1.15"],
}
# colcon: the test suite builds the ROS 2 install tree (test/test_colcon.py)
extras["test"] = ["pytest>=8", "tensorboard>=2.14", *extras["export"], *extras["dds"],
                  *extras["highway"], *extras["carla"], *extras["sweep"], "colcon-core>=0.15",
                  "colcon-ros>=0.4", "colcon-python-setup-py>=0.2.8", "ruff>=0.6"]

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        ("share/" + package_name + "/launch", glob("launch/*.launch.py")),
        ("share/" + package_name + "/config", glob("config/*.yaml")),
        ("share/" + package_name + "/config/paper", glob("config/paper/*.yaml")),
        ("share/" + package_name + "/config/paper/sweeps", glob("config/paper/sweeps/*.yaml")),
    ],
    python_requires=">=3.10",
    install_requires=[
        "setuptools",
        "numpy>=1.24",
        "torch>=2.4",  # fused Adam on CPU
        "gymnasium>=1.1",
        "pyyaml>=6",
        "tqdm>=4.60",
        "onnxruntime>=1.17",  # the torch-free policy runtime (dsp_driving.inference)
        # the ROS 2 messages without ROS 2 (dsp_driving.msgs) and rosbag2 bags
        # (dsp_driving.rosbag, dsp-driving report): training records RUN_DIR/bag by default
        "cyclonedds==11.0.1",
        "rosbags>=0.11.9,<0.12",
        "matplotlib>=3.7",  # dsp-driving report's plots
    ],
    extras_require=extras,
    zip_safe=True,
    maintainer="dsp_driving team",
    maintainer_email="dsp-driving@example.com",
    description="Deep-RL driving policies pruned while they learn (dynamic structured "
                "pruning), exported compact for the car.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "dsp-driving = dsp_driving.cli:main",
            "policy_node = dsp_driving.nodes.policy_node:main",
            "trainer_node = dsp_driving.nodes.trainer_node:main",
            "bag_report = dsp_driving.cli.report:main",
        ],
    },
)
