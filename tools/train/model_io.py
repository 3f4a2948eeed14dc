"""Export a TransformerVQ to the tvq-serve model directory, and load one back."""

import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tvq_format  # noqa: E402  (tools/tvq_format.py)
from tvq_model import TransformerVQ  # noqa: E402


def export_model_dir(model, directory, dtype="F32", metadata=None):
    """Writes config.json + model.safetensors (spec §4) into `directory`."""
    os.makedirs(directory, exist_ok=True)
    arrays = {name: tensor.detach().cpu().to(torch.float32).numpy()
              for name, tensor in model.named_tensors().items()}
    tvq_format.check_tensors(model.config, arrays)
    tvq_format.write_safetensors(os.path.join(directory, "model.safetensors"),
                                 arrays, dtype=dtype, metadata=metadata)
    tvq_format.write_config(os.path.join(directory, "config.json"), model.config)


def load_model_dir(directory, dtype=torch.float32):
    """Reads a model directory into a TransformerVQ of the given dtype."""
    config = tvq_format.read_config(os.path.join(directory, "config.json"))
    arrays, dtypes, _ = tvq_format.read_safetensors(
        os.path.join(directory, "model.safetensors"))
    values = {}
    for name, array in arrays.items():
        if dtypes[name] == "BF16":
            array = tvq_format.bf16_bits_to_float32(array)
        values[name] = np.asarray(array, dtype=np.float64)
    tvq_format.check_tensors(config, values)
    model = TransformerVQ(config).to(dtype)
    model.load_named_tensors(values)
    return model
