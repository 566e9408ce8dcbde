"""Path and File inputs and outputs, in lists and in a BaseModel."""

import os
import tempfile

from cog import BaseModel, BasePredictor, File, Input, Path


class Output(BaseModel):
    text: str
    image: Path
    extra: Path | None = None


class Predictor(BasePredictor):
    def predict(self, image: Path = Input(description="An image"),
                blob: File | None = Input(default=None, description="A file (deprecated type)"),
                more: list[Path] | None = Input(default=None)) -> Output:
        data = image.read_bytes()
        out = Path(tempfile.mkdtemp()) / "out.txt"
        out.write_bytes(data[::-1])
        text = f"{type(image).__name__}:{len(data)}"
        if blob is not None:
            text += f"|blob:{blob.read().decode()}"
        if more:
            text += "|more:" + ",".join(os.path.splitext(p)[1] for p in more)
        return Output(text=text, image=out)


def many(paths: list[Path]) -> list[Path]:
    """Echo each file's content reversed, as a list of Path outputs."""
    outs = []
    for p in paths:
        o = Path(tempfile.mkdtemp()) / ("r-" + os.path.basename(p))
        o.write_bytes(p.read_bytes()[::-1])
        outs.append(o)
    return outs
