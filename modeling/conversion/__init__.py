"""The model and other frameworks' models of the same architecture: a `torch.nn.Transformer` model (the PyTorch
tutorial's, `pytorch_tutorial.py`) converted to ours, and ours as transformers' `MarianMTModel`."""
