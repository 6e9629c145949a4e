"""Import foreign model zoos into weightzoo versions, and export versions back out.

Importers: ``nws`` (Eilertsen et al.), ``modelzoos`` (Schürholt et al.), ``smallcnnzoo``
(Unterthiner et al.), ``torch`` (folders of plain PyTorch snapshot files) and ``bundle``
(our own export); see :func:`import_source`. Exporters: the Model Zoos folder layout and a
single ``.npz`` bundle (:mod:`weightzoo.interop.export`), the Small CNN Zoo layout
(:mod:`weightzoo.interop.smallcnnzoo`).
"""

from weightzoo.interop.common import SourceError
from weightzoo.interop.importing import import_source

__all__ = ["SourceError", "import_source"]
