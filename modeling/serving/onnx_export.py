"""The ONNX export, in the layout the Hugging Face ecosystem reads (optimum's exporter, transformers.js, and our own
ONNX Runtime engine): `onnx/encoder_model.onnx` and `onnx/decoder_model_merged.onnx`, and with int8 also
`onnx/encoder_model_quantized.onnx` and `onnx/decoder_model_merged_quantized.onnx`.

- encoder: `input_ids`, `attention_mask` -> `last_hidden_state`.
- decoder: `input_ids` (the new target tokens), `encoder_attention_mask`, `encoder_hidden_states`, for every layer i
  `past_key_values.{i}.decoder.key/value` (the decoder's own keys and values of the earlier positions) and
  `past_key_values.{i}.encoder.key/value` (the cross-attention's, projected once from the encoder output), and
  `use_cache_branch` -> `logits` and `present.{i}.decoder.key/value`, `present.{i}.encoder.key/value`.
  Keys and values are (batch, heads, positions, head_dim). On the first step `use_cache_branch` is false and the
  past tensors have 0 positions: the cross-attention's keys and values are then projected from the encoder output;
  on later steps they come back in as past, and their `present` outputs are empty (the caller keeps them).

The decoder is two graphs exported by `torch.onnx` from the model's own code (the first step, the later ones) and
merged as optimum merges them: an ONNX `If` on `use_cache_branch`, the weights both use stored once. Every graph is
checked on ONNX Runtime against the model before it is written.
"""

import contextlib
import copy
import logging
import tempfile
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers.cache_utils import DynamicCache, EncoderDecoderCache

from ..modeling_vanilla_transformer import VanillaTransformerForConditionalGeneration

ENCODER_FILE = "onnx/encoder_model.onnx"
DECODER_FILE = "onnx/decoder_model_merged.onnx"
QUANTIZED_SUFFIX = "_quantized"  # transformers.js's name for int8 weights ("q8")
CACHE_PARTS = [(part, kind) for part in ("decoder", "encoder") for kind in ("key", "value")]


def quantized_name(file: str) -> str:
    return file.replace(".onnx", f"{QUANTIZED_SUFFIX}.onnx")


def cache_names(prefix: str, layers: int) -> list[str]:
    """`past_key_values.0.decoder.key`, ... or `present....`: per layer the decoder's key and value, then the encoder's."""
    return [f"{prefix}.{i}.{part}.{kind}" for i in range(layers) for part, kind in CACHE_PARTS]


