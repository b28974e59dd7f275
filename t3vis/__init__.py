"""t3vis: visual analytics for fine-tuning Transformer models.

The core (store, data, models, analysis, training) imports without panel/bokeh; ``t3vis.Explorer`` loads the
UI stack on first use.
"""

from .version import __version__

__all__ = ["Explorer", "__version__"]


def __getattr__(name):
    if name == "Explorer":
        from .ui.explorer import Explorer

        return Explorer
    raise AttributeError(name)
