"""A Secret input: a string in, a cog.Secret in the code, masked in the record."""

from cog import BasePredictor, Input, Secret


class Predictor(BasePredictor):
    def predict(self, token: Secret = Input(description="API token"),
                spare: Secret = Input(default=None)) -> str:
        print(f"token is {token}")  # a Secret prints masked
        value = token.get_secret_value()
        return f"{type(token).__name__}:{len(value)}:{value[::-1]}:{spare is None}"
