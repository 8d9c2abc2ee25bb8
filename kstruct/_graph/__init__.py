"""The one model-graph core: pruning, quantization and search read and rebuild models through it.

- `parse(model)`: a Sequential or functional model as data (layers, raw ops, the
  tensors between them); `build(graph, configs, aliases)` rebuilds it with edits.
- `rebuild(model, replace, copy_weights, remove=, insert_after=)`: a live clone
  with layers replaced, wrapped, removed or inserted, weights carried over.
- `carry_state(original, new)`: what `set_weights` misses (an adapted Normalization's
  mean, a lookup's vocabulary), for code that builds layers itself (`build`).
- `analyze(graph)`: the groups of coupled channels, with frozen ones and why.
"""

from kstruct._graph.channels import ChannelAnalysis, ChannelGroup, Member, Signature, analyze
from kstruct._graph.checks import check_graph_model, is_graph_model, is_layer, leaf_layers
from kstruct._graph.graph import OUTPUT, Call, Graph, Node, Ref, build, parse, tensor_refs
from kstruct._graph.rebuild import copy_compile, copy_same_weights, fresh_copy, rebuild
from kstruct._graph.state import carry_state

__all__ = [
    "OUTPUT",
    "Call",
    "ChannelAnalysis",
    "ChannelGroup",
    "Graph",
    "Member",
    "Node",
    "Ref",
    "Signature",
    "analyze",
    "build",
    "carry_state",
    "check_graph_model",
    "copy_compile",
    "copy_same_weights",
    "fresh_copy",
    "is_graph_model",
    "is_layer",
    "leaf_layers",
    "parse",
    "rebuild",
    "tensor_refs",
]
