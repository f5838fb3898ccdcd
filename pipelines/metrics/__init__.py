"""Metrics computed on generated clips (plain torch, no model weights needed unless stated)."""
