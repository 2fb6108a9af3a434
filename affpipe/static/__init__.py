"""Aligned static facial images (stage ``static``): SFA and SFS for every decoded frame of a video.

Modules (:mod:`~affpipe.static.align` and :mod:`~affpipe.static.sfs` import OpenCV):

* :mod:`~affpipe.static.align`: alignment to the canonical 68-point template and the SFA image;
* :mod:`~affpipe.static.sfs`: the 15-region static shape image (SFS);
* :mod:`~affpipe.static.run`: one video's store, streaming the video and its faces table together
  (:func:`~affpipe.static.run.static_store`, called by ``affpipe static``).

The store's layout is :func:`affpipe.io.h5store.static_specs` (read by the later stages through
:func:`affpipe.io.h5store.open_static`).
"""
