"""Data readers, the training loop and the evaluator: developer tools, not shipped in the plugin
zip (see docs/EVALUATION.md for how the shipped model was made)."""
