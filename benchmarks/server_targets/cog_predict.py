"""coglet targets for bench_server.py (copied as predict.py next to .cog/openapi_schema.json
in a temporary folder): the same no-op echo as corral_predictors.py, and the same file
round trip (with .cog/openapi_schema.json from openapi_files.json)."""

import shutil

from cog import BasePredictor, Path


class Predictor(BasePredictor):
    def predict(self, text: str = "") -> str:
        return text


class AsyncPredictor(BasePredictor):
    async def predict(self, text: str = "") -> str:
        return text


class FilePredictor(BasePredictor):
    """The file round trip: the input copied to a new file next to it, returned."""

    def predict(self, doc: Path) -> Path:
        out = doc.with_name("out-" + doc.name)
        shutil.copyfile(doc, out)
        return Path(out)