class EncoderGraph(nn.Module):
    def __init__(self, model: VanillaTransformerForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


class DecoderGraph(nn.Module):
    """One decoding step through the model's own decoder and its `EncoderDecoderCache`: without `past` (the first
    step) the cross-attention projects the encoder output; with it, the cache holds what earlier steps returned."""

    def __init__(self, model: VanillaTransformerForConditionalGeneration):
        super().__init__()
        self.model = model

    def forward(self, input_ids, encoder_attention_mask, encoder_hidden_states, *past):
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        for i in range(len(past) // 4):
            own_key, own_value, cross_key, cross_value = past[4 * i : 4 * i + 4]
            cache.self_attention_cache.update(own_key, own_value, i)
            cache.cross_attention_cache.update(cross_key, cross_value, i)
            cache.is_updated[i] = True
        logits = self.model(
            attention_mask=encoder_attention_mask, decoder_input_ids=input_ids,
            encoder_outputs=(encoder_hidden_states,), cache=cache, use_cache=True,
        ).logits
        present = []
        for own, cross in zip(cache.self_attention_cache.layers, cache.cross_attention_cache.layers):
            present += [own.keys, own.values, cross.keys, cross.values]
        return (logits, *present)


def export_onnx(model: VanillaTransformerForConditionalGeneration, output_dir: Path, quantize: bool = False) -> None:
    """Writes the layout above into `output_dir` (int8 files too when `quantize`), each graph checked first."""
    import onnx

    config = model.config
    layers, heads = config.decoder_layers, config.decoder_attention_heads
    head_dim = config.d_model // heads
    # Example sizes other than 0 and 1, which the exporter would take for constants
    batch, source = torch.export.Dim("batch_size"), torch.export.Dim("encoder_sequence_length")
    target, past_length = torch.export.Dim("decoder_sequence_length"), torch.export.Dim("past_decoder_sequence_length")
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(4, config.vocab_size, (3, 7), generator=generator)
    attention_mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])
    target_ids = torch.randint(4, config.decoder_vocab_size, (3, 2), generator=generator)
    encoder, decoder = EncoderGraph(model).eval(), DecoderGraph(model).eval()
    with torch.no_grad():
        memory = encoder(input_ids, attention_mask)
        first_step = decoder(target_ids, attention_mask, memory)
    past = []
    for i in range(layers):
        past += [torch.randn(3, heads, 4, head_dim, generator=generator) for _ in range(2)]  # 4 earlier positions
        past += list(first_step[1 + 4 * i + 2 : 1 + 4 * i + 4])  # the cross-attention's, as the first step gave them
    step_inputs = ["input_ids", "encoder_attention_mask", "encoder_hidden_states"]
    step_shapes = [{0: batch, 1: target}, {0: batch, 1: source}, {0: batch, 1: source}]
    past_shapes = [{0: batch, 2: past_length if part == "decoder" else source} for _ in range(layers) for part, _ in CACHE_PARTS]
    graphs = {
        "encoder": (encoder, (input_ids, attention_mask), ["input_ids", "attention_mask"], ["last_hidden_state"],
                    ({0: batch, 1: source}, {0: batch, 1: source})),
        "first": (decoder, (target_ids, attention_mask, memory), step_inputs, ["logits", *cache_names("present", layers)],
                  tuple(step_shapes)),
        "later": (decoder, (target_ids, attention_mask, memory, *past), step_inputs + cache_names("past_key_values", layers),
                  ["logits", *cache_names("present", layers)], (*step_shapes, tuple(past_shapes))),  # *past: one argument
    }
    exported = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, (module, inputs, input_names, output_names, dynamic_shapes) in graphs.items():
            path = Path(scratch) / f"{name}.onnx"
            # The exporter reports every step and every operator library it skips: noise for whoever exports a model
            with torch.no_grad(), warnings.catch_warnings(), _quiet("torch.onnx"):
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, inputs, str(path), input_names=input_names, output_names=output_names,
                    dynamic_shapes=dynamic_shapes, dynamo=True, external_data=False, verbose=False,
                )
            with torch.no_grad():
                expected = module(*inputs)
            expected = expected if isinstance(expected, tuple) else (expected,)
            check_graph(path, dict(zip(input_names, inputs)), expected, name)
            exported[name] = path
            if quantize:
                to_quantize = path
                if name != "encoder":  # in float32 the Transpose costs less than gathering columns; in int8, see below
                    to_quantize = path.with_name(f"{name}-transposed.onnx")
                    onnx.save(transposed_once(onnx.load(path)), to_quantize)
                    check_graph(to_quantize, dict(zip(input_names, inputs)), expected, name)
                quantized = quantize_graph(to_quantize, dict(zip(input_names, inputs)), expected, name)
                exported[f"{name}{QUANTIZED_SUFFIX}"] = quantized
        (output_dir / "onnx").mkdir(parents=True, exist_ok=True)
        for suffix in ("", QUANTIZED_SUFFIX) if quantize else ("",):
            named = quantized_name if suffix else str
            encoder_file, decoder_file = output_dir / named(ENCODER_FILE), output_dir / named(DECODER_FILE)
            onnx.save(without_metadata(onnx.load(exported[f"encoder{suffix}"])), encoder_file)
            merged = merge_decoders(*(without_metadata(onnx.load(exported[f"{branch}{suffix}"])) for branch in ("first", "later")))
            onnx.save(merged, decoder_file)
            check_merged(decoder_file, graphs, exported, suffix)


