"""Neural audio codecs of sepkit, for separators that work in a codec's latent space.

* :class:`Codec` - the protocol a separator relies on (encode, quantize, decode, sample_rate,
  hop_length, frame_rate, latent_dim); :class:`IdentityCodec`, the exact codec; :func:`round_trip`.
* :class:`DAC` - the Descript Audio Codec, weight-compatible with the official 16, 24 and
  44.1 kHz releases (:meth:`DAC.from_pretrained`); :data:`DAC_CONFIGS` holds their configurations.
"""
from .base import Codec, IdentityCodec, fit_length, round_trip
from .dac import DAC, DAC_CONFIGS, DACOutput

__all__ = ["Codec", "IdentityCodec", "round_trip", "fit_length", "DAC", "DAC_CONFIGS", "DACOutput"]
