"""Training: a train() function and a Trainer class, returning a BaseModel with weights."""

import tempfile

from cog import BaseModel, Input, Path


class TrainingOutput(BaseModel):
    weights: Path
    steps: int


def train(n: int = Input(description="Bytes of weights", ge=1)) -> TrainingOutput:
    out = Path(tempfile.mkdtemp()) / "weights.bin"
    out.write_bytes(b"a" * n)
    print(f"trained {n}")
    return TrainingOutput(weights=out, steps=n)


class Predictor:
    def predict(self, s: str) -> str:
        return "hello " + s
