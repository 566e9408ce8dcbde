"""The programs bench_pie.py launches, with pie-client's @inferlet (the source travels).

The same bodies as ../shared/peers/pie/inf/bench_fns.py, so both servers run the same code.
"""
from pie_client import inferlet


@inferlet
async def ret_dict(x: int = 1):
    return {"ok": True, "x": x}


@inferlet
async def recv_file_len(expect: int = 0):
    import hashlib

    from inferlet import session
    session.send("ready")
    data = session.receive_file()
    if hasattr(data, "__await__"):
        data = await data
    return {"len": len(data), "sha256": hashlib.sha256(bytes(data)).hexdigest()}


@inferlet
async def print_lines(n: int = 1000):
    for i in range(n):
        print(f"line {i:05d}")
    return {"printed": n}


@inferlet
async def echo_signal(rounds: int = 1):
    from inferlet import session
    got = []
    for _ in range(rounds):
        m = session.receive()
        if hasattr(m, "__await__"):
            m = await m
        session.send("echo:" + m)
        got.append(m)
    return {"got": len(got)}
