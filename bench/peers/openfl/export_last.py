"""Run in OpenFL's venv, in its workspace: save/last.pbuf -> an .npz of the final model's tensors."""

import sys

import numpy as np
from openfl.pipelines import NoCompressionPipeline
from openfl.protocols import utils

tensors, _ = utils.deconstruct_model_proto(utils.load_proto("save/last.pbuf"), NoCompressionPipeline())
np.savez(sys.argv[1], **{name: np.asarray(value, dtype=np.float32) for name, value in tensors.items()})
