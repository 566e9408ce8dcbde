"""The chatty model of bench_logs.py: prints ``n`` lines of ``width`` characters."""


class Chatty:
    def predict(self, n: int = 1000, width: int = 60) -> int:
        tail = "x" * (width - 9)
        for i in range(n):
            print(f"{i:08d} {tail}")
        return n
