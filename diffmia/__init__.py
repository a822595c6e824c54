"""diffmia: membership-inference audits of diffusion-model training recipes.

`diffmia.run(config)` and `diffmia.audit(model, members=..., nonmembers=...)` do what the commands of the same names do
and return a `diffmia.Results` (diffmia.api); they are imported on first use, so `import diffmia` stays light.
"""

__version__ = "0.1.0"

_API = ("run", "audit", "Results")
__all__ = ["__version__", *_API]


def __getattr__(name: str):  # the Python API, imported on first use (start-up time)
    if name in _API:
        from diffmia import api

        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
