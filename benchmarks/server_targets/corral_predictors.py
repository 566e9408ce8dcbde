"""corral targets for bench_server.py: a no-op that echoes its ``text`` input, and a file
round trip."""

import pathlib
import shutil

import corral


class Echo:
    """Sync: the Pool of 2 sync workers, and the 1-worker sequential case."""

    def predict(self, text: str = "") -> str:
        return text


class AsyncEcho:
    """Async: one worker with 8 slots."""

    async def predict(self, text: str = "") -> str:
        return text


class FileEcho:
    """The file round trip: the input copied to a new file next to it (in the prediction's
    workspace, so the server moves it rather than copying it again), returned."""

    def predict(self, doc: corral.File) -> pathlib.Path:
        out = pathlib.Path(doc.path).with_name("out-" + pathlib.Path(doc.path).name)
        shutil.copyfile(doc.path, out)
        return out
