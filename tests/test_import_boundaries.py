"""The worker side runs inside plugin environments: it must need only msgspec."""

import subprocess
import sys

import corral

HOST_ONLY = ("corral.host", "corral.remote", "cloudpickle", "numpy", "asyncio",
             "concurrent.futures", "websockets")


def _modules_after(code: str) -> set:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_worker_side_imports_nothing_of_the_host():
    loaded = _modules_after("import corral, corral.worker.main")
    leaked = [m for m in loaded for bad in HOST_ONLY if m == bad or m.startswith(bad + ".")]
    assert not leaked, f"the worker side imported {leaked}"


def test_host_names_load_lazily():
    loaded = _modules_after("import corral")
    assert "corral.host.worker" not in loaded
    loaded = _modules_after("import corral\ncorral.Worker")
    assert "corral.host.worker" in loaded


def test_all_lists_exactly_the_public_names():
    public = {n for n in dir(corral) if not n.startswith("_")} - {
        "exceptions", "protocol", "worker", "host", "types", "server", "plugins", "remote"}
    public |= set(corral._LAZY_NAMES)
    assert set(corral.__all__) - {"__version__"} == public
    for name in corral.__all__:
        assert getattr(corral, name) is not None
