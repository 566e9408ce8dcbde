"""Cancellation: the predictor sees Cog's CancelationException and cleans up."""

import time

from cog import BasePredictor, CancelationException, Input


class Predictor(BasePredictor):
    def predict(self, marker: str = Input(description="A file to write as it goes")) -> str:
        try:  # (the marker inside the try: a cancel seen after "started" lands here)
            with open(marker, "a") as f:
                f.write("started\n")
            for _ in range(600):
                time.sleep(0.1)
        except CancelationException:
            with open(marker, "a") as f:
                f.write("cancelled\n")
            raise
        return "not cancelled"
