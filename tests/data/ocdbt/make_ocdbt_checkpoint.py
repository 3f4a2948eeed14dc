"""Writes checkpoint_3/, a tiny train state saved by current Flax (OCDBT layout).

    VENV/bin/python tests/data/ocdbt/make_ocdbt_checkpoint.py tests/data/ocdbt

VENV has `pip install flax` (flax 0.12.8, orbax-checkpoint 0.12.8, jax
0.10.2 when this was made). flax.training.checkpoints.save_checkpoint goes
through Orbax, which writes the OCDBT directory (_METADATA,
manifest.ocdbt, ocdbt.process_0/, _CHECKPOINT_METADATA) that
tests/tools/convert_flax_checkpoint_test.py feeds to the converter.
"""
import sys

import jax
import numpy as np
from flax.training import checkpoints

jax.config.update("jax_platforms", "cpu")
state = {"step": np.int32(3),
         "params": {"token_embedder": {"embs": np.arange(8, dtype=np.float32).reshape(4, 2),
                                       "bias_out": np.zeros(4, np.float32)}},
         "opt_state": {"count": np.int32(3)}}
path = checkpoints.save_checkpoint(sys.argv[1], state, step=3, overwrite=True)
print("wrote", path)
