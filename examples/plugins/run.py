"""Plugins with conflicting requirements side by side in one host, each in its own
environment (built with uv on first use, then cached):

    python examples/plugins/run.py              # stats-legacy (numpy<2) + stats-modern (numpy>=2)
    python examples/plugins/run.py --embedder   # and sentence embeddings with torch

The host needs numpy (the arrays it sends) but not torch: the embedder's environment has
torch and sentence-transformers, the host never imports them. Environments live in
$CORRAL_HOME/envs (else ~/.cache/corral/envs).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

from corral.plugins.manager import PluginManager

HERE = os.path.dirname(os.path.abspath(__file__))


def progress(line: str) -> None:
    print(f"  | {line}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", action="store_true",
                        help="also run the sentence-embedding plugin (torch, ~1 GB env)")
    args = parser.parse_args(argv)
    values = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0, 5.0])

    with PluginManager([HERE], entry_points=False) as pm:
        for name in ("stats-legacy", "stats-modern"):
            t0 = time.perf_counter()
            pm.install(name, progress=progress)
            print(f"{name}: environment ready in {time.perf_counter() - t0:.1f} s")
        legacy = pm.load("stats-legacy", {"ddof": 1})
        modern = pm.load("stats-modern", {"top": 2})
        print(f"stats-legacy (pid {legacy.pid}) runs numpy {legacy.call('versions')['numpy']}")
        print(f"stats-modern (pid {modern.pid}) runs numpy {modern.call('versions')['numpy']}")
        print(f"host runs numpy {np.__version__}")
        print("describe:", legacy.call("describe", values))
        print("scale:", np.round(legacy.call("scale", values), 3).tolist())
        print("most_common:", modern.call("most_common", values))

        if args.embedder:
            t0 = time.perf_counter()
            pm.install("embedder", progress=progress)
            print(f"embedder: environment ready in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            emb = pm.load("embedder", {"normalize": True})
            print(f"embedder (pid {emb.pid}) loaded in {time.perf_counter() - t0:.1f} s")
            vectors = emb.call("embed", ["A man is eating food.", "A man is eating a meal.",
                                         "The stock market fell sharply."])
            print(f"embed: {vectors.shape[0]} x {vectors.shape[1]} {vectors.dtype}")
            print(f"similar: {float(vectors[0] @ vectors[1]):.3f}  "
                  f"unrelated: {float(vectors[0] @ vectors[2]):.3f}")
        print("host imported torch:", "torch" in sys.modules)
        for row in pm.list():
            print(f"  {row.name:14} {row.environment:8} loaded={row.loaded} pid={row.pid}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
