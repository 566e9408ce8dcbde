"""Streaming outputs: ConcatenateIterator, Iterator and an async iterator."""

import tempfile
from typing import Iterator

from cog import AsyncConcatenateIterator, BasePredictor, ConcatenateIterator, Input, Path


class Predictor(BasePredictor):
    def predict(self, n: int = Input(default=3, ge=1)) -> ConcatenateIterator[str]:
        for i in range(n):
            print(f"token {i}")
            yield f"tok{i} "


class Counter(BasePredictor):
    def predict(self, n: int = 3) -> Iterator[int]:
        yield from range(n)


class AsyncTokens(BasePredictor):
    async def predict(self, n: int = 2) -> AsyncConcatenateIterator[str]:
        for i in range(n):
            yield f"a{i}"


class Failing(BasePredictor):
    def predict(self, at: int = 1) -> Iterator[str]:
        for i in range(3):
            if i == at:
                raise RuntimeError(f"broke at {i}")
            yield str(i)


class Frames(BasePredictor):
    def setup(self, weights: str | None = None) -> None:
        self.weights = weights

    def predict(self, n: int = 2) -> Iterator[Path]:
        """Path outputs streamed, and the weights setup() was given ($COG_WEIGHTS)."""
        folder = Path(tempfile.mkdtemp())
        for i in range(n):
            p = folder / f"frame{i}.txt"
            p.write_text(f"frame {i} of {self.weights}")
            yield p
