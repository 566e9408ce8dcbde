"""Optional and union inputs, as Cog reads them."""

from typing import Optional

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(self, value: Optional[str],
                either: str | float | None = Input(default=None),
                count: Optional[int] = Input(default=None, ge=0)) -> str:
        return f"{type(value).__name__}:{value}|{type(either).__name__}:{either}|{count}"
