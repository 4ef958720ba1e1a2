"""Models of sepkit: the separators (:mod:`.separators`) and, in their own modules, the methods
built on them."""
from .separators import SEPARATORS, BiLSTMSeparator, ConvTasNet, DPRNN, Sepformer, build_separator

__all__ = ["ConvTasNet", "DPRNN", "Sepformer", "BiLSTMSeparator", "SEPARATORS", "build_separator"]