def transposed_once(model):
    """For int8: the output projection, tied to the target embedding, reads the shared weight transposed, and int8
    quantization cannot see through the exporter's Transpose (the projection, the largest product of a step, would
    run in float32 on a weight dequantized at every step: 5.5 of 14 ms at 64 rows). The weight is stored transposed
    instead, and the embedding lookup gathers its columns: one int8 copy of the weight, used by both, and the
    projection in int8 (9.5 ms a step)."""
    from onnx import helper, numpy_helper

    graph = model.graph
    weights = {initializer.name: initializer for initializer in graph.initializer}
    ranks = {value.name: len(value.type.tensor_type.shape.dim) for value in graph.input}
    transposes = [
        node for node in graph.node
        if node.op_type == "Transpose" and node.input[0] in weights and len(weights[node.input[0]].dims) == 2
    ]
    for transpose in transposes:
        name = transpose.input[0]
        transposed = numpy_helper.from_array(numpy_helper.to_array(weights[name]).T.copy(), f"{name}.transposed")
        graph.initializer.append(transposed)
        graph.node.remove(transpose)
        for node in graph.node:
            node.input[:] = [transposed.name if value == transpose.output[0] else value for value in node.input]
        lookups = [node for node in graph.node if node.op_type == "Gather" and node.input[0] == name]
        for lookup in lookups:
            if lookup.input[1] not in ranks or any(attribute.name == "axis" and attribute.i != 0 for attribute in lookup.attribute):
                continue
            # Gather(W, ids) == Transpose(Gather(W^T, ids, axis=1)): (d_model, *ids) -> (*ids, d_model)
            columns = f"{lookup.output[0]}.columns"
            at = list(graph.node).index(lookup)
            graph.node.remove(lookup)
            graph.node.insert(at, helper.make_node("Gather", [transposed.name, lookup.input[1]], [columns], axis=1, name=columns))
            graph.node.insert(at + 1, helper.make_node(
                "Transpose", [columns], [lookup.output[0]], perm=[*range(1, ranks[lookup.input[1]] + 1), 0],
                name=f"{columns}.transpose",
            ))
        if not any(name in node.input for node in graph.node):
            graph.initializer.remove(weights[name])
    return model


def check_graph(path: Path, inputs: dict, expected: tuple, name: str, tolerance: float = 1e-4) -> None:
    """Refuses a graph that computes something else than the model on the example inputs."""
    got = run_graph(path, inputs)
    for output, (want, have) in enumerate(zip(expected, got)):
        have = torch.from_numpy(have)
        if have.shape != want.shape or not torch.allclose(have, want, atol=tolerance, rtol=tolerance):
            difference = (have - want).abs().max() if have.shape == want.shape else f"shape {tuple(have.shape)}"
            raise RuntimeError(
                f"The exported {name} graph computes something else than the model (output {output}: largest "
                f"difference {difference}); please report this with your config.json."
            )


def run_graph(path: Path, inputs: dict) -> list:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {graph_input.name for graph_input in session.get_inputs()}
    return session.run(None, {key: value.numpy() for key, value in inputs.items() if key in names})


def quantize_graph(path: Path, inputs: dict, expected: tuple, name: str) -> Path:
    """int8 weights for every matrix product and embedding (ONNX Runtime's dynamic quantization: activations are
    quantized per call). Refused when its logits or hidden states drift from the model's beyond what int8 costs."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantized = path.with_name(f"{path.stem}{QUANTIZED_SUFFIX}.onnx")
    with _quiet(""):  # its advice to pre-process applies to static quantization of convolutions
        quantize_dynamic(path, quantized, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm", "Gather"])
    have = torch.from_numpy(run_graph(quantized, inputs)[0])
    similarity = torch.nn.functional.cosine_similarity(have.flatten(), expected[0].flatten(), dim=0)
    if similarity < 0.99:
        raise RuntimeError(f"The int8 {name} graph drifts from the model (cosine similarity {similarity:.3f} of its first output).")
    return quantized


def check_merged(path: Path, graphs: dict, exported: dict, suffix: str) -> None:
    """The merged decoder gives each branch's graph's outputs: the first step without past, later ones with it."""
    layers = len([name for name in graphs["later"][2] if name.startswith("past_key_values")]) // 4
    first_inputs = dict(zip(graphs["first"][2], graphs["first"][1]))
    later_inputs = dict(zip(graphs["later"][2], graphs["later"][1]))
    empty = {name: later_inputs[name][:, :, :0] for name in cache_names("past_key_values", layers)}
    for branch, inputs in (("first", {**first_inputs, **empty}), ("later", later_inputs)):
        want = [torch.from_numpy(array) for array in run_graph(exported[f"{branch}{suffix}"], inputs)]
        flag = torch.tensor([branch == "later"])
        got = run_graph(path, {**inputs, "use_cache_branch": flag})
        names = ["logits", *cache_names("present", layers)]
        for name, want_output, have in zip(names, want, got):
            if branch == "later" and ".encoder." in name:
                want_output = want_output[:0, :, :0]  # returned empty: the caller keeps what it passed
            have = torch.from_numpy(have)
            if have.shape != want_output.shape:
                raise RuntimeError(f"The merged decoder's {name} has shape {tuple(have.shape)}, not {tuple(want_output.shape)}; please report this.")
            if not torch.allclose(have, want_output, atol=1e-5, rtol=1e-5):
                difference = (have - want_output).abs().max()
                raise RuntimeError(f"The merged decoder's {name} differs from its {branch} graph's (largest difference {difference:.2e}); please report this.")


def without_metadata(model):
    """The model without the exporter's notes on every node (stack traces, module paths): a fifth of an int8 file."""
    for node in model.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    return model


