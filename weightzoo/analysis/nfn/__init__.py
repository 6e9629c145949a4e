"""A permutation-invariant meta-model: a neural functional over a layout's weights.

In the style of NFN (Zhou et al., NeurIPS 2023) and DWSNets (Navon et al., ICML 2023):
equivariant layers that respect the hidden-unit permutation symmetry of feed-forward conv +
linear networks, an invariant pooling and an MLP head, so that a prediction does not change
when the hidden units of the input network are permuted. The structure comes from the
:class:`~weightzoo.core.layout.WeightLayout` only (``structure``), the layers are in
``layers`` and the training protocol's entry point is :func:`fit_predict` (``fit``).
"""

from weightzoo.analysis.nfn.fit import Settings, fit_predict
from weightzoo.analysis.nfn.layers import EquivariantLayer, InvariantNetwork, invariant_pool
from weightzoo.analysis.nfn.structure import LayerStructure, NetworkStructure

__all__ = ["EquivariantLayer", "InvariantNetwork", "LayerStructure", "NetworkStructure", "Settings", "fit_predict",
           "invariant_pool"]
