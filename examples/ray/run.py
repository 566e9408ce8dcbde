"""The same Pool on a Ray cluster: here a whole cluster on this machine (a head and two
worker nodes, one offering the tag "gpu"), placed by tag, streaming, a big array.

    python examples/ray/run.py

Against a real cluster, drop ``local_cluster`` and give ``corral.ray.on("auto")`` (or the
head's address); the target must be importable (or at this path) on the nodes.
"""

import os

import numpy as np

import corral
import corral.ray

HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = f"{HERE}/model.py:Model"

nodes = [{"num_cpus": 2, "resources": corral.ray.tag_resources(["gpu"])},
         {"num_cpus": 2, "resources": corral.ray.tag_resources(["cpu"])}]

with corral.ray.local_cluster(nodes):
    placement = corral.ray.on(num_cpus=1, tags=["gpu"])
    with corral.Pool(TARGET, workers=2, config={"prefix": "> "}, runner=placement) as pool:
        gpu_node = {n.node_id: n for n in corral.ray.nodes()}[pool.workers[0].node_id]
        print("workers on the node tagged", gpu_node.tags)
        print(pool.predict("hello from the cluster"))
        for word in pool.stream("tokens", "chunks arrive as they are made"):
            print(" ", word)
        arr = np.ones(10_000_000)  # 80 MB: Ray's object store, then shared memory
        print("norm", pool.call("norm", arr))
        print(sorted(pool.map("predict", ["a", "b", "c"])))
        print("health", pool.health().status)
    for n in corral.ray.nodes():
        print(f"node {n.node_id[:8]} alive={n.alive} cpus={n.cpus:g} tags={n.tags}")
print("done")
