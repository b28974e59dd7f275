"""The run store: one versioned Zarr v3 group per training run (see ``schema`` for the layout).

Names load their module (and zarr, pandas) on first use, so code that only needs ``schema``'s constants (the CLI
registering its options: ``t3vis --help``) stays light.
"""

from ..lazy import lazy_attributes

#: Public name -> the module that defines it.
_EXPORTS = {"Location": "location", "Checkpoint": "reader", "Dynamics": "records", "Run": "reader",
            "RowReader": "rows", "SCHEMA_VERSION": "schema", "Problem": "validation", "Report": "validation",
            "validate": "validation", "validate_or_raise": "validation", "RunWriter": "writer",
            "iter_chunks": "writer"}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
