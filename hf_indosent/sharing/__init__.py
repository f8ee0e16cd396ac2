"""Sharing: the Hub upload, the model card, the Gradio demo and its Space."""
