"""Read the weights of a Keras 2 HDF5 file with h5py, without Keras or TensorFlow.

Keras 2 writes one HDF5 group per layer, either at the top of the file
(``model.save_weights``) or under ``model_weights`` (``model.save``). The file's
``layer_names`` attribute lists the layers in order; each layer group's ``weight_names``
attribute lists its weights in the order the layer creates them, as
``<layer>/<sublayer>/<name>:0`` paths inside the group.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from calitag.errors import CheckpointError

def read_keras_weights(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Read every layer's weights from a Keras 2 HDF5 file.

    Parameters
    ----------
    path : Path
        A file written by Keras 2 ``model.save`` or ``model.save_weights``.

    Returns
    -------
    dict[str, dict[str, np.ndarray]]
        ``{layer_name: {weight_name: array}}`` in file order, for layers that have weights.
        Weight names are relative to the layer, e.g. ``"kernel:0"`` for a Dense or Conv2D
        layer and ``"forward_gru_1/kernel:0"`` for a Bidirectional wrapper.

    Raises
    ------
    CheckpointError
        If the file is missing, is not HDF5, or lacks the Keras weight layout.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Keras weights file {path} not found: pass an existing .h5 file")
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise CheckpointError(f"cannot read {path} as HDF5 ({err}): expected a Keras .h5 file") from err
    with handle:
        root = handle["model_weights"] if "model_weights" in handle else handle
        if "layer_names" not in root.attrs:
            raise CheckpointError(
                f"{path} has no 'layer_names' attribute: expected a Keras 2 weights file "
                "written by model.save or model.save_weights"
            )
        layers: dict[str, dict[str, np.ndarray]] = {}
        for raw_layer in root.attrs["layer_names"]:
            layer = _text(raw_layer)
            group = root[layer]
            names = [_text(n) for n in group.attrs.get("weight_names", [])]
            if not names:
                continue
            weights = {}
            for name in names:
                relative = name.split("/", 1)[1] if name.startswith(layer + "/") else name
                weights[relative] = np.asarray(group[name])
            layers[layer] = weights
    return layers


def _text(value: bytes | str) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)
