"""A plain class (no Cog base) and a function predictor, both with cog.Input."""

from cog import Input


class Plain:
    def predict(self, n: int = Input(default=2, ge=0)) -> list[int]:
        return list(range(n))


def run(text: str = Input(description="Echoed"), upper: bool = False) -> str:
    return text.upper() if upper else text


def fails(mode: str = "value") -> str:
    """Fail as asked: the error text a client sees."""
    if mode == "value":
        raise ValueError("this is a value error")
    raise RuntimeError("runtime problem")
