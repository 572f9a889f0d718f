"""Looking at a model: its attention maps, plots of them and of a training run, and the speed and serving benchmarks
against transformers' Marian and the PyTorch tutorial's model."""
