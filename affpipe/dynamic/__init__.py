"""Dynamic facial images (stage ``dynamic``): DFA, DFS, the stable/dynamic masks and the DFM per window.

Modules (light imports: numpy; OpenCV only inside the uint8 encoding, h5py inside the store I/O):

* :mod:`~affpipe.dynamic.rankpool`: the exact RankSVM (DFM paper Eq. 3) and approximate rank pooling,
  and the public pair-QP solver (:func:`~affpipe.dynamic.rankpool.solve_pair_qp`) the DR ranking
  bound uses too;
* :mod:`~affpipe.dynamic.windows`: window geometry and the streaming engine that computes every
  window's dynamic images in one pass;
* :mod:`~affpipe.dynamic.masks`: stable/dynamic pixels and the DFM fusion;
* :mod:`~affpipe.dynamic.store`: the layout of ``results/{ds}/dynamic/{video}.h5`` and the encoding
  of one block of windows into its rows;
* :mod:`~affpipe.dynamic.run`: one video's store: the plan, the worker processes and the merge of
  their part files (:func:`~affpipe.dynamic.run.dynamic_store`, called by ``affpipe dynamic``).
"""
