"""Build the compiled scheduling kernel ``htcsim._core`` from ``core/``."""

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# The extension is named "_core" inside ``ext_package="htcsim"`` so that Cython
# finds core/_core.pxd beside core/_core.pyx; it installs as htcsim._core.
extensions = [
    Extension(
        "_core",
        sources=["core/_core.pyx"],
        include_dirs=[np.get_include(), "core"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
]

setup(
    ext_package="htcsim",
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
