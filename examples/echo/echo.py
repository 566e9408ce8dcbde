"""The smallest useful target: echo values back, stream words, report progress."""

import time

import corral


class Echo:
    def setup(self, prefix: str = "") -> None:
        print(f"echo ready (prefix={prefix!r})")
        self.prefix = prefix

    def echo(self, value):
        """Return ``value`` unchanged (with the prefix, for a str)."""
        return self.prefix + value if isinstance(value, str) else value

    def noop(self) -> None:
        """Do nothing: measures the cost of a call."""

    def words(self, text: str):
        """Stream the words of ``text`` one by one."""
        scope = corral.current()
        parts = text.split()
        for i, word in enumerate(parts, 1):
            scope.progress(i, len(parts), phase="words")
            yield word

    def slow(self, seconds: float) -> float:
        time.sleep(seconds)
        return seconds
