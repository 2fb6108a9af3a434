"""Dynamic representations inferred from still images (DR) and their multi-level stack (MDR).

Implements Song et al., *Inferring Dynamic Representations of Facial Actions from a Still Image*
(``../shared/papers/dr-dynamic-representations-from-still-images.txt``; team notes in NOTES.md):

* :mod:`affpipe.dr.windows`  -- centred windows of N = 2T+1 frames (stride scaled with the frame
  rate), which centres have a full window of valid frames, and the same-side frame pairs of Eq. 3;
* :mod:`affpipe.dr.rankloss` -- the rank loss of Eq. 3 (torch, and a numpy reference), the ranking
  accuracy, and the calibration of the rank-success margin θ against chance;
* :mod:`affpipe.dr.unet`     -- the UNet mapping one masked face image I_t to its DR d_t;
* :mod:`affpipe.dr.data`     -- SFA frames of a set of static stores, in memory or read lazily;
* :mod:`affpipe.dr.train`    -- seeded, resumable training with per-epoch validation;
* :mod:`affpipe.dr.infer`    -- DR inference for every valid frame, the DR store, the MDR input;
* :mod:`affpipe.dr.ranking`  -- ranking-accuracy evaluation against the per-window RankSVM upper
  bound (the exact solver of :mod:`affpipe.dynamic.rankpool`) and chance.

Pixel scaling (one convention everywhere): a static SFA pixel ``q`` (uint8) enters both the UNet
and the scores as ``q / 255`` (:data:`PIXEL_SCALE`, values in [0, 1], 0 outside the face hull).
The UNet ends in ``tanh``, so a DR is a real-valued image with values in [-1, 1] (the same range
as a pix2pix-style image-to-image network). Scores are the Frobenius inner products
``S_a = <d_t, I_a>`` summed over all S*S*3 values, exactly as in the paper.
"""

from __future__ import annotations

#: uint8 pixel value -> value fed to the UNet and to the scores (the "unit" scale of the dynamic stage)
PIXEL_SCALE = 1.0 / 255.0
#: channels of one image and of one DR
IMAGE_CHANNELS = 3
