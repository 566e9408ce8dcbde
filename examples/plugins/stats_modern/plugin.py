"""Column statistics on numpy 2.x: uses ``np.unique_counts``, new in numpy 2.0, so it cannot
share an environment with a plugin pinned to numpy 1.x."""

import numpy as np


class Stats:
    def setup(self, top: int = 3) -> None:
        self.top = top

    def versions(self) -> dict[str, str]:
        return {"numpy": np.__version__}

    def most_common(self, values: np.ndarray) -> list[tuple[float, int]]:
        """The ``top`` most frequent values of ``values`` with their counts."""
        found = np.unique_counts(values)
        order = np.argsort(found.counts)[::-1][: self.top]
        return [(float(found.values[i]), int(found.counts[i])) for i in order]
