"""ONNX Runtime behind the library's `generate()`: the encoder and the merged decoder of an ONNX export (the layout of
`serving.onnx_export`, the one transformers.js reads too), so that greedy and beam search are transformers' own.

Every run goes through ONNX Runtime's IO binding: inputs are bound to the memory of the torch tensors that hold them,
outputs are allocated by ONNX Runtime and taken as torch tensors through DLPack. The decoder's keys and values stay
where the graph wrote them from one step to the next (beam search reorders them in place of copying them back), and
none goes through numpy.
"""

from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers import GenerationConfig, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from ..configuration_vanilla_transformer import VanillaTransformerConfig
from ..modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration
from .onnx_export import DECODER_FILE, ENCODER_FILE, quantized_name

NUMPY_TYPES = {torch.float32: np.float32, torch.int64: np.int64, torch.bool: np.bool_}


def run_bound(session, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Runs `session` on torch tensors and returns torch tensors, with no copy either way."""
    binding = session.io_binding()
    held = []  # the bound memory must outlive the run
    for name, tensor in inputs.items():
        tensor = tensor.contiguous()
        held.append(tensor)
        binding.bind_input(name, "cpu", 0, NUMPY_TYPES[tensor.dtype], tuple(tensor.shape), tensor.data_ptr())
    names = [output.name for output in session.get_outputs()]
    for name in names:
        binding.bind_output(name, "cpu")
    session.run_with_iobinding(binding)
    return {name: torch.from_dlpack(value) for name, value in zip(names, binding.get_outputs())}


def hold(cache: DynamicCache, layer_idx: int, keys: torch.Tensor, values: torch.Tensor) -> None:
    """Makes `keys`/`values` layer `layer_idx`'s, as they are: the graph has already appended the new positions,
    where `update` would concatenate them again."""
    if len(cache.layers) <= layer_idx or not cache.layers[layer_idx].is_initialized:
        cache.update(keys[:, :, :0], values[:, :, :0], layer_idx)
    layer = cache.layers[layer_idx]
    layer.keys, layer.values = keys, values


class OnnxRuntimeEncoder(nn.Module):
    def __init__(self, session):
        super().__init__()
        self.session = session

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kwargs) -> BaseModelOutput:
        outputs = run_bound(self.session, {"input_ids": input_ids, "attention_mask": attention_mask})
        return BaseModelOutput(last_hidden_state=outputs["last_hidden_state"])


class OnnxRuntimeSeq2SeqLM(PreTrainedModel, GenerationMixin):
    """The model of an ONNX export as `generate()` sees it: the encoder behind `get_encoder()`, a decoding step
    behind `forward`, the keys and values in the library's `EncoderDecoderCache`. An export made with
    `--quantization int8` runs its int8 graphs."""

    config_class = VanillaTransformerConfig
    main_input_name = "input_ids"

    def __init__(self, path: str | Path, info: dict, threads: int | None = None):
        """`info`: the folder's export.json (`engines.read_export_info`)."""
        import onnxruntime

        if (Path(path) / "decoder_step.onnx").is_file():
            raise ValueError(
                f"{path} holds an ONNX export of the earlier layout (encoder.onnx, decoder_step.onnx), which this "
                "version no longer runs: export the saved model again with `scripts/export.py --format onnx`."
            )
        super().__init__(VanillaTransformerConfig.from_dict(info["config"]))
        self.generation_config = GenerationConfig.from_pretrained(path)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        files = [ENCODER_FILE, DECODER_FILE]
        if info["quantization"] == "int8":
            files = [quantized_name(file) for file in files]
        self.encoder_session, self.decoder_session = (
            onnxruntime.InferenceSession(str(Path(path) / file), options, providers=["CPUExecutionProvider"])
            for file in files
        )
        self.post_init()

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def get_encoder(self, modality=None):
        return OnnxRuntimeEncoder(self.encoder_session)

    def forward(self, decoder_input_ids, attention_mask, encoder_outputs: BaseModelOutput, cache=None, **kwargs):
        memory = encoder_outputs.last_hidden_state
        own, cross = cache.self_attention_cache, cache.cross_attention_cache
        later = own.get_seq_length() > 0
        if not later:  # the first step's past is empty (0 positions), as transformers.js passes it
            heads = self.config.decoder_attention_heads
            empty = memory.new_zeros(memory.shape[0], heads, 0, self.config.d_model // heads)
        inputs = {"input_ids": decoder_input_ids, "encoder_attention_mask": attention_mask, "encoder_hidden_states": memory}
        for i in range(self.config.decoder_layers):
            for layer_cache, part in ((own, "decoder"), (cross, "encoder")):
                keys, values = (layer_cache.layers[i].keys, layer_cache.layers[i].values) if later else (empty, empty)
                inputs[f"past_key_values.{i}.{part}.key"], inputs[f"past_key_values.{i}.{part}.value"] = keys, values
        inputs["use_cache_branch"] = torch.tensor([later])
        outputs = run_bound(self.decoder_session, inputs)
        for i in range(self.config.decoder_layers):
            hold(own, i, outputs[f"present.{i}.decoder.key"], outputs[f"present.{i}.decoder.value"])
            if not later:  # later steps return the cross-attention's unchanged (as empty tensors): kept from step 1
                hold(cross, i, outputs[f"present.{i}.encoder.key"], outputs[f"present.{i}.encoder.value"])
        return Seq2SeqLMOutput(logits=outputs["logits"], cache=cache)

    # The same cache layout as the PyTorch model's, reordered the same way for beam search
    _reorder_cache = VanillaTransformerForConditionalGeneration._reorder_cache
