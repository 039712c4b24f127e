"""imgtool: a daemonless OCI image builder, layer manager and runner.

The package root imports nothing heavy, so `imgtool run` and friends start fast; import the
submodules you need (`imgtool.reference`, `imgtool.store`, `imgtool.puller`, ...).
"""

__version__ = "0.1.0"
