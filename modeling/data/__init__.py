"""Data: the joint BPE tokenizer, parallel corpora (text files, JSON lines) and the token-budget batching of pairs, and
the small tasks the package makes itself to train on without data."""
