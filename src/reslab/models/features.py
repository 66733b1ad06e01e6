"""Feature maps out of a network, as timm and torchvision give them.

``FeatureNet`` is what ``create_model(name, features_only=True, out_indices=...)`` returns:
the network without its head, whose forward gives the stem's and the stages' maps, described
by ``feature_info`` (channels, reduction, module) as timm describes them.

``get_graph_node_names`` / ``create_feature_extractor`` are torchvision's feature-extraction
functions, written on ``torch.fx`` (torchvision cannot be imported here): any node of the
traced network, named by its module path (``layer1.0.conv2``, ``layer1.0.add``), becomes an
output. A module path that is not a leaf (``layer2``) names that module's last node.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import fx, nn

from reslab.errors import ConfigError
from reslab.models.build import FeatureInfo, ResNet
from reslab.models.spec import ResNetSpec

__all__ = ["FeatureInfo", "FeatureNet", "create_feature_extractor", "get_graph_node_names"]


class FeatureNet(ResNet):
    """A ResNet without classifier whose forward returns the maps at ``out_indices``
    (0: the stem before its pooling; i: stage i). Its state dict is the backbone's, so a
    classifier's weights file loads into it (``load_weights`` drops the head)."""

    def __init__(self, spec: ResNetSpec, out_indices: Sequence[int] | None = None):
        super().__init__(spec.replace(num_classes=0))
        del self.avgpool  # no head at all
        available = range(len(spec.depths) + 1)
        out_indices = tuple(available if out_indices is None else out_indices)
        if not out_indices or any(not isinstance(i, int) or i not in available
                                  for i in out_indices):
            raise ConfigError(f"out_indices {out_indices} must be among {tuple(available)} "
                              "(0: the stem, i: stage i)")
        self.out_indices = out_indices

    @property
    def feature_info(self) -> FeatureInfo:
        every = super().feature_info
        return FeatureInfo(every[i] for i in self.out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = self.forward_intermediates(x)
        return [maps[i] for i in self.out_indices]


# --- torch.fx: any node as an output ----------------------------------------------------


class _ScopeTracer(fx.Tracer):
    """A tracer that records, on every node, the path of the module it was traced in."""

    def __init__(self):
        super().__init__()
        self.path = ""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        # a torch layer reslab subclasses (layers.GroupNorm) is a node, as torch's own is
        return isinstance(m, nn.GroupNorm) or super().is_leaf_module(m, qualname)

    def call_module(self, m, forward, args, kwargs):
        outer, self.path = self.path, self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self.path = outer

    def create_node(self, kind, target, args, kwargs, name=None, type_expr=None):
        node = super().create_node(kind, target, args, kwargs, name, type_expr)
        node.meta["reslab_path"] = self.path
        return node


def _trace(model: nn.Module) -> tuple[fx.Graph, dict[str, fx.Node]]:
    """The graph, and its nodes by qualified name: the module path for a leaf module's call,
    ``scope.op`` for the rest (``_1``, ``_2`` after repeats), as torchvision names them."""
    graph = _ScopeTracer().trace(model)
    named: dict[str, fx.Node] = {}
    for node in graph.nodes:
        if node.op == "call_module":
            name = str(node.target)
        elif node.op in ("placeholder", "output"):
            name = node.name
        else:
            op = node.target if isinstance(node.target, str) else node.target.__name__
            scope = node.meta["reslab_path"]
            name = f"{scope}.{op}" if scope else op
        base, repeat = name, 0
        while name in named:
            repeat += 1
            name = f"{base}_{repeat}"
        named[name] = node
    return graph, named


def get_graph_node_names(model: nn.Module) -> tuple[list[str], list[str]]:
    """(train-mode names, eval-mode names) of the nodes ``create_feature_extractor`` takes."""
    was_training = model.training
    try:
        names = []
        for mode in (True, False):
            model.train(mode)
            names.append([n for n in _trace(model)[1] if n not in ("x", "output")])
        return names[0], names[1]
    finally:
        model.train(was_training)


def create_feature_extractor(model: nn.Module, return_nodes: Iterable[str] | dict[str, str]
                             ) -> fx.GraphModule:
    """A module whose forward returns ``{output name: tensor}`` for the nodes asked for
    (a list, or a dict of node name to output name), traced in the model's current mode."""
    if not isinstance(return_nodes, dict):
        return_nodes = {name: name for name in return_nodes}
    graph, named = _trace(model)
    outputs = {}
    for node_name, out_name in return_nodes.items():
        node = named.get(node_name)
        if node is None:  # a module's path: its last node
            inside = [n for k, n in named.items() if k.startswith(node_name + ".")]
            if not inside:
                raise ConfigError(f"no node {node_name!r} in {type(model).__name__}: "
                                  "get_graph_node_names(model) lists them")
            node = inside[-1]
        outputs[out_name] = node
    old_output = next(n for n in graph.nodes if n.op == "output")
    with graph.inserting_after(old_output):
        graph.output(outputs)
    graph.erase_node(old_output)
    extractor = fx.GraphModule(model, graph, class_name=f"{type(model).__name__}Features")
    extractor.graph.eliminate_dead_code()  # and the layers past the last output with it
    extractor.delete_all_unused_submodules()
    extractor.recompile()
    return extractor
