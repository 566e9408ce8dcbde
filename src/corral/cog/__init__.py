"""Cog compatibility: predictors written against Cog's SDK run unchanged.

Worker side (imported inside the worker; stdlib and msgspec only, and ``cog`` itself only
when the target imported it):

* ``fields``  - ``Input(...)`` (Cog's FieldInfo, or corral's own ``corral.Input``) and Cog's
  input types (Secret, File, Path), turned into the hints, defaults and schema keys that
  worker/inputs.py checks and describes;
* ``runtime`` - the hooks a Cog target needs once built: ``run()`` served as ``predict``,
  outputs made plain (Path, File, BaseModel), ``current_scope()`` backed by corral's scope,
  Cog's cancellation exception.

Host side (never imported by the worker):

* ``project`` - cog.yaml, the environment it asks for, and ``@concurrent(max=N)`` read
  from the source as Cog's own build reads it.

See docs/cog.md.
"""
