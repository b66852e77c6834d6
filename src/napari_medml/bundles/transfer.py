"""Transfer learning: copy the tensors of any bundle (or model) whose name and shape fit."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from napari_medml.bundles.format import MEMBERS_NAME, WEIGHTS_NAME, read_description, read_weights
from napari_medml.errors import InputError

__all__ = ["thaw_new_tensors", "transfer_weights"]


MIN_TRANSFERRED = 0.5  # share of the new network's learned tensors, and of its kernels, that must come from the bundle
# networks that hold an encoder alone, under the U-Net encoder's tensor names (a classifier started
# from a U-Net bundle): into a U-Net they give the encoder, and the decoder they lack starts new
ENCODER_ONLY = ("unet-encoder",)


def bundle_architecture(source: Any) -> dict[str, Any]:
    """The network a bundle folder (or a model in memory) holds: ``network`` (name), ``channels``
    (width), ``depth``, ``norm`` and ``spatial_dims``; a key is missing when the bundle does not say.

    Never raises: an unreadable bundle gives ``{}`` (loading its weights then says why)."""
    try:
        if hasattr(source, "config"):
            model = source.config.model
            found = {"network": model.network, "channels": model.channels, "depth": model.depth,
                     "norm": model.norm, "spatial_dims": getattr(source, "spatial_dims", None)}
        else:
            desc = read_description(Path(source).expanduser())
            net = desc.get("network") if isinstance(desc.get("network"), Mapping) else {}
            arguments = net.get("arguments") or {}
            found = {"network": arguments.get("network") or net.get("name"), "channels": arguments.get("channels"),
                     "depth": arguments.get("depth"), "norm": arguments.get("norm"),
                     "spatial_dims": desc.get("spatial_dims")}
    except Exception:  # noqa: BLE001 - a description only: the weights' loader reports a damaged bundle
        return {}
    return {k: v for k, v in found.items() if v is not None}


def _mismatch_fix(source: Any, network: torch.nn.Module) -> str:
    """What to set so a new network takes a bundle's weights: its dimensions, width, depth and norm."""
    arch = bundle_architecture(source)
    width, depth, dims = arch.get("channels"), arch.get("depth"), arch.get("spatial_dims")
    own_dims = next((m.weight.dim() - 2 for m in network.modules()
                     if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))), None)
    if dims is not None and own_dims is not None and dims != own_dims:
        if dims == 3:  # a 2D image cannot train a 3D network: only volumes can
            return ("the bundle's network is 3D and this one 2D: on volumes, train a 3D network "
                    "(--spatial-dims 3; the widget's 2D/3D); on 2D images, start from a bundle pretrained on 2D images")
        return ("the bundle's network is 2D and this one 3D: train a 2D network on the slices "
                "(--spatial-dims 2; the widget's 2D/3D), or start from a bundle pretrained on volumes")
    if width is None:
        return "start with the bundle's network, width and depth"
    norm = arch.get("norm")
    if norm is not None and _norm_of(network) not in (None, norm):  # the same width and depth were advised in vain
        return (f"the bundle's network has width {width}, depth {depth} and {norm} norm: train with the same "
                f"(--features {width} --depth {depth} --norm {norm}; in the widget: width, depth and norm)")
    return (f"the bundle's network has width {width} and depth {depth}: train with the same "
            f"(--features {width} --depth {depth}; in the widget: width and depth)")


def _aliases(network: torch.nn.Module) -> dict[str, str]:
    """Each state-dict name of ``network`` -> the first name of the same tensor: a DynUNet reaches
    its encoder's tensors twice (``skip_layers.*``), and each counts once in the start line."""
    first: dict[tuple, str] = {}
    names = {}
    for name, t in network.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), t.dtype) if t.numel() else (name,)
        names[name] = first.setdefault(key, name)
    return names


def _norm_of(network: torch.nn.Module) -> str | None:
    """``"batch"`` or ``"instance"``: the norm layers of ``network`` (None: neither, or both)."""
    kinds = {"batch" if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) else "instance"
             for m in network.modules()
             if isinstance(m, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm))}
    return kinds.pop() if len(kinds) == 1 else None


def _other_kernels(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor],
                   unfit: Collection[str]) -> list[str]:
    """The ``unfit`` tensors that differ from this network's in their kernel size alone (a DynUNet
    plans its kernels from the voxel size and patch it was built for)."""
    return [k for k in unfit if k in own and own[k].dim() == state[k].dim() > 2
            and own[k].shape[:2] == state[k].shape[:2] and own[k].shape[2:] != state[k].shape[2:]]


