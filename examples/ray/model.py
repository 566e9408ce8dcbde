"""A model for examples/ray/run.py: a "tokenizer" that streams, and a numeric method."""

import os
import socket

import corral


class Model:
    def setup(self, prefix: str = "") -> None:
        self.prefix = prefix

    def predict(self, text: str) -> str:
        return self.prefix + text.upper()

    def tokens(self, text: str):
        scope = corral.current()
        words = text.split()
        for i, word in enumerate(words):
            scope.progress(i + 1, len(words))
            yield word

    def norm(self, arr) -> float:
        return float((arr * arr).sum() ** 0.5)

    def where(self) -> str:
        return f"{socket.gethostname()} pid {os.getpid()}"
