"""A predictor written the Cog way with corral's own names: no cog installed."""

import pathlib

from corral import Input


class Predictor:
    def setup(self) -> None:
        self.greeting = "hello"

    def run(self, name: str = Input(description="Who"),
            times: int = Input(default=1, ge=1, le=3),
            mode: str = Input(default="plain", choices=["plain", "shout"]),
            notes: pathlib.Path | None = Input(default=None, description="A file")) -> str:
        text = f"{self.greeting} {name}" * times
        if notes is not None:
            text += " " + notes.read_text()
        return text.upper() if mode == "shout" else text
