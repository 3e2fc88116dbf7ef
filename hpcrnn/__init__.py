"""hpcrnn: data-parallel recurrent neural network training with Numba kernels, MPI and parallel HDF5."""
__version__ = "0.1.0"


def __getattr__(name):
    # Lazy so that `python -m hpcrnn.smoke` and the CLI start without compiling kernels.
    if name == "Model":
        from hpcrnn.model import Model
        return Model
    raise AttributeError(name)
