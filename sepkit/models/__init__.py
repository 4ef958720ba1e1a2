"""Models of sepkit: the separators (:mod:`.separators`) and, in their own modules, the methods
built on them:

- :mod:`.dip`: ``DIPFrontend`` (domain-invariant pretrained frontend), ``DIPPretrainLoss``;
- :mod:`.codecformer`: ``Codecformer`` (separation in a codec's latent space, :mod:`sepkit.codecs`);
- :mod:`.speaker`, :mod:`.mixture2set`, :mod:`.tse`: ``ECAPATDNN``, ``MixtureToSet``,
  ``SetEmbeddingLoss``, ``SpeakerMemory``, ``ConvTasNetTSE``, ``DualPathTSE``;
- :mod:`.sgmse`, :mod:`.ncsnpp`, :mod:`.exdiff`, :mod:`.panns`: score-based enhancement (SGMSE+,
  Ex-Diff) and the PANNs ``Cnn14`` tagger;
- :mod:`.gcrn`, :mod:`.streaming`: ``GCRN`` and ``StreamingEnhancer``.

The method classes are imported on first use (``from sepkit.models import GCRN`` works), so
importing the separators stays light.
"""
import importlib

from .separators import SEPARATORS, BiLSTMSeparator, ConvTasNet, DPRNN, Sepformer, TFGridNet, build_separator

_LAZY = {
    "DIPFrontend": "dip", "DIPPretrainLoss": "dip",
    "Codecformer": "codecformer",
    "ECAPATDNN": "speaker", "MixtureToSet": "mixture2set", "SetEmbeddingLoss": "mixture2set",
    "SpeakerMemory": "mixture2set", "ConvTasNetTSE": "tse", "DualPathTSE": "tse",
    "GCRN": "gcrn", "StreamingEnhancer": "streaming",
    "OUVESDE": "sgmse", "SGMSE": "sgmse", "NCSNpp": "ncsnpp", "ExDiff": "exdiff", "Cnn14": "panns",
    "SpeechActivityDetector": "sad",
}


def __getattr__(name: str):
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["ConvTasNet", "DPRNN", "Sepformer", "BiLSTMSeparator", "TFGridNet", "SEPARATORS", "build_separator", *_LAZY]