def merge_decoders(first, later):
    """One decoder model for both steps, as optimum merges them: `If(use_cache_branch)` runs `later` (with past)
    or `first`. A weight both graphs hold is stored once, outside the branches; every name a branch
    computes gets the branch's prefix, so that no name is defined twice."""
    import onnx
    from onnx import TensorProto, helper

    shared: dict[str, onnx.TensorProto] = {}
    by_content: dict[bytes, str] = {}  # the exporter names the same transposed weight differently in each graph
    branches = {}
    for prefix, model in (("first", first), ("later", later)):
        graph = model.graph
        renames = {}
        for initializer in graph.initializer:
            tensor = copy.deepcopy(initializer)
            tensor.name = ""
            content = tensor.SerializeToString()
            if content in by_content:
                renames[initializer.name] = by_content[content]
                continue
            name = initializer.name if initializer.name not in shared else f"{prefix}/{initializer.name}"
            tensor.name = by_content[content] = renames[initializer.name] = name
            shared[name] = tensor
        produced = {output for node in graph.node for output in node.output if output}
        renames.update({name: f"{prefix}/{name}" for name in produced})
        nodes = []
        for node in graph.node:
            node = copy.deepcopy(node)
            node.input[:] = [renames.get(name, name) for name in node.input]
            node.output[:] = [renames.get(name, name) for name in node.output]
            node.name = f"{prefix}/{node.name}"
            nodes.append(node)
        outputs = []
        for output in graph.output:
            value = renames.get(output.name, output.name)
            if prefix == "later" and ".encoder." in output.name:
                # The cross-attention's past, returned unchanged: an empty tensor instead, as in optimum's merged
                # decoders, since the caller holds it already; copying it out at every step costs time
                value = f"{prefix}/{output.name}/empty"
                # (0, heads, 0, head_dim): the declared shape, with no position and no sentence
                dims = [dim.dim_value for dim in output.type.tensor_type.shape.dim]
                empty = helper.make_tensor(value, output.type.tensor_type.elem_type, dims, [])
                nodes.append(helper.make_node("Constant", [], [value], name=value, value=empty))
            branch_output = copy.deepcopy(output)
            branch_output.name = value
            outputs.append(branch_output)
        branches[prefix] = helper.make_graph(nodes, prefix, [], outputs)
    merged_inputs = list(later.graph.input) + [helper.make_tensor_value_info("use_cache_branch", TensorProto.BOOL, [1])]
    merged_outputs = []
    for output in first.graph.output:
        merged_output = copy.deepcopy(output)
        if output.name.startswith("present") and ".decoder." in output.name:
            merged_output.type.tensor_type.shape.dim[2].dim_param = "present_decoder_sequence_length"
        merged_outputs.append(merged_output)
    branch = helper.make_node(
        "If", ["use_cache_branch"], [output.name for output in merged_outputs], name="use_cache_branch_if",
        then_branch=branches["later"], else_branch=branches["first"],
    )
    graph = helper.make_graph([branch], "decoder_model_merged", merged_inputs, merged_outputs, list(shared.values()))
    functions = {(function.domain, function.name): function for model in (first, later) for function in model.functions}
    merged = helper.make_model(graph, opset_imports=first.opset_import, functions=list(functions.values()))
    merged.ir_version = first.ir_version
    return merged


@contextlib.contextmanager
def _quiet(logger_name: str):
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)
