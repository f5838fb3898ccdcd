"""Lineart for LVCD: the informative-drawings generator (ControlNet-1.1 "lineart" annotator) and hint conversion.

- :mod:`.model`: the generator under the released parameter names (strict loading, sizes from shapes);
- :mod:`.loader`: reads ``sk_model.pth`` / ``sk_model2.pth`` (or a .safetensors copy) from ``models/lineart``;
- :mod:`.extract`: colour frames -> LVCD hints (``extract_lineart``), user line drawings -> hints (``to_hint``);
- :mod:`.tiny`: a tiny random-weight file in the released format, for tests and CPU demos.
"""
from .extract import POLARITIES, detect_polarity, extract_lineart, to_hint

__all__ = ["POLARITIES", "detect_polarity", "extract_lineart", "to_hint"]
