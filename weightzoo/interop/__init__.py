"""Foreign model-zoo formats: read their networks, write versions back out.

Importers: ``nws`` (Eilertsen et al.), ``modelzoos`` (Schürholt et al.), ``smallcnnzoo``
(Unterthiner et al.), ``torch`` (folders of plain PyTorch snapshot files) and ``bundle``
(our own export); the import pipeline (:mod:`weightzoo.pipelines.importing`) stages and
publishes what they read. Exporters: the Model Zoos folder layout and a single ``.npz``
bundle (:mod:`weightzoo.interop.export`), the Small CNN Zoo layout
(:mod:`weightzoo.interop.smallcnnzoo`).
"""
