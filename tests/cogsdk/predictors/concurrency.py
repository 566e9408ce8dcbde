"""@concurrent(max=N): an async predictor that runs N predictions at once."""

import asyncio
import os

from cog import BasePredictor, Input, concurrent


class Predictor(BasePredictor):
    @concurrent(max=4)
    async def predict(self, gate: str = Input(description="A folder: wait for 'open'"),
                      i: int = 0) -> int:
        open(os.path.join(gate, f"in-{i}"), "w").close()
        while not os.path.exists(os.path.join(gate, "open")):
            await asyncio.sleep(0.01)
        return i
