"""The worker side runs inside plugin environments: it must need only msgspec."""

import subprocess
import sys
import types

import corral

HOST_ONLY = ("corral.host", "corral.remote", "cloudpickle", "numpy", "asyncio",
             "concurrent.futures", "websockets")


def _modules_after(code: str) -> set:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys\nprint('\\n'.join(sys.modules))"],
        check=True, capture_output=True, text=True).stdout
    return set(out.split())


def test_worker_side_imports_nothing_of_the_host():
    # (corral.cog's worker side too: the Cog adapter runs in the worker)
    loaded = _modules_after("import corral, corral.worker.main, corral.cog.fields, "
                            "corral.cog.runtime")
    leaked = [m for m in loaded for bad in HOST_ONLY if m == bad or m.startswith(bad + ".")]
    assert not leaked, f"the worker side imported {leaked}"


def test_host_names_load_lazily():
    loaded = _modules_after("import corral")
    assert "corral.host.worker" not in loaded
    loaded = _modules_after("import corral\ncorral.Worker")
    assert "corral.host.worker" in loaded


def test_all_lists_exactly_the_public_names():
    # (subpackages imported by earlier tests are attributes too: not names of the API)
    public = {n for n in dir(corral) if not n.startswith("_")
              and not isinstance(getattr(corral, n), types.ModuleType)}
    public |= set(corral._LAZY_NAMES)
    # Issue 13: wire Structs, future types and report Structs stay reachable, not in
    # __all__ (tests/test_exported_members.py lists both sides).
    left_out = set(corral._REACHABLE) | (set(corral._LAZY_NAMES) - set(corral.__all__))
    assert set(corral.__all__) - {"__version__"} == public - left_out
    for name in corral.__all__:
        assert getattr(corral, name) is not None


def test_the_pie_guest_side_imports_nothing_of_the_host():
    # A PIE program's worker (and the fork server) run in the program's environment:
    # msgspec and the stdlib only (asyncio included: programs may be async).
    loaded = _modules_after("import corral.remote.pie.zygote, corral.remote.pie.guest, "
                            "corral.remote.pie.inferlet, corral.worker.main")
    host_only = ("corral.host", "corral.server", "corral.plugins", "starlette", "uvicorn",
                 "blake3", "websockets", "numpy", "cloudpickle")
    leaked = [m for m in loaded for bad in host_only if m == bad or m.startswith(bad + ".")]
    assert not leaked, f"the PIE guest side imported {leaked}"


def test_the_pipeline_is_worker_side():
    # corral.Pipeline runs in the worker, in the plugin's environment: stdlib and msgspec.
    loaded = _modules_after("import corral.pipeline, corral.worker.main")
    host_only = ("corral.host", "corral.server", "corral.plugins", "numpy", "torch",
                 "cloudpickle")
    leaked = [m for m in loaded for bad in host_only if m == bad or m.startswith(bad + ".")]
    assert not leaked, f"corral.pipeline imported {leaked}"
