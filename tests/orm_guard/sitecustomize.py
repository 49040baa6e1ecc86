"""An ORM guard for every Python process of a test run, loaded through ``PYTHONPATH``.

Active only when ``POD_ORM_GUARD_LOG`` names a file. Then, in this process:

* any lazy load or refresh of an expired attribute (a relationship or column load issued
  by the ORM on its own) raises, and is recorded;
* any ``DetachedInstanceError`` is recorded when it is raised, even if some code catches it;
* every public :class:`~pod_resources.catalog.Catalog` method checks that nothing it returns
  is (or holds) an ORM instance.

Records are JSON lines ``{"pid", "kind", "detail"}``; a test reads them after the run, so a
violation swallowed by the code under test is still seen. Each process that uses the catalog
also records one ``active`` line, so the test knows the guard ran where the work ran.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys

_LOG = os.environ.get("POD_ORM_GUARD_LOG")


def _record(kind: str, detail: str) -> None:
    line = json.dumps({"pid": os.getpid(), "kind": kind, "detail": detail[:500]})
    with open(_LOG, "a", encoding="utf-8") as log:  # type: ignore[arg-type]
        log.write(line + "\n")


def _orm_instances(value: object, depth: int = 0) -> list[str]:
    if depth > 6 or value is None or isinstance(value, (str, bytes, int, float, bool)):
        return []
    if hasattr(type(value), "_sa_class_manager"):
        return [type(value).__name__]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        children = [getattr(value, f.name) for f in dataclasses.fields(value)]
    elif isinstance(value, dict) or hasattr(value, "items"):
        try:
            children = [*value.keys(), *value.values()]  # type: ignore[union-attr]
        except Exception:  # noqa: BLE001 - not a mapping after all
            return []
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = list(value)
    else:
        return []
    return [name for child in children for name in _orm_instances(child, depth + 1)]


def _install() -> None:
    from sqlalchemy import event
    from sqlalchemy.orm import Session
    from sqlalchemy.orm import exc as orm_exc

    original_init = orm_exc.DetachedInstanceError.__init__

    def detached_init(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        _record("detached", repr(args))
        original_init(self, *args, **kwargs)

    orm_exc.DetachedInstanceError.__init__ = detached_init  # type: ignore[method-assign]

    @event.listens_for(Session, "do_orm_execute")
    def refuse_lazy_loads(state):  # type: ignore[no-untyped-def]
        if state.is_relationship_load or state.is_column_load:
            detail = f"{'relationship' if state.is_relationship_load else 'column'} load: {state.statement}"
            _record("lazy_load", detail)
            raise RuntimeError(f"ORM guard: lazy load or refresh refused ({detail})")

    from pod_resources.catalog import repository

    active = False

    def guarded(name, method):  # type: ignore[no-untyped-def]
        @functools.wraps(method)
        def call(*args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal active
            if not active:
                active = True
                _record("active", " ".join(sys.argv)[:200])
            result = method(*args, **kwargs)
            leaked = _orm_instances(result)
            if leaked:
                _record("orm_returned", f"Catalog.{name} returned {', '.join(leaked)}")
                raise RuntimeError(f"ORM guard: Catalog.{name} returned ORM instances {leaked}")
            return result

        return call

    for name, member in list(vars(repository.Catalog).items()):
        if not name.startswith("_") and callable(member):
            setattr(repository.Catalog, name, guarded(name, member))


if _LOG:
    _install()
