"""Packaged data: rule tables and the CLIP tokenizer vocabulary."""
