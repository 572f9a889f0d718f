"""The model and other frameworks' models of the same architecture: a `torch.nn.Transformer` model converted to ours
(`torch_transformer.py`), ours as transformers' `MarianMTModel` (`marian.py`) and as CTranslate2's
`TransformerSpec` (`ctranslate2_spec.py`, which CTranslate2's own converter uses)."""
