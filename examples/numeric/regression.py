"""Ridge regression in a worker: closed-form fit, streamed gradient descent, predictions.

Everything numeric runs in the worker process; arrays cross both ways exactly (dtype,
shape and order kept).
"""

from __future__ import annotations

import numpy as np

import corral


class Ridge:
    def setup(self, alpha: float = 1.0) -> None:
        if alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        self.alpha = alpha
        self.coef: np.ndarray | None = None
        self.intercept = 0.0

    def fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fit by solving (X'X + alpha I) w = X'y on centred data; returns the coefficients."""
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        x_mean, y_mean = X.mean(axis=0), y.mean()
        Xc, yc = X - x_mean, y - y_mean
        gram = Xc.T @ Xc + self.alpha * np.eye(X.shape[1])
        self.coef = np.linalg.solve(gram, Xc.T @ yc)
        self.intercept = float(y_mean - x_mean @ self.coef)
        corral.current().metric("condition_number", float(np.linalg.cond(gram)))
        return self.coef

    def fit_sgd(self, X: np.ndarray, y: np.ndarray, epochs: int = 20, lr: float = 0.1,
                batch: int = 256):
        """Mini-batch gradient descent; streams the training loss after each epoch."""
        rng = np.random.default_rng(0)
        X, y = np.asarray(X, dtype=np.float64), np.asarray(y, dtype=np.float64)
        n, d = X.shape
        w, b = np.zeros(d), 0.0
        scope = corral.current()
        for epoch in range(1, epochs + 1):
            order = rng.permutation(n)
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                err = X[idx] @ w + b - y[idx]
                w -= lr * (X[idx].T @ err / len(idx) + self.alpha * w / n)
                b -= lr * err.mean()
            loss = float(np.mean((X @ w + b - y) ** 2))
            scope.progress(epoch, epochs, phase="sgd")
            scope.metric("loss", loss, mode="append")
            yield loss
        self.coef, self.intercept = w, b

    def predict(self, X: np.ndarray) -> np.ndarray:
        if self.coef is None:
            raise RuntimeError("fit() first")
        return np.asarray(X, dtype=np.float64) @ self.coef + self.intercept

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """R^2 of the predictions."""
        resid = y - self.predict(X)
        return float(1 - resid @ resid / ((y - y.mean()) @ (y - y.mean())))

    def get_state(self) -> dict:
        return {"alpha": self.alpha, "coef": self.coef, "intercept": self.intercept}

    def set_state(self, state: dict) -> None:
        self.alpha, self.coef, self.intercept = state["alpha"], state["coef"], state["intercept"]
