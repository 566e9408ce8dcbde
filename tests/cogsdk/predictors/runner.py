"""A BaseRunner with run() (Cog's current name), setup(), metrics and the request context."""

from cog import BaseRunner, Input, current_scope


class Runner(BaseRunner):
    def setup(self) -> None:
        self.prefix = "hi"

    def run(self, name: str = Input(description="Who"), times: int = Input(default=1)) -> str:
        self.record_metric("calls", 1, mode="incr")
        scope = current_scope()
        scope.metrics["name_length"] = len(name)
        scope.metrics.record("seen", name, mode="append")
        scope.record_metric("temp", 5)
        del scope.metrics["temp"]
        ctx = scope.context
        who = ctx.get("user", "nobody")
        return f"{self.prefix} {name} " * times + f"for {who}"
