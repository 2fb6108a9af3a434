"""I/O at the edges: video decoding, atomic writes, Parquet and HDF5 stores."""
