"""Recipes that run the whole package end to end: the quick start (tokenizer, training, checkpoint averaging,
translation, scores), on a task of its own or on a folder of parallel text."""
