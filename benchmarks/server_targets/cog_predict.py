"""coglet targets for bench_server.py (copied as predict.py next to .cog/openapi_schema.json
in a temporary folder): the same no-op echo as corral_predictors.py."""

from cog import BasePredictor


class Predictor(BasePredictor):
    def predict(self, text: str = "") -> str:
        return text


class AsyncPredictor(BasePredictor):
    async def predict(self, text: str = "") -> str:
        return text
