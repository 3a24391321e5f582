"""Tiny WD14-shaped ONNX taggers built in tests, whose outputs are known functions of the input.

Input: `input` [batch, size, size, 3] float32 (NHWC, values 0..255 as the WD14 models take them).
Output: `output` [batch, tags] in 0..1. With `probes=True` the first outputs measure the input:

    0 probe_b       mean of channel 0 / 255   (blue, if the tagger feeds BGR)
    1 probe_g       mean of channel 1 / 255
    2 probe_r       mean of channel 2 / 255
    3 probe_top     mean of the top eighth of rows / 255       (white padding above a wide image -> 1.0)
    4 probe_bottom  mean of the bottom eighth of rows / 255
    5 probe_middle  mean of the middle quarter of rows / 255
    6 probe_left    mean of the left eighth of columns / 255

followed by one constant output per entry of `constants` (the same for every image).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PROBES = ["probe_b", "probe_g", "probe_r", "probe_top", "probe_bottom", "probe_middle", "probe_left"]


def _const(name: str, values, dtype=np.int64) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(values, dtype=dtype), name))


def build_tagger_onnx(
    path: Path,
    size: int = 32,
    constants: list[float] | tuple[float, ...] = (),
    probes: bool = True,
    batch: int | str = "batch",
) -> Path:
    """Write a tagger model to `path` (see the module docstring for its outputs)."""
    nodes: list[onnx.NodeProto] = []
    outputs: list[str] = []
    nodes.append(_const("inv255", [1.0 / 255.0], np.float32))
    nodes.append(helper.make_node("Mul", ["input", "inv255"], ["x01"]))
    # per-image scalar, used to broadcast constants over the batch: [N, 1]
    nodes.append(helper.make_node("ReduceMean", ["x01"], ["m_all"], axes=[1, 2, 3], keepdims=0))
    nodes.append(_const("shape_n1", [-1, 1]))
    nodes.append(helper.make_node("Reshape", ["m_all", "shape_n1"], ["m_n1"]))
    if probes:
        nodes.append(helper.make_node("ReduceMean", ["x01"], ["chan"], axes=[1, 2], keepdims=0))  # [N, 3]
        outputs.append("chan")
        band = max(1, size // 8)
        bands = {
            "top": (1, 0, band),
            "bottom": (1, size - band, size),
            "middle": (1, size * 3 // 8, size * 5 // 8),
            "left": (2, 0, band),
        }
        for name, (axis, start, end) in bands.items():
            nodes.append(_const(f"{name}_s", [start]))
            nodes.append(_const(f"{name}_e", [end]))
            nodes.append(_const(f"{name}_a", [axis]))
            nodes.append(helper.make_node("Slice", ["x01", f"{name}_s", f"{name}_e", f"{name}_a"], [f"{name}_x"]))
            nodes.append(helper.make_node("ReduceMean", [f"{name}_x"], [f"{name}_m"], axes=[1, 2, 3], keepdims=0))
            nodes.append(helper.make_node("Reshape", [f"{name}_m", "shape_n1"], [f"{name}_o"]))
            outputs.append(f"{name}_o")
    if constants:
        nodes.append(_const("zero", [0.0], np.float32))
        nodes.append(_const("consts", [list(constants)], np.float32))
        nodes.append(helper.make_node("Mul", ["m_n1", "zero"], ["zeros_n1"]))
        nodes.append(helper.make_node("Add", ["zeros_n1", "consts"], ["const_o"]))
        outputs.append("const_o")
    if not outputs:
        raise ValueError("a tagger needs probes or constants")
    nodes.append(helper.make_node("Concat", outputs, ["output"], axis=1))
    n_tags = (len(PROBES) if probes else 0) + len(constants)
    graph = helper.make_graph(
        nodes,
        "tiny_wd14_tagger",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, size, size, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, n_tags])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_selected_tags(path: Path, tags: list[tuple[str, int]]) -> Path:
    """selected_tags.csv in SmilingWolf's layout: tag_id,name,category,count."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["tag_id", "name", "category", "count"])
        for i, (name, category) in enumerate(tags):
            writer.writerow([1000 + i, name, category, 10000 - i])
    return path


def make_tagger(
    folder: Path,
    tags: list[tuple[str, int, float]] = (),
    size: int = 32,
    probes: bool = True,
    batch: int | str = "batch",
    probe_category: int = 0,
) -> Path:
    """A complete model folder: probes (named PROBES) then constant tags given as (name, category, prob)."""
    folder.mkdir(parents=True, exist_ok=True)
    build_tagger_onnx(folder / "model.onnx", size=size, constants=[p for _, _, p in tags], probes=probes, batch=batch)
    rows = [(name, probe_category) for name in PROBES] if probes else []
    rows += [(name, cat) for name, cat, _ in tags]
    write_selected_tags(folder / "selected_tags.csv", rows)
    return folder


def build_text_detector_onnx(
    path: Path,
    channel: int = 2,
    mean: float = 0.406,
    std: float = 0.225,
    size: int | None = None,
    logits: bool = False,
    rank: int = 4,
) -> Path:
    """A DB-shaped text detector: input `image` [batch, 3, H, W] (H, W free, or `size` x `size`), output `maps`
    [batch, 1, H/4, W/4] (rank 3: [batch, H/4, W/4]): input channel `channel` un-normalised (x * std + mean, so a
    red channel of 255 reads 1.0 when the input was normalised with that mean and std), averaged over 4x4 pixels.
    The defaults undo the db preset's red channel (BGR order: red is channel 2). `logits`: the map is 10 * (p -
    0.5) instead, values outside 0..1 as a detector without its final sigmoid gives."""
    nodes = [
        _const("c_start", [channel]), _const("c_end", [channel + 1]), _const("c_axis", [1]),
        helper.make_node("Slice", ["image", "c_start", "c_end", "c_axis"], ["chan"]),
        _const("std", [std], np.float32), _const("mean", [mean], np.float32),
        helper.make_node("Mul", ["chan", "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["restored"]),
        helper.make_node("AveragePool", ["restored"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
    ]  # fmt: skip
    last = "pooled"
    if logits:
        nodes += [_const("half", [0.5], np.float32), _const("ten", [10.0], np.float32),
                  helper.make_node("Sub", ["pooled", "half"], ["centred"]),
                  helper.make_node("Mul", ["centred", "ten"], ["logit"])]  # fmt: skip
        last = "logit"
    height: int | str = size if size else "height"
    width: int | str = size if size else "width"
    out_h: int | str = size // 4 if size else "map_h"
    out_w: int | str = size // 4 if size else "map_w"
    if rank == 3:
        nodes += [_const("squeeze_axis", [1]), helper.make_node("Squeeze", [last, "squeeze_axis"], ["maps"])]
        out_shape: list[int | str] = ["batch", out_h, out_w]
    else:
        nodes.append(helper.make_node("Identity", [last], ["maps"]))
        out_shape = ["batch", 1, out_h, out_w]
    graph = helper.make_graph(
        nodes,
        "tiny_text_detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, height, width])],
        [helper.make_tensor_value_info("maps", TensorProto.FLOAT, out_shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
