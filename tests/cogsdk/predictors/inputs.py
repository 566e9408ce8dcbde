"""Every option of Input(...), on a BasePredictor: the schema Cog builds and its checks."""

from cog import BasePredictor, Input


class Predictor(BasePredictor):
    def predict(
        self,
        prompt: str = Input(description="What to draw"),
        steps: int = Input(default=4, ge=1, le=50, description="Denoising steps"),
        scale: float = Input(default=7.5, ge=0, le=20),
        mode: str = Input(default="fast", choices=["fast", "slow"]),
        tag: str = Input(default="ab", min_length=2, max_length=5, regex="^[a-z]+$"),
        legacy: bool = Input(default=False, deprecated=True),
        seed: int = Input(default=None, description="Required: None is no default"),
    ) -> str:
        return f"{prompt}|{steps}|{scale!r}|{mode}|{tag}|{legacy}|{seed}"
