"""Column statistics on numpy 1.x: this plugin pins ``numpy<2`` (say, for a compiled
extension built against the 1.x ABI) while its neighbour needs numpy 2."""

import numpy as np


class Stats:
    def setup(self, ddof: int = 0) -> None:
        self.ddof = ddof

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def describe(self, values: np.ndarray) -> dict[str, float]:
        """Mean and standard deviation of ``values``."""
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=self.ddof))}

    def scale(self, values: np.ndarray) -> np.ndarray:
        """``values`` standardised (zero mean, unit deviation), as an array."""
        return (values - values.mean()) / values.std(ddof=self.ddof)