def _input_unfit(network: torch.nn.Module, state: Mapping[str, torch.Tensor],
                 unfit: Collection[str]) -> dict[str, Any]:
    """The ``unfit`` tensors that take the input with another number of channels than the
    bundle's (a bundle pretrained on images of other channels; an object classifier's mask):
    ``{"input_unfit": count, "input_channels": [bundle's, this network's], "input_tensors": names}``,
    or ``{}``."""
    first = next((name for name, m in network.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))),
                 None)
    own = network.state_dict()
    weight = f"{first}.weight" if first else ""
    if weight not in own or weight not in state or own[weight].shape[1] == state[weight].shape[1]:
        return {}
    mine, theirs = int(own[weight].shape[1]), int(state[weight].shape[1])

    def others(shape: torch.Size) -> tuple[int, ...]:  # every size but the input channels'
        return (shape[0], *shape[2:])

    taking = [k for k in unfit if k in own and own[k].dim() > 1 and own[k].shape[1] == mine
              and state[k].shape[1] == theirs and others(own[k].shape) == others(state[k].shape)]
    return {"input_unfit": len(taking), "input_channels": [theirs, mine], "input_tensors": taking} if taking else {}


def transfer_weights(network: torch.nn.Module, source: str | Path | Any, *,
                     advice: str | None = None, head: Collection[str] = (),
                     task: str | None = None) -> dict[str, Any]:
    """Copy every tensor of a bundle (classification or segmentation) whose name and shape fit.

    A network of which less than half of the learned tensors (parameters; buffers such as
    batch-norm running statistics are not learned weights) fit is refused: it would start
    nearly from random. The output layer (``head``) is taken only from a bundle of the
    same ``task``: a pretraining bundle's reconstruction layer (one output per image
    channel) has the shape of a segmentation layer whenever the image has as many
    channels as there are classes, but it means something else.

    Parameters
    ----------
    network : torch.nn.Module
        The new network (changed in place).
    source : str, Path or model
        A bundle folder, or a model in memory (anything with ``.network`` and ``.config``).
    advice : str, optional
        What the refusal tells the user to do (default: train with the bundle's
        dimensions, width and depth, as ``train`` takes them).
    head : collection of str, optional
        Names of the network's output-layer tensors (those whose shape follows the
        number of outputs).
    task : str, optional
        The new network's task; with ``head``, a bundle of another task leaves the
        output layer as initialised.

    Returns
    -------
    dict
        Provenance: ``source``, ``task``, ``network``, ``loaded``, ``skipped``, ``total``,
        ``new_head`` (True when the output layer was left as initialised although it fit),
        ``other_outputs`` (True when it did not fit: another number of outputs), ``unfit``
        (the bundle's other tensors that fit nowhere), ``bundle_tensors``, ``new_tensors`` (the
        names of the network's learned tensors that start new) and, when the network's
        first layer takes another number of channels than the bundle's, ``input_unfit`` (how
        many of the unfit tensors take the input) and ``input_channels`` (the bundle's, this
        network's); ``kernel_unfit``, how many of the others differ in their kernel size
        alone, when any do; ``absent``, how many of this network's tensors (less the output
        layer) the bundle lacks, when any, and ``norms`` (the bundle's, this network's) when
        their norm layers differ, or ``encoder_only`` (True) when the bundle holds an encoder
        alone (``ENCODER_ONLY``: the share of tensors that must fit is then judged on the
        tensors it names). Counts take each tensor once, also one a network reaches by two names.

    Raises
    ------
    BundleError
        Damaged bundle. ``InputError`` when no tensor fits.
    """
    if hasattr(source, "network"):
        state = {k: v.detach().cpu() for k, v in source.network.state_dict().items()}
        info = {"source": f"{type(source).__name__} in memory", "task": source.config.task,
                "network": source.config.model.network}
    else:
        path = Path(source).expanduser()
        members = sorted((path / MEMBERS_NAME).glob("fold-*")) if (path / MEMBERS_NAME).is_dir() else []
        if members and not (path / WEIGHTS_NAME).exists():  # an ensemble: one set of weights per member
            raise InputError(f"'{path}' is an ensemble of {len(members)} models: start from one of them, "
                             f"e.g. '{members[0]}'")
        desc = read_description(path)
        net = desc.get("network")
        info = {"source": str(path.resolve()), "task": desc.get("task"),
                "network": net.get("name") if isinstance(net, Mapping) else net}
        state = read_weights(path)
    own = network.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    new_head = bool(head) and task is not None and info["task"] != task and any(k in fitting for k in head)
    if new_head:
        fitting = {k: v for k, v in fitting.items() if k not in head}
    if not fitting:
        raise InputError(f"no weights of {info['source']} ({info['task']}, {info['network']}) fit the "
                         f"{type(network).__name__}: start from a bundle with the same network")
    # a few activation scalars fitting (another width) would start nearly everything from random;
    # only learned tensors count: a network that differs in its norm layers' statistics alone fits
    learned = [name for name, _ in network.named_parameters()]
    encoder_only = info["network"] in ENCODER_ONLY  # judged on the encoder it has (trial 39: always refused)
    judged = [name for name in learned if name in state] if encoder_only else learned
    taken = sum(name in fitting for name in judged)
    if taken < MIN_TRANSFERRED * len(judged) or not taken:
        raise InputError(f"only {taken} of this network's {len(judged)} learned tensors fit those of "
                         f"{info['source']} ({info['task']}, {info['network']}): "
                         f"{advice or _mismatch_fix(source, network)}")
    # biases and norm scales are about half of a U-Net's tensors: a 2D bundle under a 3D network
    # passed the count above with not one convolution kernel taken (the output layer's start new anyway)
    inputs = _input_unfit(network, state, [k for k in state if k not in fitting])
    taking = inputs.get("input_tensors", [])
    kernels = [name for name, p in network.named_parameters()  # the bundle's, less the layers that start new
               if p.dim() > 1 and name in state and name not in head and name not in taking]
    taken_kernels = sum(name in fitting for name in kernels)
    if taken_kernels < MIN_TRANSFERRED * len(kernels):
        raise InputError(f"only {taken_kernels} of this network's {len(kernels)} convolution kernels fit those of "
                         f"{info['source']} ({info['task']}, {info['network']}): "
                         f"{advice or _mismatch_fix(source, network)}")
    network.load_state_dict(fitting, strict=False)
    # the output layer of another number of outputs (other classes, a reconstruction) starts new
    # as a matter of course: it is said as such, not counted with the tensors of another architecture
    other_outputs = not new_head and any(k in (head or ()) and k not in fitting for k in state)
    alias = _aliases(network)

    # a bundle's file keeps no aliases: MONAI's DynUNet reaches its blocks again as skip_layers.*,
    # which this network (of another norm or depth) may not have to tell them by
    twice = info["network"] == "dynunet" or bundle_architecture(source).get("network") == "dynunet"

    def count(names: Collection[str]) -> int:  # each tensor once, whatever it is called
        return len({alias.get(k, k) for k in names if k in alias or not (twice and k.startswith("skip_layers."))})

    unfit = [k for k in state if k not in fitting and not ((new_head or other_outputs) and k in head)
             and not (encoder_only and k not in own)]  # a classifier's own head: no U-Net has one
    info.update({k: v for k, v in inputs.items() if k != "input_tensors"})
    if inputs:
        info["input_unfit"] = count(taking)
    kernels_unfit = _other_kernels(own, state, [k for k in unfit if k not in taking])
    if kernels_unfit:
        info["kernel_unfit"] = count(kernels_unfit)
    absent = [k for k in own if k not in state and k not in head]  # this network's, which the bundle lacks
    if absent:
        info["absent"] = count(absent)
        norms = (bundle_architecture(source).get("norm"), _norm_of(network))
        if None not in norms and norms[0] != norms[1]:
            info["norms"] = list(norms)
    loaded, bundle = count(fitting), count(state)
    if encoder_only:
        info["encoder_only"] = True
    return {**info, "loaded": loaded, "skipped": bundle - loaded, "total": count(own),
            "new_head": new_head, "other_outputs": other_outputs, "unfit": count(unfit), "bundle_tensors": bundle,
            "new_tensors": [name for name in learned if name not in fitting]}


def thaw_new_tensors(network: torch.nn.Module, weights: Mapping[str, Any]) -> int:
    """Let the learned tensors that start new train again where frozen stages caught them.

    A frozen stage keeps what the bundle taught; a tensor of it that the bundle could not
    give (its input layer, pretrained on another number of image channels) would stay
    random for the whole run.

    Parameters
    ----------
    network : torch.nn.Module
        The network after ``transfer_weights`` and the freezing of its first stages.
    weights : mapping
        ``transfer_weights``'s provenance (its ``new_tensors``).

    Returns
    -------
    int
        How many tensors were frozen and now train.
    """
    new = set(weights.get("new_tensors") or ())
    thawed = [p for name, p in network.named_parameters() if name in new and not p.requires_grad]
    for p in thawed:
        p.requires_grad_(True)
    return len(thawed)
